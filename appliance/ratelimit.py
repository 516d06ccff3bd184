"""Per-client rate limits: requests per second with a burst, and tokens per minute.

Each is a token bucket per client that refills continuously:
- requests: `burst` deep, refilled at `requests_per_s`; a request takes one, and with none
  left it gets 429 (type `requests`) before its body is read;
- tokens: `tokens_per_minute` deep, refilled at a sixtieth of that a second; a request is
  admitted while the bucket holds any, and what it used (prompt, completion, embedded) is
  taken when it ends, so one large request may leave the bucket in debt until it refills.

Every response to a client carries OpenAI's headers for both: `x-ratelimit-limit-requests`
(the burst), `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests` (until the bucket
is full again), and the same three for `-tokens`. A 429 also has Retry-After, in whole
seconds, until the refused request would pass. The limits come from the client's entry in
the policy, and from the settings for a client the policy gives none. NGINX's `limit_req`
per peer stays outside as the outer layer; the appliance's own in-flight limit is
appliance.shares'.

Counts live in this process, as the quotas' do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from appliance.errors import RequestRateExceeded, TokenRateExceeded
from appliance.policy import Quota


@dataclass(frozen=True)
class RateLimits:
    requests_per_s: float  # 0: no request limit
    burst: int
    tokens_per_minute: int  # 0: no token limit


@dataclass
class _Bucket:
    level: float
    at: float


def reset_text(seconds: float) -> str:
    """A duration as OpenAI writes it in x-ratelimit-reset-*: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 10) / 10:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


class RateBook:
    def __init__(self, default: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._default = default
        self._clock = clock
        self._limits: dict[str, RateLimits] = {}
        self._requests: dict[str, _Bucket] = {}
        self._tokens: dict[str, _Bucket] = {}

    def set_limits(self, quotas: Iterable[Quota]) -> None:
        """The policy's per-client limits; a field a client's entry leaves out is the
        settings' default. A client whose limits change starts with full buckets."""
        d = self._default
        self._limits = {
            q.client_id: RateLimits(
                requests_per_s=d.requests_per_s
                if q.requests_per_second is None
                else q.requests_per_second,
                burst=d.burst if q.request_burst is None else q.request_burst,
                tokens_per_minute=d.tokens_per_minute
                if q.tokens_per_minute is None
                else q.tokens_per_minute,
            )
            for q in quotas
        }
        self._requests.clear()
        self._tokens.clear()

    def limits(self, client_id: str | None) -> RateLimits:
        found = self._limits.get(client_id) if client_id is not None else None
        return self._default if found is None else found

    def _level(self, buckets: dict[str, _Bucket], key: str, depth: float, rate: float) -> _Bucket:
        now = self._clock()
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = _Bucket(depth, now)
        bucket.level = min(depth, bucket.level + (now - bucket.at) * rate)
        bucket.at = now
        return bucket

    def admit(self, key: str, client_id: str | None) -> None:
        """Take one request from the key's bucket, or raise 429 with when to come back."""
        limits = self.limits(client_id)
        if limits.tokens_per_minute > 0:
            rate = limits.tokens_per_minute / 60.0
            tokens = self._level(self._tokens, key, limits.tokens_per_minute, rate)
            if tokens.level <= 0:
                raise TokenRateExceeded(
                    f"this client's {limits.tokens_per_minute} tokens per minute are used up",
                    retry_after_s=(1 - tokens.level) / rate,
                    headers=self.headers(key, client_id),
                )
        if limits.requests_per_s > 0:
            requests = self._level(self._requests, key, limits.burst, limits.requests_per_s)
            if requests.level < 1:
                raise RequestRateExceeded(
                    f"this client's {limits.requests_per_s:g} requests per second "
                    f"(burst {limits.burst}) are used up",
                    retry_after_s=(1 - requests.level) / limits.requests_per_s,
                    headers=self.headers(key, client_id),
                )
            requests.level -= 1

    def charge(self, key: str, client_id: str | None, tokens: int) -> None:
        limits = self.limits(client_id)
        if tokens <= 0 or limits.tokens_per_minute <= 0:
            return
        rate = limits.tokens_per_minute / 60.0
        self._level(self._tokens, key, limits.tokens_per_minute, rate).level -= tokens

    def headers(self, key: str, client_id: str | None) -> dict[str, str]:
        """The x-ratelimit-* headers as the key's buckets stand now."""
        limits = self.limits(client_id)
        out: dict[str, str] = {}
        for name, depth, rate, buckets in (
            ("requests", limits.burst, limits.requests_per_s, self._requests),
            (
                "tokens",
                limits.tokens_per_minute,
                limits.tokens_per_minute / 60.0,
                self._tokens,
            ),
        ):
            if rate <= 0:
                continue
            bucket = self._level(buckets, key, depth, rate)
            out[f"x-ratelimit-limit-{name}"] = str(depth)
            out[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(bucket.level)))
            out[f"x-ratelimit-reset-{name}"] = reset_text((depth - bucket.level) / rate)
        return out
