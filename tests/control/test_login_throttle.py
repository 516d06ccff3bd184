"""The login throttle locks the address that fails, not the user name for everyone: an
attacker on the management network cannot lock the administrator out."""

from __future__ import annotations

import pytest
from django.conf import LazySettings, settings
from django.contrib.auth.models import User
from django.test import Client as HttpClient
from django.urls import reverse

from control.console.models import LoginFailure
from tests.control.conftest import PASSWORD

pytestmark = pytest.mark.django_db

ATTACKER, ADMIN = "203.0.113.9", "198.51.100.7"


def login(username: str, password: str, address: str, **headers: str) -> int:
    response = HttpClient(REMOTE_ADDR=address).post(
        reverse("keep:login"),
        {"username": username, "password": password},
        secure=True,
        headers=headers,
    )
    return int(response.status_code)


def test_failing_an_admins_name_locks_the_attacker_not_the_admin(operator: User) -> None:
    for _ in range(settings.KEEP.control_login_attempts):
        assert login("operator", "wrong", ATTACKER) == 200
    assert login("operator", PASSWORD, ATTACKER) == 429  # that pair is locked
    assert login("operator", PASSWORD, ADMIN) == 302  # the admin, elsewhere, logs in
    recorded = set(LoginFailure.objects.values_list("username", "address"))
    assert recorded == {("operator", ATTACKER)}


def test_an_address_failing_many_names_is_locked_for_every_name(
    operator: User, settings: LazySettings
) -> None:
    settings.KEEP = settings.KEEP.model_copy(
        update={"control_login_attempts": 5, "control_login_address_attempts": 6}
    )
    for n in range(6):
        assert login(f"guess-{n}", "wrong", ATTACKER) == 200
    assert login("operator", PASSWORD, ATTACKER) == 429
    assert login("another-guess", "wrong", ATTACKER) == 429
    assert login("operator", PASSWORD, ADMIN) == 302


def test_a_tcp_peer_cannot_choose_its_address_with_x_forwarded_for(operator: User) -> None:
    """X-Forwarded-For counts only on the unix socket, where NGINX alone can connect and
    sets it; a client that reaches Django over TCP is known by its own address."""
    for n in range(settings.KEEP.control_login_attempts):
        assert login("operator", "wrong", ATTACKER, x_forwarded_for=f"192.0.2.{n}") == 200
    assert login("operator", PASSWORD, ATTACKER, x_forwarded_for="192.0.2.99") == 429
    assert set(LoginFailure.objects.values_list("address", flat=True)) == {ATTACKER}
