"""Control's services and selectors: their calling convention, their transactions, and the
one policy push each committed change schedules."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse

from control.console import selectors, services
from control.console.models import Alert, ApiKey, Client, ModelPin, Peer
from control.console.services import peers as peer_services
from control.console.services import policy_pushes
from provisioning import keys
from tests.control.conftest import Console

pytestmark = pytest.mark.django_db

Captured = Callable[..., Any]


class Boom(Exception):
    pass


def _rolled_back(change: Callable[[], object]) -> None:
    """Make `change` in a transaction (a savepoint, inside another) that then rolls back."""

    def fail() -> None:
        with transaction.atomic():
            change()
            raise Boom

    with pytest.raises(Boom):
        fail()


def _public(module: ModuleType, names: list[str]) -> list[Callable[..., Any]]:
    return [getattr(module, n) for n in names if inspect.isfunction(getattr(module, n))]


def _selectors() -> list[str]:
    return [
        name
        for name, value in vars(selectors).items()
        if inspect.isfunction(value)
        and value.__module__ == selectors.__name__
        and not name.startswith("_")
    ]


@pytest.mark.parametrize(
    "function",
    [*_public(services, services.__all__), *_public(selectors, _selectors())],
    ids=lambda f: f.__name__,
)
def test_every_service_and_selector_takes_keyword_arguments_only(
    function: Callable[..., Any],
) -> None:
    parameters = inspect.signature(function).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters), function
    assert "_" in function.__name__  # <entity>_<action>


def _client() -> Client:
    return services.client_create(name="Law firm", kind=Client.ORGANISATION)


def _peer(client: Client, name: str = "laptop-1") -> Peer:
    return services.peer_create(
        client=client, name=name, public_key=keys.public_of(keys.generate_private())
    )


def test_revoking_a_peer_revokes_it_and_its_keys_and_forgets_its_preshared_key() -> None:
    client = _client()
    peer, other = _peer(client), _peer(client, "phone")
    services.bundle_issue(peer=peer)
    services.api_key_issue(peer=peer)
    services.bundle_issue(peer=other)
    services.peer_revoke(peer=peer)
    peer.refresh_from_db()
    assert peer.revoked_at is not None
    assert peer.preshared_key == ""
    assert set(ApiKey.objects.filter(peer=peer).values_list("revoked_at", flat=True)) == {
        peer.revoked_at
    }
    assert ApiKey.objects.filter(peer=other, revoked_at__isnull=True).count() == 1
    assert [p.address for p in selectors.peer_perimeter_list()] == [other.address]


def test_a_peer_and_its_keys_are_revoked_in_one_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    peer = _peer(_client())
    services.bundle_issue(peer=peer)

    def revoke_then_fail(**kwargs: Any) -> int:
        services.api_key_revoke(**kwargs)
        raise Boom

    monkeypatch.setattr(peer_services, "api_key_revoke", revoke_then_fail)
    with pytest.raises(Boom):
        services.peer_revoke(peer=peer)
    stored = Peer.objects.get(pk=peer.pk)
    assert stored.revoked_at is None
    assert stored.preshared_key != ""
    assert ApiKey.objects.filter(peer=peer, revoked_at__isnull=True).count() == 1


def test_api_key_revoke_leaves_revoked_keys_as_they_were() -> None:
    peer = _peer(_client())
    first, _ = services.api_key_issue(peer=peer)
    services.api_key_issue(peer=peer)
    assert services.api_key_revoke(keys=ApiKey.objects.filter(pk=first.pk)) == 1
    first.refresh_from_db()
    when = first.revoked_at
    assert when is not None
    assert services.api_key_revoke(keys=peer.keys.all()) == 1
    first.refresh_from_db()
    assert first.revoked_at == when
    assert services.api_key_revoke(keys=peer.keys.all()) == 0


def test_rotating_an_api_key_keeps_only_the_new_bundles_key() -> None:
    peer = _peer(_client())
    services.bundle_issue(peer=peer)
    services.api_key_issue(peer=peer)
    content = services.api_key_rotate(peer=peer)
    assert content.startswith(b"PK")  # a zip
    [active] = ApiKey.objects.filter(peer=peer, revoked_at__isnull=True)
    assert active.pk == ApiKey.objects.filter(peer=peer).latest("pk").pk


def test_changes_in_one_transaction_schedule_one_push(
    django_capture_on_commit_callbacks: Captured,
) -> None:
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        peer = _peer(_client())
        services.bundle_issue(peer=peer)
        services.peer_revoke(peer=peer)
    assert len(callbacks) == 1


def test_a_rolled_back_change_leaves_no_push_marker(
    django_capture_on_commit_callbacks: Captured,
) -> None:
    client = _client()
    with django_capture_on_commit_callbacks() as callbacks:
        _rolled_back(lambda: _peer(client))
        assert callbacks == []
    assert not Peer.objects.exists()
    with django_capture_on_commit_callbacks() as callbacks:
        _peer(client)  # nothing left pending from the rollback: this change schedules its own
    assert len(callbacks) == 1


@pytest.fixture
def pushes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the push hook did, in order, without a perimeter or an appliance."""
    done: list[str] = []
    monkeypatch.setattr(policy_pushes, "perimeter_sync", lambda: done.append("sync"))
    monkeypatch.setattr(policy_pushes, "policy_push", lambda: done.append("push"))
    return done


@pytest.mark.django_db(transaction=True)
def test_each_commit_syncs_then_pushes_once_and_a_rollback_pushes_nothing(
    pushes: list[str],
) -> None:
    client = _client()
    with transaction.atomic():
        peer = _peer(client)
        services.bundle_issue(peer=peer)
        services.api_key_issue(peer=peer)
    assert pushes == ["sync", "push"]
    _rolled_back(lambda: services.peer_revoke(peer=peer))
    assert pushes == ["sync", "push"]
    services.peer_revoke(peer=peer)
    assert pushes == ["sync", "push"] * 2


@pytest.mark.django_db(transaction=True)
def test_a_push_scheduled_in_a_rolled_back_savepoint_is_scheduled_again(
    pushes: list[str],
) -> None:
    client = _client()
    with transaction.atomic():
        _rolled_back(lambda: _peer(client, "gone"))
        _peer(client, "kept")
    assert pushes == ["sync", "push"]
    assert list(Peer.objects.values_list("name", flat=True)) == ["kept"]


def test_an_ingest_alert_outlives_the_pull_it_stops() -> None:
    """No appliance listens in this test."""
    with pytest.raises(services.IngestStopped):
        services.receipt_ingest()
    assert Alert.objects.filter(kind=Alert.UNREACHABLE).count() == 1


def test_acknowledging_alerts_clears_the_banner_count() -> None:
    services.alert_create(kind=Alert.DRIFT, detail="x" * 600)
    services.alert_create(kind=Alert.GAP, detail="gap")
    assert selectors.alert_open_count() == 2
    assert len(Alert.objects.get(kind=Alert.DRIFT).detail) == 512
    assert services.alert_acknowledge(alerts=Alert.objects.filter(kind=Alert.DRIFT)) == 1
    assert selectors.alert_open_count() == 1


def test_model_pins_reach_the_policy(django_capture_on_commit_callbacks: Captured) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        pin = services.model_pin_create(name="qwen", path="/models/q.gguf", sha256="ab" * 32)
    assert len(callbacks) == 1
    assert selectors.policy_document(version=1)["models"] == [{"name": "qwen", "sha256": "ab" * 32}]
    pin.active = False
    services.model_pin_update(pin=pin, fields=["active"])
    assert selectors.policy_document(version=2)["models"] == []
    services.model_pin_delete(pins=ModelPin.objects.all())
    assert not ModelPin.objects.exists()


def test_the_operator_is_ensured_idempotently() -> None:
    password = "correct horse battery staple 42"
    assert services.operator_ensure(username="root-op", password=password) == "created"
    assert services.operator_ensure(username="root-op", password=password) == "unchanged"
    assert services.operator_ensure(username="root-op", password=password + "!") == "updated"
    with pytest.raises(ValidationError):
        services.operator_ensure(username="other", password="short")


def test_the_consoles_model_pin_forms_go_through_the_services(
    console: Console, django_capture_on_commit_callbacks: Captured
) -> None:
    data = {"name": "qwen", "path": "/models/q.gguf", "sha256": "cd" * 32, "active": "on"}
    with django_capture_on_commit_callbacks() as callbacks:
        added = console.post(reverse("keep:console_modelpin_add"), data)
    assert added.status_code == 302, added.content[:2000]
    assert len(callbacks) == 1
    pin = ModelPin.objects.get()
    assert LogEntry.objects.get().object_id == str(pin.pk)  # the admin saw the created row
    changed = console.post(
        reverse("keep:console_modelpin_change", args=[pin.pk]), {**data, "active": ""}
    )
    assert changed.status_code == 302, changed.content[:2000]
    assert ModelPin.objects.get().active is False
    gone = console.post(reverse("keep:console_modelpin_delete", args=[pin.pk]), {"post": "yes"})
    assert gone.status_code == 302
    assert not ModelPin.objects.exists()
