"""Control against a real running appliance: revocation in under a second, receipts pulled,
verified, exported and checked by `keep verify`, and alerts when the log misbehaves."""

from __future__ import annotations

import io
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.conf import LazySettings
from django.urls import reverse

from control.console import services
from control.console.models import Alert, ApplianceIdentity, Peer, Receipt
from provisioning import keys
from tests.conftest import KEEP, ServerFactory, ask, state_settings
from tests.control.conftest import Console
from tests.control.test_console import add_client_and_peer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def appliance(serve_inproc: ServerFactory, settings: LazySettings) -> tuple[str, dict[str, Any]]:
    state = state_settings()
    base = serve_inproc(**state)
    settings.KEEP = settings.KEEP.model_copy(update={"admin_socket": state["admin_socket"]})
    return base, state


def bundle_key(console: Console, peer: Peer) -> str:
    response = console.action(reverse("keep:console_peer_changelist"), "download_bundle", [peer.pk])
    return zipfile.ZipFile(io.BytesIO(response.content)).read("api-key.txt").decode().strip()


def test_revocation_in_the_console_reaches_the_appliance_within_a_second(
    console: Console, appliance: tuple[str, dict[str, Any]]
) -> None:
    base, _ = appliance
    peer = add_client_and_peer(console, public_key=keys.public_of(keys.generate_private()))
    key = bundle_key(console, peer)
    assert ask(base, key).status_code == 200
    other = Peer.objects.create(
        client=peer.client,
        name="laptop-2",
        address="10.66.0.9",
        public_key=keys.public_of(keys.generate_private()),
    )
    other_key = bundle_key(console, other)
    started = time.monotonic()
    console.action(reverse("keep:console_peer_changelist"), "revoke", [peer.pk])
    refused = ask(base, key)
    elapsed = time.monotonic() - started
    assert refused.status_code == 401
    assert elapsed < 1.0
    # The appliance keeps serving the keys still valid, with no call back to control.
    assert ask(base, other_key).status_code == 200


def test_receipts_are_pulled_verified_exported_and_verify_offline(
    console: Console, appliance: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    base, _ = appliance
    peer = add_client_and_peer(console, public_key=keys.public_of(keys.generate_private()))
    key = bundle_key(console, peer)
    sessions = [ask(base, key).headers["x-keep-session"] for _ in range(3)]
    assert services.receipt_ingest() == 3
    assert services.receipt_ingest() == 0
    stored = Receipt.objects.order_by("seq")
    assert [r.session_id for r in stored] == sessions
    assert {r.client for r in stored} == {peer.client}
    today = time.strftime("%Y-%m-%d", time.gmtime())
    url = reverse("keep:console_client_export", args=[peer.client.pk])
    export = console.get(url, start=today, end=today)
    assert export.status_code == 200
    lines = b"".join(export.streaming_content).decode()
    assert len(lines.splitlines()) == 3
    (tmp_path / "export.jsonl").write_text(lines)
    verifier = ApplianceIdentity.objects.get().verifier_key
    done = subprocess.run(
        [KEEP, "verify", "--key", verifier, str(tmp_path / "export.jsonl")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    assert "3 receipts: valid" in done.stdout
    broken = lines.replace('"requests":1', '"requests":7', 1)
    (tmp_path / "broken.jsonl").write_text(broken)
    done = subprocess.run(
        [KEEP, "verify", "--key", verifier, str(tmp_path / "broken.jsonl")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1


def test_a_tampered_store_a_rollback_and_a_new_key_raise_alerts(
    console: Console,
    appliance: tuple[str, dict[str, Any]],
    serve_inproc: ServerFactory,
    settings: LazySettings,
) -> None:
    base, state = appliance
    peer = add_client_and_peer(console, public_key=keys.public_of(keys.generate_private()))
    key = bundle_key(console, peer)
    for _ in range(2):
        ask(base, key)
    assert services.receipt_ingest() == 2
    # Control's own copy altered: the next page no longer adds up to the signed root.
    ask(base, key)
    Receipt.objects.filter(seq=0).update(leaf_hash="00" * 32)
    with pytest.raises(services.IngestStopped):
        services.receipt_ingest()
    assert Alert.objects.filter(kind=Alert.BAD_TREE).exists()
    assert Receipt.objects.count() == 2  # nothing unverified was kept
    # The same appliance key over a shorter log: a rollback.
    rolled = state_settings()
    (rolled["state_dir"] / "receipt-signing.key").write_bytes(
        (state["state_dir"] / "receipt-signing.key").read_bytes()
    )
    serve_inproc(**rolled)
    settings.KEEP = settings.KEEP.model_copy(update={"admin_socket": rolled["admin_socket"]})
    with pytest.raises(services.IngestStopped):
        services.receipt_ingest()
    assert Alert.objects.filter(kind=Alert.ROLLBACK).exists()
    # Another key altogether.
    stranger = state_settings()
    serve_inproc(**stranger)
    settings.KEEP = settings.KEEP.model_copy(update={"admin_socket": stranger["admin_socket"]})
    with pytest.raises(services.IngestStopped):
        services.receipt_ingest()
    assert Alert.objects.filter(kind=Alert.KEY_CHANGED).exists()
    index = console.get(reverse("keep:index"))
    assert b'id="keep-alerts"' in index.content
