"""Create or update the console's administrator from the environment, idempotently (for
ansible): the password is read from KEEP_ADMIN_PASSWORD, never from the command line.
Prints `created`, `updated` or `unchanged`."""

from __future__ import annotations

import os
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from control.console import services


class Command(BaseCommand):
    help = "Create or update a superuser; the password comes from KEEP_ADMIN_PASSWORD."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get("KEEP_ADMIN_PASSWORD", "")
        if not password:
            raise CommandError("KEEP_ADMIN_PASSWORD is not set")
        try:
            outcome = services.operator_ensure(username=options["username"], password=password)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(outcome)
