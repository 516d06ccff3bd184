"""Grammars for structured output: any JSON value, or JSON matching a schema."""

from __future__ import annotations

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from inference.errors import GrammarError
from inference.sampling import Grammar


def json_object() -> Grammar:
    """A JSON object at the top level, as OpenAI's json_object mode promises."""
    return Grammar(gbnf=JSON_GBNF)


def json_schema(schema_json: str) -> Grammar:
    """Compile a JSON Schema (as JSON text) to GBNF."""
    try:
        return Grammar(gbnf=json_schema_to_gbnf(schema_json))
    except RecursionError:
        raise GrammarError("the JSON schema nests too deeply") from None
    except Exception:  # noqa: BLE001 - the converter raises bare Exception and friends
        raise GrammarError("the JSON schema is not supported") from None
