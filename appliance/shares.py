"""Fair shares: what one client may hold of the appliance at once, and how fast it may embed.

A client is the control plane's client id when the key has one, or else the key itself
(static and development keys). Shares bound what one client can take from everyone else:
- requests in flight at once (`ClientShares.enter`, held by appliance.middleware until the
  response, a stream included, has ended);
- bytes of RAM its sessions' document collections hold (`budget`: taken from the
  appliance's budget as well);
- embedding inputs per minute, /v1/embeddings inputs and uploaded chunks alike (`spend`: a
  token bucket that refills continuously; one batch larger than what is left waits until
  the bucket is full, then leaves it in debt, so the largest legal upload still goes through);
- live sessions, counted by appliance.sessions.SessionRegistry with `client_of`.
Counts live in this process, as the quotas' do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from appliance.auth import Principal
from appliance.errors import RateLimited, TooManyConcurrent
from rag.collection import MemoryBudget


def client_of(principal: Principal) -> str:
    """The identity shares are counted under."""
    return principal.client_id if principal.client_id is not None else "key:" + principal.digest


class Tally:
    """What each client holds of one thing, with no entry for a client that holds none."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}

    def __getitem__(self, client: str) -> int:
        return self._held.get(client, 0)

    def add(self, client: str) -> None:
        self._held[client] = self[client] + 1

    def drop(self, client: str) -> None:
        held = self[client] - 1
        if held > 0:
            self._held[client] = held
        else:
            self._held.pop(client, None)


@dataclass
class _Bucket:
    level: float
    at: float


class ClientShares:
    def __init__(
        self,
        *,
        rag_budget: MemoryBudget,
        rag_bytes: int,
        max_requests: int,
        embedding_inputs_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rag_budget = rag_budget
        self._rag_bytes = rag_bytes
        self._max_requests = max_requests
        self._max_by_client: dict[str, int] = {}
        self._rate = embedding_inputs_per_minute / 60.0
        self._capacity = float(embedding_inputs_per_minute)
        self._clock = clock
        self._lock = threading.Lock()  # spend and budget run on the embedder's thread too
        self._in_flight = Tally()
        self._budgets: dict[str, MemoryBudget] = {}
        self._buckets: dict[str, _Bucket] = {}

    # Requests in flight: called on the event loop only.

    def set_in_flight_limits(self, limits: Mapping[str, int]) -> None:
        """Clients' own limits on requests in flight, from the policy; others keep the
        settings' limit."""
        self._max_by_client = dict(limits)

    def enter(self, client: str) -> None:
        cap = self._max_by_client.get(client, self._max_requests)
        if self._in_flight[client] >= cap:
            raise TooManyConcurrent(
                f"this client has {cap} requests in flight; retry when one ends"
            )
        self._in_flight.add(client)

    def leave(self, client: str) -> None:
        self._in_flight.drop(client)

    def in_flight(self, client: str) -> int:
        return self._in_flight[client]

    # RAM for documents. A client's budget object is kept for the process's life: its
    # collections hold it, and a second object would be a second share.

    def budget(self, client: str) -> MemoryBudget:
        with self._lock:
            budget = self._budgets.get(client)
            if budget is None:
                budget = self._budgets[client] = MemoryBudget(
                    self._rag_bytes, parent=self._rag_budget, owner="this client's"
                )
            return budget

    # Embedding inputs per minute.

    def spend(self, client: str, n: int) -> None:
        """Take n embedding inputs from the client's bucket, or raise RateLimited."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(client)
            if bucket is None:
                bucket = self._buckets[client] = _Bucket(self._capacity, now)
            bucket.level = min(self._capacity, bucket.level + (now - bucket.at) * self._rate)
            bucket.at = now
            needed = min(float(n), self._capacity)
            if bucket.level < needed:
                raise RateLimited(
                    "this client's embedding inputs per minute are used up",
                    retry_after_s=(needed - bucket.level) / self._rate,
                )
            bucket.level -= n
