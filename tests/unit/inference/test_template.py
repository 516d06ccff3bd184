import json

import pytest

from inference.template import ChatMessage, ChatTemplate, TemplateRenderError
from inference.tools import Function, ToolCall

SIMPLE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def test_renders_messages_and_generation_prompt() -> None:
    template = ChatTemplate(SIMPLE, bos_token="", eos_token="")
    out = template.render([ChatMessage("user", "hi")])
    assert out == "<user>hi</user><assistant>"


def test_sandbox_blocks_python_internals() -> None:
    hostile = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(TemplateRenderError):
        ChatTemplate(hostile, bos_token="", eos_token="").render([ChatMessage("user", "x")])


def test_template_cannot_mutate_its_arguments() -> None:
    hostile = "{% set _ = messages.append(1) %}{{ messages|length }}"
    with pytest.raises(TemplateRenderError):
        ChatTemplate(hostile, bos_token="", eos_token="").render([ChatMessage("user", "x")])


def test_raise_exception_becomes_a_content_free_error() -> None:
    source = "{{ raise_exception('roles must alternate: ' + messages[0].content) }}"
    template = ChatTemplate(source, bos_token="", eos_token="")
    with pytest.raises(TemplateRenderError) as info:
        template.render([ChatMessage("user", "CANARY-7781")])
    assert "CANARY-7781" not in str(info.value)


# Tools: a template that reads `tools` gets them natively; any other gets the fallback.
NATIVE = (
    "{% if tools %}[tools:{% for t in tools %}{{ t.function.name }};{% endfor %}]{% endif %}"
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
    "{% for c in m.tool_calls or [] %}<tool_call>{{ c.id }} {{ c.function.name }} "
    "{{ c.function.arguments.city }}</tool_call>{% endfor %}"
    "{% if m.tool_call_id %}[for {{ m.tool_call_id }}]{% endif %}</{{ m.role }}>{% endfor %}"
)
WEATHER = Function("get_weather", "Weather by city", {"type": "object"})
CALL = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
TURNS = [
    ChatMessage("user", "Weather in Paris?"),
    ChatMessage("assistant", "", tool_calls=(CALL,)),
    ChatMessage("tool", "18C", tool_call_id="call_1"),
    ChatMessage("tool", "sunny", tool_call_id="call_1"),
]


def test_a_template_that_reads_tools_gets_them_and_the_calls_as_hugging_face_passes_them() -> None:
    template = ChatTemplate(NATIVE, bos_token="", eos_token="")
    assert template.takes_tools
    out = template.render(TURNS, tools=[WEATHER])
    assert out == (
        "[tools:get_weather;]<user>Weather in Paris?</user>"
        "<assistant><tool_call>call_1 get_weather Paris</tool_call></assistant>"
        "<tool>18C[for call_1]</tool><tool>sunny[for call_1]</tool>"
    )


def test_other_templates_get_tools_calls_and_results_in_the_roles_they_know() -> None:
    template = ChatTemplate(SIMPLE, bos_token="", eos_token="")
    assert not template.takes_tools
    out = template.render(TURNS, tools=[WEATHER])
    system, rest = out.split("</system>", 1)
    assert system.startswith("<system>You can call functions.")
    listed = system.split("<tools>\n")[1].split("\n</tools>")[0]
    assert json.loads(listed) == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather by city",
            "parameters": {"type": "object"},
        },
    }
    assert rest == (
        "<user>Weather in Paris?</user>"
        '<assistant><tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "</tool_call></assistant>"
        "<user>Tool result:\n18C\n\nTool result:\nsunny</user><assistant>"
    )


def test_without_tools_the_fallback_leaves_a_plain_conversation_alone() -> None:
    template = ChatTemplate(SIMPLE, bos_token="", eos_token="")
    out = template.render([ChatMessage("system", "Be brief."), ChatMessage("user", "hi")])
    assert out == "<system>Be brief.</system><user>hi</user><assistant>"


def test_a_template_with_a_call_format_of_its_own_gets_the_fallback() -> None:
    # Reads `tools`, but writes calls as Llama 3 does: the model would see calls in a form
    # the grammar never lets it write.
    own = (
        "{% for m in messages %}{{ m.role }}:{{ m.content }}"
        '{% for c in m.tool_calls or [] %}{"name": "{{ c.function.name }}"}'
        "{% endfor %}\n{% endfor %}{{ tools | length if tools else '' }}"
    )
    template = ChatTemplate(own, bos_token="", eos_token="")
    assert not template.takes_tools
    out = template.render(TURNS, tools=[WEATHER])
    assert out.startswith("system:You can call functions.")
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in out
