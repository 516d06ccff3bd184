"""Log-probabilities of sampled tokens, from the logits row the token was sampled from.

The values are the model's own distribution at that step (a log-softmax over the whole
vocabulary of the raw logits), before sampling's transformations (bias, penalties, grammar,
temperature, truncation), as OpenAI reports them: under greedy decoding without bias, the top
alternative is the sampled token. Computed on the engine's thread, only for requests that ask.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_TOP = 20  # OpenAI's bound on top_logprobs


@dataclass(frozen=True)
class Alternative:
    token: int
    piece: bytes
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """One completion token's entry: the token sampled, and the `top` most likely ones."""

    token: int
    piece: bytes
    logprob: float
    top: tuple[Alternative, ...]


def log_softmax_at(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """log p(token) for each of `tokens` under softmax(logits). The exponentials stay in
    float32 (shifted by the peak, so none overflows) and are summed in float64."""
    peak = float(logits.max())
    log_z = peak + math.log(float(np.exp(logits - np.float32(peak)).sum(dtype=np.float64)))
    out: np.ndarray = logits[tokens].astype(np.float64) - log_z
    return out


def top_tokens(logits: np.ndarray, n: int) -> np.ndarray:
    """The n most likely token ids, most likely first (ties by id)."""
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    n = min(n, logits.shape[0])
    part = np.argpartition(-logits, n - 1)[:n]
    return part[np.lexsort((part, -logits[part]))]


def entry(logits: np.ndarray, token: int, n: int, piece: Callable[[int], bytes]) -> TokenLogprob:
    """The sampled token's entry, with its n most likely alternatives."""
    top = top_tokens(logits, n)
    values = log_softmax_at(logits, np.concatenate(([token], top)).astype(np.int64))
    alternatives = tuple(
        Alternative(int(t), piece(int(t)), float(v)) for t, v in zip(top, values[1:], strict=True)
    )
    return TokenLogprob(token, piece(token), float(values[0]), alternatives)
