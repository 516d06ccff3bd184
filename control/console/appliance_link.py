"""Control's only channel into the running appliance: its admin unix socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx


class ApplianceUnreachable(Exception):
    """The admin socket did not answer."""


class PolicyRefused(Exception):
    """The appliance refused the policy; the message is its reason."""


class ApplianceLink:
    def __init__(self, socket: Path, timeout: float = 5.0) -> None:
        self._socket = socket
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket)),
            base_url="http://appliance",
            timeout=timeout,
        )

    def __enter__(self) -> ApplianceLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def _call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        # A stopped appliance removes its socket; not dialling a missing path also spares
        # httpcore's failed-connect path, which leaves its socket to the garbage collector.
        if not self._socket.exists():
            raise ApplianceUnreachable("the admin socket is absent")
        try:
            return self._client.request(method, url, **kw)
        except httpx.TransportError as exc:
            raise ApplianceUnreachable(type(exc).__name__) from None

    def status(self) -> dict[str, Any]:
        response = self._call("GET", "/admin/status")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def push_policy(self, policy: dict[str, Any]) -> dict[str, Any]:
        response = self._call("PUT", "/admin/policy", json=policy)
        if response.status_code == 400:
            raise PolicyRefused(response.json()["error"]["message"])
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def receipts(self, after: int, limit: int = 1000) -> dict[str, Any]:
        response = self._call("GET", "/admin/receipts", params={"after": after, "limit": limit})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result
