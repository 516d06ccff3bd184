"""NGINX in front of the appliance, rendered from the settings.

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
import importlib.util
import os
import signal
import subprocess
from collections.abc import Iterable
from ipaddress import ip_address
from pathlib import Path

from keep.durable import create_secret, replace, replace_if_changed
from keep.routes import DOCUMENTS_PATH
from keep.settings import Settings
from provisioning import ipam
from provisioning.ca import issue_server_cert

CONF = "nginx.conf"
ALLOWLIST = "nginx-peers.conf"
CERT = "server.crt"
KEY = "server.key"
PID = "nginx.pid"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


# The appliance's document upload route, which alone takes bodies up to the upload limit.
DOCUMENTS_LOCATION = f"~ ^{DOCUMENTS_PATH}$"


def _proxy_location(match: str, limit: int, deadline: int) -> str:
    """A location proxied to the appliance whose whole body, up to `limit`, is buffered in
    memory: NGINX answers 413 past it, so the appliance never has to cut a body short."""
    return f"""        location {match} {{
            client_max_body_size {limit};
            client_body_buffer_size {limit};
            proxy_pass http://keep_appliance;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Keep-Peer $remote_addr;
            proxy_set_header X-Forwarded-For "";
            proxy_read_timeout {deadline}s;
            proxy_send_timeout {deadline}s;
            proxy_intercept_errors on;
            error_page 401 403 = @silence;
        }}
"""


def _listen(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ip_address(address).version == 6 else f"{address}:{port}"


def _admin_static() -> str:
    """The Django admin's own static files, served by NGINX (found without importing Django)."""
    spec = importlib.util.find_spec("django")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("Django is not installed: the console's static files are missing")
    return f"{spec.submodule_search_locations[0]}/contrib/admin/static/admin/"


def _management_server(settings: Settings, run: Path) -> str:
    """The console, on the management address only (the firewall admits the management
    networks only), TLS from the appliance CA, proxied to keep-control's unix socket."""
    names = " ".join(settings.control_allowed_hosts)
    listen = _listen(settings.management_address, settings.management_port)
    return f"""    server {{
        listen {listen} ssl http2;
        server_name {names};
        access_log {run}/management.log keep_content_free;
        client_max_body_size 1m;
        add_header Strict-Transport-Security "max-age=63072000" always;
        add_header X-Content-Type-Options nosniff always;
        add_header X-Frame-Options DENY always;
        add_header Referrer-Policy same-origin always;

        location /static/admin/ {{
            alias {_admin_static()};
        }}
        location / {{
            proxy_pass http://unix:{settings.control_socket}:;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
"""


def render(settings: Settings, upstream_socket: Path) -> str:
    address = ipam.server_address(settings.wg_subnet)
    listen = _listen(address, 443)
    conf_dir = settings.nginx_dir
    run = settings.nginx_runtime_dir
    protocols = "TLSv1.2 TLSv1.3" if settings.tls_allow_v12 else "TLSv1.3"
    user = f"user {settings.nginx_user};\n" if settings.nginx_user else ""
    deadline = int(settings.request_deadline_s) + 5
    temp = "\n".join(f"    {name}_temp_path {run}/{name};" for name in TEMP_DIRS)
    return f"""# Rendered by Keep's provisioning from the settings; edits are overwritten.
{user}worker_processes auto;
pid {run}/{PID};
error_log {run}/error.log crit;
worker_shutdown_timeout {deadline}s;

events {{
    worker_connections 1024;
}}

http {{
    server_tokens off;
    access_log off;
    log_format keep_content_free
        '$time_iso8601 $remote_addr $status $body_bytes_sent $request_time';
{temp}

    ssl_protocols {protocols};
    ssl_prefer_server_ciphers off;
    ssl_session_tickets off;
    ssl_certificate {conf_dir}/{CERT};
    ssl_certificate_key {conf_dir}/{KEY};

    client_max_body_size {settings.max_body_bytes};
    client_body_buffer_size {settings.max_body_bytes};
    client_body_in_single_buffer on;
    client_header_timeout 10s;
    client_body_timeout 30s;
    keepalive_timeout 30s;
    proxy_request_buffering on;
    proxy_buffering off;
    proxy_max_temp_file_size 0;

    geo $keep_peer {{
        default 0;
        include {allowlist_path(settings)};
    }}
    limit_req_zone $binary_remote_addr zone=keep_peers:10m rate={settings.nginx_rate_per_s}r/s;
    limit_req_status 429;

    upstream keep_appliance {{
        server unix:{upstream_socket};
        keepalive 16;
    }}

    # Anything that does not name the appliance: no handshake, no bytes.
    server {{
        listen {listen} ssl http2 default_server;
        ssl_reject_handshake on;
        return 444;
    }}

    server {{
        listen {listen} ssl http2;
        server_name {settings.tls_server_name};
        access_log {run}/access.log keep_content_free;

        if ($keep_peer = 0) {{
            return 444;
        }}
        limit_req zone=keep_peers burst={settings.nginx_burst} nodelay;

        add_header Strict-Transport-Security "max-age=63072000" always;
        add_header X-Content-Type-Options nosniff always;
        add_header X-Frame-Options DENY always;
        add_header Referrer-Policy no-referrer always;

{_proxy_location("/", settings.max_body_bytes, deadline)}
{_proxy_location(DOCUMENTS_LOCATION, settings.rag_max_upload_bytes, deadline)}
        location @silence {{
            return 444;
        }}
    }}

{_management_server(settings, run)}}}
"""


def allowlist_path(settings: Settings) -> Path:
    """In control's state directory: control rewrites it without any right on NGINX's own
    config (a systemd path unit reloads NGINX when it changes)."""
    return settings.state_dir / ALLOWLIST


def render_allowlist(addresses: Iterable[str]) -> str:
    lines = sorted(f"{ip_address(a)} 1;" for a in addresses)
    return "# Active peers' tunnel addresses, rendered from control's database.\n" + "".join(
        f"{line}\n" for line in lines
    )


def allowlist(settings: Settings) -> set[str]:
    """The addresses in the installed allowlist."""
    path = allowlist_path(settings)
    if not path.exists():
        return set()
    return {
        line.split()[0]
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }


def write(settings: Settings, upstream_socket: Path, ca_dir: Path, out: Path | None = None) -> Path:
    """Write the config, an empty allowlist if there is none, and a server certificate from
    the appliance CA if there is none. Returns the config's path. With `out`, the files go
    there (a staging directory) but still name their final places under KEEP_NGINX_DIR."""
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
    replace(conf, render(settings, upstream_socket).encode(), mode=0o644)
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


def install_allowlist(settings: Settings, addresses: Iterable[str]) -> bool:
    """Replace the allowlist and reload NGINX if it changed. Returns whether it changed."""
    text = render_allowlist(addresses).encode()
    changed = replace_if_changed(allowlist_path(settings), text, mode=0o644)
    if changed:
        reload(settings)
    return changed


def running_pid(settings: Settings) -> int | None:
    path = settings.nginx_runtime_dir / PID
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except PermissionError:
        return pid  # alive, and not ours to signal
    except (OSError, ValueError):
        return None
    return pid


def reload(settings: Settings) -> None:
    """SIGHUP: the master rereads the config; old workers finish their streams first. A
    caller without the right to signal NGINX (control, as its own user) leaves the reload to
    the systemd path unit that watches the allowlist."""
    pid = running_pid(settings)
    if pid is not None:
        with contextlib.suppress(PermissionError):
            os.kill(pid, signal.SIGHUP)
