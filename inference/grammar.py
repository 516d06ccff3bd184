"""Grammars for structured output: any JSON value, or JSON matching a schema.

Invariant: a schema is measured against `SchemaLimits` before any grammar is built, and the
grammar built from it is measured again, so a request cannot make the converter (which spells
out every repetition of `minLength`, `maxItems`, a pattern's `{n}` ... literally) or llama.cpp's
grammar parser hold more than `max_grammar_bytes` of text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from inference.errors import GrammarError
from inference.sampling import Grammar

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
        for key, value in node.items():
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


def json_schema(schema_json: str, limits: SchemaLimits) -> Grammar:
    """Compile a JSON Schema (as JSON text) to GBNF, within `limits`."""
    check_schema(schema_json, limits)
    try:
        gbnf = json_schema_to_gbnf(schema_json)
    except RecursionError:
        raise GrammarError("the JSON schema nests too deeply") from None
    except Exception:  # noqa: BLE001 - the converter raises bare Exception and friends
        raise GrammarError("the JSON schema is not supported") from None
    if len(gbnf.encode()) > limits.max_grammar_bytes:
        raise GrammarError(
            f"the JSON schema's grammar would exceed {limits.max_grammar_bytes} bytes"
        )
    return Grammar(gbnf=gbnf)
