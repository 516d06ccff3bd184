"""The console's operators: the administrator that ansible keeps in step, and the failed
logins that the login throttle counts."""

from __future__ import annotations

from typing import Literal

from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.db import transaction

from control.console.models import LoginFailure


@transaction.atomic
def operator_ensure(*, username: str, password: str) -> Literal["created", "updated", "unchanged"]:
    """Make `username` an active superuser with `password`, idempotently. Raises Django's
    ValidationError when the password fails the validators, before anything is written."""
    user = User.objects.filter(username=username).first()
    validate_password(password, user)
    if user is None:
        User.objects.create_superuser(username, "", password)
        return "created"
    if user.check_password(password) and user.is_superuser and user.is_active:
        return "unchanged"
    user.set_password(password)
    user.is_superuser = user.is_staff = user.is_active = True
    user.save()
    return "updated"


def login_failure_record(*, username: str, address: str | None) -> LoginFailure:
    return LoginFailure.objects.create(username=username[:150], address=address)
