"""The perimeter, tested as attackers see it: from other hosts, on the wire.

Every negative result carries its control: the same probe gets an answer where one exists
(a closed loopback port answers the scan, the right key gets 200, the tunnel's own address
connects), so silence is measured, not assumed.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab.keephost import SERVER_NAME
from provisioning import keys, nginx
from tests.e2e.conftest import PY, Lab, Member

BASE = f"https://{SERVER_NAME}"
QUESTION = "What is the capital of France?"


def wg_peers(lab: Lab) -> set[str]:
    out = lab.net.check("host", ["wg", "show", lab.keep.wg_interface, "peers"])
    return set(out.split())


def db_active_keys() -> set[str]:
    from control.console.models import Peer

    return set(Peer.objects.active().exclude(public_key="").values_list("public_key", flat=True))


def direct(lab: Lab, key: str, peer_address: str, body: dict[str, Any]) -> httpx.Response:
    """The appliance straight on its unix socket, past NGINX, as NGINX would call it."""
    transport = httpx.HTTPTransport(uds=str(lab.keep.values["listen_socket"]))
    with httpx.Client(transport=transport, base_url="http://keep", timeout=120) as c:
        return c.post(
            "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}", "X-Keep-Peer": peer_address},
        )


# The client ------------------------------------------------------------------------------


def test_client_chats_over_wireguard_and_tls_streaming_included(lab: Lab) -> None:
    me = lab.members["client"]
    args = ["chat", "--base", BASE, "--key", me.api_key, "--ca", str(lab.keep.ca)]
    args += ["--question", QUESTION, "--max-tokens", "24"]
    plain = lab.probe("client", *args)
    streamed = lab.probe("client", *args, "--stream")
    assert plain["status"] == 200
    answer = plain["body"]["choices"][0]["message"]["content"]
    assert "Paris" in answer
    # Intact: the stream through WireGuard, TLS and NGINX is the appliance's own answer.
    assert streamed["answer"] == answer
    body = {
        "model": "smollm2-135m-instruct",
        "temperature": 0,
        "max_tokens": 24,
        "messages": [
            {"role": "system", "content": "Answer in one short English sentence."},
            {"role": "user", "content": QUESTION},
        ],
    }
    assert (
        direct(lab, me.api_key, me.address, body).json()["choices"][0]["message"]["content"]
        == answer
    )


def test_security_headers_and_no_server_version(lab: Lab) -> None:
    me = lab.members["client"]
    result = lab.curl(
        "client",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        f"Authorization: Bearer {me.api_key}",
        f"{BASE}/v1/models",
    )
    headers = result.stdout.lower()
    assert headers.startswith("http/2 200") or headers.startswith("http/1.1 200"), headers
    for expected in (
        "strict-transport-security: max-age=63072000",
        "x-content-type-options: nosniff",
        "x-frame-options: deny",
        "referrer-policy: no-referrer",
    ):
        assert expected in headers
    assert "server: nginx/" not in headers


# The stranger ----------------------------------------------------------------------------


def test_stranger_gets_neither_syn_ack_nor_rst_on_any_port(lab: Lab) -> None:
    result = lab.probe("stranger", "scan", lab.net.address("host"), timeout=600)
    assert result["control_answered"] == [1]  # the scanner does see a RST when there is one
    assert result["answered"] == []


def test_stranger_udp_probe_of_wireguard_gets_no_reply(lab: Lab) -> None:
    result = lab.probe("stranger", "udp", lab.net.address("host"), "51820")
    assert result["control_refused"] is True  # an ICMP error would have been seen
    assert result == {"replies": 0, "refused": False, "control_refused": True}
    closed = lab.probe("stranger", "udp", lab.net.address("host"), "53")
    assert closed["replies"] == 0
    assert closed["refused"] is False


# Wrong key, unknown name, wrong peer ------------------------------------------------------


def test_wrong_key_gets_zero_bytes_over_http1(lab: Lab) -> None:
    me = lab.members["client"]
    right = lab.raw("client", me.api_key)
    assert right["status"] == "200"
    assert right["bytes"] > 0
    wrong = lab.raw("client", "keep-" + "x" * 43)
    assert wrong == {"handshake": True, "bytes": 0, "status": None}
    missing = lab.raw("client", "")
    assert missing["bytes"] == 0


def test_wrong_key_gets_zero_bytes_over_http2(lab: Lab) -> None:
    me = lab.members["client"]
    args = ["--http2", "-D", "-", "-o", "-", f"{BASE}/v1/models"]
    right = lab.curl("client", "-H", f"Authorization: Bearer {me.api_key}", *args)
    assert right.returncode == 0
    assert right.stdout.startswith("HTTP/2 200")
    wrong = lab.curl("client", "-H", "Authorization: Bearer keep-" + "y" * 43, *args)
    assert wrong.returncode != 0
    assert wrong.stdout == ""


def test_unknown_host_or_sni_gets_zero_bytes(lab: Lab) -> None:
    me = lab.members["client"]
    host = lab.raw("client", me.api_key, hostname="other.internal")
    assert host == {"handshake": True, "bytes": 0, "status": None}
    sni = lab.raw("client", me.api_key, sni="other.internal", hostname="other.internal")
    assert sni["handshake"] is False
    assert sni["bytes"] == 0
    by_address = lab.raw("client", me.api_key, sni=lab.keep.address, hostname=lab.keep.address)
    assert by_address["bytes"] == 0


def test_a_key_works_only_from_its_own_peer(lab: Lab) -> None:
    stolen = lab.members["client"].api_key
    assert lab.raw("revoked", lab.members["revoked"].api_key)["status"] == "200"
    assert lab.raw("revoked", stolen) == {"handshake": True, "bytes": 0, "status": None}
    # Claiming the owner's address in NGINX's own header changes nothing: NGINX sets it.
    forged = lab.curl(
        "revoked",
        "-H",
        f"Authorization: Bearer {stolen}",
        "-H",
        f"X-Keep-Peer: {lab.members['client'].address}",
        "-D",
        "-",
        f"{BASE}/v1/models",
    )
    assert forged.returncode != 0
    assert forged.stdout == ""


def test_handshakes_are_recorded_in_control(lab: Lab, unblocked: None) -> None:
    from control.console.models import Peer
    from control.console.perimeter import record_handshakes

    assert lab.raw("client", lab.members["client"].api_key)["status"] == "200"
    record_handshakes()
    peer = Peer.objects.get(pk=lab.members["client"].peer_pk)
    assert peer.last_handshake is not None
    assert abs(time.time() - peer.last_handshake.timestamp()) < 300


# Limits -----------------------------------------------------------------------------------


def test_rate_limit_per_peer_answers_429(lab: Lab) -> None:
    me = lab.members["client"]
    settings = lab.keep.settings()
    total = settings.nginx_burst + 3 * settings.nginx_rate_per_s
    urls = [arg for _ in range(total) for arg in ("-o", "/dev/null", f"{BASE}/healthz")]
    result = lab.curl(
        "client", "-H", f"Authorization: Bearer {me.api_key}", "-w", "%{http_code}\n", *urls
    )
    codes = result.stdout.split()
    assert len(codes) == total
    assert "200" in codes
    assert "429" in codes
    time.sleep(settings.nginx_burst / settings.nginx_rate_per_s + 1)  # let the bucket drain


class Inotify:
    """File creations in a set of directories (Linux inotify, through libc)."""

    IN_CREATE, IN_MOVED_TO = 0x100, 0x80

    def __init__(self, directories: list[Path]) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        assert self.fd >= 0
        for d in directories:
            assert (
                self.libc.inotify_add_watch(
                    self.fd, str(d).encode(), self.IN_CREATE | self.IN_MOVED_TO
                )
                >= 0
            )

    def events(self) -> int:
        count = 0
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return count
            count += len(data) // 16 if data else 0  # header 16 bytes; names pad more

    def close(self) -> None:
        os.close(self.fd)


def _post(lab: Lab, path: Path, url: str, *headers: str) -> str:
    me = lab.members["client"]
    result = lab.curl(
        "client",
        "-H",
        f"Authorization: Bearer {me.api_key}",
        *headers,
        "--data-binary",
        f"@{path}",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
    )
    path.unlink()
    return str(result.stdout)


def test_bodies_near_the_limits_never_touch_disk(lab: Lab) -> None:
    settings = lab.keep.settings()
    temp_dirs = [settings.nginx_runtime_dir / name for name in nginx.TEMP_DIRS]
    watch = Inotify(temp_dirs)
    canary = "CANARY-" + os.urandom(8).hex()
    try:
        (temp_dirs[0] / "control").write_bytes(b"")  # the watch sees a file created
        assert watch.events() >= 1
        (temp_dirs[0] / "control").unlink()
        watch.events()
        # Chat: a body 4 KiB under the general limit. The appliance reads it all and
        # answers (the prompt is far past the context): the whole body crossed NGINX.
        chat = lab.root / "chat.json"
        text = canary + " lorem" * ((settings.max_body_bytes - 4096) // 6)
        chat.write_text(
            json.dumps(
                {
                    "model": "smollm2-135m-instruct",
                    "max_tokens": 1,
                    "messages": [{"role": "user", "content": text}],
                }
            )
        )
        assert chat.stat().st_size > settings.max_body_bytes - 8192
        status = _post(
            lab, chat, f"{BASE}/v1/chat/completions", "-H", "Content-Type: application/json"
        )
        assert status == "400", status
        # A document upload 8 KiB under the upload limit; its document is past the
        # per-document limit, so the appliance reads it all and refuses it.
        session = json.loads(
            lab.curl(
                "client",
                "-X",
                "POST",
                "-H",
                f"Authorization: Bearer {lab.members['client'].api_key}",
                f"{BASE}/v1/sessions",
            ).stdout
        )["id"]
        upload = lab.root / "upload.json"
        doc = canary + "x" * (settings.rag_max_upload_bytes - 8192)
        upload.write_text(json.dumps({"documents": [{"name": "big.txt", "text": doc}]}))
        assert upload.stat().st_size > settings.rag_max_upload_bytes - 16384
        status = _post(
            lab,
            upload,
            f"{BASE}/v1/sessions/{session}/documents",
            "-H",
            "Content-Type: application/json",
        )
        assert status == "413", status
        assert watch.events() == 0
        # Past the limits NGINX itself answers 413, before anything reaches the appliance.
        over = lab.root / "over.bin"
        over.write_bytes(b"z" * (settings.max_body_bytes + 1))
        assert _post(lab, over, f"{BASE}/v1/embeddings") == "413"
        over.write_bytes(b"z" * (settings.rag_max_upload_bytes + 1))
        assert _post(lab, over, f"{BASE}/v1/sessions/{session}/documents") == "413"
        assert watch.events() == 0
    finally:
        watch.close()
    needle = canary.encode()
    for top in (lab.root, settings.nginx_runtime_dir):
        for path in top.rglob("*"):
            if path.is_file() and not path.is_socket():
                assert needle not in path.read_bytes(), path


def test_access_log_is_content_free(lab: Lab) -> None:
    me = lab.members["client"]
    marker = "QUERYCANARY" + os.urandom(4).hex()
    lab.curl(
        "client",
        "-H",
        f"Authorization: Bearer {me.api_key}",
        "-o",
        "/dev/null",
        f"{BASE}/v1/models?{marker}=1",
    )
    log = (lab.keep.settings().nginx_runtime_dir / "access.log").read_text()
    lines = log.strip().splitlines()
    assert lines
    for line in lines:
        fields = line.split()
        assert len(fields) == 5  # time, peer address, status, bytes, duration
        assert fields[1].startswith("198.51.100.")
    assert marker not in log
    assert "/v1/" not in log
    assert "Bearer" not in log


# Spoofing -------------------------------------------------------------------------------


def test_a_source_outside_the_peers_allowed_ips_is_not_delivered(lab: Lab) -> None:
    me = lab.members["client"]
    spoofed = "198.51.100.250"
    lab.net.check("client", ["ip", "addr", "add", f"{spoofed}/32", "dev", me.interface])
    try:
        own = lab.probe("client", "connect", "--source", me.address, "--target", lab.keep.address)
        assert own == {"connected": True}
        forged = lab.probe("client", "connect", "--source", spoofed, "--target", lab.keep.address)
        assert forged["connected"] is False
        assert forged["error"] == "TimeoutError"
    finally:
        lab.net.check("client", ["ip", "addr", "del", f"{spoofed}/32", "dev", me.interface])


# Preshared keys -------------------------------------------------------------------------


def _wg_show(lab: Lab, host: str, interface: str, what: str) -> dict[str, str]:
    out = lab.net.check(host, ["wg", "show", interface, what])
    return dict(line.split("\t", 1) for line in out.splitlines() if line)


def _key_file(lab: Lab, name: str, key: str) -> str:
    """A key in a 0600 file, where `wg set` reads keys from."""
    path = lab.root / name
    path.write_text(key + "\n")
    path.chmod(0o600)
    return str(path)


def _connect(me: Member, lab: Lab) -> dict[str, Any]:
    return lab.probe("client", "connect", "--source", me.address, "--target", lab.keep.address)


def _connects_again(me: Member, lab: Lab) -> None:
    """The tunnel carries a connection again, within WireGuard's handshake retries (5 s)."""
    deadline = time.monotonic() + 15
    while (again := _connect(me, lab))["connected"] is False:
        assert time.monotonic() < deadline, again
    assert again == {"connected": True}


def _set_server_peer(lab: Lab, interface: str, server: str, psk: str) -> None:
    """Replace the client's server peer, so that its next packet starts a new handshake."""
    endpoint = _wg_show(lab, "client", interface, "endpoints")[server]
    allowed = _wg_show(lab, "client", interface, "allowed-ips")[server].replace(" ", ",")
    path = _key_file(lab, "client-psk", psk)
    lab.net.check("client", ["wg", "set", interface, "peer", server, "remove"])
    peer = ["peer", server, "preshared-key", path, "endpoint", endpoint]
    peer += ["allowed-ips", allowed, "persistent-keepalive", "25"]
    lab.net.check("client", ["wg", "set", interface, *peer])


def test_the_tunnel_needs_the_preshared_key_from_the_bundle(lab: Lab) -> None:
    me = lab.members["client"]
    [(server, psk)] = _wg_show(lab, "client", me.interface, "preshared-keys").items()
    mine = lab.net.check("client", ["wg", "show", me.interface, "public-key"]).strip()
    assert psk != "(none)"
    assert _wg_show(lab, "host", lab.keep.wg_interface, "preshared-keys")[mine] == psk
    try:
        _set_server_peer(lab, me.interface, server, keys.generate_preshared())
        wrong = _connect(me, lab)  # the right private key, a wrong preshared key
        assert wrong == {"connected": False, "error": "TimeoutError"}
    finally:
        _set_server_peer(lab, me.interface, server, psk)
    _connects_again(me, lab)


def test_keep_doctor_reports_a_preshared_key_that_is_not_controls(
    lab: Lab, unblocked: None
) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from control.console.models import Peer
    from control.console.perimeter import sync

    peer = Peer.objects.get(pk=lab.members["client"].peer_pk)
    rogue = keys.generate_preshared()
    path = _key_file(lab, "rogue-psk", rogue)
    lab.net.check(
        "host",
        ["wg", "set", lab.keep.wg_interface, "peer", peer.public_key, "preshared-key", path],
    )
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 difference"):
        call_command("keep_doctor", stdout=out)
    assert f"peer {peer.public_key}'s preshared key is not control's" in out.getvalue()
    assert rogue not in out.getvalue()
    assert peer.preshared_key not in out.getvalue()
    assert sync()  # control puts its own key back
    call_command("keep_doctor", stdout=io.StringIO())
    host = _wg_show(lab, "host", lab.keep.wg_interface, "preshared-keys")
    assert host[peer.public_key] == peer.preshared_key


def test_rotating_the_clients_wireguard_key_in_the_console(lab: Lab, unblocked: None) -> None:
    from django.urls import reverse

    me = lab.members["client"]
    old = lab.net.check("client", ["wg", "show", me.interface, "public-key"]).strip()
    private = keys.generate_private()
    new = keys.public_of(private)
    change = reverse("keep:console_peer_change", args=[me.peer_pk])
    assert lab.console.post(change, {"public_key": new}).status_code == 302
    assert wg_peers(lab) == db_active_keys()
    assert new in wg_peers(lab)
    assert old not in wg_peers(lab)
    assert _connect(me, lab) == {"connected": False, "error": "TimeoutError"}
    path = _key_file(lab, "client-rotated.key", private)
    lab.net.check("client", ["wg", "set", me.interface, "private-key", path])
    _connects_again(me, lab)
    assert lab.raw("client", me.api_key)["status"] == "200"  # same address, same API key


# Rendering ------------------------------------------------------------------------------


def test_rendered_configs_pass_their_own_checkers(lab: Lab) -> None:
    live = Path(lab.keep.env["KEEP_NGINX_DIR"]) / nginx.CONF
    before = (live.read_bytes(), live.stat().st_mtime_ns)
    out = lab.net.check("host", [str(Path(PY).parent / "keep"), "provision", "check"], lab.keep.env)
    assert "both configs pass" in out
    assert (live.read_bytes(), live.stat().st_mtime_ns) == before  # a check changes nothing


def test_a_refused_ruleset_leaves_the_previous_one_in_force(lab: Lab) -> None:
    before = lab.net.check("host", ["nft", "list", "table", "inet", "keep"])
    script = (
        "from provisioning import nftables\n"
        "from keep.settings import load_settings\n"
        "text = nftables.render(load_settings())\n"
        "broken = text.replace('policy drop;', 'policy drop;\\n        tcp dport 22 acept')\n"
        "try:\n    nftables.apply(broken)\nexcept nftables.FirewallError:\n    print('refused')\n"
    )
    out = lab.net.check("host", [PY, "-c", script], lab.keep.env)
    assert out.strip() == "refused"
    assert lab.net.check("host", ["nft", "list", "table", "inet", "keep"]) == before


# Revocation, drift and churn ---------------------------------------------------------------


def test_keep_doctor_reports_drift(lab: Lab, unblocked: None) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    call_command("keep_doctor")  # in step
    rogue = keys.public_of(keys.generate_private())
    lab.net.check(
        "host",
        ["wg", "set", lab.keep.wg_interface, "peer", rogue, "allowed-ips", "198.51.100.77/32"],
    )
    try:
        with pytest.raises(CommandError, match="difference"):
            call_command("keep_doctor")
    finally:
        lab.net.check("host", ["wg", "set", lab.keep.wg_interface, "peer", rogue, "remove"])
    call_command("keep_doctor")


def test_revocation_in_the_console_silences_the_peer_within_a_second(
    lab: Lab, unblocked: None
) -> None:
    from django.urls import reverse

    gone = lab.members["revoked"]
    probe = ["--max-time", "1", "-H", f"Authorization: Bearer {gone.api_key}", "-o", "/dev/null"]
    probe += ["-w", "%{http_code}", f"{BASE}/v1/models"]
    assert lab.curl("revoked", *probe).stdout == "200"
    started = time.monotonic()
    lab.console.action(reverse("keep:console_peer_changelist"), "revoke", [gone.peer_pk])
    revoked_in = time.monotonic() - started
    after = lab.curl("revoked", *probe)  # the very next request, given 1 s
    assert after.returncode != 0
    assert after.stdout in ("", "000")
    assert revoked_in < 1.0
    assert wg_peers(lab) == db_active_keys()
    assert lab.members["client"].api_key  # the other peer is untouched:
    assert lab.raw("client", lab.members["client"].api_key)["status"] == "200"


def _fds(pid: int) -> int:
    """Distinct open files (sockets, pipes, devices) behind a process's descriptors.
    Distinct, because wireguard-go holds its UAPI listener under two descriptors and Go's
    garbage collector closes the duplicate at some point: one file, counted once."""
    targets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            targets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return len(targets)


def _counts(lab: Lab) -> dict[str, int]:
    assert lab.keep.appliance is not None
    return {
        "appliance": _fds(lab.keep.appliance.pid),
        "wireguard": _fds(lab.keep.wireguard_pid()),
        "nginx": sum(_fds(p) for p in lab.keep.nginx_pids()),
        "nginx_processes": len(lab.keep.nginx_pids()),
        "peers": len(wg_peers(lab)),
    }


def _settled_counts(lab: Lab) -> dict[str, int]:
    """Counts once two readings a second apart agree: a UAPI connection that wg(8) just
    closed may still be open in wireguard-go for a moment."""
    previous = _counts(lab)
    for _ in range(30):
        time.sleep(1.0)
        current = _counts(lab)
        if current == previous:
            return current
        previous = current
    raise AssertionError(f"the counts never settled: {previous}")


def test_churn_of_200_peers_while_the_client_streams(lab: Lab, unblocked: None) -> None:
    from django.utils import timezone

    from control.console.admin import allocate_address
    from control.console.models import Client, Peer

    # Start from fresh NGINX workers: earlier tests' idle keepalive connections to the
    # appliance would otherwise sit in the baseline and close during the churn's reloads.
    nginx.reload(lab.keep.settings())
    baseline = _settled_counts(lab)
    stop = lab.root / "stop-streaming"
    me = lab.members["client"]
    streamer = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            lab.net.ns("client"),
            sys.executable,
            "-m",
            "lab.probe",
            "chat",
            "--base",
            BASE,
            "--key",
            me.api_key,
            "--ca",
            str(lab.keep.ca),
            "--question",
            QUESTION,
            "--until",
            str(stop),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        client = Client.objects.get(name="Law firm")
        for i in range(200):
            peer = Peer.objects.create(
                client=client,
                name=f"churn-{i}",
                address=allocate_address(timezone.now()),
                public_key=keys.public_of(keys.generate_private()),
            )
            assert peer.public_key in wg_peers(lab) if i % 50 == 0 else True
            peer.revoked_at = timezone.now()
            peer.save(update_fields=["revoked_at"])
    finally:
        stop.touch()
        out, _ = streamer.communicate(timeout=300)
    result = json.loads(out)
    assert result["errors"] == []
    assert result["ok"] >= 3
    assert wg_peers(lab) == db_active_keys()
    deadline = time.monotonic() + 30
    while _counts(lab) != baseline and time.monotonic() < deadline:
        time.sleep(0.5)  # old NGINX workers finish and exit
    assert _counts(lab) == baseline
