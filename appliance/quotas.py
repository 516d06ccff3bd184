"""Per-client quotas from the policy: requests and tokens per UTC day and per UTC month.

Counts live in this process. A request is refused with 429 once a client has used up any of
its limits for the current period; tokens are charged when a generation finishes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from appliance.errors import QuotaExceeded
from appliance.policy import Quota


@dataclass
class _Usage:
    period: str
    requests: int = 0
    tokens: int = 0


class QuotaBook:
    def __init__(self) -> None:
        self._limits: dict[str, Quota] = {}
        self._day: dict[str, _Usage] = {}
        self._month: dict[str, _Usage] = {}

    def set_limits(self, quotas: Iterable[Quota]) -> None:
        self._limits = {q.client_id: q for q in quotas}

    def _usage(self, client_id: str, now: float) -> tuple[_Usage, _Usage]:
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        month = day[:7]
        d = self._day.get(client_id)
        if d is None or d.period != day:
            d = self._day[client_id] = _Usage(day)
        m = self._month.get(client_id)
        if m is None or m.period != month:
            m = self._month[client_id] = _Usage(month)
        return d, m

    def priority(self, client_id: str | None) -> int | None:
        """The client's class in the waiting line, if the policy names one."""
        limit = self._limits.get(client_id) if client_id is not None else None
        return None if limit is None else limit.priority

    def admit(self, client_id: str | None, now: float | None = None) -> None:
        """Count one request, or raise QuotaExceeded if the client has none left."""
        if client_id is None or client_id not in self._limits:
            return
        limit = self._limits[client_id]
        day, month = self._usage(client_id, time.time() if now is None else now)
        for used, cap in (
            (day.requests, limit.requests_per_day),
            (month.requests, limit.requests_per_month),
            (day.tokens, limit.tokens_per_day),
            (month.tokens, limit.tokens_per_month),
        ):
            if cap is not None and used >= cap:
                raise QuotaExceeded("the client's quota for this period is used up")
        day.requests += 1
        month.requests += 1

    def refund(self, client_id: str | None, now: float | None = None) -> None:
        """Give back a request counted by `admit` that was then refused."""
        if client_id is None or client_id not in self._limits:
            return
        day, month = self._usage(client_id, time.time() if now is None else now)
        day.requests = max(0, day.requests - 1)
        month.requests = max(0, month.requests - 1)

    def charge(self, client_id: str | None, tokens: int, now: float | None = None) -> None:
        if client_id is None or client_id not in self._limits:
            return
        day, month = self._usage(client_id, time.time() if now is None else now)
        day.tokens += tokens
        month.tokens += tokens
