"""Compile the access policy from the database and push it to the appliance."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.utils import timezone

from control.console.appliance_link import ApplianceLink, ApplianceUnreachable, PolicyRefused
from control.console.models import Alert, ApiKey, ModelPin, Peer, PolicyPush, Quota

log = logging.getLogger("keep.control")


def next_version() -> int:
    """Microseconds since the epoch, and always above the last pushed version: it grows
    even after the database is restored from an older backup."""
    last = PolicyPush.objects.order_by("-version").values_list("version", flat=True).first()
    return max(time.time_ns() // 1000, (last or 0) + 1)


def compile_policy(version: int) -> dict[str, Any]:
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
            }
            for q in Quota.objects.select_related("client")
        ],
        "models": [
            {"name": m.name, "sha256": m.sha256} for m in ModelPin.objects.filter(active=True)
        ],
    }


def push() -> PolicyPush:
    """Compile and push the current policy. The outcome is recorded; a failure also raises
    an alert, and the appliance keeps its last good policy."""
    version = next_version()
    policy = compile_policy(version)
    try:
        with ApplianceLink(settings.KEEP.admin_socket) as link:
            result = link.push_policy(policy)
    except (ApplianceUnreachable, PolicyRefused) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("policy %d not applied: %s", version, reason)
        Alert.objects.create(kind=Alert.PUSH_FAILED, detail=reason[:512])
        return PolicyPush.objects.create(version=version, ok=False, error=reason[:512])
    return PolicyPush.objects.create(version=version, digest=result["digest"], ok=True)
