"""The waiting line's order: priority classes first, clients in turn within a class."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from inference.admission import FairQueue


def drain(line: FairQueue[str]) -> list[str]:
    return [line.pop() for _ in range(len(line))]


def test_one_flooding_client_delays_anothers_single_request_by_one_turn() -> None:
    line: FairQueue[str] = FairQueue()
    for i in range(50):
        line.push(f"flood-{i}", client="flood")
    line.push("single", client="quiet")
    order = drain(line)
    assert order.index("single") == 1
    assert [x for x in order if x != "single"] == [f"flood-{i}" for i in range(50)]


def test_a_client_with_fewer_turns_running_goes_first() -> None:
    line: FairQueue[str] = FairQueue()
    for i in range(50):
        line.push(f"flood-{i}", client="flood")
    line.push("single", client="quiet")
    running = {"flood": 8, "quiet": 0}
    assert line.peek(running.__getitem__) == "single"
    assert line.pop(running.__getitem__) == "single"
    assert line.pop(running.__getitem__) == "flood-0"


def test_clients_take_turns_and_each_keeps_its_own_order() -> None:
    line: FairQueue[str] = FairQueue()
    for i in range(3):
        line.push(f"a{i}", client="a")
    for i in range(2):
        line.push(f"b{i}", client="b")
    line.push("c0", client="c")
    assert drain(line) == ["a0", "b0", "c0", "a1", "b1", "a2"]


def test_a_higher_class_is_served_first() -> None:
    line: FairQueue[str] = FairQueue()
    line.push("low", client="a", priority=0)
    line.push("normal", client="b", priority=1)
    line.push("high", client="c", priority=2)
    line.push("normal-2", client="b", priority=1)
    assert line.peek() == "high"
    assert drain(line) == ["high", "normal", "normal-2", "low"]


def test_removed_items_leave_and_the_rest_keep_their_places() -> None:
    line: FairQueue[str] = FairQueue()
    for name in ("a0", "a1", "a2"):
        line.push(name, client="a")
    line.push("b0", client="b")
    assert line.remove_where(lambda x: x in {"a0", "b0"}) == ["a0", "b0"]
    assert len(line) == 2
    assert drain(line) == ["a1", "a2"]
    assert line.peek() is None


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 2)), max_size=60))
def test_every_item_comes_out_once_and_no_client_waits_more_than_one_round(
    pushes: list[tuple[str, int]],
) -> None:
    line: FairQueue[tuple[int, str, int]] = FairQueue()
    for i, (client, priority) in enumerate(pushes):
        line.push((i, client, priority), client=client, priority=priority)
    order = drain(line)
    assert sorted(order) == sorted((i, c, p) for i, (c, p) in enumerate(pushes))
    assert [p for _, _, p in order] == sorted((p for _, _, p in order), reverse=True)
    for priority in {p for _, p in pushes}:
        served = [(i, c) for i, c, p in order if p == priority]
        clients = {c for _, c in served}
        # Between two turns of one client, every other client still waiting has one turn.
        for client in clients:
            mine = [k for k, (_, c) in enumerate(served) if c == client]
            for a, b in itertools.pairwise(mine):
                between = [c for _, c in served[a + 1 : b]]
                assert len(between) == len(set(between)) <= len(clients) - 1


def test_a_preempted_turn_goes_back_before_its_clients_later_requests() -> None:
    line: FairQueue[str] = FairQueue()
    line.push("flood-1", client="flood")
    line.push("flood-2", client="flood")
    line.push_front("flood-0", client="flood")
    line.push_front("late-joiner", client="new")
    assert drain(line) == ["flood-0", "late-joiner", "flood-1", "flood-2"]
