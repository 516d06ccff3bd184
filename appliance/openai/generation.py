"""Serving shared by chat and text completions: admission, limits, sessions, events to
responses.

A request is admitted in this order: model, limits, session, engine. The engine reports
`Started` once the prompt is in the KV cache, and only then does a response begin, so every
failure before the first token gets a real HTTP status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response

from appliance import observe
from appliance.auth import Principal
from appliance.errors import (
    APIError,
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    QueueFull,
    RequestTimeout,
    envelope,
    from_inference,
)
from appliance.openai import sse
from appliance.openai.protocol import GenerationFields
from appliance.openai.responses import ClosingStream, cancel_on_disconnect, usage_of
from appliance.openai.shapes import Shape
from appliance.quotas import QuotaBook
from appliance.sessions import Session, SessionRegistry
from appliance.state import EngineDep, QuotasDep, SessionsDep, SettingsDep
from inference import errors as inference_errors
from inference.engine import (
    Engine,
    Event,
    Failed,
    Finished,
    Generation,
    GenerationRequest,
    TextDelta,
    TokenLogprobs,
)
from inference.logprobs import TokenLogprob
from inference.model import LlamaModel
from inference.sampling import Grammar, SamplingParams

SESSION_HEADER = "x-keep-session"
# The worker enforces the deadline itself; this margin only covers a job still queued.
_DEADLINE_GRACE_S = 0.5


class GenerationServing:
    """One generation request's path through the appliance: admit, plan, run."""

    def __init__(
        self,
        *,
        engine: Engine,
        sessions: SessionRegistry,
        quotas: QuotaBook,
        max_tokens_cap: int,
        max_stop_sequences: int,
        deadline_s: float,
        stream_padding: int,
        queue_depth: int,
        priority_classes: int,
        default_priority: int,
    ) -> None:
        self.engine = engine
        self.sessions = sessions
        self.quotas = quotas
        self.max_tokens_cap = max_tokens_cap
        self.max_stop_sequences = max_stop_sequences
        self.deadline_s = deadline_s
        self.stream_padding = stream_padding
        self.queue_depth = queue_depth
        self.priority_classes = priority_classes
        self.default_priority = default_priority

    @property
    def model(self) -> LlamaModel:
        return self.engine.model

    def check_model(self, name: str) -> None:
        if name != self.model.pinned.name:
            raise ModelNotFound("the requested model does not exist", param="model")
        observe.served(name)

    def admit(self, request: Request, principal: Principal) -> Session:
        """The request's session, taken before any work is done so that a full appliance
        answers 429 at once: the one named by the header, or a new ephemeral one. The
        request counts against the client's quota from here."""
        session_id = request.headers.get(SESSION_HEADER)
        self._check_line(None)
        self.quotas.admit(principal.client_id)
        try:
            if session_id is None:
                return self.sessions.open(principal, ephemeral=True)
            return self.sessions.get(session_id, principal)
        except APIError:
            self.quotas.refund(principal.client_id)
            raise

    def _check_line(self, job: GenerationRequest | None) -> None:
        """429 at once when the waiting line for KV sequences is full, or when the wait it
        promises this request (its client's, once known) would outlast its deadline."""
        wait = self.engine.expected_wait_s(job)
        deadline = job.deadline if job is not None else None
        if self.engine.line_full(self.queue_depth):
            raise _line_full(wait)
        if deadline is not None and wait > deadline - time.monotonic():
            raise QueueFull(
                "the wait for a KV sequence would outlast the request's deadline",
                retry_after_s=wait,
            )

    def _scheduled(self, session: Session, job: GenerationRequest) -> GenerationRequest:
        """The request with its place in the waiting line: its client, and its class."""
        priority = self.quotas.priority(session.client_id)
        if priority is None:
            priority = self.default_priority
        return dataclasses.replace(
            job, client=session.share, priority=min(priority, self.priority_classes - 1)
        )

    async def discard(self, session: Session) -> None:
        if session.ephemeral:  # an ephemeral session taken by `admit`, for a request not run
            await self.sessions.close(session)

    def plan(
        self,
        body: GenerationFields,
        prompt: list[int],
        *,
        requested_max: int | None,
        grammar: Grammar | None,
        logprobs: int | None = None,
    ) -> GenerationRequest:
        n_ctx = self.model.n_ctx_per_seq
        if not prompt:
            raise InvalidRequest("the prompt is empty", param="prompt")
        if len(prompt) >= n_ctx:
            raise ContextLengthExceeded(
                f"the prompt is {len(prompt)} tokens; a session's context holds {n_ctx}",
                param="messages",
            )
        cap = self.max_tokens_cap
        if requested_max is not None and requested_max > cap:
            raise InvalidRequest(f"max_tokens may be at most {cap}", param="max_tokens")
        room = n_ctx - len(prompt)
        if requested_max is not None and requested_max > room:
            raise ContextLengthExceeded(
                f"the prompt ({len(prompt)} tokens) plus max_tokens exceed the context of {n_ctx}",
                param="max_tokens",
            )
        stops = body.stop_list()
        if len(stops) > self.max_stop_sequences:
            raise InvalidRequest(
                f"at most {self.max_stop_sequences} stop sequences are allowed", param="stop"
            )
        bias = {int(token): value for token, value in (body.logit_bias or {}).items()}
        if any(token >= self.model.n_vocab for token in bias):
            raise InvalidRequest(
                "a logit_bias token id is outside the vocabulary", param="logit_bias"
            )
        sampling = SamplingParams(
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=body.top_k or 0,
            min_p=body.min_p or 0.0,
            repetition_penalty=body.repetition_penalty or 1.0,
            presence_penalty=body.presence_penalty or 0.0,
            frequency_penalty=body.frequency_penalty or 0.0,
            seed=body.seed,
            logit_bias=bias,
            grammar=grammar,
        )
        return GenerationRequest(
            prompt=prompt,
            max_tokens=min(cap, room) if requested_max is None else requested_max,
            sampling=sampling,
            stop=stops,
            deadline=time.monotonic() + self.deadline_s,
            logprobs=logprobs,
        )

    async def run(
        self,
        request: Request,
        session: Session,
        job: GenerationRequest,
        *,
        stream: bool,
        shape: Shape,
    ) -> Response:
        stack = AsyncExitStack()
        generation: Generation | None = None
        try:
            await stack.enter_async_context(self.sessions.use(session, deadline=job.deadline))
            job = self._scheduled(session, job)
            self._check_line(job)
            try:
                generation = self.engine.submit(session.kv, job, max_waiting=self.queue_depth)
            except inference_errors.QueueFull:
                raise _line_full(self.engine.expected_wait_s()) from None
            session.running = generation
            first = await _next(generation, job.deadline)
            if isinstance(first, Failed):
                raise from_inference(first.error)
            observe.first_token()  # Started: the first token is sampled in the same step
        except BaseException:
            if generation is not None:
                generation.cancel()
            await stack.aclose()
            raise
        # The session id lets the client fetch the session's receipt, ephemeral ones included.
        headers = {SESSION_HEADER: session.id}
        if not stream:
            watcher = asyncio.create_task(cancel_on_disconnect(request, generation))
            try:
                body = await self._collect(session, generation, job, shape)
            finally:
                watcher.cancel()
                generation.cancel()
                await stack.aclose()  # issues an ephemeral session's receipt, or raises
            return JSONResponse(body, headers=headers)
        return ClosingStream(
            self._stream(session, generation, job, shape, stack),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", **headers},
        )

    def _account(self, session: Session, finished: Finished) -> None:
        session.touch()  # only a request that succeeds keeps its session alive
        session.requests += 1
        session.prompt_tokens += finished.prompt_tokens
        session.completion_tokens += finished.completion_tokens
        self.quotas.charge(session.client_id, finished.prompt_tokens + finished.completion_tokens)
        observe.tokens(finished.prompt_tokens, finished.completion_tokens)

    async def _collect(
        self,
        session: Session,
        generation: Generation,
        job: GenerationRequest,
        shape: Shape,
    ) -> dict[str, Any]:
        parts: list[str] = []
        entries: list[TokenLogprob] = []
        while True:
            event = await _next(generation, job.deadline)
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, TokenLogprobs):
                entries.append(event.entry)
            elif isinstance(event, Finished):
                self._account(session, event)
                return shape.complete("".join(parts), event.reason, usage_of(event), entries)
            elif isinstance(event, Failed):
                raise from_inference(event.error)

    async def _stream(
        self,
        session: Session,
        generation: Generation,
        job: GenerationRequest,
        shape: Shape,
        stack: AsyncExitStack,
    ) -> AsyncIterator[bytes]:
        failure: APIError | None = None
        pad = self.stream_padding
        pending: list[TokenLogprob] = []  # tokens whose text has not been sent yet
        try:
            first = shape.first()
            if first is not None:
                yield sse.event(first, pad)
            while True:
                event = await _next(generation, job.deadline)
                if isinstance(event, TextDelta):
                    chunks = shape.delta(event.text, pending)
                    for chunk in chunks:
                        yield sse.event(chunk, pad)
                    if chunks:
                        pending = []
                elif isinstance(event, TokenLogprobs):
                    pending.append(event.entry)
                elif isinstance(event, Finished):
                    self._account(session, event)
                    yield sse.event(shape.last(event.reason, pending), pad)
                    if shape.include_usage:
                        yield sse.event(shape.usage_only(usage_of(event)), pad)
                    break
                elif isinstance(event, Failed):
                    raise from_inference(event.error)
        except APIError as exc:
            failure = exc
        finally:
            generation.cancel()
            try:
                await stack.aclose()  # issues an ephemeral session's receipt
            except APIError as exc:  # the receipt could not be written: the stream fails
                failure = failure or exc
        if failure is not None:
            observe.failed(failure.code, failure.status, failure.limit)
            yield sse.event(envelope(failure), pad)
        yield sse.done(pad)


async def get_generation(
    settings: SettingsDep, engine: EngineDep, sessions: SessionsDep, quotas: QuotasDep
) -> GenerationServing:
    return GenerationServing(
        engine=engine,
        sessions=sessions,
        quotas=quotas,
        max_tokens_cap=settings.max_tokens_cap,
        max_stop_sequences=settings.max_stop_sequences,
        deadline_s=settings.request_deadline_s,
        stream_padding=settings.stream_padding_bytes,
        queue_depth=settings.queue_depth,
        priority_classes=settings.priority_classes,
        default_priority=settings.client_default_priority,
    )


GenerationDep = Annotated[GenerationServing, Depends(get_generation)]


def _line_full(wait_s: float) -> QueueFull:
    return QueueFull(
        "every KV sequence is busy and the waiting line is full; retry shortly",
        retry_after_s=wait_s,
    )


async def _next(generation: Generation, deadline: float) -> Event:
    timeout = max(0.01, deadline - time.monotonic() + _DEADLINE_GRACE_S)
    try:
        return await asyncio.wait_for(generation.next_event(), timeout)
    except TimeoutError:
        generation.cancel()
        raise RequestTimeout("the request ran past its deadline") from None
