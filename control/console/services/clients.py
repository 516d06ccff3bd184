"""Clients: the organisations and applications that peers, quotas and receipts belong to."""

from __future__ import annotations

from django.db import transaction

from control.console.models import Client


@transaction.atomic
def client_create(*, name: str, kind: str) -> Client:
    return Client.objects.create(name=name, kind=kind)
