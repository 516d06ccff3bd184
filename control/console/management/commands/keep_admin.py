"""Create or update the console's administrator from the environment, idempotently (for
ansible): the password is read from KEEP_ADMIN_PASSWORD, never from the command line.
Prints `created`, `updated` or `unchanged`."""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Create or update a superuser; the password comes from KEEP_ADMIN_PASSWORD."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get("KEEP_ADMIN_PASSWORD", "")
        if not password:
            raise CommandError("KEEP_ADMIN_PASSWORD is not set")
        user = User.objects.filter(username=options["username"]).first()
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if user is None:
            User.objects.create_superuser(options["username"], "", password)
            self.stdout.write("created")
        elif user.check_password(password) and user.is_superuser and user.is_active:
            self.stdout.write("unchanged")
        else:
            user.set_password(password)
            user.is_superuser = user.is_staff = user.is_active = True
            user.save()
            self.stdout.write("updated")
