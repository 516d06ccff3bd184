"""Two-sample statistics for timing tests, written out so the test states its own method."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mann_whitney_less(a: Sequence[float], b: Sequence[float]) -> float:
    """One-sided p-value that values in `a` tend to be smaller than in `b` (Mann-Whitney U,
    normal approximation with tie correction; fine for 30 or more samples each)."""
    n1, n2 = len(a), len(b)
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    r1 = sum(r for r, (_, group) in zip(ranks, pooled, strict=True) if group == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    mean = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var == 0:
        return 0.5  # every value tied: no evidence either way
    z = (u1 - mean + 0.5) / math.sqrt(var)  # continuity correction toward the null
    return 0.5 * math.erfc(-z / math.sqrt(2))
