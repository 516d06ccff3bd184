"""Sessions: server-issued ids, each owning one KV context, torn down on delete or idle TTL.

A session is the logical thing: id, owner, documents, counters, receipt. Its KV context
(inference.contexts) takes a KV sequence only for the length of a turn, so far more sessions
are open than there are sequences.

Invariants:
- A session id is random and issued by the server; a client never chooses one.
- A session is visible only to the principal that opened it; to anyone else it does not exist.
- One client holds at most `max_per_client` live sessions (appliance.shares.client_of), so no
  client can take every session. A session counts until its KV context is freed.
- Only a request that succeeds refreshes a session's idle timer (`touch`): failures, 404s
  and reads keep nobody's session alive.
- One request at a time runs in a session; others wait in arrival order until the deadline.
- Teardown frees the session's KV context: its sequence, or its parked bytes, zeroed. If a
  request is running, teardown cancels it and the context is freed as soon as that request
  lets go of it.
- Teardown issues the session's receipt, once. If the receipt cannot be written the
  teardown raises ReceiptsUnavailable, and no new session is opened after that (fail closed).
All methods run on the asyncio loop; only the engine's worker touches the KV cache.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from collections.abc import Set as AbstractSet
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from appliance.auth import Principal
from appliance.errors import ReceiptsUnavailable, RequestTimeout, SessionNotFound, TooManyRequests
from appliance.journal import ReceiptLog, ReceiptWriteError
from appliance.shares import Tally, client_of
from inference.engine import Engine, Generation, KvContext
from rag.collection import Collection

log = logging.getLogger("keep.sessions")


@dataclass(eq=False)
class Session:
    id: str
    share: str  # whose share of the appliance it counts in: appliance.shares.client_of
    owner: str
    peer_id: str
    client_id: str | None
    kv: KvContext
    ephemeral: bool
    ttl_s: float
    started_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False
    released: bool = False
    waiting: int = 0  # requests holding or queued for the lock: the reaper leaves it alone
    running: Generation | None = None
    collection: Collection | None = None
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def expires_at(self) -> float:
        """Wall-clock time at which the session expires if left idle."""
        return time.time() + self.ttl_s - (time.monotonic() - self.last_used)

    def idle_for(self, now: float) -> float:
        return now - self.last_used

    def touch(self) -> None:
        """A request in this session succeeded: its idle timer starts again."""
        self.last_used = time.monotonic()


def rfc3339(t: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
    return f"{stamp}.{int(t * 1000) % 1000:03d}Z"


class SessionRegistry:
    def __init__(
        self,
        engine: Engine,
        receipts: ReceiptLog,
        *,
        max_sessions: int,
        max_per_client: int,
        idle_ttl_s: float,
    ) -> None:
        self._engine = engine
        self._receipts = receipts
        self._model = engine.model.pinned
        self._max = max_sessions
        self._max_per_client = max_per_client
        self._per_client = Tally()
        self._ttl = idle_ttl_s
        self._live: dict[str, Session] = {}
        self._ephemeral: set[Session] = set()
        self._teardowns: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._live) + len(self._ephemeral)

    def collections(self) -> list[Collection]:
        """The document collections sessions hold now (for the metrics' counts)."""
        sessions = [*self._live.values(), *self._ephemeral]
        return [s.collection for s in sessions if s.collection is not None]

    def open(self, principal: Principal, *, ephemeral: bool = False) -> Session:
        if not self._receipts.healthy:
            raise ReceiptsUnavailable("receipts cannot be written; no session can be opened")
        if len(self) >= self._max:
            raise TooManyRequests("too many live sessions; retry shortly")
        client = client_of(principal)
        if self._per_client[client] >= self._max_per_client:
            raise TooManyRequests(
                f"this client holds {self._max_per_client} live sessions; close one or retry"
            )
        kv = self._engine.open_context()
        self._per_client.add(client)
        session = Session(
            id="sess_" + secrets.token_urlsafe(24),
            share=client,
            owner=principal.digest,
            peer_id=principal.peer_id,
            client_id=principal.client_id,
            kv=kv,
            ephemeral=ephemeral,
            ttl_s=self._ttl,
        )
        if ephemeral:
            self._ephemeral.add(session)
        else:
            self._live[session.id] = session
        return session

    def get(self, session_id: str, principal: Principal) -> Session:
        session = self._live.get(session_id)
        if session is None or session.owner != principal.digest or session.closed:
            raise SessionNotFound("no such session")
        return session

    async def close(self, session: Session) -> None:
        """Tear down: forget the session now; free its sequence once no request holds it."""
        if session.closed:
            return
        session.closed = True
        self._live.pop(session.id, None)
        if session.running is not None:
            session.running.cancel()
        if not session.lock.locked():
            await self._release(session)

    async def _release(self, session: Session) -> None:
        """Free the session's resources and issue its receipt. This runs as its own task,
        shielded: a client that hangs up cancels the request's task, and the teardown must
        still finish, or a session would go unaccounted."""
        if session.released:
            return
        session.released = True
        task = asyncio.ensure_future(self._teardown(session))
        self._teardowns.add(task)
        task.add_done_callback(self._teardown_done)
        await asyncio.shield(task)

    def _teardown_done(self, task: asyncio.Task[None]) -> None:
        self._teardowns.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Whoever awaited it has gone (a hang-up); the failure is not lost with them.
            log.error("a session teardown failed: %s", type(task.exception()).__name__)

    async def _teardown(self, session: Session) -> None:
        self._ephemeral.discard(session)
        try:
            if session.collection is not None:
                session.collection.close()
                session.collection = None
            await asyncio.wrap_future(self._engine.release(session.kv))
        finally:
            self._per_client.drop(session.share)
        await self._issue_receipt(session)

    def held_by(self, client: str) -> int:
        """Live sessions the client holds, those whose KV is not yet freed included."""
        return self._per_client[client]

    async def _issue_receipt(self, session: Session) -> None:
        fields = {
            "session_id": session.id,
            "peer_id": session.peer_id,
            "started_at": rfc3339(session.started_at),
            "ended_at": rfc3339(max(time.time(), session.started_at)),
            "model": self._model.name,
            "model_sha256": self._model.sha256,
            "prompt_tokens": session.prompt_tokens,
            "completion_tokens": session.completion_tokens,
            "requests": session.requests,
        }
        try:
            # The log's own thread: client work that fills the default executor must not
            # hold up a teardown.
            await asyncio.wrap_future(self._receipts.submit(self._receipts.issue, fields))
        except ReceiptWriteError:
            raise ReceiptsUnavailable("the session's receipt could not be written") from None

    async def close_where(self, keep: AbstractSet[str]) -> int:
        """Tear down every session whose owner's key is not in `keep` (a revocation)."""
        gone = [s for s in (*self._live.values(), *self._ephemeral) if s.owner not in keep]
        for session in gone:
            await self._close_quietly(session)
        return len(gone)

    async def _close_quietly(self, session: Session) -> None:
        try:
            await self.close(session)
        except ReceiptsUnavailable:
            log.error("a session's receipt could not be written at teardown")

    @asynccontextmanager
    async def use(self, session: Session, *, deadline: float) -> AsyncIterator[Session]:
        """Hold the session for one request; an ephemeral session is torn down after it."""
        session.waiting += 1
        try:
            try:
                timeout = max(0.0, deadline - time.monotonic())
                await asyncio.wait_for(session.lock.acquire(), timeout)
            except TimeoutError:
                raise RequestTimeout("the request ran past its deadline") from None
            try:
                if session.closed:
                    raise SessionNotFound("no such session")
                yield session
            finally:
                session.running = None
                session.lock.release()
        finally:
            session.waiting -= 1
            if session.ephemeral:
                session.closed = True
            if session.closed and not session.lock.locked():
                await self._release(session)

    async def reap(self) -> int:
        """Tear down idle sessions past their TTL. Returns how many went."""
        now = time.monotonic()
        idle = [
            s
            for s in self._live.values()
            if not s.waiting and not s.lock.locked() and s.idle_for(now) > self._ttl
        ]
        for session in idle:
            await self._close_quietly(session)
        if idle:
            log.info("expired %d idle session(s)", len(idle))
        return len(idle)

    async def close_all(self) -> None:
        """Tear down every session and wait for every teardown still running."""
        for session in list(self._live.values()):
            await self._close_quietly(session)
        while self._teardowns:
            await asyncio.gather(*self._teardowns, return_exceptions=True)

    async def run_reaper(self) -> None:
        interval = min(5.0, max(0.05, self._ttl / 4))
        while True:
            await asyncio.sleep(interval)
            await self.reap()
