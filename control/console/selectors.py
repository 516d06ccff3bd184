"""Control's reads: the policy document pushed to the appliance, the peers the perimeter must
hold, the receipts and their tree for export, and the counts the console shows. Nothing here
writes; services.py does."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from control.console.appliance_link import ApplianceLink, ApplianceUnreachable
from control.console.models import (
    Alert,
    ApiKey,
    ApplianceIdentity,
    Checkpoint,
    Client,
    LoginFailure,
    ModelPin,
    Peer,
    PolicyPush,
    Quota,
    Receipt,
)
from provisioning import perimeter
from transparency.merkle import MerkleTree
from transparency.verify import encode_hashes


def policy_next_version() -> int:
    """Microseconds since the epoch, and always above the last pushed version: it grows
    even after the database is restored from an older backup."""
    last = PolicyPush.objects.order_by("-version").values_list("version", flat=True).first()
    return max(time.time_ns() // 1000, (last or 0) + 1)


def policy_document(*, version: int) -> dict[str, Any]:
    """The access policy as the appliance takes it: active peers, their usable keys' digests,
    the quotas and the pinned models."""
    now = timezone.now()
    peers = list(Peer.objects.active().exclude(public_key="").select_related("client"))
    active = {p.pk for p in peers}
    keys = [
        k
        for k in ApiKey.objects.select_related("peer__client").filter(peer_id__in=active)
        if k.usable(now)
    ]
    return {
        "version": version,
        "peers": [{"id": p.policy_id, "address": p.address} for p in peers],
        "keys": [
            {
                "sha256": k.digest,
                "peer_id": k.peer.policy_id,
                "client_id": k.peer.client.policy_id,
                "expires_at": None if k.expires_at is None else int(k.expires_at.timestamp()),
            }
            for k in keys
        ],
        "quotas": [
            {
                "client_id": q.client.policy_id,
                "requests_per_day": q.requests_per_day,
                "tokens_per_day": q.tokens_per_day,
                "requests_per_month": q.requests_per_month,
                "tokens_per_month": q.tokens_per_month,
                "priority": q.priority,
                "requests_per_second": q.requests_per_second,
                "request_burst": q.request_burst,
                "tokens_per_minute": q.tokens_per_minute,
                "max_in_flight": q.max_in_flight,
            }
            for q in Quota.objects.select_related("client")
        ],
        "models": [
            {"name": m.name, "sha256": m.sha256} for m in ModelPin.objects.filter(active=True)
        ],
    }


def perimeter_enabled() -> bool:
    """Without `KEEP_WG_INTERFACE` (development) there is no perimeter to keep in step."""
    return settings.KEEP.wg_interface is not None


def peer_perimeter_list() -> list[perimeter.ActivePeer]:
    """The peers WireGuard and NGINX must hold: the database's active peers are the truth."""
    return [
        perimeter.ActivePeer(p.public_key, p.address, p.preshared_key or None)
        for p in Peer.objects.active().exclude(public_key="")
    ]


def perimeter_drift() -> list[str]:
    """Every difference between the database and WireGuard, NGINX and the appliance."""
    peers = peer_perimeter_list()
    problems = perimeter.drift(settings.KEEP, peers) if perimeter_enabled() else []
    try:
        with ApplianceLink(settings.KEEP.admin_socket) as link:
            status: dict[str, Any] = link.status()
    except ApplianceUnreachable as exc:
        return [*problems, f"appliance: unreachable ({exc})"]
    policy = set(status.get("peers", []))
    expected = {p.address for p in peers}
    problems += [f"policy: {a} is in force but no active peer's" for a in sorted(policy - expected)]
    problems += [f"policy: active peer {a} is missing" for a in sorted(expected - policy)]
    return problems


def peer_address_taken_list(*, quarantined_since: datetime) -> list[str]:
    """Addresses a new peer may not get: active peers' and those revoked since the date."""
    taken = Peer.objects.active().values_list("address", flat=True)
    recent = Peer.objects.filter(revoked_at__gte=quarantined_since).values_list(
        "address", flat=True
    )
    return [*taken, *recent]


def peer_public_key_taken(*, public_key: str, exclude_pk: int | None = None) -> bool:
    return Peer.objects.active().exclude(pk=exclude_pk).filter(public_key=public_key).exists()


def peer_active_count(*, client: Client) -> int:
    return client.peers.filter(revoked_at__isnull=True).count()


def appliance_identity_get() -> ApplianceIdentity | None:
    return ApplianceIdentity.objects.first()


def receipt_tree() -> MerkleTree:
    """The Merkle tree of every receipt control holds, in log order."""
    hashes = Receipt.objects.order_by("seq").values_list("leaf_hash", flat=True)
    return MerkleTree([bytes.fromhex(h) for h in hashes])


def receipt_export(*, client: Client, start: datetime, end: datetime) -> Iterator[str]:
    """JSON Lines of bundles that `keep verify` checks offline, each with its inclusion proof
    against the latest checkpoint control verified; receipts past it are left out."""
    checkpoint = Checkpoint.objects.order_by("-size").first()
    if checkpoint is None:
        return
    tree = receipt_tree()
    rows = Receipt.objects.filter(
        client=client, ended_at__gte=start, ended_at__lt=end, seq__lt=checkpoint.size
    ).order_by("seq")
    for row in rows:
        bundle = {
            "receipt": json.loads(row.body),
            "signature": row.signature,
            "index": row.seq,
            "inclusion_proof": encode_hashes(tree.inclusion_proof(row.seq, checkpoint.size)),
            "checkpoint": checkpoint.note,
        }
        yield json.dumps(bundle, separators=(",", ":")) + "\n"


def alert_open_count() -> int:
    return Alert.objects.filter(acknowledged=False).count()


def login_failure_count(*, username: str, address: str | None, since: datetime) -> int:
    """Failed logins for `username` from `address` (None: from no known address)."""
    return _failures(address, since).filter(username=username[:150]).count()


def login_failure_address_count(*, address: str | None, since: datetime) -> int:
    """Failed logins from `address`, whatever the user name."""
    return _failures(address, since).count()


def _failures(address: str | None, since: datetime) -> QuerySet[LoginFailure]:
    rows = LoginFailure.objects.filter(at__gte=since)
    return rows.filter(address__isnull=True) if address is None else rows.filter(address=address)
