"""The admin console's flows, through Django's test client on the real database."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta
from typing import Any

import numpy as np
import png
import pytest
import zxingcpp
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from control.console import selectors, services
from control.console.models import Alert, ApiKey, Client, Peer, PolicyPush
from provisioning import keys
from tests.control.conftest import PASSWORD, Console

pytestmark = pytest.mark.django_db


def test_deploy_checks_pass_at_warning_level() -> None:
    call_command("check", deploy=True, fail_level="WARNING")


def test_the_migrations_match_the_models() -> None:
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out)
    except SystemExit as exc:  # makemigrations --check exits 1 when a migration is missing
        pytest.fail(f"a model change has no migration (exit {exc.code}): {out.getvalue()}")
    assert "No changes detected" in out.getvalue()


def test_the_root_url_leads_to_the_console(console: Console) -> None:
    response = console.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_passwords_are_argon2(operator: User) -> None:
    assert operator.password.startswith("argon2$")


def test_logins_are_throttled_and_cookies_secure(operator: User) -> None:
    http = HttpClient()
    url = reverse("keep:login")
    for _ in range(settings.KEEP.control_login_attempts):
        assert (
            http.post(url, {"username": "operator", "password": "wrong"}, secure=True).status_code
            == 200
        )
    blocked = http.post(url, {"username": "operator", "password": PASSWORD}, secure=True)
    assert blocked.status_code == 429
    other = HttpClient()
    ok = other.post(url, {"username": "nobody", "password": "x"}, secure=True)
    assert ok.status_code == 200  # another user name is not blocked
    assert settings.SESSION_COOKIE_SECURE
    assert settings.CSRF_COOKIE_SECURE
    plain = HttpClient().get(url)
    assert plain.status_code == 301  # plain HTTP is redirected to HTTPS


def decode_qr(png_bytes: bytes) -> str:
    width, height, rows, info = png.Reader(bytes=png_bytes).asDirect()
    planes = info["planes"]
    pixels = np.array([list(row) for row in rows], dtype=np.uint8).reshape(height, width, planes)
    gray = pixels[:, :, 0] if info["bitdepth"] == 8 else pixels[:, :, 0] * 255
    found = zxingcpp.read_barcodes(np.ascontiguousarray(gray.astype(np.uint8)))
    assert len(found) == 1
    return str(found[0].text)


def add_client_and_peer(console: Console, **peer: object) -> Peer:
    add_client = console.post(
        reverse("keep:console_client_add"),
        {
            "name": "Law firm",
            "kind": "organisation",
            "quota-TOTAL_FORMS": 0,
            "quota-INITIAL_FORMS": 0,
        },
    )
    assert add_client.status_code == 302, add_client.content[:2000]
    client = Client.objects.get(name="Law firm")
    data = {"client": client.pk, "name": "laptop-1", "public_key": "", **peer}
    added = console.post(reverse("keep:console_peer_add"), data)
    assert added.status_code == 302, added.content[:3000]
    return Peer.objects.get(name="laptop-1")


def test_add_a_peer_from_a_client_key_and_download_its_bundle(console: Console) -> None:
    client_private = keys.generate_private()
    peer = add_client_and_peer(console, public_key=keys.public_of(client_private))
    assert peer.address == "10.66.0.2"  # .1 is the appliance's
    response = console.action(reverse("keep:console_peer_changelist"), "download_bundle", [peer.pk])
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    config = archive.read("laptop-1.conf").decode()
    assert "Address = 10.66.0.2/32" in config
    assert client_private not in config  # the server never had it
    assert "PrivateKey = <your private key" in config
    assert decode_qr(archive.read("laptop-1.png")) == config
    api_key = archive.read("api-key.txt").decode().strip()
    assert archive.read("ca.crt").startswith(b"-----BEGIN CERTIFICATE-----")
    stored = ApiKey.objects.get(peer=peer)
    assert api_key not in json.dumps([stored.prefix, stored.digest])  # only its hash is kept
    assert api_key.startswith(stored.prefix)
    policy = selectors.policy_document(version=1)
    assert [k["sha256"] for k in policy["keys"]] == [stored.digest]


def test_a_wrong_public_key_is_refused_with_a_clear_message(console: Console) -> None:
    console.post(
        reverse("keep:console_client_add"),
        {
            "name": "Clinic",
            "kind": "organisation",
            "quota-TOTAL_FORMS": 0,
            "quota-INITIAL_FORMS": 0,
        },
    )
    client = Client.objects.get(name="Clinic")
    response = console.post(
        reverse("keep:console_peer_add"),
        {"client": client.pk, "name": "x", "public_key": "not-a-key"},
    )
    assert response.status_code == 200
    assert b"WireGuard key" in response.content
    assert not Peer.objects.exists()


def test_server_generated_bundle_holds_the_only_copy_of_the_private_key(
    console: Console,
) -> None:
    peer = add_client_and_peer(console, server_generated="on")
    response = console.action(reverse("keep:console_peer_changelist"), "download_bundle", [peer.pk])
    config = zipfile.ZipFile(io.BytesIO(response.content)).read("laptop-1.conf").decode()
    private = config.split("PrivateKey = ")[1].split("\n")[0]
    peer.refresh_from_db()
    assert keys.public_of(private) == peer.public_key
    for row in Peer.objects.values():
        assert private not in json.dumps(row, default=str)


def _bundle_psk(response: Any) -> str:
    config = zipfile.ZipFile(io.BytesIO(response.content)).read("laptop-1.conf").decode()
    lines = [line for line in config.splitlines() if line.startswith("PresharedKey = ")]
    assert len(lines) == 1, config
    return lines[0].removeprefix("PresharedKey = ")


def test_each_bundle_issues_a_preshared_key_that_the_console_never_shows(
    console: Console,
) -> None:
    peer = add_client_and_peer(console, public_key=keys.public_of(keys.generate_private()))
    assert peer.preshared_key == ""  # none before the first bundle
    changelist = reverse("keep:console_peer_changelist")
    first = _bundle_psk(console.action(changelist, "download_bundle", [peer.pk]))
    assert len(keys.decode(first)) == 32
    peer.refresh_from_db()
    assert peer.preshared_key == first
    [active] = selectors.peer_perimeter_list()
    assert active.spec().preshared_key == first
    assert first not in repr(active)
    assert first not in repr(active.spec())
    second = _bundle_psk(console.action(changelist, "download_bundle", [peer.pk]))
    assert second != first  # a new bundle replaces the tunnel's preshared key
    for page in (
        console.get(changelist),
        console.get(reverse("keep:console_peer_change", args=[peer.pk])),
    ):
        assert page.status_code == 200
        assert second.encode() not in page.content
    console.action(changelist, "revoke", [peer.pk])
    peer.refresh_from_db()
    assert peer.preshared_key == ""  # forgotten on revocation


def test_rotate_a_client_made_wireguard_key_in_the_change_form(console: Console) -> None:
    old = keys.public_of(keys.generate_private())
    peer = add_client_and_peer(console, public_key=old)
    console.action(reverse("keep:console_peer_changelist"), "download_bundle", [peer.pk])
    psk, address = Peer.objects.get(pk=peer.pk).preshared_key, peer.address
    change = reverse("keep:console_peer_change", args=[peer.pk])
    for bad, message in (
        ("", b"new public key"),
        ("not-a-key", b"WireGuard key"),
        (keys.decode(old).hex(), b"at most 44 characters"),
    ):
        refused = console.post(change, {"public_key": bad})
        assert refused.status_code == 200
        assert message in refused.content
        assert Peer.objects.get(pk=peer.pk).public_key == old
    new = keys.public_of(keys.generate_private())
    saved = console.post(change, {"public_key": new})
    assert saved.status_code == 302, saved.content[:2000]
    peer.refresh_from_db()
    assert peer.public_key == new
    assert (peer.address, peer.preshared_key) == (address, psk)  # only the key changed
    assert [p["address"] for p in selectors.policy_document(version=3)["peers"]] == [address]
    # Another active peer's key is refused.
    other = Peer.objects.create(
        client=peer.client, name="phone", public_key=old, address="10.66.0.9"
    )
    taken = console.post(reverse("keep:console_peer_change", args=[other.pk]), {"public_key": new})
    assert taken.status_code == 200
    assert b"already has this public key" in taken.content
    assert Peer.objects.get(pk=other.pk).public_key == old
    # And so is adding a peer with it.
    added = console.post(
        reverse("keep:console_peer_add"),
        {"client": peer.client.pk, "name": "tablet", "public_key": new},
    )
    assert added.status_code == 200
    assert b"already has this public key" in added.content
    assert not Peer.objects.filter(name="tablet").exists()


def test_a_server_generated_or_revoked_peers_key_cannot_be_edited(console: Console) -> None:
    peer = add_client_and_peer(console, server_generated="on")
    console.action(reverse("keep:console_peer_changelist"), "download_bundle", [peer.pk])
    generated = Peer.objects.get(pk=peer.pk).public_key
    change = reverse("keep:console_peer_change", args=[peer.pk])
    console.post(change, {"public_key": keys.public_of(keys.generate_private())})
    assert Peer.objects.get(pk=peer.pk).public_key == generated
    services.peer_revoke(peer=peer)
    console.post(change, {"public_key": keys.public_of(keys.generate_private())})
    assert Peer.objects.get(pk=peer.pk).public_key == generated


def test_revoke_and_rotate(console: Console) -> None:
    peer = add_client_and_peer(console, public_key=keys.public_of(keys.generate_private()))
    changelist = reverse("keep:console_peer_changelist")
    console.action(changelist, "download_bundle", [peer.pk])
    first = ApiKey.objects.get(peer=peer)
    rotated = console.action(changelist, "rotate_key", [peer.pk])
    assert rotated.status_code == 200
    first.refresh_from_db()
    assert first.revoked_at is not None
    assert ApiKey.objects.filter(peer=peer, revoked_at__isnull=True).count() == 1
    console.action(changelist, "revoke", [peer.pk])
    peer.refresh_from_db()
    assert peer.revoked_at is not None
    assert not ApiKey.objects.filter(peer=peer, revoked_at__isnull=True).exists()
    assert selectors.policy_document(version=2)["keys"] == []
    assert selectors.policy_document(version=2)["peers"] == []


def test_a_revoked_address_is_quarantined(console: Console) -> None:
    peer = add_client_and_peer(console, public_key=keys.public_of(keys.generate_private()))
    peer.revoked_at = timezone.now()
    peer.save()
    assert services.address_allocate(now=timezone.now()) != peer.address
    later = timezone.now() + timedelta(seconds=settings.KEEP.wg_address_quarantine_s + 1)
    assert services.address_allocate(now=later) == peer.address


def test_a_failed_push_is_recorded_and_alerts(console: Console) -> None:
    """No appliance listens in this test: the push fails, visibly."""
    result = services.policy_push()
    assert not result.ok
    assert PolicyPush.objects.filter(ok=False).exists()
    assert Alert.objects.filter(kind=Alert.PUSH_FAILED).exists()
    index = console.get(reverse("keep:index"))
    assert b'id="keep-alerts"' in index.content


def test_an_unreachable_wireguard_device_alerts_and_the_sync_loop_goes_on() -> None:
    """keep-control-sync's loop with a WireGuard interface that does not exist (the device
    down, or wireguard-go's socket closed to control): alerts, and no exception."""
    saved = settings.KEEP
    settings.KEEP = saved.model_copy(update={"wg_interface": "keep-absent0"})
    try:
        assert services.perimeter_sync() is False
        assert services.peer_handshakes_record() == 0
        call_command("keep_sync", stdout=io.StringIO(), stderr=io.StringIO())
    finally:
        settings.KEEP = saved
    alert = Alert.objects.filter(kind=Alert.PERIMETER_FAILED).latest("pk")
    assert "keep-absent0: no such interface" in alert.detail
