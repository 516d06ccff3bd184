import pytest

from inference.template import ChatMessage, ChatTemplate, TemplateRenderError

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
