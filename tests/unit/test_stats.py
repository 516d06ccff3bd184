import random

from tests.stats import mann_whitney_less


def test_detects_a_shift_and_not_noise() -> None:
    rng = random.Random(7)
    low = [rng.gauss(10, 1) for _ in range(40)]
    high = [rng.gauss(12, 1) for _ in range(40)]
    same = [rng.gauss(10, 1) for _ in range(40)]
    assert mann_whitney_less(low, high) < 1e-6
    assert mann_whitney_less(high, low) > 0.99
    assert 0.01 < mann_whitney_less(low, same) < 0.99


def test_identical_samples_are_not_significant() -> None:
    assert mann_whitney_less([1.0] * 30, [1.0] * 30) > 0.4
