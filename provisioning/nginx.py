"""NGINX in front of the appliance, rendered from the settings through the template
nginx/keep.conf.j2 (Jinja2, StrictUndefined). Every value is checked before it reaches the
template, and one that could end or open a directive is refused with the setting's name:
no setting can add to the config what the template does not say.

What the rendered config guarantees:
- It listens only on the appliance's tunnel address, TLS 1.3 only (1.2 as an explicit
  setting). The default server rejects the TLS handshake and answers 444 (nothing), so an
  unknown SNI or Host gets no HTTP bytes.
- Only active peers' tunnel addresses (the `geo` allowlist, rendered from control's peers)
  are served; any other source gets 444. The appliance's 401 and 403 become 444 too, so a
  wrong key learns nothing.
- `limit_req` per peer address (429 past it), `client_max_body_size` from the settings.
- Nothing spills to disk: the request body buffer holds the largest body allowed, response
  buffering is off (SSE streams pass straight through) and no temp file may be written;
  every temp path is under the runtime directory, on tmpfs.
- Access logs are content-free: time, peer address, status, bytes and duration. No request
  line, no query, no header, no body. The error log records only critical events, because
  NGINX's error messages quote the request line.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import importlib.util
import math
import os
import re
import signal
import subprocess
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path

import jinja2

from durable import create_secret, replace, replace_if_changed
from keep.settings import PerimeterSettings
from provisioning import ipam
from provisioning.ca import issue_server_cert

CONF = "nginx.conf"
ALLOWLIST = "nginx-peers.conf"
CERT = "server.crt"
KEY = "server.key"
PID = "nginx.pid"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
# In the `nginx` package (nginx/ in the source tree), shipped in the wheel as package data.
TEMPLATE = "keep.conf.j2"

# What a value may hold to go into a directive. Each pattern leaves out everything NGINX
# reads as syntax: whitespace and line breaks end a token, `;` a directive, braces a block,
# quotes and `\` change a token, `#` starts a comment, `$` a variable; `:` ends the path of
# a `unix:` upstream. Anything outside them is refused, not escaped.
_PATH = re.compile(r"/[A-Za-z0-9._+@=,~/-]*")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def _unscoped(value: str) -> IPv4Address | IPv6Address:
    """An IP address without an IPv6 scope: a scope (`fe80::1%eth0`) may hold any character
    but `%`, line breaks and `;` included."""
    ip = ip_address(value)
    if isinstance(ip, IPv6Address) and ip.scope_id is not None:
        raise ValueError(f"{value!r} has an IPv6 scope, which NGINX's config does not take")
    return ip


def _refuse(setting: str, value: object, why: str) -> ValueError:
    return ValueError(f"{setting}: {value!r} cannot go into NGINX's config: {why}")


def _path(setting: str, value: Path | str) -> str:
    text = str(value)
    if not _PATH.fullmatch(text):
        raise _refuse(setting, text, "a path there is absolute, of letters, digits and ._+@=,~/-")
    return text


def _dns_name(setting: str, value: str) -> str:
    if len(value) > 253 or not _DNS_NAME.fullmatch(value):
        raise _refuse(setting, value, "not a DNS name")
    return value


def _host(setting: str, value: str) -> str:
    """A name the console answers to: a DNS name, optionally NGINX's (and Django's) leading
    `.` or `*.` for every subdomain, or an IP address."""
    bracketed = value.startswith("[") and value.endswith("]")
    with contextlib.suppress(ValueError):
        if _unscoped(value[1:-1] if bracketed else value).version == 6 or not bracketed:
            return value
    bare = value.removeprefix("*.") if value.startswith("*.") else value.removeprefix(".")
    if len(value) > 253 or not _DNS_NAME.fullmatch(bare):
        raise _refuse(setting, value, "not a DNS name, `.name`, `*.name` or an IP address")
    return value


def _user(setting: str, value: str | None) -> str | None:
    if not value:
        return None
    if not _USER.fullmatch(value):
        raise _refuse(setting, value, "not a user name")
    return value


def _count(setting: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise _refuse(setting, value, f"not a whole number of at least {least}")
    return value


def _flag(setting: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _refuse(setting, value, "not true or false")
    return value


def _deadline(setting: str, value: object) -> int:
    """The request deadline plus a margin: NGINX gives up only after the appliance has."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _refuse(setting, value, "not a number of seconds")
    if value <= 0:
        raise _refuse(setting, value, "not a positive number of seconds")
    return int(value) + 5


def _address(setting: str, value: str) -> str:
    try:
        return str(_unscoped(value))
    except ValueError:
        raise _refuse(setting, value, "not an IP address without a scope") from None


def _network(setting: str, value: str) -> str:
    try:
        return str(ip_network(value, strict=True))
    except ValueError:
        raise _refuse(setting, value, "not a network in CIDR form") from None


def _port(setting: str, value: object) -> int:
    port = _count(setting, value, 1)
    if port > 65535:
        raise _refuse(setting, value, "not a TCP port")
    return port


def _listen(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ip_address(address).version == 6 else f"{address}:{port}"


def _api_address(subnet: str) -> str:
    try:
        address = ipam.server_address(subnet)
    except ValueError:
        raise _refuse("KEEP_WG_SUBNET", subnet, "not a subnet") from None
    return _address("KEEP_WG_SUBNET", address)


def _admin_static() -> str:
    """The Django admin's own static files, served by NGINX (found without importing Django)."""
    spec = importlib.util.find_spec("django")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("Django is not installed: the console's static files are missing")
    return f"{spec.submodule_search_locations[0]}/contrib/admin/static/admin/"


def template_values(settings: PerimeterSettings, upstream_socket: Path) -> dict[str, object]:
    """Everything the template reads, each value checked to be what its directive takes."""
    run = _path("KEEP_NGINX_RUNTIME_DIR", settings.nginx_runtime_dir)
    conf_dir = _path("KEEP_NGINX_DIR", settings.nginx_dir)
    return {
        "nginx_user": _user("KEEP_NGINX_USER", settings.nginx_user),
        "runtime_dir": run,
        "pid_file": f"{run}/{PID}",
        "temp_dirs": TEMP_DIRS,
        "deadline_s": _deadline("KEEP_REQUEST_DEADLINE_S", settings.request_deadline_s),
        "tls_allow_v12": _flag("KEEP_TLS_ALLOW_V12", settings.tls_allow_v12),
        "certificate": f"{conf_dir}/{CERT}",
        "certificate_key": f"{conf_dir}/{KEY}",
        "max_body_bytes": _count("KEEP_MAX_BODY_BYTES", settings.max_body_bytes, 1),
        "rag_max_upload_bytes": _count(
            "KEEP_RAG_MAX_UPLOAD_BYTES", settings.rag_max_upload_bytes, 1
        ),
        "allowlist": _path("KEEP_STATE_DIR", allowlist_path(settings)),
        "rate_per_s": _count("KEEP_NGINX_RATE_PER_S", settings.nginx_rate_per_s, 1),
        "burst": _count("KEEP_NGINX_BURST", settings.nginx_burst, 0),
        "upstream_socket": _path("KEEP_LISTEN_SOCKET", upstream_socket),
        "api_listen": _listen(_api_address(settings.wg_subnet), 443),
        "tls_server_name": _dns_name("KEEP_TLS_SERVER_NAME", settings.tls_server_name),
        "management_listen": _listen(
            _address("KEEP_MANAGEMENT_ADDRESS", settings.management_address),
            _port("KEEP_MANAGEMENT_PORT", settings.management_port),
        ),
        "management_server_names": [
            _host("KEEP_CONTROL_ALLOWED_HOSTS", name) for name in settings.control_allowed_hosts
        ],
        "admin_static_dir": _path("Django's admin static directory", _admin_static()),
        "control_socket": _path("KEEP_CONTROL_SOCKET", settings.control_socket),
        "metrics_socket": None
        if settings.metrics_socket is None
        else _path("KEEP_METRICS_SOCKET", settings.metrics_socket),
        "management_networks": [
            _network("KEEP_MANAGEMENT_NETWORKS", net) for net in settings.management_networks
        ],
    }


@functools.cache
def template() -> jinja2.Template:
    """nginx/keep.conf.j2, from the installed package (a wheel or an editable install). A
    variable it names that the values lack stops the rendering (StrictUndefined)."""
    source = importlib.resources.files("nginx").joinpath(TEMPLATE).read_text(encoding="utf-8")
    # No escaping: the output is NGINX's config, not HTML. The values are checked instead.
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701
        keep_trailing_newline=True,
    )
    return env.from_string(source)


def render(settings: PerimeterSettings, upstream_socket: Path) -> str:
    return template().render(template_values(settings, upstream_socket))


def allowlist_path(settings: PerimeterSettings) -> Path:
    """In control's state directory: control rewrites it without any right on NGINX's own
    config (a systemd path unit reloads NGINX when it changes)."""
    return settings.state_dir / ALLOWLIST


def render_allowlist(addresses: Iterable[str]) -> str:
    lines = sorted(f"{_unscoped(a)} 1;" for a in addresses)
    return "# Active peers' tunnel addresses, rendered from control's database.\n" + "".join(
        f"{line}\n" for line in lines
    )


def allowlist(settings: PerimeterSettings) -> set[str]:
    """The addresses in the installed allowlist."""
    path = allowlist_path(settings)
    if not path.exists():
        return set()
    return {
        line.split()[0]
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }


def write(
    settings: PerimeterSettings, upstream_socket: Path, ca_dir: Path, out: Path | None = None
) -> Path:
    """Write the config, an empty allowlist if there is none, and a server certificate from
    the appliance CA if there is none. Returns the config's path. With `out`, the files go
    there (a staging directory) but still name their final places under KEEP_NGINX_DIR.
    A setting NGINX's config cannot take is refused before anything is written."""
    text = render(settings, upstream_socket)
    conf_dir = out or settings.nginx_dir
    conf_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    settings.nginx_runtime_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    if not (conf_dir / KEY).exists():
        # One certificate for the API's name and the console's names and address.
        chain, key = issue_server_cert(
            ca_dir,
            settings.tls_server_name,
            (ipam.server_address(settings.wg_subnet), settings.management_address),
            settings.control_allowed_hosts,
        )
        create_secret(conf_dir / KEY, key)
        replace(conf_dir / CERT, chain, mode=0o644)
    if not allowlist_path(settings).exists():
        settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        replace(allowlist_path(settings), render_allowlist(()).encode(), mode=0o644)
    conf = conf_dir / CONF
    replace(conf, text.encode(), mode=0o644)
    return conf


def check(conf: Path) -> None:
    """`nginx -t` on the config; raises with NGINX's message if it is refused."""
    result = subprocess.run(
        ["nginx", "-t", "-q", "-e", "stderr", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"nginx -t refused {conf}: {result.stderr.strip()}")


def install_allowlist(settings: PerimeterSettings, addresses: Iterable[str]) -> bool:
    """Replace the allowlist and reload NGINX if it changed. Returns whether it changed."""
    text = render_allowlist(addresses).encode()
    changed = replace_if_changed(allowlist_path(settings), text, mode=0o644)
    if changed:
        reload(settings)
    return changed


def running_pid(settings: PerimeterSettings) -> int | None:
    path = settings.nginx_runtime_dir / PID
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):  # no NGINX, or a pid file this user may not read
        return None
    try:
        os.kill(pid, 0)
    except PermissionError:
        return pid  # alive, and not ours to signal
    except OSError:
        return None
    return pid


def reload(settings: PerimeterSettings) -> None:
    """SIGHUP: the master rereads the config; old workers finish their streams first. A
    caller without the right to signal NGINX (control, as its own user) leaves the reload to
    the systemd path unit that watches the allowlist."""
    pid = running_pid(settings)
    if pid is not None:
        with contextlib.suppress(PermissionError):
            os.kill(pid, signal.SIGHUP)
