"""The perimeter as peers come and go: preshared keys, key rotation, doctor's drift reports,
revocation within a second, churn of 200 peers under a live stream, and configs that pass
their own checkers. Shares the lab with test_perimeter.py (the fixture is per package)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from provisioning import keys, nginx
from tests.e2e.conftest import BASE, PY, QUESTION, Lab, Member, db_active_keys, wg_peers


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
    from control.console.services import perimeter_sync as sync

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

    from control.console.models import Client, Peer
    from control.console.services import address_allocate

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
            "tests.netlab.probe",
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
                address=address_allocate(now=timezone.now()),
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
    # Requests that met a keepalive connection closed by a reload, unanswered, and were sent
    # again: a few at most in 400 reloads.
    assert result["reconnects"] <= 3
    assert wg_peers(lab) == db_active_keys()
    deadline = time.monotonic() + 30
    while _counts(lab) != baseline and time.monotonic() < deadline:
        time.sleep(0.5)  # old NGINX workers finish and exit
    assert _counts(lab) == baseline
