"""Tool calling for chat completions: a request's `tools` and `tool_choice` to the functions
the prompt shows and the grammar the calls are generated under; the model's tagged calls to
OpenAI's `tool_calls`, whole or as stream deltas.

Every call returned is checked against its function's schema with a JSON Schema validator:
the grammar enforces most keywords, and a call that slips past one it cannot (`multipleOf`,
`uniqueItems` ...) ends the request with 422, so no invalid call ever reaches a client.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from appliance.errors import InvalidRequest, ToolCallInvalid
from appliance.openai.chat.protocol import (
    ChatCompletionRequest,
    ChatMessageIn,
    JsonObjectFormat,
    JsonSchemaFormat,
    NamedToolChoice,
)
from inference import grammar as grammars
from inference.errors import GrammarError
from inference.grammar import SchemaLimits
from inference.sampling import Grammar
from inference.template import ChatMessage, Role
from inference.tools import (
    ArgumentsDelta,
    CallFinished,
    CallStarted,
    Content,
    Function,
    Piece,
    ToolCall,
    ToolCallParser,
)

# What OpenAI reads an omitted `parameters` as: a function that takes no arguments.
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


def conversation(body: ChatCompletionRequest, *, max_calls: int) -> list[ChatMessage]:
    return [_message(m, max_calls, i) for i, m in enumerate(body.messages)]


def _message(m: ChatMessageIn, max_calls: int, index: int) -> ChatMessage:
    calls = m.tool_calls or []
    if len(calls) > max_calls:
        raise InvalidRequest(
            f"an assistant message may carry at most {max_calls} tool_calls",
            param=f"messages[{index}].tool_calls",
        )
    return ChatMessage(
        role=_ROLES[m.role],
        content=m.text(),
        tool_calls=tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in calls),
        tool_call_id=m.tool_call_id,
    )


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools come to: the functions its prompt lists and, unless the choice
    is `none`, those it may call, how, and the validators the calls are checked with."""

    functions: tuple[Function, ...]
    callable: tuple[Function, ...] = ()
    forced: bool = False  # `required` or a named function: calls and nothing else
    parallel: bool = True
    validators: dict[str, Draft202012Validator] = field(default_factory=dict)

    @property
    def calls(self) -> bool:
        return bool(self.callable)

    def grammar(self, limits: SchemaLimits) -> Grammar:
        """The calls' grammar: the costly part, built off the event loop."""
        try:
            return grammars.tool_calls(
                self.callable, forced=self.forced, parallel=self.parallel, limits=limits
            )
        except GrammarError as exc:
            raise InvalidRequest(str(exc), param="tools") from None


def plan(body: ChatCompletionRequest, *, max_tools: int, limits: SchemaLimits) -> ToolPlan | None:
    """None for a request without tools. Only cheap checks: sizes and counts first, then
    each schema's validity; the grammar is built later, by `ToolPlan.grammar`."""
    tools = body.tools or []
    choice = body.tool_choice
    if not tools:
        if choice is not None and choice != "none":
            raise InvalidRequest("tool_choice needs tools", param="tool_choice")
        return None
    if len(tools) > max_tools:
        raise InvalidRequest(f"at most {max_tools} tools are allowed", param="tools")
    functions: list[Function] = []
    for i, tool in enumerate(tools):
        spec = tool.function
        if any(f.name == spec.name for f in functions):
            raise InvalidRequest("tool names must be unique", param=f"tools[{i}].function.name")
        parameters = NO_PARAMETERS if spec.parameters is None else spec.parameters
        functions.append(Function(spec.name, spec.description, parameters))
    try:  # every tool together within one schema's bounds, before any schema is read
        grammars.check_schema(json.dumps(grammars.call_schema(functions)), limits)
    except GrammarError as exc:
        raise InvalidRequest(str(exc), param="tools") from None
    validators = {
        f.name: _validator(f.parameters, f"tools[{i}].function.parameters")
        for i, f in enumerate(functions)
    }
    if choice == "none":
        return ToolPlan(tuple(functions))
    if isinstance(body.response_format, JsonObjectFormat | JsonSchemaFormat):
        raise InvalidRequest(
            "response_format cannot be combined with tools unless tool_choice is none",
            param="response_format",
        )
    callable_ = functions
    if isinstance(choice, NamedToolChoice):
        callable_ = [f for f in functions if f.name == choice.function.name]
        if not callable_:
            raise InvalidRequest("tool_choice names a function not in tools", param="tool_choice")
    return ToolPlan(
        functions=tuple(functions),
        callable=tuple(callable_),
        forced=choice == "required" or isinstance(choice, NamedToolChoice),
        parallel=body.parallel_tool_calls is not False,
        validators=validators,
    )


def _validator(parameters: dict[str, Any], param: str) -> Draft202012Validator:
    kind = parameters.get("type", "object")
    if kind != "object":
        raise InvalidRequest("a function's parameters must be a JSON Schema object", param=param)
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError:
        raise InvalidRequest(
            "a function's parameters are not a valid JSON Schema", param=param
        ) from None
    return Draft202012Validator(parameters)


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


class CallShaper:
    """One response's calls: the parser's pieces as OpenAI's objects, each call checked."""

    def __init__(self, plan: ToolPlan) -> None:
        self._validators = plan.validators
        self._parser = ToolCallParser()
        self._ids: list[str] = []

    @property
    def called(self) -> bool:
        return bool(self._parser.calls)

    def feed(self, text: str) -> list[Piece]:
        return self._checked(self._parser.feed(text))

    def finish(self) -> list[Piece]:
        return self._checked(self._parser.finish())

    def _checked(self, pieces: list[Piece]) -> list[Piece]:
        for piece in pieces:
            if isinstance(piece, CallStarted):
                self._ids.append(new_call_id())
            elif isinstance(piece, CallFinished):
                validator = self._validators[piece.name]
                try:
                    valid = validator.is_valid(json.loads(piece.arguments))
                except Exception:  # noqa: BLE001 - an unresolvable $ref and the like
                    valid = False
                if not valid:
                    raise ToolCallInvalid(
                        "the model's tool call does not match the function's schema: it uses "
                        "a keyword the grammar cannot enforce"
                    )
        return pieces

    def call(self, finished: CallFinished) -> dict[str, Any]:
        return {
            "id": self._ids[finished.index],
            "type": "function",
            "function": {"name": finished.name, "arguments": finished.arguments},
        }

    def delta(self, piece: Piece) -> dict[str, Any] | None:
        """A stream delta for one piece: None for a piece that adds nothing to send."""
        if isinstance(piece, Content):
            return {"content": piece.text}
        if isinstance(piece, CallStarted):
            call = {
                "index": piece.index,
                "id": self._ids[piece.index],
                "type": "function",
                "function": {"name": piece.name, "arguments": ""},
            }
            return {"tool_calls": [call]}
        if isinstance(piece, ArgumentsDelta):
            fragment = {"index": piece.index, "function": {"arguments": piece.text}}
            return {"tool_calls": [fragment]}
        return None

    def whole(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """A finished generation's content and calls."""
        pieces = self.feed(text) + self.finish()
        content = "".join(p.text for p in pieces if isinstance(p, Content))
        return content, [self.call(p) for p in pieces if isinstance(p, CallFinished)]
