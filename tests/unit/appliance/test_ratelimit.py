"""The token buckets on a clock the test moves."""

from __future__ import annotations

import pytest

from appliance.errors import RequestRateExceeded, TokenRateExceeded
from appliance.policy import Quota
from appliance.ratelimit import RateBook, RateLimits, reset_text


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_requests_refill_at_their_rate_up_to_the_burst() -> None:
    clock = Clock()
    book = RateBook(RateLimits(requests_per_s=2, burst=4, tokens_per_minute=0), clock)
    for _ in range(4):
        book.admit("k", None)
    with pytest.raises(RequestRateExceeded) as refused:
        book.admit("k", None)
    assert refused.value.headers["Retry-After"] == "1"  # 0.5 s, in whole seconds at least 1
    assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"
    clock.now += 0.5
    book.admit("k", None)
    clock.now += 100
    assert book.headers("k", None)["x-ratelimit-remaining-requests"] == "4"  # never above
    assert book.headers("k", None)["x-ratelimit-reset-requests"] == "0ms"
    book.admit("other", None)  # each key its own bucket
    assert book.headers("other", None)["x-ratelimit-remaining-requests"] == "3"


def test_tokens_are_taken_after_the_fact_and_a_debt_refuses_until_repaid() -> None:
    clock = Clock()
    book = RateBook(RateLimits(requests_per_s=0, burst=1, tokens_per_minute=600), clock)
    book.admit("k", None)
    book.charge("k", None, 650)  # one large request: 50 in debt
    with pytest.raises(TokenRateExceeded) as refused:
        book.admit("k", None)
    assert refused.value.headers["Retry-After"] == "6"  # 51 tokens at 10 a second
    clock.now += 5.2
    book.admit("k", None)
    headers = book.headers("k", None)
    assert headers["x-ratelimit-limit-tokens"] == "600"
    assert headers["x-ratelimit-remaining-tokens"] == "2"
    assert headers["x-ratelimit-reset-tokens"] == "59.8s"
    assert "x-ratelimit-limit-requests" not in headers  # the request limit is off


def test_a_policy_entry_overrides_only_what_it_names() -> None:
    book = RateBook(RateLimits(requests_per_s=5, burst=10, tokens_per_minute=1000), Clock())
    book.set_limits([Quota(client_id="acme", request_burst=2)])
    assert book.limits("acme") == RateLimits(requests_per_s=5, burst=2, tokens_per_minute=1000)
    assert book.limits("other") == RateLimits(requests_per_s=5, burst=10, tokens_per_minute=1000)
    assert book.limits(None) == book.limits("other")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.0201, "21ms"),
        (1.0, "1s"),
        (1.44, "1.5s"),
        (59.99, "60s"),
        (360, "6m0s"),
        (61.2, "1m2s"),
    ],
)
def test_reset_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert reset_text(seconds) == text
