"""The waiting line for KV sequences: fair across clients, by priority class.

Requests wait here when every sequence is running a turn. The next one out is taken from the
highest priority class that has any. Within a class it goes to the client with the fewest
turns running now (the caller says how many each has), and among equals to the next in a
round robin; a client's own requests leave in arrival order. So a client that holds every
sequence and has fifty more waiting does not delay another client's single request at all:
that request takes the next sequence to come free.

Scheduler thread only.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        # priority -> client -> its waiting items; a class's client order is the rotation.
        self._classes: dict[int, OrderedDict[str, deque[T]]] = {}
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[T]:
        for clients in self._classes.values():
            for items in clients.values():
                yield from items

    def push(self, item: T, *, client: str, priority: int = 0) -> None:
        clients = self._classes.get(priority)
        if clients is None:
            self._classes[priority] = clients = OrderedDict()
            self._classes = dict(sorted(self._classes.items(), reverse=True))
        clients.setdefault(client, deque()).append(item)
        self._len += 1

    def push_front(self, item: T, *, client: str, priority: int = 0) -> None:
        """Put `item` before the client's other waiting items: a preempted turn goes on
        before any request its client sent later."""
        self.push(item, client=client, priority=priority)
        self._classes[priority][client].rotate(1)

    def _head(self, running: Callable[[str], int]) -> tuple[int, str] | None:
        for priority, clients in self._classes.items():
            if clients:
                return priority, min(clients, key=running)  # the first of the least loaded
        return None

    def peek(self, running: Callable[[str], int] = lambda client: 0) -> T | None:
        """The next item, given how many turns each client has `running`."""
        head = self._head(running)
        if head is None:
            return None
        priority, client = head
        return self._classes[priority][client][0]

    def pop(self, running: Callable[[str], int] = lambda client: 0) -> T:
        """Take the next item (as `peek`); its client goes to the back of the rotation."""
        head = self._head(running)
        if head is None:
            raise IndexError("the queue is empty")
        priority, client = head
        clients = self._classes[priority]
        items = clients[client]
        item = items.popleft()
        if items:
            clients.move_to_end(client)
        else:
            del clients[client]
        self._len -= 1
        return item

    def remove_where(self, doomed: Callable[[T], bool]) -> list[T]:
        """Take out every item `doomed` picks (cancelled, past its deadline), keeping order."""
        removed: list[T] = []
        for clients in self._classes.values():
            for client in list(clients):
                kept: deque[T] = deque()
                for item in clients[client]:
                    (removed if doomed(item) else kept).append(item)
                if kept:
                    clients[client] = kept
                else:
                    del clients[client]
        self._len -= len(removed)
        return removed
