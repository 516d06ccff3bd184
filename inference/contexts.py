"""KV contexts: a session's KV cache, apart from the sequence that holds it while it runs.

A context is one session's KV. It is *warm* while its cells sit in a llama.cpp sequence,
*parked* when they have been copied out into a buffer that belongs to this context alone, and
*cold* when it has none: new, or *dropped* (freed, to be recomputed from the next prompt,
which the OpenAI API resends whole).

A turn leases a sequence for its context (`KvPool.lease`): the context's own if it is warm, a
free one, or the sequence of the least recently used idle warm context, which is parked or
dropped first. A parked context's bytes go back into the leased sequence before the turn.
A running turn can be preempted (`KvPool.preempt`) the same way, for a fairer line: its KV
is parked or dropped, and restored when the turn resumes.

Invariants:
- A sequence holds the cells of at most one context; `forget` empties it before another
  context gets it. Nothing is ever copied from one context to another (no `seq_cp`, no shared
  prompt cache): a parked state is restored only into its own context's turn.
- Parked bytes live in RAM, never on disk, are counted against `park_budget_bytes`, and are
  overwritten with zeros when they are freed (restored, dropped or released).
- Worker thread only: every method touches the llama.cpp context.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from typing import Literal

from inference.model import LlamaModel

Eviction = Literal["park", "drop"]


@dataclass(eq=False)
class KvContext:
    """One session's KV, wherever it is. `tokens` are the tokens its cells hold."""

    tokens: list[int] = field(default_factory=list)
    seq: int | None = None
    parked: bytearray | None = None
    running: bool = False
    last_used: float = 0.0
    closed: bool = False
    dropped: bool = False  # its KV was dropped and not yet rebuilt

    @property
    def state(self) -> Literal["warm", "parked", "cold"]:
        if self.seq is not None:
            return "warm"
        return "parked" if self.parked is not None else "cold"


@dataclass
class PoolStats:
    """Content-free counts, for the engine's stats."""

    parks: int = 0
    restores: int = 0
    drops: int = 0
    restore_failures: int = 0
    parked_bytes: int = 0
    parked_peak_bytes: int = 0
    moves: int = 0  # running contexts moved to keep the running sequence ids consecutive


def wipe(buf: bytearray) -> None:
    """Overwrite a buffer's bytes with zeros in place."""
    if buf:
        ctypes.memset((ctypes.c_char * len(buf)).from_buffer(buf), 0, len(buf))


class KvPool:
    def __init__(
        self, model: LlamaModel, *, park_budget_bytes: int, eviction: Eviction = "park"
    ) -> None:
        self.model = model
        self.park_budget_bytes = park_budget_bytes
        self.eviction: Eviction = eviction
        self.stats = PoolStats()
        self._free = list(range(model.n_seq_max))
        self._resident: dict[int, KvContext] = {}
        self._parked: dict[KvContext, int] = {}  # in the order they were parked: oldest first
        self.dropped = 0  # contexts whose KV is dropped and not yet rebuilt

    # Counts.

    @property
    def free_sequences(self) -> int:
        return len(self._free)

    @property
    def warm(self) -> int:
        return len(self._resident)

    @property
    def parked(self) -> int:
        return len(self._parked)

    def _compact_choice(self) -> int:
        """The free sequence that keeps running turns on consecutive sequence ids: next to
        the most running ones, then the lowest. With a KV stream per sequence, llama.cpp
        decodes each run of consecutive ids as a micro-batch of its own, and each costs
        about a whole single-token step."""
        running = self._running()
        return min(self._free, key=lambda s: (-((s - 1) in running) - ((s + 1) in running), s))

    def _running(self) -> dict[int, KvContext]:
        """The sequences that hold a running turn's context."""
        return {seq: c for seq, c in self._resident.items() if c.running}

    # Leases.

    def lease(self, ctx: KvContext) -> int | None:
        """A sequence holding `ctx`'s KV (restored if parked), or None if every sequence is
        running a turn."""
        if ctx.seq is None:
            seq = self._take_sequence()
            if seq is None:
                return None
            self._resident[seq] = ctx
            ctx.seq = seq
            if ctx.parked is not None:
                self._restore(ctx, seq)
        if ctx.dropped:  # this turn rebuilds it
            ctx.dropped = False
            self.dropped -= 1
        ctx.running = True
        ctx.last_used = time.monotonic()
        return ctx.seq

    def end_turn(self, ctx: KvContext) -> None:
        """The turn is over; its KV stays warm until someone needs the sequence."""
        ctx.running = False
        ctx.last_used = time.monotonic()

    def preempt(self, ctx: KvContext) -> None:
        """Take a running turn's sequence away between steps: its KV is parked (or dropped)
        as an idle context's would be, and the sequence is free. The context stays
        `running`, so no other turn of its session can start while this one waits."""
        seq = ctx.seq
        assert seq is not None
        assert ctx.running
        self._evict(ctx, seq)
        self._free.append(seq)

    def release(self, ctx: KvContext) -> None:
        """The session is gone: free its sequence or its parked bytes, and forget its tokens."""
        ctx.closed = True
        ctx.running = False
        if ctx.dropped:
            ctx.dropped = False
            self.dropped -= 1
        self.clear(ctx)
        if ctx.seq is not None:
            self._resident.pop(ctx.seq, None)
            self._free.append(ctx.seq)
            ctx.seq = None

    def clear(self, ctx: KvContext) -> None:
        """Empty the context's KV wherever it is; a warm one keeps its (now empty) sequence."""
        if ctx.seq is not None:
            self.model.forget(ctx.seq)
        self._unpark(ctx)
        ctx.tokens = []

    def _take_sequence(self) -> int | None:
        if self._free:
            choice = self._compact_choice()
            self._free.remove(choice)
            return choice
        idle = [c for c in self._resident.values() if not c.running]
        if not idle:
            return None
        victim = min(idle, key=lambda c: c.last_used)
        seq = victim.seq
        assert seq is not None
        self._evict(victim, seq)
        return seq

    # Compaction: running turns on consecutive sequence ids.

    def compaction(self, limit: int) -> list[tuple[int, int]]:
        """At most `limit` moves (a running context's sequence, a free sequence) that put the
        running contexts on consecutive sequence ids: into the window of ids that holds most
        of them already, and whose other ids are free."""
        running = self._running()
        k, n = len(running), self.model.n_seq_max
        if k < 2 or max(running) - min(running) + 1 == k:
            return []
        free = set(self._free)
        best: tuple[int, int] | None = None  # (running outside the window, its first id)
        for first in range(n - k + 1):
            window = range(first, first + k)
            if all(s in running or s in free for s in window):
                outside = k - sum(1 for s in window if s in running)
                if best is None or outside < best[0]:
                    best = (outside, first)
        if best is None:
            return []
        window = range(best[1], best[1] + k)
        holes = [s for s in window if s not in running]
        strays = sorted((s for s in running if s not in window), reverse=True)
        return list(zip(strays, holes, strict=False))[:limit]

    def move(self, ctx: KvContext, to: int) -> bool:
        """Move a context's own KV into the free sequence `to` and free its old one: the
        bytes pass through a buffer of this context's, zeroed after. False, with nothing
        changed, if llama.cpp could not copy them."""
        src = ctx.seq
        assert src is not None
        assert to in self._free
        buf = bytearray(self.model.state_size(src))
        try:
            if not self.model.save_state(src, buf):
                return False
            if not self.model.load_state(to, buf):
                self.model.forget(to)
                return False
        finally:
            wipe(buf)
        self.model.forget(src)
        self._free.remove(to)
        self._free.append(src)
        del self._resident[src]
        self._resident[to] = ctx
        ctx.seq = to
        self.stats.moves += 1
        return True

    # Eviction, parking and restoring.

    def _evict(self, ctx: KvContext, seq: int) -> None:
        size = self.model.state_size(seq) if ctx.tokens else 0
        if size and self.eviction == "park" and size <= self.park_budget_bytes:
            self._make_room(size)
            buf = bytearray(size)
            if self.model.save_state(seq, buf):
                ctx.parked = buf
                self._parked[ctx] = size
                self.stats.parks += 1
                self.stats.parked_bytes += size
                self.stats.parked_peak_bytes = max(
                    self.stats.parked_peak_bytes, self.stats.parked_bytes
                )
            else:
                wipe(buf)
                self._drop(ctx)
        elif ctx.tokens:
            self._drop(ctx)
        self.model.forget(seq)
        del self._resident[seq]
        ctx.seq = None

    def _make_room(self, size: int) -> None:
        """Drop the longest-parked contexts until `size` more bytes fit the budget: idle
        sessions' first, then preempted turns' (which recompute when they resume)."""
        while self._parked and self.stats.parked_bytes + size > self.park_budget_bytes:
            idle = (c for c in self._parked if not c.running)
            oldest = next(idle, None) or next(iter(self._parked))
            self._unpark(oldest)
            self._drop(oldest)

    def _drop(self, ctx: KvContext) -> None:
        ctx.tokens = []
        if not ctx.dropped:
            ctx.dropped = True
            self.dropped += 1
        self.stats.drops += 1

    def _restore(self, ctx: KvContext, seq: int) -> None:
        state = ctx.parked
        assert state is not None
        ok = self.model.load_state(seq, state)
        self._unpark(ctx)
        if ok:
            self.stats.restores += 1
        else:
            self.model.forget(seq)
            self.stats.restore_failures += 1
            self._drop(ctx)

    def _unpark(self, ctx: KvContext) -> None:
        if ctx.parked is None:
            return
        wipe(ctx.parked)
        self.stats.parked_bytes -= self._parked.pop(ctx, 0)
        ctx.parked = None
