"""Run inside the booted root (by test_playbook_boot.py, with the root's own Python): what a
client of each installed service sees. Prints one JSON object; stdlib and httpx only."""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time
from typing import Any

import httpx

CA = "/var/lib/keep-provisioning/ca/ca.crt"


def poll(url: str, uds: str, ready: Any, deadline: float) -> tuple[int, Any]:
    transport = httpx.HTTPTransport(uds=uds)
    last: tuple[int, Any] = (0, "never answered")
    with httpx.Client(transport=transport, timeout=10) as client:
        while time.monotonic() < deadline:
            try:
                r = client.get(url)
                last = (r.status_code, r.json())
                if ready(*last):
                    return last
            except (httpx.HTTPError, ValueError) as exc:
                last = (0, type(exc).__name__)
            time.sleep(1)
    return last


def tls_get(host: str, port: int, name: str, path: str) -> dict[str, Any]:
    """A GET over TLS with `name` as SNI and Host; the raw bytes that came back."""
    context = ssl.create_default_context(cafile=CA)
    received = b""
    try:
        with (
            socket.create_connection((host, port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            tls.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()
            )
            while chunk := tls.recv(65536):
                received += chunk
    except (OSError, ssl.SSLError) as exc:
        return {"bytes": len(received), "error": type(exc).__name__, "head": ""}
    return {"bytes": len(received), "error": None, "head": received[:1000].decode("latin-1")}


def main() -> None:
    deadline = time.monotonic() + float(sys.argv[1])
    # The host's probe is the admin socket's: the API's /readyz needs a peer's key.
    ready = poll(
        "http://keep/admin/readyz",
        "/run/keep-admin/admin.sock",
        lambda code, _: code == 200,
        deadline,
    )
    status = poll(
        "http://keep/admin/status",
        "/run/keep-admin/admin.sock",
        lambda code, body: code == 200 and body.get("policy_version") is not None,
        deadline,
    )
    out = {
        "readyz": ready,
        "admin_status": status,
        "console": tls_get("127.0.0.1", 8443, sys.argv[2], "/admin/"),
        "api_unlisted": tls_get("10.66.0.1", 443, sys.argv[3], "/v1/models"),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
