"""Control tests: Django's test client against the real console, on SQLite or PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

# This conftest loads before Django is set up (pytest_configure): Django imports stay lazy.
if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django.test import Client as HttpClient

PASSWORD = "correct horse battery staple 42"


class Console:
    """The operator's browser: HTTPS only, as the production settings demand."""

    def __init__(self, http: HttpClient) -> None:
        self.http = http

    def get(self, url: str, **data: Any) -> Any:
        return self.http.get(url, data, secure=True)

    def post(self, url: str, data: dict[str, Any]) -> Any:
        return self.http.post(url, data, secure=True)

    def action(self, changelist: str, action: str, pks: list[int]) -> Any:
        return self.post(changelist, {"action": action, "_selected_action": pks, "index": 0})


@pytest.fixture
def operator(db: None) -> User:
    from django.contrib.auth.models import User

    return User.objects.create_superuser("operator", "op@example.internal", PASSWORD)


@pytest.fixture
def console(operator: User) -> Console:
    from django.test import Client as HttpClient

    http = HttpClient()
    http.force_login(operator)
    return Console(http)
