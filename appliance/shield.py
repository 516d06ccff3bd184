"""The outermost ASGI layer: no exception leaves the app, so no server ever logs one.

Starlette answers an unhandled exception with Keep's 500 envelope and then re-raises it, and
uvicorn would log it with its traceback and its text, which may quote the request. `Shield`
sits outside every middleware and ends each request here instead: the 500 envelope if nothing
was sent yet, the end of the body if a chunked response had begun, or nothing more where a
declared length cannot be met (the server then drops the connection). It logs the exception's
type name, the method and the route template: never its message, never a traceback.
"""

from __future__ import annotations

import contextlib
import logging

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.errors import APIError, send_error

log = logging.getLogger("keep.appliance")


class Shield:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = complete = False
        length_declared = False

        async def tracking_send(message: Message) -> None:
            nonlocal started, complete, length_declared
            if message["type"] == "http.response.start":
                started = True
                length_declared = any(
                    name.lower() == b"content-length" for name, _ in message.get("headers", ())
                )
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last resort: its type is logged below
            route = getattr(scope.get("route"), "path", None) or "-"
            log.error("unhandled %s on %s %s", type(exc).__name__, scope.get("method"), route)
            # The connection may already be gone; there is nothing left to tell anyone then.
            with contextlib.suppress(Exception):
                if not started:
                    await send_error(send, APIError("the request could not be completed"))
                elif not complete and not length_declared:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})


class ShieldedFastAPI(FastAPI):
    """FastAPI with `Shield` around its whole middleware stack, Starlette's own included."""

    def build_middleware_stack(self) -> ASGIApp:
        return Shield(super().build_middleware_stack())
