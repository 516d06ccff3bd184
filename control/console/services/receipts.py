"""Receipt ingest: pull receipts from the appliance, verify every one and the tree, keep
them for display and export. Any gap, bad signature, bad tree, rollback or key change raises
an alert and stops the pull, so nothing unverified is ever kept.

Each verified page commits on its own, and an alert outside any page's transaction: the
alert must outlive the pull it stops."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction

from control.console.appliance_link import ApplianceLink, ApplianceUnreachable
from control.console.models import Alert, ApplianceIdentity, Checkpoint, Client, Receipt
from control.console.selectors import appliance_identity_get, receipt_tree
from control.console.services.alerts import alert_create
from transparency import receipt as receipts
from transparency.jcs import canonical
from transparency.note import NoteError, Verifier, open_checkpoint

log = logging.getLogger("keep.control")


class IngestStopped(Exception):
    """The pull found something wrong; an alert says what."""


def _stop(kind: str, detail: str) -> IngestStopped:
    alert_create(kind=kind, detail=detail)
    log.error("receipt ingest stopped: %s: %s", kind, detail)
    return IngestStopped(detail)


def _trusted_verifier(presented: str) -> Verifier:
    known = appliance_identity_get()
    if known is None:
        ApplianceIdentity.objects.create(verifier_key=presented)
    elif known.verifier_key != presented:
        raise _stop(Alert.KEY_CHANGED, "the appliance presents a different receipt key")
    return Verifier.parse(presented)


def _client_of(peer_id: str, known: dict[str, Client | None]) -> Client | None:
    """The client a policy peer id (`peer-<pk>`) belongs to, looked up once per pull."""
    if peer_id not in known:
        pk = peer_id.removeprefix("peer-")
        known[peer_id] = (
            Client.objects.filter(peers__pk=int(pk)).first()
            if peer_id.startswith("peer-") and pk.isdigit()
            else None
        )
    return known[peer_id]


def _row(receipt: dict[str, Any], signature: str, client: Client | None) -> Receipt:
    def when(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return Receipt(
        seq=receipt["seq"],
        session_id=receipt["session_id"],
        peer_id=receipt["peer_id"],
        client=client,
        started_at=when(receipt["started_at"]),
        ended_at=when(receipt["ended_at"]),
        model=receipt["model"],
        model_sha256=receipt["model_sha256"],
        prompt_tokens=receipt["prompt_tokens"],
        completion_tokens=receipt["completion_tokens"],
        requests=receipt["requests"],
        body=canonical(receipt).decode(),
        signature=signature,
        leaf_hash=receipts.receipt_leaf_hash(receipt).hex(),
    )


def receipt_ingest(*, batch: int = 1000) -> int:
    """Ingest every new receipt. Returns how many were added; raises IngestStopped."""
    try:
        with ApplianceLink(settings.KEEP.admin_socket) as link:
            verifier = _trusted_verifier(link.status()["verifier_key"])
            return _pull(link, verifier, batch)
    except ApplianceUnreachable as exc:
        raise _stop(Alert.UNREACHABLE, f"the appliance did not answer ({exc})") from None


def _pull(link: ApplianceLink, verifier: Verifier, batch: int) -> int:
    tree = receipt_tree()
    clients: dict[str, Client | None] = {}
    added = 0
    while True:
        page = link.receipts(after=len(tree), limit=batch)
        try:
            checkpoint = open_checkpoint(page["checkpoint"], verifier)
        except NoteError as exc:
            raise _stop(Alert.BAD_TREE, f"checkpoint: {exc}") from None
        if checkpoint.size < len(tree):
            raise _stop(
                Alert.ROLLBACK,
                f"the appliance's log has {checkpoint.size} entries; control holds {len(tree)}",
            )
        rows = []
        for entry in page["entries"]:
            receipt, signature = entry["receipt"], entry["signature"]
            expected = len(tree)
            try:
                receipts.verify_signature(receipt, signature, verifier.public)
            except receipts.ReceiptError as exc:
                raise _stop(Alert.BAD_ENTRY, f"entry {expected}: {exc}") from None
            if receipt["seq"] != expected:
                raise _stop(
                    Alert.GAP, f"expected entry {expected}, the appliance sent {receipt['seq']}"
                )
            tree.append(receipts.leaf(receipt))
            rows.append(_row(receipt, signature, _client_of(receipt["peer_id"], clients)))
        if len(tree) > checkpoint.size:
            raise _stop(Alert.BAD_TREE, "more entries than the checkpoint covers")
        if len(tree) == checkpoint.size and tree.root() != checkpoint.root:
            raise _stop(Alert.BAD_TREE, f"the tree of {checkpoint.size} does not match its root")
        with transaction.atomic():
            Receipt.objects.bulk_create(rows)
            if len(tree) == checkpoint.size:
                Checkpoint.objects.get_or_create(
                    size=checkpoint.size, defaults={"note": page["checkpoint"]}
                )
        added += len(rows)
        if not rows or len(tree) >= checkpoint.size:
            return added
