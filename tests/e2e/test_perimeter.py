"""The perimeter, tested as attackers see it: from other hosts, on the wire.

Every negative result carries its control: the same probe gets an answer where one exists
(a closed loopback port answers the scan, the right key gets 200, the tunnel's own address
connects), so silence is measured, not assumed.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from provisioning import nginx
from tests.e2e.conftest import BASE, QUESTION, Lab


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
    from control.console import services
    from control.console.models import Peer

    assert lab.raw("client", lab.members["client"].api_key)["status"] == "200"
    services.peer_handshakes_record()
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
