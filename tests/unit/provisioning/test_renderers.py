"""The rendered firewall and NGINX config say what the perimeter promises; NGINX's own
checker accepts the config (the nft checker runs in the lab's namespace, tests/e2e)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from keep.settings import Settings, SettingsError, load_settings
from provisioning import nftables, nginx
from provisioning.wireguard import DeviceState, PeerSpec, PeerState, diff


def perimeter_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "state_dir": tmp_path / "state",
        "wg_interface": "keep0",
        "wg_subnet": "198.51.100.0/24",
        "listen_socket": tmp_path / "api.sock",
        "nginx_dir": tmp_path / "nginx",
        "nginx_runtime_dir": tmp_path / "run",
        **overrides,
    }
    return load_settings(**values)


def test_ruleset_drops_by_default_and_opens_only_what_is_named(tmp_path: Path) -> None:
    text = nftables.render(perimeter_settings(tmp_path))
    assert "type filter hook input priority filter; policy drop;" in text
    assert "type filter hook forward priority filter; policy drop;" in text
    accepts = [line.strip() for line in text.splitlines() if line.strip().endswith("accept")]
    assert accepts == [
        'iifname "lo" accept',
        "ct state established,related accept",
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert }"
        " ip6 hoplimit 255 accept",
        'iifname "eth0" udp dport 51820 accept',
        'iifname "keep0" ip saddr 198.51.100.0/24 ip daddr 198.51.100.1 tcp dport 443 accept',
    ]
    # One transaction that replaces only Keep's own table.
    head = text.splitlines()[1:4]
    assert head == ["table inet keep", "delete table inet keep", "table inet keep {"]
    assert "flush ruleset" not in text


def test_management_ports_open_only_to_the_management_networks(tmp_path: Path) -> None:
    text = nftables.render(
        perimeter_settings(
            tmp_path, management_networks=("203.0.113.0/24", "2001:db8::/64"), ssh_port=2222
        )
    )
    assert 'iifname "eth0" ip saddr 203.0.113.0/24 tcp dport 2222 accept' in text
    assert 'iifname "eth0" ip saddr 203.0.113.0/24 tcp dport 8443 accept' in text
    assert 'iifname "eth0" ip6 saddr 2001:db8::/64 tcp dport 8443 accept' in text
    assert not re.search(r"tcp dport (2222|8443) accept", text.replace("saddr", "").split("\n")[0])


def test_an_ipv6_tunnel_renders_ip6_matches(tmp_path: Path) -> None:
    text = nftables.render(perimeter_settings(tmp_path, wg_subnet="2001:db8:66::/64"))
    assert "ip6 saddr 2001:db8:66::/64 ip6 daddr 2001:db8:66::1 tcp dport 443 accept" in text


def test_no_perimeter_without_an_interface(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="KEEP_WG_INTERFACE"):
        nftables.render(perimeter_settings(tmp_path, wg_interface=None))


def test_bad_perimeter_settings_are_refused(tmp_path: Path) -> None:
    for bad in (
        {"management_networks": ("203.0.113.7/24",)},  # host bits set
        {"wg_interface": "a name with spaces"},
        {"listen_socket": tmp_path / ("x" * 120)},
        {"management_address": "not-an-address"},
    ):
        with pytest.raises(SettingsError):
            perimeter_settings(tmp_path, **bad)


def server_block(text: str) -> str:
    return text[text.index("server_name") :]


def test_nginx_config_keeps_its_promises(tmp_path: Path) -> None:
    settings = perimeter_settings(tmp_path, max_body_bytes=2 << 20, rag_max_upload_bytes=8 << 20)
    text = nginx.render(settings, tmp_path / "api.sock")
    # The API on the tunnel address only; the console on the management address only.
    assert re.findall(r"listen (\S+)", text) == [
        "198.51.100.1:443",
        "198.51.100.1:443",
        "127.0.0.1:8443",
    ]
    console = text[text.index("127.0.0.1:8443") :]
    assert f"proxy_pass http://unix:{settings.control_socket}:;" in console
    assert "/contrib/admin/static/admin/;" in console
    assert "ssl_protocols TLSv1.3;" in text
    assert "ssl_reject_handshake on;" in text
    default = text[text.index("default_server") : text.index("server_name")]
    assert "return 444;" in default
    assert "server_tokens off;" in text
    assert "if ($keep_peer = 0) {\n            return 444;" in text
    assert "error_page 401 403 = @silence;" in text
    assert "location @silence {\n            return 444;" in text
    assert "limit_req_status 429;" in text
    assert "proxy_max_temp_file_size 0;" in text
    assert "proxy_buffering off;" in text
    # Every body limit has a buffer as large: a body never goes to a temp file.
    limits = re.findall(r"client_max_body_size (\d+);\s+client_body_buffer_size (\d+);", text)
    assert sorted(limits) == sorted([(str(2 << 20),) * 2, (str(2 << 20),) * 2, (str(8 << 20),) * 2])
    for name in nginx.TEMP_DIRS:
        assert f"{name}_temp_path {settings.nginx_runtime_dir}/{name};" in text
    assert "'$time_iso8601 $remote_addr $status $body_bytes_sent $request_time'" in text
    assert "$request " not in text
    assert "$request_uri" not in text
    assert "$args" not in text
    assert "proxy_set_header X-Keep-Peer $remote_addr;" in server_block(text)


def test_tls12_only_when_asked(tmp_path: Path) -> None:
    text = nginx.render(perimeter_settings(tmp_path, tls_allow_v12=True), tmp_path / "s")
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text


def test_nginx_check_refuses_a_broken_config(tmp_path: Path) -> None:
    """`nginx -t` on the rendered config passes in the lab, where the tunnel address exists
    (tests/e2e); here it must refuse a broken one, with NGINX's reason."""
    settings = perimeter_settings(tmp_path)
    conf = nginx.write(settings, tmp_path / "api.sock", tmp_path / "ca")
    assert oct((settings.nginx_dir / nginx.KEY).stat().st_mode & 0o777) == "0o600"
    broken = conf.read_text().replace("ssl_reject_handshake on;", "ssl_reject_handshake maybe;")
    conf.write_text(broken)
    with pytest.raises(RuntimeError, match="ssl_reject_handshake"):
        nginx.check(conf)


def test_allowlist_round_trip_and_reload_only_on_change(tmp_path: Path) -> None:
    settings = perimeter_settings(tmp_path)
    nginx.write(settings, tmp_path / "api.sock", tmp_path / "ca")
    assert nginx.allowlist(settings) == set()
    assert nginx.install_allowlist(settings, ["198.51.100.3", "198.51.100.2"]) is True
    assert nginx.allowlist(settings) == {"198.51.100.2", "198.51.100.3"}
    assert nginx.install_allowlist(settings, ["198.51.100.2", "198.51.100.3"]) is False
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        nginx.render_allowlist(["198.51.100.2; include /etc/passwd"])


KEY_A = "A" * 43 + "="
KEY_B = "B" * 43 + "="
KEY_C = "C" * 43 + "="


def test_peer_diff_touches_only_what_changed() -> None:
    current = DeviceState(
        peers={
            KEY_A: PeerState(KEY_A, ("198.51.100.2/32",)),
            KEY_B: PeerState(KEY_B, ("198.51.100.3/32",)),
        }
    )
    add, remove = diff(
        current,
        [
            PeerSpec(KEY_A, ("198.51.100.2/32",)),  # unchanged: left alone
            PeerSpec(KEY_C, ("198.51.100.4/32",)),  # new
        ],
    )
    assert [p.public_key for p in add] == [KEY_C]
    assert remove == [KEY_B]
    moved, _ = diff(current, [PeerSpec(KEY_A, ("198.51.100.9/32",))])
    assert [p.allowed_ips for p in moved] == [("198.51.100.9/32",)]


def test_a_pid_file_this_user_may_not_read_means_no_reload_here(tmp_path: Path) -> None:
    """Control runs as its own user: NGINX's pid file may be closed to it. Found by the boot
    test (UnboundLocalError): the reload is then the path unit's, not an error."""
    if os.geteuid() != 0:
        pytest.fail("this test drops root to read the pid file as another user")
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    (run / nginx.PID).write_text(f"{os.getpid()}\n")
    (run / nginx.PID).chmod(0o600)  # root's, as NGINX's master writes it
    tmp_path.chmod(0o755)
    settings = load_settings(nginx_runtime_dir=run).perimeter
    assert nginx.running_pid(settings) == os.getpid()
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child becomes nobody and reports what it found
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(writer, repr(nginx.running_pid(settings)).encode())
        except BaseException as exc:  # noqa: BLE001 - a forked child reports, never unwinds
            os.write(writer, type(exc).__name__.encode())
        finally:
            os._exit(0)
    os.close(writer)
    found = os.read(reader, 200).decode()
    os.close(reader)
    os.waitpid(child, 0)
    assert found == "None"
