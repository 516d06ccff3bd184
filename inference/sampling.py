"""Sampling parameters and the llama.cpp sampler chain built from them.

The chain runs in C: logit bias, penalties, grammar, then greedy (temperature 0) or
top-k, top-p, min-p, temperature and a seeded draw.

Sampling is llama_sampler_sample taken apart: apply the chain, look at the token it chose,
and only then accept it. A grammar that allows no next token leaves every candidate at -inf;
llama_sampler_sample would accept the chosen one anyway, and llama.cpp's grammar then aborts
the whole process (GGML_ABORT on an end-of-generation token, or an uncaught C++ exception on
any other). Here that ends the one request with GrammarDeadEnd.
"""

from __future__ import annotations

import ctypes
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np

from inference.errors import GrammarDeadEnd, GrammarError, InvalidTokenId

# llama_token_data, as numpy lays it out: one candidate per vocabulary entry.
_CANDIDATE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


@dataclass(frozen=True)
class Grammar:
    """A GBNF grammar; `root` names its start rule. With `triggers` (regular expressions
    over the whole text generated so far) the grammar is lazy: it holds only from the first
    capture group of the first pattern that matches, and the text before is free."""

    gbnf: str
    root: str = "root"
    triggers: tuple[str, ...] = ()


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    grammar: Grammar | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def _grammar_sampler(vocab: Any, grammar: Grammar) -> Any:
    gbnf, root = grammar.gbnf.encode(), grammar.root.encode()
    if not grammar.triggers:
        return llama_cpp.llama_sampler_init_grammar(vocab, gbnf, root)
    patterns = (ctypes.c_char_p * len(grammar.triggers))(*(t.encode() for t in grammar.triggers))
    return llama_cpp.llama_sampler_init_grammar_lazy_patterns(
        vocab, gbnf, root, patterns, len(grammar.triggers), None, 0
    )


class SamplerChain:
    """Owns one llama_sampler chain (and, under a grammar, a second one without it);
    `close()` frees them.

    Under a grammar a token is first drawn without it, and kept if the grammar allows that
    one token; only otherwise is the grammar applied to the whole vocabulary and the token
    drawn again, as llama.cpp's own common sampler does. Checking one token is cheap where
    masking 49 152 is not. Greedy decoding picks exactly the token full masking would (the
    best token, if allowed, is the best allowed one). Without truncation (top-k, top-p,
    min-p) a draw follows the masked distribution exactly: a token kept at the first draw
    with probability p(t), or drawn again after a refusal, has p(t) / P(allowed) in all.
    """

    def __init__(self, vocab: Any, n_vocab: int, params: SamplingParams) -> None:
        self._n_vocab = n_vocab
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._candidates = np.zeros(n_vocab, dtype=_CANDIDATE)
        self._one = np.zeros(1, dtype=_CANDIDATE)
        self._free: Any = None
        self._grammar: Any = None  # borrowed from self._ptr, which owns it
        self._ptr: Any = _new_chain()
        try:
            self._grammar = _build(self._ptr, vocab, n_vocab, params, grammar=True)
            if self._grammar is not None:
                self._free = _new_chain()
                _build(self._free, vocab, n_vocab, params, grammar=False)
        except BaseException:
            self.close()
            raise

    def _apply(self, chain: Any, logits: Any) -> Any:
        candidates = self._candidates
        candidates["id"] = self._ids
        candidates["logit"] = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        candidates["p"] = 0.0
        array = llama_cpp.llama_token_data_array(
            data=candidates.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=self._n_vocab,
            selected=-1,
            sorted=False,
        )
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(array))
        return array

    def _allowed(self, token: int) -> bool:
        """Whether the grammar, in its present state, allows `token` next."""
        one = self._one
        one["id"], one["logit"], one["p"] = token, 0.0, 0.0
        array = llama_cpp.llama_token_data_array(
            data=one.ctypes.data_as(llama_cpp.llama_token_data_p), size=1, selected=-1, sorted=False
        )
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(array))
        return math.isfinite(float(one["logit"][0]))

    def sample(self, ctx: Any, index: int) -> int:
        logits = llama_cpp.llama_get_logits_ith(ctx, index)
        if self._free is not None:
            array = self._apply(self._free, logits)
            if 0 <= array.selected < array.size:
                token = int(array.data[array.selected].id)
                if self._allowed(token):
                    return self._accept(token)
        array = self._apply(self._ptr, logits)
        if not 0 <= array.selected < array.size:
            raise GrammarDeadEnd("the response format's grammar allows no next token")
        chosen = array.data[array.selected]
        if not math.isfinite(chosen.logit):  # every candidate was ruled out
            raise GrammarDeadEnd("the response format's grammar allows no next token")
        return self._accept(int(chosen.id))

    def _accept(self, token: int) -> int:
        llama_cpp.llama_sampler_accept(self._ptr, token)
        if self._free is not None:  # its penalties see the same history
            llama_cpp.llama_sampler_accept(self._free, token)
        return token

    def close(self) -> None:
        for name in ("_ptr", "_free"):
            chain = getattr(self, name)
            if chain:
                llama_cpp.llama_sampler_free(chain)
                setattr(self, name, None)
        self._grammar = None


def _new_chain() -> Any:
    return llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())


def _build(chain: Any, vocab: Any, n_vocab: int, p: SamplingParams, *, grammar: bool) -> Any:
    """Add `p`'s samplers to `chain`; the grammar's sampler (owned by the chain) or None."""

    def add(sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(chain, sampler)

    added = None
    if p.logit_bias:
        if any(not 0 <= token < n_vocab for token in p.logit_bias):
            raise InvalidTokenId("a logit_bias token id is outside the vocabulary")
        biases = (llama_cpp.llama_logit_bias * len(p.logit_bias))()
        for slot, (token, bias) in enumerate(p.logit_bias.items()):
            biases[slot].token = token
            biases[slot].bias = bias
        add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(p.logit_bias), biases))
    if p.repetition_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
        add(
            llama_cpp.llama_sampler_init_penalties(
                p.penalty_last_n, p.repetition_penalty, p.frequency_penalty, p.presence_penalty
            )
        )
    if grammar and p.grammar is not None:
        added = _grammar_sampler(vocab, p.grammar)
        if not added:
            raise GrammarError("the response format could not be compiled to a grammar")
        add(added)
    if p.greedy:
        add(llama_cpp.llama_sampler_init_greedy())
        return added
    if p.top_k > 0:
        add(llama_cpp.llama_sampler_init_top_k(p.top_k))
    if p.top_p < 1.0:
        add(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
    if p.min_p > 0.0:
        add(llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
    add(llama_cpp.llama_sampler_init_temp(p.temperature))
    seed = secrets.randbits(32) if p.seed is None else p.seed % (1 << 32)
    add(llama_cpp.llama_sampler_init_dist(seed))
    return added
