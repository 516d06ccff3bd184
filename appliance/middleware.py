"""ASGI middleware, outermost first: the content-free access log, authentication, the
client's share of requests in flight, and the body-size limit.

Authentication comes before everything that reads the request: a caller without a valid key
gets 401 (403 for a key used from another peer's address) before its body is read and before
its path is routed, so NGINX turns every such answer into silence. The body is then read into
memory, never spooled: the limit is checked against the declared length first and then
against the bytes that actually arrive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.access import PRINCIPAL_SCOPE_KEY, Access
from appliance.auth import Principal
from appliance.errors import APIError, PayloadTooLarge, send_error
from appliance.shares import ClientShares, client_of

access_log = logging.getLogger("keep.access")


class _TooLarge(Exception):
    pass


class Authenticate:
    """Every request needs a valid key, whatever its path, method or body; its principal is
    left in the scope for the handlers. `access` gives the keys in force at each request."""

    def __init__(self, app: ASGIApp, *, access: Callable[[], Access], behind_nginx: bool) -> None:
        self.app = app
        self.access = access
        self.behind_nginx = behind_nginx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            headers = Headers(scope=scope)
            principal = self.access().principal(headers, behind_nginx=self.behind_nginx)
        except APIError as exc:
            if scope["type"] == "http":
                await send_error(send, exc)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        await self.app(scope, receive, send)


class ClientConcurrency:
    """A client's requests in flight, held from before the body is read until the response
    has ended (a stream's last event included); past its share the request gets 429."""

    def __init__(self, app: ASGIApp, *, shares: Callable[[], ClientShares]) -> None:
        self.app = app
        self.shares = shares

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get(PRINCIPAL_SCOPE_KEY)
        if scope["type"] != "http" or not isinstance(principal, Principal):
            await self.app(scope, receive, send)
            return
        shares, client = self.shares(), client_of(principal)
        try:
            shares.enter(client)
        except APIError as exc:
            await send_error(send, exc)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            shares.leave(client)


class BodyLimit:
    """`max_bytes` for every route, or a route's own limit from `per_route`, keyed by the
    route's template (`/v1/sessions/{session_id}/documents`) as its router declares it."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        per_route: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Starlette's own compilation of a template, so the limit matches what the route does.
        self.per_route = tuple((compile_path(route)[0], limit) for route, limit in per_route)

    def _limit(self, path: str) -> int:
        for pattern, limit in self.per_route:
            if pattern.fullmatch(path):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope.get("path", ""))
        too_large = PayloadTooLarge(f"the request body exceeds {limit} bytes")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length > limit:
                await send_error(send, too_large)
                return
        try:
            body = await self._read(receive, limit)
        except _TooLarge:
            await send_error(send, too_large)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _read(receive: Receive, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


class AccessLog:
    """One line per request: method, route template, status, bytes, milliseconds.

    The route template (`/v1/sessions/{session_id}`) is logged, never the raw path or query.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "-"
            access_log.info(
                "%s %s %d %dB %.1fms",
                scope.get("method", "-"),
                template,
                status,
                sent,
                (time.perf_counter() - start) * 1000,
            )
