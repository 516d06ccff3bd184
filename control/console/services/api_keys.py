"""API keys: issued in a client bundle, where the key is shown once; control keeps only its
prefix and SHA-256 digest."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from control.console.models import ApiKey, Peer
from control.console.services.policy_pushes import policy_push_on_commit

KEY_PREFIX = "keep-"


@transaction.atomic
def api_key_issue(*, peer: Peer, lifetime: timedelta | None = None) -> tuple[ApiKey, str]:
    """A new key for `peer`. The key itself is returned once and never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey.objects.create(
        peer=peer,
        prefix=key[: len(KEY_PREFIX) + 8],
        digest=hashlib.sha256(key.encode()).hexdigest(),
        expires_at=None if lifetime is None else timezone.now() + lifetime,
    )
    return record, key


@transaction.atomic
def api_key_revoke(*, keys: QuerySet[ApiKey], now: datetime | None = None) -> int:
    """Revoke those of `keys` still active; returns how many. The policy is pushed once the
    change commits."""
    revoked = keys.filter(revoked_at__isnull=True).update(revoked_at=now or timezone.now())
    if revoked:
        # A queryset update sends no post_save, so signals.py does not see it.
        policy_push_on_commit()
    return revoked
