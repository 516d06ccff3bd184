"""Model pins: the names and SHA-256 digests the appliance may serve. Each change reaches the
appliance with the next policy push, once it commits (signals.py)."""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet

from control.console.models import ModelPin


@transaction.atomic
def model_pin_create(*, name: str, path: str, sha256: str, active: bool = True) -> ModelPin:
    return ModelPin.objects.create(name=name, path=path, sha256=sha256, active=active)


@transaction.atomic
def model_pin_update(*, pin: ModelPin, fields: list[str]) -> ModelPin:
    """Save `pin`'s already-set `fields`; no fields, no write."""
    if fields:
        pin.save(update_fields=fields)
    return pin


@transaction.atomic
def model_pin_delete(*, pins: QuerySet[ModelPin]) -> int:
    deleted, _ = pins.delete()
    return deleted
