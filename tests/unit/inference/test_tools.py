"""The tool-call parser: any split of the model's text gives the same content and calls as
the whole, and a stream never sends text it would have to take back."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from inference.tools import (
    CALL_OPEN,
    ArgumentsDelta,
    CallFinished,
    CallStarted,
    Content,
    Piece,
    ToolCallParser,
    call_text,
)

CALLS = [
    ("get_weather", '{"city": "Paris", "unit": "celsius"}'),
    ("lookup", '{ "q" : "a } tricky </tool_call> string", "n": {"deep": [1, 2, {"x": "}"}]} }'),
    ("no_args", "{}"),
]
TEXT = (
    "Let me check < that for you.\n"
    + "\n".join(call_text(name, args) for name, args in CALLS)
    + "\n"
)


def run(pieces: list[str]) -> tuple[str, dict[int, str], list[CallFinished], list[Piece]]:
    parser = ToolCallParser()
    out: list[Piece] = []
    for piece in pieces:
        out += parser.feed(piece)
    out += parser.finish()
    content = "".join(p.text for p in out if isinstance(p, Content))
    fragments: dict[int, str] = {}
    for p in out:
        if isinstance(p, ArgumentsDelta):
            fragments[p.index] = fragments.get(p.index, "") + p.text
    return content, fragments, [p for p in out if isinstance(p, CallFinished)], out


def test_whole_text_gives_content_then_each_call_with_its_own_json() -> None:
    content, fragments, calls, out = run([TEXT])
    assert content == "Let me check < that for you.\n"
    assert [(c.name, c.arguments) for c in calls] == CALLS
    assert [json.loads(c.arguments) for c in calls][1]["q"] == "a } tricky </tool_call> string"
    assert [p.name for p in out if isinstance(p, CallStarted)] == [n for n, _ in CALLS]
    assert fragments == {i: args for i, (_, args) in enumerate(CALLS)}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=40))
def test_any_split_gives_what_the_whole_gives(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(TEXT)]
    pieces = [TEXT[a:b] for a, b in itertools.pairwise(bounds)]
    content, fragments, calls, out = run(pieces)
    assert content == "Let me check < that for you.\n"
    assert [(c.name, c.arguments) for c in calls] == CALLS
    # The fragments sent join to exactly the final arguments: none was taken back.
    assert fragments == {c.index: c.arguments for c in calls}
    starts = [i for i, p in enumerate(out) if isinstance(p, CallStarted)]
    assert all(not isinstance(p, Content) for p in out[starts[0] :])  # no content after a call


def test_a_call_cut_short_is_not_returned_and_held_text_is_content() -> None:
    cut = TEXT[: TEXT.index("celsius")]
    _, _, calls, _ = run([cut])
    assert calls == []
    content, _, calls, _ = run(["Almost a tag: <tool_ca"])
    assert content == "Almost a tag: <tool_ca"
    assert calls == []


def test_text_that_never_opens_a_call_is_all_content() -> None:
    text = "Plain answer, with <b>markup</b> and a stray " + CALL_OPEN[:-1]
    content, _, calls, _ = run(list(text))
    assert content == text
    assert calls == []


def test_history_arguments_that_are_not_json_are_quoted() -> None:
    text = call_text("f", "not json")
    _, _, calls, _ = run([text])
    assert json.loads(calls[0].arguments) == "not json"
