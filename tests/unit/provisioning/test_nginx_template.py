"""NGINX's config comes from nginx/keep.conf.j2, shipped in the package, rendered with
StrictUndefined from values provisioning checked first: no setting can add a directive.

The settings are bent with `model_copy(update=...)`, which skips their own validation, so
that each check here is provisioning's, whatever the settings type lets through."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import jinja2
import jinja2.meta
import pytest

from keep.settings import Settings
from provisioning import nginx
from tests.unit.provisioning.test_renderers import perimeter_settings

UPLOAD_LOCATION = "location ~ ^/v1/sessions/[^/]+/documents$ {"


def bent(tmp_path: Path, **update: object) -> Settings:
    return perimeter_settings(tmp_path).model_copy(update=update)


def test_the_template_ships_in_the_nginx_package() -> None:
    source = importlib.resources.files("nginx").joinpath(nginx.TEMPLATE)
    assert source.is_file()
    # The upload route's expression is written in the template itself.
    assert UPLOAD_LOCATION.removesuffix(" {").removeprefix("location ") in source.read_text()


def test_the_template_reads_exactly_the_values_it_is_given(tmp_path: Path) -> None:
    source = importlib.resources.files("nginx").joinpath(nginx.TEMPLATE).read_text()
    read = jinja2.meta.find_undeclared_variables(nginx.template().environment.parse(source))
    assert read == set(nginx.template_values(perimeter_settings(tmp_path), tmp_path / "s"))


def test_a_missing_value_stops_the_rendering(tmp_path: Path) -> None:
    every_branch = perimeter_settings(
        tmp_path, metrics_socket=tmp_path / "m.sock", management_networks=("203.0.113.0/24",)
    )
    values = nginx.template_values(every_branch, tmp_path / "s")
    for name in values:
        with pytest.raises(jinja2.UndefinedError, match=name):
            nginx.template().render({k: v for k, v in values.items() if k != name})


def test_the_upload_route_alone_takes_the_upload_limit(tmp_path: Path) -> None:
    settings = perimeter_settings(tmp_path, max_body_bytes=2 << 20, rag_max_upload_bytes=8 << 20)
    text = nginx.render(settings, tmp_path / "api.sock")
    upload = text[text.index(UPLOAD_LOCATION) :]
    assert upload.splitlines()[1].strip() == f"client_max_body_size {8 << 20};"
    assert text.count("location ~") == 1


def test_the_appliance_metrics_are_proxied_to_the_management_networks_alone(
    tmp_path: Path,
) -> None:
    assert "/metrics" not in nginx.render(perimeter_settings(tmp_path), tmp_path / "s")
    settings = perimeter_settings(
        tmp_path,
        metrics_socket=tmp_path / "api" / "metrics.sock",
        management_networks=("203.0.113.0/24", "2001:db8::/64"),
    )
    text = nginx.render(settings, tmp_path / "s")
    block = text[text.index("location = /metrics/appliance {") :].split("}")[0]
    assert [line.strip() for line in block.splitlines()[1:] if line.strip()] == [
        "allow 203.0.113.0/24;",
        "allow 2001:db8::/64;",
        "deny all;",
        f"proxy_pass http://unix:{tmp_path / 'api' / 'metrics.sock'}:/metrics;",
    ]
    management = text[text.index(f"listen {settings.management_address}") :]
    assert "location = /metrics/appliance" in management  # on the management listener only
    api = text[: text.index(f"listen {settings.management_address}")]
    assert "/metrics" not in api


# One line each: a setting, a value that would end its directive and open another (or is
# not what the directive takes), and the name the refusal must give.
HOSTS = "KEEP_CONTROL_ALLOWED_HOSTS"
INJECTIONS = [
    ("nginx_user", "www-data; daemon off", "KEEP_NGINX_USER"),
    ("nginx_user", "www-data\ndaemon off", "KEEP_NGINX_USER"),
    ("nginx_user", "www-data root", "KEEP_NGINX_USER"),
    ("nginx_user", "$user", "KEEP_NGINX_USER"),
    ("control_allowed_hosts", ("a.example;\n include /etc/passwd",), HOSTS),
    ("control_allowed_hosts", ("ok.example", "b.example; return 200"), HOSTS),
    ("control_allowed_hosts", ("a.example b.example",), HOSTS),
    ("control_allowed_hosts", ("a.example}",), HOSTS),
    ("control_allowed_hosts", ("~^(?<x>.+)$",), HOSTS),
    ("control_allowed_hosts", ("[203.0.113.1]",), HOSTS),
    ("control_allowed_hosts", ("fe80::1%eth0;\n include evil.conf",), HOSTS),
    ("tls_server_name", "keep.internal;\n include /etc/passwd", "KEEP_TLS_SERVER_NAME"),
    ("tls_server_name", "keep.internal\n", "KEEP_TLS_SERVER_NAME"),
    ("tls_server_name", "*.keep.internal", "KEEP_TLS_SERVER_NAME"),
    ("nginx_dir", Path("/etc/keep/nginx;"), "KEEP_NGINX_DIR"),
    ("nginx_dir", Path("/etc/keep/nginx\ninclude /etc/passwd"), "KEEP_NGINX_DIR"),
    ("nginx_dir", Path("/etc/keep/my nginx"), "KEEP_NGINX_DIR"),
    ("nginx_runtime_dir", Path("/run/keep-nginx/$uri"), "KEEP_NGINX_RUNTIME_DIR"),
    ("nginx_runtime_dir", Path("/run/keep-nginx'"), "KEEP_NGINX_RUNTIME_DIR"),
    ("nginx_runtime_dir", Path("/run/keep-{nginx}"), "KEEP_NGINX_RUNTIME_DIR"),
    ("nginx_runtime_dir", Path("run/keep-nginx"), "KEEP_NGINX_RUNTIME_DIR"),
    ("state_dir", Path('/var/lib/keep"'), "KEEP_STATE_DIR"),
    ("state_dir", Path("/var/lib/keep#"), "KEEP_STATE_DIR"),
    ("control_socket", Path("/run/keep-control/control.sock; include /x"), "KEEP_CONTROL_SOCKET"),
    ("control_socket", Path("/run/keep:control.sock"), "KEEP_CONTROL_SOCKET"),
    ("metrics_socket", Path("/run/keep/m.sock; include /x"), "KEEP_METRICS_SOCKET"),
    ("management_networks", ("203.0.113.0/24; allow all",), "KEEP_MANAGEMENT_NETWORKS"),
    ("management_address", "127.0.0.1; include /etc/passwd", "KEEP_MANAGEMENT_ADDRESS"),
    ("management_address", "fe80::1%eth0;\n include evil.conf", "KEEP_MANAGEMENT_ADDRESS"),
    ("management_port", "8443; include /etc/passwd", "KEEP_MANAGEMENT_PORT"),
    ("management_port", 70000, "KEEP_MANAGEMENT_PORT"),
    ("wg_subnet", "10.66.0.0/24; include /etc/passwd", "KEEP_WG_SUBNET"),
    ("max_body_bytes", "1m; include /etc/passwd", "KEEP_MAX_BODY_BYTES"),
    ("max_body_bytes", 0, "KEEP_MAX_BODY_BYTES"),
    ("rag_max_upload_bytes", "8m;", "KEEP_RAG_MAX_UPLOAD_BYTES"),
    ("nginx_rate_per_s", "20r/s; include /etc/passwd", "KEEP_NGINX_RATE_PER_S"),
    ("nginx_rate_per_s", True, "KEEP_NGINX_RATE_PER_S"),
    ("nginx_burst", -1, "KEEP_NGINX_BURST"),
    ("request_deadline_s", "120s; include /etc/passwd", "KEEP_REQUEST_DEADLINE_S"),
    ("request_deadline_s", float("inf"), "KEEP_REQUEST_DEADLINE_S"),
    ("tls_allow_v12", "TLSv1.2; include /etc/passwd", "KEEP_TLS_ALLOW_V12"),
]


@pytest.mark.parametrize(("name", "value", "setting"), INJECTIONS)
def test_a_value_that_could_open_a_directive_is_refused_by_name(
    tmp_path: Path, name: str, value: object, setting: str
) -> None:
    with pytest.raises(ValueError, match=f"^{setting}: .*cannot go into NGINX's config"):
        nginx.render(bent(tmp_path, **{name: value}), tmp_path / "api.sock")


def test_an_upstream_socket_that_could_open_a_directive_is_refused(tmp_path: Path) -> None:
    settings = perimeter_settings(tmp_path)
    for socket in ("/run/keep-api/api.sock; include /etc/passwd", "/run/keep-api/a\n.sock"):
        with pytest.raises(ValueError, match=r"^KEEP_LISTEN_SOCKET: "):
            nginx.render(settings, Path(socket))


def test_nothing_is_written_for_a_refused_value(tmp_path: Path) -> None:
    settings = bent(tmp_path, nginx_user="www-data; daemon off")
    with pytest.raises(ValueError, match="KEEP_NGINX_USER"):
        nginx.write(settings, tmp_path / "api.sock", tmp_path / "ca")
    assert not settings.nginx_dir.exists()
    assert not (tmp_path / "ca").exists()


def test_the_names_the_console_may_answer_to_go_through(tmp_path: Path) -> None:
    names = ("localhost", "keep-1.example.internal", ".example.org", "*.example.org")
    hosts = (*names, "203.0.113.10", "2001:db8::10", "[2001:db8::10]")
    text = nginx.render(bent(tmp_path, control_allowed_hosts=hosts), tmp_path / "api.sock")
    assert f"server_name {' '.join(hosts)};" in text


def test_an_allowlist_address_with_a_scope_is_refused() -> None:
    with pytest.raises(ValueError, match="IPv6 scope"):
        nginx.render_allowlist(["fe80::1%eth0;\n} include evil.conf; geo $x {"])


def test_no_user_directive_without_a_user(tmp_path: Path) -> None:
    for unset in (None, ""):
        text = nginx.render(bent(tmp_path, nginx_user=unset), tmp_path / "api.sock")
        assert "\nuser " not in text
    text = nginx.render(perimeter_settings(tmp_path), tmp_path / "api.sock")
    assert "\nuser www-data;\n" in text
