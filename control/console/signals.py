"""Every change to what the policy is compiled from syncs the perimeter (WireGuard, NGINX)
and pushes a new policy once it commits, so a revocation reaches the host at once; failed
console logins are recorded for throttling."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_login_failed
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from control.console import services
from control.console.client_address import client_address
from control.console.models import ApiKey, ModelPin, Peer, Quota

POLICY_SOURCES = (Peer, ApiKey, Quota, ModelPin)


def _schedule_push(using: str | None = None, **_: Any) -> None:
    services.policy_push_on_commit(using=using)


for model in POLICY_SOURCES:
    post_save.connect(_schedule_push, sender=model, dispatch_uid=f"push-{model.__name__}")
    post_delete.connect(_schedule_push, sender=model, dispatch_uid=f"push-d-{model.__name__}")


@receiver(user_login_failed, dispatch_uid="keep-login-failed")
def _login_failed(credentials: dict[str, Any], request: Any = None, **_: Any) -> None:
    address = client_address(request) if request is not None else None
    services.login_failure_record(username=str(credentials.get("username", "")), address=address)
