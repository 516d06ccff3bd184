"""Chat templates from GGUF metadata, rendered in an immutable Jinja sandbox.

A template is model-supplied code: the sandbox stops it from reaching Python internals or
mutating its arguments.

Tools reach a template in one of two ways. A template that reads a `tools` variable (as
Hugging Face templates with tool support do) gets the tools, the assistant turns' `tool_calls`
and the `tool` turns as it expects them. Any other template gets the conversation rewritten
by `fallback` into the roles it knows, in a documented format (docs/operations.md): the tools
as JSON lines in the system turn, calls between `<tool_call>` tags, and results as plain
text in a user turn (tagged results made SmolLM2 write a result of its own instead of a
call). Keep's grammar makes every model write calls in that same tagged form
(`inference.tools`).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from jinja2 import TemplateError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from inference.errors import RequestError
from inference.tools import CALL_CLOSE, CALL_OPEN, Function, ToolCall, call_text

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # a tool turn: the call it answers


class TemplateRenderError(RequestError):
    """The model's template rejected the conversation (for example, roles out of order)."""


def _raise_exception(message: str) -> NoReturn:
    raise TemplateRenderError("the chat template rejected the conversation")


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime(fmt)


def _arguments(call: ToolCall) -> Any:
    """A call's arguments as templates expect them: a mapping (text when not JSON)."""
    try:
        return json.loads(call.arguments)
    except (ValueError, RecursionError):
        return call.arguments


def _native(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments(call)},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def tool_spec(function: Function) -> dict[str, Any]:
    """A function as OpenAI's `tools` list (and Hugging Face templates) spell it."""
    spec: dict[str, Any] = {"name": function.name}
    if function.description is not None:
        spec["description"] = function.description
    spec["parameters"] = function.parameters
    return {"type": "function", "function": spec}


TOOLS_PREAMBLE = (
    "You can call functions. Their signatures, as JSON, are listed between <tools> and "
    "</tools>:\n<tools>\n{tools}\n</tools>\n"
    "To call a function, answer with a JSON object holding its name and arguments between "
    f"{CALL_OPEN} and {CALL_CLOSE}:\n"
    f"{CALL_OPEN}\n"
    '{{"name": "<function name>", "arguments": <a JSON object>}}\n'
    f"{CALL_CLOSE}"
)


def fallback(messages: Sequence[ChatMessage], tools: Sequence[Function]) -> list[ChatMessage]:
    """The conversation in the roles every template knows: tools described in the system
    turn, calls written into the assistant's text, and each run of tool results as one user
    turn."""
    out: list[ChatMessage] = []
    if tools:
        listing = TOOLS_PREAMBLE.format(
            tools="\n".join(json.dumps(tool_spec(f), ensure_ascii=False) for f in tools)
        )
        if messages and messages[0].role == "system":
            out.append(ChatMessage("system", f"{messages[0].content}\n\n{listing}"))
            messages = messages[1:]
        else:
            out.append(ChatMessage("system", listing))
    previous_tool = False
    for message in messages:
        if message.role == "tool":
            result = f"Tool result:\n{message.content}"
            if previous_tool:
                out[-1] = ChatMessage("user", f"{out[-1].content}\n\n{result}")
            else:
                out.append(ChatMessage("user", result))
            previous_tool = True
            continue
        previous_tool = False
        if message.tool_calls:
            calls = "\n".join(call_text(c.name, c.arguments) for c in message.tool_calls)
            text = f"{message.content}\n{calls}" if message.content else calls
            out.append(ChatMessage("assistant", text))
        else:
            out.append(ChatMessage(message.role, message.content))
    return out


_PROBE_TOOL = Function("probe", None, {"type": "object", "properties": {}})
_PROBE = [
    ChatMessage("user", "x"),
    ChatMessage("assistant", "", tool_calls=(ToolCall("call_0", "probe", "{}"),)),
]


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str, eos_token: str) -> None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True
        )
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        self._template = env.from_string(source)
        self.bos_token = bos_token
        self.eos_token = eos_token
        # Whether the template renders tools itself: it reads a `tools` variable, and writes
        # a call in the tagged form the grammar makes every model use. A template with a
        # format of its own (Llama 3's JSON, Mistral's [TOOL_CALLS]) gets the fallback, so
        # that the calls a model sees in its history are the ones it is made to write.
        self.takes_tools = False
        if "tools" in meta.find_undeclared_variables(env.parse(source)):
            self.takes_tools = True
            try:
                probe = self.render(_PROBE, tools=[_PROBE_TOOL], add_generation_prompt=False)
            except TemplateRenderError:
                probe = ""
            self.takes_tools = CALL_OPEN in probe

    def render(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[Function] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        variables: dict[str, Any] = {}
        if self.takes_tools:
            shaped = [_native(m) for m in messages]
            if tools:
                variables["tools"] = [tool_spec(f) for f in tools]
        else:
            shaped = [
                {"role": m.role, "content": m.content} for m in fallback(messages, tools or ())
            ]
        try:
            return self._template.render(
                messages=shaped,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
        except TemplateRenderError:
            raise
        except (TemplateError, TypeError, ValueError, KeyError, IndexError, RecursionError):
            raise TemplateRenderError(
                "the chat template could not render the conversation"
            ) from None
