"""Alerts: raised by the checks on the perimeter, the policy push and the receipt log, shown
in the console's banner until an operator acknowledges them."""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet

from control.console.models import Alert


def alert_create(*, kind: str, detail: str) -> Alert:
    return Alert.objects.create(kind=kind, detail=detail[:512])


@transaction.atomic
def alert_acknowledge(*, alerts: QuerySet[Alert]) -> int:
    return alerts.update(acknowledged=True)
