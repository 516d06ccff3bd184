"""Grammars for structured output: any JSON value, or JSON matching a schema.

Invariant: a schema is measured against `SchemaLimits` before any grammar is built, and the
grammar built from it is measured again, so a request cannot make the converter (which spells
out every repetition of `minLength`, `maxItems`, a pattern's `{n}` ... literally) or llama.cpp's
grammar parser hold more than `max_grammar_bytes` of text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from inference.errors import GrammarError
from inference.sampling import Grammar
from inference.tools import CALL_CLOSE, CALL_OPEN, Function

# Keywords whose value the converter turns into that many copies of a rule.
REPETITION_KEYWORDS = frozenset(
    {
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minContains",
        "maxContains",
    }
)
# Keywords whose value is data (a JSON value), not a schema to walk.
DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
# A regex quantifier `{n}`, `{n,}` or `{n,m}` inside a `pattern`.
_QUANTIFIER = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")
# Bytes of grammar one repetition costs at most, as the converter writes it (measured: a
# string's `char` repetition is about 8 bytes, an item rule's reference up to ~15).
_BYTES_PER_REPETITION = 16


@dataclass(frozen=True)
class SchemaLimits:
    max_schema_bytes: int = 65536
    max_depth: int = 32
    max_repetition: int = 512
    max_grammar_bytes: int = 1 << 20


def json_object() -> Grammar:
    """A JSON object at the top level, as OpenAI's json_object mode promises."""
    return Grammar(gbnf=JSON_GBNF)


def check_schema(schema_json: str, limits: SchemaLimits) -> None:
    """Raise GrammarError unless the schema is within every limit. Cheap: no grammar built."""
    if len(schema_json.encode()) > limits.max_schema_bytes:
        raise GrammarError(f"the JSON schema may be at most {limits.max_schema_bytes} bytes")
    try:
        schema = json.loads(schema_json)
    except ValueError:
        raise GrammarError("the JSON schema is not valid JSON") from None
    repetitions = _measure(schema, limits, depth=1)
    if repetitions * _BYTES_PER_REPETITION > limits.max_grammar_bytes:
        raise GrammarError(
            f"the JSON schema's grammar would exceed {limits.max_grammar_bytes} bytes"
        )


def _measure(node: Any, limits: SchemaLimits, *, depth: int) -> int:
    """The schema's total repetition count, checking depth and each count on the way."""
    if depth > limits.max_depth:
        raise GrammarError(f"the JSON schema may nest at most {limits.max_depth} levels")
    total = 0
    if isinstance(node, dict):
        for keyword in ("$ref", "$dynamicRef"):
            ref = node.get(keyword)
            if isinstance(ref, str) and not ref.startswith("#"):
                # Nothing may fetch it (the converter, the validator): say so before any work.
                raise GrammarError("a JSON schema $ref must point inside the schema (start with #)")
        for key, value in node.items():
            if key in DATA_KEYWORDS:  # values, not schemas: counted for size only
                continue
            if key in REPETITION_KEYWORDS and isinstance(value, int | float):
                total += _count(value, limits)
            elif key == "pattern" and isinstance(value, str):
                for low, high in _QUANTIFIER.findall(value):
                    total += _count(int(low), limits) + _count(int(high or 0), limits)
            total += _measure(value, limits, depth=depth + 1)
    elif isinstance(node, list):
        for item in node:
            total += _measure(item, limits, depth=depth + 1)
    return total


def _count(value: float, limits: SchemaLimits) -> int:
    if value > limits.max_repetition:
        raise GrammarError(
            f"a JSON schema repetition count (minLength, maxItems, a pattern's {{n}} ...) "
            f"may be at most {limits.max_repetition}"
        )
    return max(0, int(value))


def schema_map(node: Any, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """A copy of a schema with `change` applied to every object in it, innermost first; the
    values of data keywords (`const`, `enum` ...) are copied as they are."""
    if isinstance(node, list):
        return [schema_map(item, change) for item in node]
    if not isinstance(node, dict):
        return node
    return change(
        {
            key: value if key in DATA_KEYWORDS else schema_map(value, change)
            for key, value in node.items()
        }
    )


def _bounded_integers(node: Any, limits: SchemaLimits) -> Any:
    """The schema with each bounded integer range of at most `max_repetition` values spelled
    out as an `enum`: the converter ignores `minimum` and `maximum`, an enum it enforces."""
    return schema_map(node, lambda out: _as_enum(out, limits))


def _as_enum(out: dict[str, Any], limits: SchemaLimits) -> dict[str, Any]:
    if out.get("type") != "integer" or "enum" in out or "const" in out:
        return out
    low, high = (
        _bound(out, "minimum", "exclusiveMinimum", 1),
        _bound(out, "maximum", "exclusiveMaximum", -1),
    )
    if low is not None and high is not None and 0 <= high - low < limits.max_repetition:
        values = [v for v in range(low, high + 1) if _multiple(v, out.get("multipleOf"))]
        if values:
            out = {"enum": values}
    return out


def _number(value: Any) -> float | int | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return value if ok and math.isfinite(value) else None  # JSON may carry NaN or Infinity


def _bound(node: dict[str, Any], inclusive: str, exclusive: str, step: int) -> int | None:
    values = []
    if (edge := _number(node.get(inclusive))) is not None:
        values.append(math.ceil(edge) if step > 0 else math.floor(edge))
    if (edge := _number(node.get(exclusive))) is not None:
        values.append(math.floor(edge) + 1 if step > 0 else math.ceil(edge) - 1)
    if not values:
        return None
    return int(max(values) if step > 0 else min(values))


def _multiple(value: int, of: Any) -> bool:
    if (of := _number(of)) is None or of <= 0:
        return True
    return (value / of).is_integer()


def _to_gbnf(schema_json: str, limits: SchemaLimits, what: str) -> str:
    """The converter's rules for a schema already measured; `what` names it in errors."""
    schema = json.dumps(_bounded_integers(json.loads(schema_json), limits))
    try:
        return str(json_schema_to_gbnf(schema))
    except RecursionError:
        raise GrammarError(f"{what} nests too deeply") from None
    except Exception:  # noqa: BLE001 - the converter raises bare Exception and friends
        raise GrammarError(f"{what} is not supported") from None


def json_schema(schema_json: str, limits: SchemaLimits) -> Grammar:
    """Compile a JSON Schema (as JSON text) to GBNF, within `limits`."""
    check_schema(schema_json, limits)
    gbnf = _to_gbnf(schema_json, limits, "the JSON schema")
    if len(gbnf.encode()) > limits.max_grammar_bytes:
        raise GrammarError(
            f"the JSON schema's grammar would exceed {limits.max_grammar_bytes} bytes"
        )
    return Grammar(gbnf=gbnf)


def call_schema(functions: Sequence[Function]) -> dict[str, Any]:
    """One JSON Schema for a call to any of `functions`: its name, then its arguments.

    Each function's parameters move to the root's `$defs` (as `f<i>-args`), its own
    definitions beside them renamed apart (`f<i>-Item`), and its local references rebased to
    match: the converter resolves every `#/...` from the root it is given, and names a
    referenced rule by its last path segment, so two functions' `$defs/Item` stay two rules.
    """
    definitions: dict[str, Any] = {}
    options = []
    for i, f in enumerate(functions):
        tag = f"f{i}-"
        arguments, own = _rebased(f.parameters, tag)
        definitions[f"{tag}args"] = arguments
        definitions.update(own)
        options.append(
            {
                "type": "object",
                "properties": {
                    "name": {"const": f.name},
                    "arguments": {"$ref": f"#/$defs/{tag}args"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "$defs": definitions}


def _rebased(parameters: dict[str, Any], tag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A function's parameters without their definitions, and the definitions, renamed by
    `tag`, with every local reference pointing where they now are."""

    def ref(target: str) -> str:
        rest = target[1:].lstrip("/")
        for defs in ("$defs/", "definitions/"):
            if rest.startswith(defs):
                return f"#/$defs/{tag}{rest[len(defs) :]}"
        return f"#/$defs/{tag}args/{rest}" if rest else f"#/$defs/{tag}args"

    def local(node: dict[str, Any]) -> dict[str, Any]:
        target = node.get("$ref")
        if isinstance(target, str) and target.startswith("#"):
            return {**node, "$ref": ref(target)}
        return node

    rebased: dict[str, Any] = schema_map(parameters, local)
    own: dict[str, Any] = {}
    for defs in ("$defs", "definitions"):
        found = rebased.pop(defs, None)
        if isinstance(found, dict):
            own.update({tag + name: schema for name, schema in found.items()})
    return rebased, own


def tool_calls(
    functions: Sequence[Function], *, forced: bool, parallel: bool, limits: SchemaLimits
) -> Grammar:
    """Calls in the tagged form of inference.tools, each matching one function's schema.

    `forced`: the output is calls and nothing else. Otherwise the grammar is lazy: the model
    writes free text until it writes `<tool_call>`, and from right after it the grammar
    holds. Either way a call is followed only by another call (when `parallel`) or the end.
    """
    schema = json.dumps(call_schema(functions))
    check_schema(schema, limits)  # every tool together within one schema's bounds
    rules = _to_gbnf(schema, limits, "a tool's parameters schema")
    taken = set(_RULE_NAME.findall(rules))
    call, calls, after = (_fresh(name, taken) for name in ("tool-call", "tool-calls", "after"))
    more = f' ("\\n" {call})*' if parallel else ""
    gbnf = (
        f"{rules}\n"
        f'{call} ::= "{CALL_OPEN}" {after}\n'
        f'{after} ::= "\\n" root "\\n{CALL_CLOSE}"\n'
        f"{calls} ::= {call}{more}\n"
        f"{after}-{calls} ::= {after}{more}\n"
    )
    if len(gbnf.encode()) > limits.max_grammar_bytes:
        raise GrammarError(f"the tools' grammar would exceed {limits.max_grammar_bytes} bytes")
    if forced:
        return Grammar(gbnf=gbnf, root=calls)
    # Lazy: the model writes freely until it has written the opening tag itself.
    return Grammar(gbnf=gbnf, root=f"{after}-{calls}", lazy_after=CALL_OPEN)


_RULE_NAME = re.compile(r"^([a-zA-Z0-9-]+)\s*::=", re.MULTILINE)


def _fresh(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "-x"
    taken.add(name)
    return name
