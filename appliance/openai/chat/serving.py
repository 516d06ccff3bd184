"""Chat completions: messages to a prompt within the context, with a session's passages
when it has documents; response_format to a grammar; events to OpenAI's chat objects."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response

from appliance.auth import Principal
from appliance.errors import InvalidRequest, RequestTimeout
from appliance.openai.chat import prompt as prompts
from appliance.openai.chat import tools
from appliance.openai.chat.protocol import (
    ChatCompletionRequest,
    JsonObjectFormat,
    JsonSchemaFormat,
)
from appliance.openai.generation import GenerationServing
from appliance.openai.logprobs import chat_content
from appliance.openai.protocol import Usage
from appliance.openai.shapes import ShapeBase
from inference import grammar as grammars
from inference.grammar import SchemaLimits
from inference.logprobs import TokenLogprob
from inference.sampling import Grammar
from inference.template import ChatMessage
from inference.tools import Content
from rag.embedder import Embedder

T = TypeVar("T")


class ChatShape(ShapeBase):
    chunk_object = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def __init__(
        self,
        body: ChatCompletionRequest,
        citations: list[dict[str, Any]] | None,
        tool_plan: tools.ToolPlan | None = None,
    ) -> None:
        super().__init__(body)
        # Keep's extension: the passages retrieval put into the prompt, or None without RAG.
        self.citations = citations
        self.want_logprobs = bool(body.logprobs)
        # Calls are read from the output only where the grammar may have written them.
        calls = tool_plan is not None and tool_plan.calls
        self.calls = tools.CallShaper(tool_plan) if calls and tool_plan else None

    def _keep(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.citations is not None:
            obj["keep"] = {"citations": self.citations}
        return obj

    def _logprobs(self, entries: Sequence[TokenLogprob], *, whole: bool) -> dict[str, Any] | None:
        # A stream's chunk without tokens carries null, as OpenAI's do.
        return chat_content(entries) if self.want_logprobs and (entries or whole) else None

    def _choice(
        self, delta: dict[str, Any], reason: str | None, entries: Sequence[TokenLogprob] = ()
    ) -> dict[str, Any]:
        logprobs = self._logprobs(entries, whole=False)
        return {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": reason}

    def _reason(self, reason: str) -> str:
        # OpenAI's reason for a turn that ended in calls; a call cut short stays `length`.
        return "tool_calls" if reason == "stop" and self.calls and self.calls.called else reason

    def first(self) -> dict[str, Any]:
        return self.chunk(self._choice({"role": "assistant", "content": ""}, None))

    def delta(self, text: str, logprobs: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
        if self.calls is None:
            return [self.chunk(self._choice({"content": text}, None, logprobs))]
        out: list[dict[str, Any]] = []
        for piece in self.calls.feed(text):
            delta = self.calls.delta(piece)
            if delta is not None:
                out.append(self.chunk(self._choice(delta, None, () if out else logprobs)))
        return out

    def last(self, reason: str, logprobs: Sequence[TokenLogprob]) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        if self.calls is not None:
            held = "".join(p.text for p in self.calls.finish() if isinstance(p, Content))
            if held:
                delta = {"content": held}
        return self._keep(self.chunk(self._choice(delta, self._reason(reason), logprobs)))

    def complete(
        self, text: str, reason: str, usage: Usage, logprobs: Sequence[TokenLogprob]
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if self.calls is not None:
            content, calls = self.calls.whole(text)
            message["content"] = content or (None if calls else "")
            if calls:
                message["tool_calls"] = calls
        choice = {
            "index": 0,
            "message": message,
            "logprobs": self._logprobs(logprobs, whole=True),
            "finish_reason": self._reason(reason),
        }
        out = self.envelope("chat.completion", [choice]) | {"usage": usage.model_dump()}
        return self._keep(out)


def schema_of(body: ChatCompletionRequest) -> str | None:
    fmt = body.response_format
    return json.dumps(fmt.json_schema.schema_) if isinstance(fmt, JsonSchemaFormat) else None


def grammar_for(body: ChatCompletionRequest, limits: SchemaLimits) -> Grammar | None:
    if isinstance(body.response_format, JsonObjectFormat):
        return grammars.json_object()
    schema = schema_of(body)
    return None if schema is None else grammars.json_schema(schema, limits)


class ChatServing:
    def __init__(
        self,
        generation: GenerationServing,
        *,
        embedder: Embedder,
        rag_top_k: int,
        rag_min_score: float,
        schema_limits: SchemaLimits,
        max_tools: int = 128,
        max_tool_calls: int = 128,
    ) -> None:
        self.generation = generation
        self.max_tools = max_tools
        self.max_tool_calls = max_tool_calls
        self.schema_limits = schema_limits
        self.embedder = embedder
        self.rag_top_k = rag_top_k
        self.rag_min_score = rag_min_score

    def _prompt_budget(self, requested: int | None) -> int:
        """Tokens the prompt may take: the context less the room kept for the completion."""
        n_ctx = self.generation.model.n_ctx_per_seq
        reserve = requested or min(self.generation.max_tokens_cap, n_ctx // 4)
        return max(1, n_ctx - reserve)

    async def create(
        self, body: ChatCompletionRequest, request: Request, principal: Principal
    ) -> Response:
        generation = self.generation
        generation.check_model(body.model)
        model = generation.model
        template = model.template
        if template is None:
            raise InvalidRequest("this model has no chat template; use /v1/completions")
        messages = tools.conversation(body, max_calls=self.max_tool_calls)
        requested = body.max_completion_tokens or body.max_tokens
        budget = self._prompt_budget(requested)

        def tokens_of(candidate: list[ChatMessage]) -> list[int]:
            return model.tokenize_prompt(template.render(candidate, tools=functions))

        def count_text(text: str) -> int:
            return len(model.tokenize(text, add_special=False, parse_special=True))

        if body.top_logprobs is not None and not body.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        schema = schema_of(body)
        if schema is not None:  # measured before any work is done or a grammar is built
            grammars.check_schema(schema, self.schema_limits)
        tool_plan = tools.plan(body, max_tools=self.max_tools, limits=self.schema_limits)
        functions = tool_plan.functions if tool_plan is not None else None
        session = generation.admit(request, principal)
        # The deadline runs from admission: retrieval and assembly count against it.
        deadline = time.monotonic() + generation.deadline_s

        def check() -> None:
            if time.monotonic() > deadline:
                raise RequestTimeout("the request ran past its deadline")

        try:
            query = next((m.content for m in reversed(messages) if m.role == "user"), "")
            passages = await _within(
                deadline,
                prompts.retrieve(
                    self.embedder,
                    session,
                    body.keep,
                    query,
                    default_top_k=self.rag_top_k,
                    default_min_score=self.rag_min_score,
                ),
            )

            def prepare() -> tuple[list[int], list[prompts.Passage], Grammar | None]:
                prompt, used = prompts.assemble(
                    tokens_of, count_text, messages, passages or [], budget, check=check
                )
                check()
                if tool_plan is not None and tool_plan.calls:
                    return prompt, used, tool_plan.grammar(self.schema_limits)
                return prompt, used, grammar_for(body, self.schema_limits)

            prompt, used, grammar = await _within(deadline, asyncio.to_thread(prepare))
            job = generation.plan(
                body, prompt, requested_max=requested, grammar=grammar, logprobs=logprobs
            )
            job = dataclasses.replace(job, deadline=deadline)
        except BaseException:
            await generation.discard(session)
            raise
        citations = None if passages is None else prompts.citations(used)
        shape = ChatShape(body, citations, tool_plan)
        return await generation.run(request, session, job, stream=body.stream, shape=shape)


async def _within(deadline: float, work: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(work, max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise RequestTimeout("the request ran past its deadline") from None
