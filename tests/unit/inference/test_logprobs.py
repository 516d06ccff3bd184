"""Log-softmax and top tokens against a direct float64 computation."""

from __future__ import annotations

import math

import numpy as np

from inference.logprobs import log_softmax_at, top_tokens


def test_log_softmax_matches_the_definition() -> None:
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal(49152) * 8).astype(np.float32)
    tokens = np.array([0, 17, 49151])
    got = log_softmax_at(logits, tokens)
    total = sum(math.exp(float(x)) for x in logits.astype(np.float64))
    for token, value in zip(tokens, got, strict=True):
        assert math.isclose(value, float(logits[token]) - math.log(total), abs_tol=1e-5)
    assert (got <= 0).all()
    assert math.isclose(
        float(np.exp(log_softmax_at(logits, np.arange(49152))).sum()), 1.0, rel_tol=1e-6
    )


def test_large_logits_do_not_overflow() -> None:
    logits = np.array([1e4, 1e4 - 1, -1e4], dtype=np.float32)
    got = log_softmax_at(logits, np.array([0, 1, 2]))
    assert np.isfinite(got).all()
    assert got[0] > got[1] > got[2]


def test_top_tokens_are_the_largest_most_likely_first() -> None:
    logits = np.array([0.1, 3.0, -2.0, 3.0, 2.5], dtype=np.float32)
    assert top_tokens(logits, 3).tolist() == [1, 3, 4]  # a tie goes to the lower id
    assert top_tokens(logits, 0).tolist() == []
    assert top_tokens(logits, 99).tolist() == [1, 3, 4, 0, 2]
