"""ClientShares on a fake clock: the embedding bucket refills, lends to one large batch, and
says when to come back; per-client RAM budgets take from the appliance's."""

from __future__ import annotations

import pytest

from appliance.errors import RateLimited, TooManyConcurrent
from appliance.shares import ClientShares
from rag.collection import MemoryBudget
from rag.errors import MemoryBudgetExceeded


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def shares(clock: Clock, per_minute: int = 60, rag: int = 100) -> ClientShares:
    return ClientShares(
        rag_budget=MemoryBudget(rag),
        rag_bytes=60,
        max_requests=2,
        embedding_inputs_per_minute=per_minute,
        clock=clock,
    )


def test_the_bucket_refills_at_its_rate_and_names_the_wait() -> None:
    clock = Clock()
    s = shares(clock)
    s.spend("a", 60)
    with pytest.raises(RateLimited) as caught:
        s.spend("a", 10)
    assert caught.value.headers["Retry-After"] == "10"  # 10 inputs at one per second
    clock.now += 10
    s.spend("a", 10)
    s.spend("b", 60)  # another client's bucket is its own


def test_a_batch_larger_than_the_bucket_waits_for_a_full_one_then_owes() -> None:
    clock = Clock()
    s = shares(clock)
    s.spend("a", 150)  # the bucket was full: it goes through and leaves a debt of 90
    clock.now += 60
    with pytest.raises(RateLimited) as caught:
        s.spend("a", 1)
    assert caught.value.headers["Retry-After"] == "31"
    clock.now += 31
    s.spend("a", 1)


def test_requests_in_flight_are_counted_and_given_back() -> None:
    s = shares(Clock())
    s.enter("a")
    s.enter("a")
    with pytest.raises(TooManyConcurrent):
        s.enter("a")
    s.enter("b")
    s.leave("a")
    s.enter("a")
    assert s.in_flight("a") == 2


def test_a_clients_budget_takes_from_the_appliances_and_gives_back_to_both() -> None:
    s = shares(Clock(), rag=100)
    a, b = s.budget("a"), s.budget("b")
    assert s.budget("a") is a  # one object per client, for the process's life
    a.take(60)
    with pytest.raises(MemoryBudgetExceeded, match="this client's"):
        a.take(1)
    with pytest.raises(MemoryBudgetExceeded, match="the appliance's"):
        b.take(50)  # within b's own share, past what the appliance has left
    assert b.used == 0  # a refusal takes nothing
    b.take(40)
    a.give(60)
    assert a.parent is not None
    assert a.parent.used == 40
    b.give(1000)  # never below zero, and never more than it took back to the parent
    assert a.parent.used == 0
