"""What a generation's HTTP response needs beyond its events: noticing a hang-up, and a
stream that closes its body generator as soon as the response ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from appliance.openai.protocol import Usage
from inference.engine import Finished, Generation


async def cancel_on_disconnect(request: Request, generation: Generation) -> None:
    """A non-streaming client that hangs up frees its slot: poll for the disconnect."""
    while not generation.done:
        if await request.is_disconnected():
            generation.cancel()
            return
        await asyncio.sleep(0.05)


class ClosingStream(StreamingResponse):
    """Closes its body generator when the response ends. When a client hangs up, Starlette
    abandons the generator at a `yield`; closing it here runs its cleanup now (cancel the
    generation, release the session and its KV sequence) instead of whenever GC runs."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            body = self.body_iterator
            if isinstance(body, AsyncGenerator):
                await body.aclose()


def usage_of(finished: Finished) -> Usage:
    return Usage(
        prompt_tokens=finished.prompt_tokens,
        completion_tokens=finished.completion_tokens,
        total_tokens=finished.prompt_tokens + finished.completion_tokens,
    )
