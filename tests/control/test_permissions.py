"""Who may do what in the console: a view-only staff account sees everything and changes
nothing (no bundle, no key, no revocation, no push), and each action belongs to a permission
an operator grants on purpose."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client as HttpClient
from django.urls import reverse

from control.console import services
from control.console.models import (
    Alert,
    ApiKey,
    Client,
    Peer,
    PolicyPush,
    Receipt,
)
from provisioning import keys
from tests.control.conftest import PASSWORD, Console

pytestmark = pytest.mark.django_db


def staff(name: str, *perms: str) -> Console:
    user = User.objects.create_user(name, "", PASSWORD, is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=codename)
        )
    http = HttpClient()
    http.force_login(user)
    return Console(http)


VIEW_ALL = tuple(
    f"console.view_{model}"
    for model in (
        "client",
        "peer",
        "apikey",
        "quota",
        "modelpin",
        "receipt",
        "checkpoint",
        "applianceidentity",
        "alert",
        "policypush",
    )
)


@pytest.fixture
def peer(db: None) -> Peer:
    client = services.client_create(name="Law firm", kind=Client.ORGANISATION)
    peer = services.peer_create(
        client=client, name="laptop-1", public_key=keys.public_of(keys.generate_private())
    )
    services.bundle_issue(peer=peer)
    return peer


def state(peer: Peer) -> tuple[Any, ...]:
    peer.refresh_from_db()
    keys_now = tuple(ApiKey.objects.order_by("pk").values_list("pk", "revoked_at"))
    return (peer.public_key, peer.preshared_key, peer.revoked_at, keys_now)


def offered(console: Console, changelist: str) -> set[str]:
    page = console.get(changelist)
    assert page.status_code == 200
    form = page.context.get("action_form")
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


def test_a_view_only_account_sees_the_console_and_changes_nothing(peer: Peer) -> None:
    viewer = staff("viewer", *VIEW_ALL)
    Alert.objects.create(kind=Alert.PUSH_FAILED, detail="test")
    before = state(peer)
    pushes, receipts = PolicyPush.objects.count(), Receipt.objects.count()
    peers = reverse("keep:console_peer_changelist")
    api_keys = reverse("keep:console_apikey_changelist")
    alerts = reverse("keep:console_alert_changelist")
    changelists = (
        peers,
        api_keys,
        alerts,
        reverse("keep:console_policypush_changelist"),
        reverse("keep:console_receipt_changelist"),
    )
    for changelist in changelists:
        assert offered(viewer, changelist) == set(), changelist
    runs = (
        (peers, "download_bundle", [peer.pk]),
        (peers, "rotate_key", [peer.pk]),
        (peers, "revoke", [peer.pk]),
        (api_keys, "revoke", list(ApiKey.objects.values_list("pk", flat=True))),
        (alerts, "acknowledge", list(Alert.objects.values_list("pk", flat=True))),
    )
    for changelist, action, pks in runs:
        response = viewer.action(changelist, action, pks)
        assert response.get("Content-Type") != "application/zip", action
        assert state(peer) == before, action
    push = PolicyPush.objects.create(version=1, ok=True)
    pushes += 1
    viewer.action(reverse("keep:console_policypush_changelist"), "push_now", [push.pk])
    assert PolicyPush.objects.count() == pushes
    assert Receipt.objects.count() == receipts
    assert not Alert.objects.filter(acknowledged=True).exists()
    rotate = viewer.post(
        reverse("keep:console_peer_change", args=[peer.pk]),
        {"public_key": keys.public_of(keys.generate_private())},
    )
    assert rotate.status_code == 403
    assert state(peer) == before


def test_the_receipt_export_needs_the_right_to_view_receipts(peer: Peer) -> None:
    url = reverse("keep:console_client_export", args=[peer.client.pk])
    clients_only = staff("clients", "console.view_client")
    assert clients_only.get(url).status_code == 403
    reader = staff("reader", "console.view_client", "console.view_receipt")
    assert reader.get(url).status_code == 200


def test_each_action_is_run_by_its_permission(peer: Peer) -> None:
    peers = reverse("keep:console_peer_changelist")
    issuer = staff("issuer", "console.view_peer", "console.issue_bundle")
    assert offered(issuer, peers) == {"download_bundle", "rotate_key"}
    bundle = issuer.action(peers, "download_bundle", [peer.pk])
    assert bundle["Content-Type"] == "application/zip"
    assert ApiKey.objects.filter(peer=peer, revoked_at__isnull=True).count() == 2
    revoker = staff("revoker", "console.view_peer", "console.change_peer")
    assert "revoke" in offered(revoker, peers)
    revoker.action(peers, "revoke", [peer.pk])
    peer.refresh_from_db()
    assert peer.revoked_at is not None

    alerts = reverse("keep:console_alert_changelist")
    alert = Alert.objects.create(kind=Alert.PUSH_FAILED, detail="test")
    acknowledger = staff("ack", "console.view_alert", "console.change_alert")
    acknowledger.action(alerts, "acknowledge", [alert.pk])
    alert.refresh_from_db()
    assert alert.acknowledged

    pushes = reverse("keep:console_policypush_changelist")
    PolicyPush.objects.create(version=1, ok=True)
    pusher = staff("pusher", "console.view_policypush", "console.push_policy")
    assert offered(pusher, pushes) == {"push_now"}
    before = PolicyPush.objects.count()
    pusher.action(pushes, "push_now", [PolicyPush.objects.get().pk])
    assert PolicyPush.objects.count() == before + 1  # no appliance listens: a failed push

    receipts = reverse("keep:console_receipt_changelist")
    puller = staff("puller", "console.view_receipt", "console.pull_receipts")
    assert offered(puller, receipts) == {"pull_now"}
