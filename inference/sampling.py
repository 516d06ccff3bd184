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
    """A GBNF grammar; `root` names its start rule."""

    gbnf: str
    root: str = "root"


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


class SamplerChain:
    """Owns one llama_sampler chain; `close()` frees it."""

    def __init__(self, vocab: Any, n_vocab: int, params: SamplingParams) -> None:
        self._ptr: Any = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        self._n_vocab = n_vocab
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._candidates = np.zeros(n_vocab, dtype=_CANDIDATE)
        try:
            self._build(vocab, n_vocab, params)
        except BaseException:
            self.close()
            raise

    def _add(self, sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(self._ptr, sampler)

    def _build(self, vocab: Any, n_vocab: int, p: SamplingParams) -> None:
        if p.logit_bias:
            if any(not 0 <= token < n_vocab for token in p.logit_bias):
                raise InvalidTokenId("a logit_bias token id is outside the vocabulary")
            biases = (llama_cpp.llama_logit_bias * len(p.logit_bias))()
            for slot, (token, bias) in enumerate(p.logit_bias.items()):
                biases[slot].token = token
                biases[slot].bias = bias
            self._add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(p.logit_bias), biases))
        if p.repetition_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
            self._add(
                llama_cpp.llama_sampler_init_penalties(
                    p.penalty_last_n, p.repetition_penalty, p.frequency_penalty, p.presence_penalty
                )
            )
        if p.grammar is not None:
            grammar = llama_cpp.llama_sampler_init_grammar(
                vocab, p.grammar.gbnf.encode(), p.grammar.root.encode()
            )
            if not grammar:
                raise GrammarError("the response format could not be compiled to a grammar")
            self._add(grammar)
        if p.greedy:
            self._add(llama_cpp.llama_sampler_init_greedy())
            return
        if p.top_k > 0:
            self._add(llama_cpp.llama_sampler_init_top_k(p.top_k))
        if p.top_p < 1.0:
            self._add(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0.0:
            self._add(llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
        self._add(llama_cpp.llama_sampler_init_temp(p.temperature))
        seed = secrets.randbits(32) if p.seed is None else p.seed % (1 << 32)
        self._add(llama_cpp.llama_sampler_init_dist(seed))

    def sample(self, ctx: Any, index: int) -> int:
        logits = llama_cpp.llama_get_logits_ith(ctx, index)
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
        llama_cpp.llama_sampler_apply(self._ptr, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            raise GrammarDeadEnd("the response format's grammar allows no next token")
        chosen = array.data[array.selected]
        if not math.isfinite(chosen.logit):  # every candidate was ruled out
            raise GrammarDeadEnd("the response format's grammar allows no next token")
        token = int(chosen.id)
        llama_cpp.llama_sampler_accept(self._ptr, token)
        return token

    def close(self) -> None:
        if self._ptr:
            llama_cpp.llama_sampler_free(self._ptr)
            self._ptr = None
