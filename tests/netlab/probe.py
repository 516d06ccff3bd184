"""What a host in the lab does on the wire, run inside its namespace:
`ip netns exec <ns> python -m lab.probe <command> ...`. Each command prints one JSON object.

Attackers' probes (scan, udp, raw) measure what comes back, byte for byte; each carries a
control that shows the probe would have seen an answer if there had been one.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import selectors
import socket
import ssl
import time
from pathlib import Path
from typing import Any

MODEL = "smollm2-135m-instruct"
SYSTEM = "Answer in one short English sentence."


def scan(target: str, first: int, last: int, timeout: float, batch: int) -> dict[str, Any]:
    """Non-blocking connects to every port; a port 'answers' with a SYN-ACK (connected) or a
    RST (refused). A silent drop leaves the connect pending until the timeout."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, batch + 64), hard))

    def sweep(host: str, ports: list[int]) -> list[int]:
        answered = []
        for start in range(0, len(ports), batch):
            poller = selectors.DefaultSelector()
            for port in ports[start : start + batch]:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                code = s.connect_ex((host, port))
                if code not in (errno.EINPROGRESS, 0):
                    answered.append(port)
                    s.close()
                    continue
                poller.register(s, selectors.EVENT_WRITE, port)
            deadline = time.monotonic() + timeout
            while poller.get_map() and time.monotonic() < deadline:
                for key, _ in poller.select(0.1):
                    answered.append(key.data)  # connected or refused: either is an answer
                    poller.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]
            for key in list(poller.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            poller.close()
        return answered

    control = sweep("127.0.0.1", [1])  # closed loopback port: RST, so the scan can see one
    return {
        "answered": sweep(target, list(range(first, last + 1))),
        "control_answered": control,
    }


def udp(target: str, port: int, wait: float) -> dict[str, Any]:
    """Junk and a well-formed but unauthenticated WireGuard handshake initiation."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((target, port))
    s.settimeout(wait)
    initiation = b"\x01\x00\x00\x00" + os.urandom(144)  # type 1, 148 bytes
    replies, refused = 0, False
    for payload in (b"hello", os.urandom(64), initiation):
        s.send(payload)
        try:
            s.recv(4096)
            replies += 1
        except TimeoutError:
            pass
        except ConnectionRefusedError:  # an ICMP port unreachable came back
            refused = True
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    control.connect(("127.0.0.1", 9))  # closed: the ICMP reply shows the probe can see one
    control.settimeout(wait)
    control.send(b"hello")
    try:
        control.recv(16)
        control_refused = False
    except ConnectionRefusedError:
        control_refused = True
    except TimeoutError:
        control_refused = False
    control.close()
    return {"replies": replies, "refused": refused, "control_refused": control_refused}


def raw(target: str, sni: str, host: str, key: str, ca: str, wait: float) -> dict[str, Any]:
    """One HTTP/1.1 request over TLS; counts every byte of the response until close."""
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False  # the probe wants bytes, whatever the name
    sock = socket.create_connection((target, 443), timeout=wait)
    try:
        tls = context.wrap_socket(sock, server_hostname=sni)
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        return {"handshake": False, "bytes": 0, "error": type(exc).__name__}
    request = (
        f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        "Connection: close\r\n\r\n"
    )
    tls.sendall(request.encode())
    received = b""
    try:
        while chunk := tls.recv(65536):
            received += chunk
    except (ssl.SSLError, OSError):
        pass
    tls.close()
    status = received.split(b" ", 2)[1].decode() if received.startswith(b"HTTP/") else None
    return {"handshake": True, "bytes": len(received), "status": status}


def connect(source: str, target: str, port: int, wait: float) -> dict[str, Any]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(wait)
    try:
        s.connect((target, port))
        return {"connected": True}
    except OSError as exc:
        return {"connected": False, "error": type(exc).__name__}
    finally:
        s.close()


def _client(base: str, key: str, ca: str) -> Any:
    import httpx

    return httpx.Client(
        base_url=base,
        headers={"Authorization": f"Bearer {key}"},
        verify=ssl.create_default_context(cafile=ca),
        timeout=120,
    )


def _messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def stream_answer(http: Any, question: str, max_tokens: int = 24) -> str:
    body = {
        "model": MODEL,
        "messages": _messages(question),
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
    }
    parts, done = [], False
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                if "error" in event:
                    raise RuntimeError(event["error"].get("code", "error"))
                parts.append(event["choices"][0]["delta"].get("content") or "")
    if not done:
        raise RuntimeError("the stream ended before [DONE]")
    return "".join(parts)


def chat(
    base: str, key: str, ca: str, question: str, stream: bool, until: str | None, tokens: int
) -> Any:
    """One answer; with --until, streams answers until that file exists and counts them."""
    with _client(base, key, ca) as http:
        if until is None:
            if stream:
                return {"answer": stream_answer(http, question, tokens)}
            body = {
                "model": MODEL,
                "messages": _messages(question),
                "temperature": 0,
                "max_tokens": tokens,
            }
            response = http.post("/v1/chat/completions", json=body)
            return {"status": response.status_code, "body": response.json()}
        import httpx

        ok, errors, reconnects = 0, [], 0
        while not Path(until).exists():
            try:
                if stream_answer(http, question, max_tokens=16):
                    ok += 1
                else:
                    errors.append("empty answer")
            except httpx.RemoteProtocolError as exc:
                # An idle keepalive connection that an NGINX worker closed at a reload, just
                # as the next request went out on it: not one byte of an answer came back, so
                # a client sends it again on a new connection (as openai's client does).
                if "without sending a response" not in str(exc):
                    errors.append(type(exc).__name__ + ": " + str(exc)[:200])
                reconnects += 1
            except Exception as exc:  # noqa: BLE001  (every failure is counted, none ends the loop)
                errors.append(type(exc).__name__ + ": " + str(exc)[:200])
        return {"ok": ok, "errors": errors, "reconnects": reconnects}


def session(base: str, key: str, ca: str, document: str, question: str, out: str) -> Any:
    """A client's whole session: open it, upload a document, ask, close it, and save the
    receipt bundle and the appliance's verifier key for `keep verify`."""
    with _client(base, key, ca) as http:
        sid = http.post("/v1/sessions").raise_for_status().json()["id"]
        docs = {"documents": [{"name": "memo.txt", "text": document}]}
        http.post(f"/v1/sessions/{sid}/documents", json=docs).raise_for_status()
        body = {
            "model": MODEL,
            "messages": _messages(question),
            "temperature": 0,
            "max_tokens": 48,
        }
        reply = http.post("/v1/chat/completions", json=body, headers={"X-Keep-Session": sid})
        reply.raise_for_status()
        answer = reply.json()
        http.delete(f"/v1/sessions/{sid}").raise_for_status()
        receipt = http.get("/v1/receipts", params={"session_id": sid}).raise_for_status().json()
        key_text = http.get("/v1/receipts/checkpoint").raise_for_status().json()["verifier_key"]
    Path(out).write_text(json.dumps(receipt))
    return {
        "session": sid,
        "answer": answer["choices"][0]["message"]["content"],
        "citations": len(answer.get("keep", {}).get("citations") or []),
        "receipt": out,
        "verifier_key": key_text,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="lab.probe")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("scan")
    p.add_argument("target")
    p.add_argument("--first", type=int, default=1)
    p.add_argument("--last", type=int, default=65535)
    p.add_argument("--timeout", type=float, default=1.5)
    p.add_argument("--batch", type=int, default=4096)
    p = sub.add_parser("udp")
    p.add_argument("target")
    p.add_argument("port", type=int)
    p.add_argument("--wait", type=float, default=1.5)
    p = sub.add_parser("raw")
    for name in ("target", "sni", "host", "key", "ca"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--wait", type=float, default=5.0)
    p = sub.add_parser("connect")
    p.add_argument("--source", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--wait", type=float, default=3.0)
    p = sub.add_parser("chat")
    for name in ("base", "key", "ca", "question"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--until")
    p.add_argument("--max-tokens", type=int, default=24)
    p = sub.add_parser("session")
    for name in ("base", "key", "ca", "document", "question", "out"):
        p.add_argument(f"--{name}", required=True)
    a = parser.parse_args()
    if a.command == "scan":
        result = scan(a.target, a.first, a.last, a.timeout, a.batch)
    elif a.command == "udp":
        result = udp(a.target, a.port, a.wait)
    elif a.command == "raw":
        result = raw(a.target, a.sni, a.host, a.key, a.ca, a.wait)
    elif a.command == "connect":
        result = connect(a.source, a.target, a.port, a.wait)
    elif a.command == "session":
        result = session(a.base, a.key, a.ca, a.document, a.question, a.out)
    else:
        result = chat(a.base, a.key, a.ca, a.question, a.stream, a.until, a.max_tokens)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
