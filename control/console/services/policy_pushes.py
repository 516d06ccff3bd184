"""Putting the database's policy in force: the perimeter (WireGuard, NGINX) first, then the
appliance's access policy over its admin socket.

A change to what the policy is compiled from schedules one push for its transaction, run
once the transaction commits, however many policy sources it changed. The only marker that
a push is due is the hook pending in Django's on-commit list for the transaction: Django
drops it with the savepoint or transaction that rolls back, so a rolled-back change leaves
no marker behind, and the next change schedules its own push.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from control.console.appliance_link import ApplianceLink, ApplianceUnreachable, PolicyRefused
from control.console.models import Alert, PolicyPush
from control.console.selectors import (
    peer_perimeter_list,
    perimeter_enabled,
    policy_document,
    policy_next_version,
)
from control.console.services.alerts import alert_create
from provisioning import perimeter, wireguard

log = logging.getLogger("keep.control")


def perimeter_sync() -> bool:
    """Apply the active peers to the host. A failure raises an alert and returns False."""
    if not perimeter_enabled():
        return True
    try:
        added, removed = perimeter.sync(settings.KEEP, peer_perimeter_list())
    except (OSError, wireguard.WireGuardError, ValueError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("perimeter not synced: %s", reason)
        alert_create(kind=Alert.PERIMETER_FAILED, detail=reason)
        return False
    if added or removed:
        log.info("perimeter synced: %d peer(s) set, %d removed", added, removed)
    return True


def policy_push() -> PolicyPush:
    """Compile and push the current policy. The outcome is recorded; a failure also raises
    an alert, and the appliance keeps its last good policy. No transaction is held open
    while the appliance answers."""
    version = policy_next_version()
    document = policy_document(version=version)
    try:
        with ApplianceLink(settings.KEEP.admin_socket) as link:
            result = link.push_policy(document)
    except (ApplianceUnreachable, PolicyRefused) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("policy %d not applied: %s", version, reason)
        with transaction.atomic():
            alert_create(kind=Alert.PUSH_FAILED, detail=reason)
            return PolicyPush.objects.create(version=version, ok=False, error=reason[:512])
    return PolicyPush.objects.create(version=version, digest=result["digest"], ok=True)


def _sync_and_push() -> None:
    perimeter_sync()  # WireGuard and NGINX first: a revoked peer's tunnel goes before its keys
    policy_push()


def policy_push_on_commit(*, using: str | None = None) -> None:
    """Sync the perimeter and push the policy once the current transaction commits; at
    once outside a transaction. A push already pending for the transaction covers this
    change too: it compiles everything committed."""
    # Django's own list of the transaction's pending hooks (the one its
    # captureOnCommitCallbacks reads); rolling back a savepoint prunes it.
    pending = transaction.get_connection(using).run_on_commit
    if any(hook[1] is _sync_and_push for hook in pending):
        return
    transaction.on_commit(_sync_and_push, using=using)
