"""`make demo`: Keep's perimeter on one machine, in network namespaces.

Builds the appliance host, a client, a stranger and a peer that gets revoked; runs a real
session through the tunnel (document, question, receipt verified offline); shows what the
stranger and the revoked peer get back: nothing. Leaves nothing running. Run as root.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from tests.netlab.keephost import SERVER_NAME, KeepHost, join
from tests.netlab.net import LabError, Net, preflight

PY = sys.executable
BASE = f"https://{SERVER_NAME}"
DOCUMENT = (
    "Internal memo. The Harbour Street office moves to the fourth floor on 3 March. "
    "The new door code for the Harbour Street office is 4417. Parking stays unchanged."
)
QUESTION = "What is the new door code for the Harbour Street office?"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(label: str, value: Any) -> None:
    print(f"   {label}: {value}", flush=True)


def probe(net: Net, host: str, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(net.check(host, [PY, "-m", "tests.netlab.probe", *args]))
    return result


def setup_control(keep: KeepHost) -> None:
    """Control in this process, on the host's settings and its own SQLite database."""
    for name, value in keep.env.items():
        os.environ[name] = value
    os.environ["DJANGO_SETTINGS_MODULE"] = "control.settings"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)


def enroll(net: Net, keep: KeepHost, client: Any, host: str, name: str) -> tuple[Any, str]:
    """What the operator does in the console: add the peer from the client's public key and
    download its bundle; then the client brings its tunnel up with wg-quick."""
    from control.console import services
    from provisioning import keys

    private = keys.generate_private()
    peer = services.peer_create(client=client, name=name, public_key=keys.public_of(private))
    archive = zipfile.ZipFile(io.BytesIO(services.bundle_issue(peer=peer)))
    config = archive.read(f"{name}.conf").decode()
    join(net, host, f"{net.tag}-{name[0]}", config, private, keep.root)
    show(f"{name}", f"peer {peer.address}, tunnel up (wg-quick, from its bundle)")
    return peer, archive.read("api-key.txt").decode().strip()


def curl_status(net: Net, keep: KeepHost, host: str, key: str) -> str:
    result = net.exec(
        host,
        [
            "curl",
            "-s",
            "--max-time",
            "2",
            "--cacert",
            str(keep.ca),
            "--resolve",
            f"{SERVER_NAME}:443:{keep.address}",
            "-H",
            f"Authorization: Bearer {key}",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            f"{BASE}/v1/models",
        ],
    )
    code, size = ([*result.stdout.split(), "000", "0"])[:2]
    return (
        f"HTTP {code}, {size} bytes"
        if code != "000"
        else f"no response (curl exit {result.returncode})"
    )


def run(net: Net, keep: KeepHost) -> None:
    say("Building the network: keep-host, client, stranger, revoked (namespaces, veth)")
    net.up()
    for host in ("client", "revoked", "stranger"):
        net.resolve(host, {SERVER_NAME: keep.address})
    keep.prepare()
    say("Provisioning keep-host: WireGuard (wireguard-go), nftables, NGINX config and TLS")
    info = json.loads(keep.provision())
    show("WireGuard", f"{info['interface']} ({info['implementation']}) on {info['address']}")
    say("Starting NGINX and the appliance in keep-host (the model loads)")
    keep.start()
    setup_control(keep)
    say("Enrolling two peers in control")
    from control.console import selectors, services

    firm = services.client_create(name="Demo law firm", kind="organisation")
    _, client_key = enroll(net, keep, firm, "client", "client")
    revoked_peer, revoked_key = enroll(net, keep, firm, "revoked", "revoked")

    say("Client: a session over WireGuard and TLS")
    receipt = keep.root / "receipt.json"
    result = probe(
        net,
        "client",
        "session",
        "--base",
        BASE,
        "--key",
        client_key,
        "--ca",
        str(keep.ca),
        "--document",
        DOCUMENT,
        "--question",
        QUESTION,
        "--out",
        str(receipt),
    )
    show("document", "memo.txt uploaded (held in RAM only)")
    show("question", QUESTION)
    show("answer", result["answer"].strip())
    show("passages cited", result["citations"])
    say("Client: the session's receipt, verified offline with `keep verify`")
    verify = subprocess.run(
        [str(Path(PY).parent / "keep"), "verify", "--key", result["verifier_key"], str(receipt)],
        capture_output=True,
        text=True,
    )
    show(
        "keep verify", f"exit {verify.returncode}: {verify.stdout.strip() or verify.stderr.strip()}"
    )

    say("Client with a wrong API key, and with an unknown name")
    show("wrong key", curl_status(net, keep, "client", "keep-" + "0" * 43))
    sni = probe(
        net,
        "client",
        "raw",
        "--target",
        keep.address,
        "--sni",
        "other.internal",
        "--host",
        "other.internal",
        "--key",
        client_key,
        "--ca",
        str(keep.ca),
    )
    show(
        "unknown SNI",
        f"TLS handshake {'accepted' if sni['handshake'] else 'refused'}, {sni['bytes']} HTTP bytes",
    )

    say("Stranger (no tunnel): TCP to every port, UDP to WireGuard")
    scan = probe(net, "stranger", "scan", net.address("host"))
    show("TCP ports 1-65535 that answered (SYN-ACK or RST)", scan["answered"] or "none")
    udp = probe(net, "stranger", "udp", net.address("host"), "51820")
    show("UDP replies from WireGuard's port", udp["replies"])

    say("Revoked peer: works, is revoked in control, then gets nothing")
    show("before", curl_status(net, keep, "revoked", revoked_key))
    started = time.monotonic()
    services.peer_revoke(peer=revoked_peer)
    show("revoked in", f"{(time.monotonic() - started) * 1000:.0f} ms (WireGuard, NGINX, policy)")
    show("after", curl_status(net, keep, "revoked", revoked_key))
    show("client still", curl_status(net, keep, "client", client_key))
    show(
        "keep doctor",
        "; ".join(selectors.perimeter_drift()) or "in step: WireGuard, NGINX and policy match",
    )


def main() -> int:
    try:
        preflight()
    except LabError as exc:
        print(f"make demo: {exc}", file=sys.stderr)
        return 1
    net = Net("kd")
    net.down()
    root = Path(tempfile.mkdtemp(prefix="keep-demo-"))
    keep = KeepHost(net, root)
    try:
        run(net, keep)
        say("Done. Tearing everything down.")
        return 0
    except LabError as exc:
        print(f"make demo failed: {exc}", file=sys.stderr)
        print(keep.log("appliance")[-2000:], file=sys.stderr)
        return 1
    finally:
        net.down()
        shutil.rmtree(keep.runtime, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
