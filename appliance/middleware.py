"""ASGI middleware, outermost first: the request's record (audit line, metrics, correlation
id), authentication, the client's rates, its share of requests in flight, and the body-size
limit.

Authentication comes before everything that reads the request: a caller without a valid key
gets 401 (403 for a key used from another peer's address) before its body is read and before
its path is routed, so NGINX turns every such answer into silence. The body is then read into
memory, never spooled: the limit is checked against the declared length first and then
against the bytes that actually arrive.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from ipaddress import ip_address

from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance import observe
from appliance.access import PEER_HEADER, PRINCIPAL_SCOPE_KEY, Access
from appliance.auth import Principal
from appliance.errors import APIError, PayloadTooLarge, send_error
from appliance.metrics import Metrics, client_label
from appliance.observe import REQUEST_ID_HEADER
from appliance.ratelimit import RateBook
from appliance.shares import ClientShares, client_of

audit_log = logging.getLogger("keep.audit")


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


class RateLimit:
    """The client's request and token rates (appliance.ratelimit): a request past either
    gets 429 before its body is read; every response carries the x-ratelimit-* headers; the
    tokens a request used are taken from its client's bucket when it ends."""

    def __init__(self, app: ASGIApp, *, rates: Callable[[], RateBook]) -> None:
        self.app = app
        self.rates = rates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get(PRINCIPAL_SCOPE_KEY)
        if scope["type"] != "http" or not isinstance(principal, Principal):
            await self.app(scope, receive, send)
            return
        rates, key, client = self.rates(), client_of(principal), principal.client_id
        try:
            rates.admit(key, client)
        except APIError as exc:
            await send_error(send, exc)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.encode(), v.encode()) for k, v in rates.headers(key, client).items()]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            record = observe.current()
            if record is not None:
                rates.charge(key, client, record.tokens)


class Observe:
    """Outermost: each request's record (appliance.observe), its correlation id returned as
    X-Request-Id, and when it ends one audit line and its metrics.

    The audit line is JSON with fixed keys, every value from a fixed set or a number: the
    route template (never the raw path or query), the policy's client and peer ids, the
    served model, the status and error code, tokens and milliseconds. The peer's tunnel
    address is logged only behind NGINX, where NGINX alone sets it."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, behind_nginx: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.behind_nginx = behind_nginx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        record = observe.begin(headers.get(REQUEST_ID_HEADER))
        tag = (REQUEST_ID_HEADER.encode(), record.request_id.encode())
        status = 0

        async def tagged_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), tag]}
            await send(message)

        try:
            await self.app(scope, receive, tagged_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "-"
            principal = scope.get(PRINCIPAL_SCOPE_KEY)
            known = principal if isinstance(principal, Principal) else None
            self.metrics.request_ended(record, route, status, known)
            line = self._line(record, scope, route, status, known, headers)
            # The message is the JSON line; journald's handler also takes its fields.
            audit_log.info(json.dumps(line, separators=(",", ":")), extra={"audit": line})

    def _line(
        self,
        record: observe.RequestRecord,
        scope: Scope,
        route: str,
        status: int,
        principal: Principal | None,
        headers: Headers,
    ) -> dict[str, object]:
        return {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": record.request_id,
            "client": client_label(principal),
            "peer": principal.peer_id if principal is not None else "-",
            "peer_address": _address(headers.get(PEER_HEADER)) if self.behind_nginx else None,
            "method": scope.get("method", "-") if scope.get("method") in _METHODS else "-",
            "route": route,
            "model": record.model,
            "status": record.error_status or status,
            "error": record.error_code,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "ttft_ms": None
            if record.first_token_s is None
            else round(record.first_token_s * 1000, 1),
            "latency_ms": round((time.perf_counter() - record.started) * 1000, 1),
        }


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _address(value: str | None) -> str | None:
    try:
        return None if value is None else str(ip_address(value))
    except ValueError:
        return None
