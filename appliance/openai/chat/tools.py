"""Tool calling for chat completions: a request's `tools` and `tool_choice` to the functions
the prompt shows and the grammar the calls are generated under; the model's tagged calls to
OpenAI's `tool_calls`, whole or as stream deltas.

Every call returned is checked against its function's schema with a JSON Schema validator:
the grammar enforces most keywords, and a call that slips past one it cannot (`multipleOf`,
`uniqueItems` ...) ends the request with 422, so no invalid call ever reaches a client.

The validator runs on the event loop, on model text, with the client's schema, so it is
built not to hurt: it resolves no reference outside the schema (an empty registry: nothing
is fetched), and a `pattern` is matched by a regex engine with a time limit, within one
budget per call, so a pattern that backtracks exponentially costs at most that budget.
`patternProperties` is refused outright: jsonschema matches it with Python's `re`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import regex
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError
from referencing import Registry

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

# Regex time one call's validation may spend, in seconds.
PATTERN_BUDGET_S = 0.1
_deadline: ContextVar[float] = ContextVar("pattern_deadline", default=0.0)


class PatternTimeout(Exception):
    """A call's patterns ran past their budget: the call cannot be shown valid."""


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    try:
        found = regex.search(
            pattern, instance, timeout=max(1e-3, _deadline.get() - time.monotonic())
        )
    except TimeoutError:
        # Not a failed match: that would turn valid under `not`. The whole check fails.
        raise PatternTimeout from None
    except regex.error:
        yield ValidationError("the pattern is not a valid regular expression")
        return
    if found is None:
        yield ValidationError("the string does not match the pattern")


_Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})
_NO_FETCH: Registry[Any] = Registry()
# Keywords the validator would match with Python's re, unbounded: refused in tools.
_REFUSED = ("patternProperties",)

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
    validators: dict[str, Any] = field(default_factory=dict)

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


def _validator(parameters: dict[str, Any], param: str) -> Any:
    kind = parameters.get("type", "object")
    if kind != "object":
        raise InvalidRequest("a function's parameters must be a JSON Schema object", param=param)
    if _uses(parameters, _REFUSED):
        raise InvalidRequest("patternProperties is not supported in tools", param=param)
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError:
        raise InvalidRequest(
            "a function's parameters are not a valid JSON Schema", param=param
        ) from None
    except RecursionError:
        raise InvalidRequest("a function's parameters nest too deeply", param=param) from None
    return _Validator(parameters, registry=_NO_FETCH)


def _uses(node: Any, keywords: tuple[str, ...]) -> bool:
    if isinstance(node, dict):
        return any(k in node for k in keywords) or any(
            _uses(v, keywords) for k, v in node.items() if k not in grammars.DATA_KEYWORDS
        )
    if isinstance(node, list):
        return any(_uses(item, keywords) for item in node)
    return False


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
                token = _deadline.set(time.monotonic() + PATTERN_BUDGET_S)
                try:
                    valid = validator.is_valid(json.loads(piece.arguments))
                except Exception:  # noqa: BLE001 - an unresolvable $ref, deep nesting ...
                    valid = False
                finally:
                    _deadline.reset(token)
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
