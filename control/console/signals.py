"""Every change to what the policy is compiled from syncs the perimeter (WireGuard, NGINX)
and pushes a new policy once it commits, so a revocation reaches the host at once; failed
console logins are recorded for throttling."""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth.signals import user_login_failed
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from control.console.models import ApiKey, LoginFailure, ModelPin, Peer, Quota

POLICY_SOURCES = (Peer, ApiKey, Quota, ModelPin)


_last_push = [0.0]  # when the latest push started (monotonic clock)


def _schedule_push(**_: Any) -> None:
    """Push once the change commits. Several changes in one commit each schedule a push;
    the first one compiles everything committed, and the rest, seeing a push that started
    after they were scheduled, skip. A rolled-back change schedules nothing."""
    from control.console.perimeter import sync
    from control.console.policy import push

    scheduled = time.monotonic()

    def run() -> None:
        if _last_push[0] > scheduled:
            return
        _last_push[0] = time.monotonic()
        sync()  # WireGuard and NGINX first: a revoked peer's tunnel goes before its keys
        push()

    transaction.on_commit(run)


for model in POLICY_SOURCES:
    post_save.connect(_schedule_push, sender=model, dispatch_uid=f"push-{model.__name__}")
    post_delete.connect(_schedule_push, sender=model, dispatch_uid=f"push-d-{model.__name__}")


@receiver(user_login_failed, dispatch_uid="keep-login-failed")
def _login_failed(credentials: dict[str, Any], request: Any = None, **_: Any) -> None:
    address = request.META.get("REMOTE_ADDR") if request is not None else None
    LoginFailure.objects.create(
        username=str(credentials.get("username", ""))[:150], address=address
    )
