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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np

from inference.errors import GrammarDeadEnd, GrammarError, InvalidTokenId

# llama_token_data, as numpy lays it out: one candidate per vocabulary entry.
_CANDIDATE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


@dataclass(frozen=True)
class Grammar:
    """A GBNF grammar; `root` names its start rule. With `lazy_after` the grammar is lazy:
    the text is free until it ends with that string, and the grammar (which starts right
    after it) holds from there."""

    gbnf: str
    root: str = "root"
    lazy_after: str | None = None


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
    """One request's sampling: a llama.cpp chain (bias, penalties, then greedy or truncation,
    temperature and a seeded draw) and, under a grammar, the grammar's own sampler beside it.
    `close()` frees both.

    Under a grammar a token is first drawn without it, and kept if the grammar allows that
    one token; only otherwise is the grammar applied to the whole vocabulary (masking is
    order-free: -inf stays -inf under bias and penalties) and the token drawn again, as
    llama.cpp's own common sampler does. Checking one token is cheap where masking 49 152 is
    not. Greedy decoding picks exactly the token full masking would. Without truncation
    (top-k, top-p, min-p) a draw follows the masked distribution: a token kept at the first
    draw with probability p(t), or drawn after a refusal, has p(t) / P(allowed) in all.

    A lazy grammar waits in Python, not in llama.cpp: until the text ends with the trigger,
    a drawn token whose piece would run past the trigger is refused and drawn again, so the
    grammar starts exactly after it. (llama.cpp's own lazy grammar replays the rest of the
    triggering token into the grammar, and a piece it refuses there throws a C++ exception
    that ends the process.)
    """

    def __init__(
        self,
        vocab: Any,
        n_vocab: int,
        params: SamplingParams,
        piece: Callable[[int], bytes] | None = None,
    ) -> None:
        self._n_vocab = n_vocab
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._candidates = np.zeros(n_vocab, dtype=_CANDIDATE)
        self._one = np.zeros(1, dtype=_CANDIDATE)
        self._grammar: Any = None
        self._trigger = b""
        self._tail = b""  # the text's last bytes, while a lazy grammar waits
        self._piece = piece
        self._ptr: Any = _new_chain()
        try:
            _build(self._ptr, n_vocab, params)
            if params.grammar is not None:
                self._grammar = _grammar_sampler(vocab, params.grammar)
                if params.grammar.lazy_after:
                    if piece is None:
                        raise ValueError("a lazy grammar needs the vocabulary's pieces")
                    self._trigger = params.grammar.lazy_after.encode()
        except BaseException:
            self.close()
            raise

    def _fill(self, logits: Any, banned: Sequence[int] = ()) -> Any:
        candidates = self._candidates
        candidates["id"] = self._ids
        candidates["logit"] = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        candidates["p"] = 0.0
        if banned:
            candidates["logit"][list(banned)] = -math.inf
        return llama_cpp.llama_token_data_array(
            data=candidates.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=self._n_vocab,
            selected=-1,
            sorted=False,
        )

    def _draw(self, array: Any) -> int | None:
        llama_cpp.llama_sampler_apply(self._ptr, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            return None
        chosen = array.data[array.selected]
        return int(chosen.id) if math.isfinite(chosen.logit) else None

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
        waiting = bool(self._trigger)  # a lazy grammar not yet started takes no token
        if self._grammar is None:
            token = self._draw(self._fill(logits))
        elif waiting:
            token = self._draw_before_trigger(logits)
        else:
            token = self._draw(self._fill(logits))
            if token is None or not self._allowed(token):
                array = self._fill(logits)
                llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(array))
                token = self._draw(array)
        if token is None:  # every candidate was ruled out
            raise GrammarDeadEnd("the grammar allows no next token")
        llama_cpp.llama_sampler_accept(self._ptr, token)
        if self._grammar is not None and not waiting:
            llama_cpp.llama_sampler_accept(self._grammar, token)
        return token

    def _draw_before_trigger(self, logits: Any) -> int | None:
        """A free draw whose piece does not run past the trigger; the grammar starts once the
        text ends with the trigger."""
        assert self._piece is not None
        banned: list[int] = []
        token, text = None, None
        for _ in range(_REDRAWS):
            token = self._draw(self._fill(logits, banned))
            if token is None or (text := self._fitting(token)) is not None:
                break
            banned.append(token)
        else:  # rare: take the likeliest token that fits
            order = np.argsort(-np.ctypeslib.as_array(logits, shape=(self._n_vocab,)))
            token = None
            for candidate in order[:_SCAN]:
                if (text := self._fitting(int(candidate))) is not None:
                    token = int(candidate)
                    break
        if text is not None:
            if text.endswith(self._trigger):
                self._trigger = b""  # the grammar holds from the next token
            self._tail = text[-len(self._trigger) :] if self._trigger else b""
        return token

    def _fitting(self, token: int) -> bytes | None:
        """The text's tail with `token`'s piece, or None if the piece runs past the trigger."""
        assert self._piece is not None
        text = self._tail + self._piece(token)
        at = text.find(self._trigger)
        return text if at < 0 or at + len(self._trigger) == len(text) else None

    def close(self) -> None:
        for name in ("_ptr", "_grammar"):
            sampler = getattr(self, name)
            if sampler:
                llama_cpp.llama_sampler_free(sampler)
                setattr(self, name, None)


# Redraws before a lazy grammar's trigger, then how many of the likeliest tokens are scanned.
_REDRAWS = 8
_SCAN = 4096


def _grammar_sampler(vocab: Any, grammar: Grammar) -> Any:
    sampler = llama_cpp.llama_sampler_init_grammar(
        vocab, grammar.gbnf.encode(), grammar.root.encode()
    )
    if not sampler:
        raise GrammarError("the grammar could not be compiled")
    return sampler


def _new_chain() -> Any:
    return llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())


def _build(chain: Any, n_vocab: int, p: SamplingParams) -> None:
    """Add `p`'s samplers, all but the grammar, to `chain`."""

    def add(sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(chain, sampler)

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
    if p.greedy:
        add(llama_cpp.llama_sampler_init_greedy())
        return
    if p.top_k > 0:
        add(llama_cpp.llama_sampler_init_top_k(p.top_k))
    if p.top_p < 1.0:
        add(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
    if p.min_p > 0.0:
        add(llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
    add(llama_cpp.llama_sampler_init_temp(p.temperature))
    seed = secrets.randbits(32) if p.seed is None else p.seed % (1 << 32)
    add(llama_cpp.llama_sampler_init_dist(seed))
