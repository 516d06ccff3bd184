"""The admin unix socket: control pushes policy in and pulls receipts out. No TCP, ever.

The socket is created with mode 0600 before it listens, in a directory of mode 0700, so only
the appliance's own user (and root) can connect. It is served by a second uvicorn server in
the appliance's event loop, so policy applies to the running process without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from appliance import errors, health
from appliance import policy as policies
from appliance.metrics import CONTENT_TYPE
from appliance.openai.protocol import IgnoredFields
from appliance.shield import ShieldedFastAPI
from appliance.state import ApplianceState, app_state
from durable import bind_unix_socket

log = logging.getLogger("keep.admin")
router = APIRouter(prefix="/admin")
metrics_router = APIRouter()


def _state(request: Request) -> ApplianceState:
    return app_state(request.app.state.keep_source)


async def apply_policy(state: ApplianceState, new: policies.Policy) -> int:
    """Check, keep on disk, then swap in `new`. Returns how many sessions revocation ended."""
    current = state.access.policy
    policies.check_transition(current, new, state.pinned)
    state.access.pushed()
    if current is not None and new.digest() == current.digest():
        return 0
    await asyncio.to_thread(policies.save, state.settings.state_dir, new)
    return await install_policy(state, new)


async def install_policy(state: ApplianceState, new: policies.Policy) -> int:
    """Swap in a checked policy that is already on disk, and end revoked keys' sessions."""
    state.access.install(new)
    state.quotas.set_limits(new.quotas)
    state.rates.set_limits(new.quotas)
    state.shares.set_in_flight_limits(
        {q.client_id: q.max_in_flight for q in new.quotas if q.max_in_flight is not None}
    )
    ended = await state.sessions.close_where(state.access.keys.digests())
    log.info("policy %d applied: %d key(s); %d session(s) ended", new.version, len(new.keys), ended)
    return ended


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return health.ALIVE


@router.get("/readyz")
async def readyz(request: Request) -> dict[str, str]:
    """The probe for the host (systemd, ansible, the lab): no key, as the API's would need."""
    state = _state(request)
    return health.readiness(state.engine, state.receipts)


@router.get("/status")
async def status(request: Request) -> dict[str, Any]:
    state = _state(request)
    policy = state.access.policy
    return {
        "appliance_id": state.receipts.appliance_id,
        "verifier_key": state.receipts.verifier.encode(),
        "policy_version": None if policy is None else policy.version,
        "policy_digest": None if policy is None else policy.digest(),
        "receipts": len(state.receipts),
        "receipts_healthy": state.receipts.healthy,
        "sessions": len(state.sessions),
        "peers": sorted(p.address for p in policy.peers) if policy else [],
        "model": {"name": state.pinned.name, "sha256": state.pinned.sha256},
        "ignored_client_fields": IgnoredFields.count,
    }


@router.put("/policy")
async def put_policy(request: Request) -> JSONResponse:
    state = _state(request)
    raw = await request.body()
    try:
        new = policies.parse(raw)
        ended = await apply_policy(state, new)
    except policies.PolicyError as exc:
        log.warning("policy refused: %s", exc)
        return JSONResponse({"error": {"message": str(exc), "code": "policy_refused"}}, 400)
    return JSONResponse({"version": new.version, "digest": new.digest(), "sessions_ended": ended})


@router.get("/receipts")
async def receipts(
    request: Request,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1)] = 1000,
) -> dict[str, Any]:
    state = _state(request)
    journal = state.receipts
    # One snapshot: a checkpoint read apart from its entries could miss an append between
    # the two, and control would see entries beyond the checkpoint (a false tree alert).
    size, note, entries = await asyncio.wrap_future(
        journal.submit(journal.pull, after, min(limit, state.settings.admin_max_entries))
    )
    return {
        "entries": [{"receipt": e.receipt, "signature": e.signature} for e in entries],
        "size": size,
        "checkpoint": note,
    }


@metrics_router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus's text format: content-free figures, read by the host's Prometheus."""
    # On the event loop: the sessions it counts change there, and a scrape is brief.
    exposition = _state(request).metrics.exposition()
    return Response(exposition, media_type=CONTENT_TYPE)


def create_admin_app(source: FastAPI) -> FastAPI:
    app = ShieldedFastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.keep_source = source
    errors.install(app)
    app.include_router(router)
    app.include_router(metrics_router)
    return app


def create_metrics_app(source: FastAPI) -> FastAPI:
    """/metrics alone, for the metrics socket NGINX's management listener proxies to: NGINX
    can read figures there and can change nothing."""
    app = ShieldedFastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.keep_source = source
    errors.install(app)
    app.include_router(metrics_router)
    return app


def bind_socket(path: Path, group_access: bool = False) -> socket.socket:
    """A listening unix socket at `path`, mode 0600 from the start (0660 with
    `group_access`, for a control running as another user in the directory's group). A stale
    socket is replaced; a live one (another appliance) or a non-socket file stops start-up."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = 0o660 if group_access else 0o600
    return bind_unix_socket(path, mode, setting="KEEP_ADMIN_SOCKET")


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server inside another's event loop: the outer server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def _serve(app: FastAPI, sock: socket.socket, path: Path) -> AsyncIterator[None]:
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    # uvicorn reports start-up only through this flag.
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    try:
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()
        await asyncio.to_thread(path.unlink, missing_ok=True)


@contextlib.asynccontextmanager
async def serve_admin(
    source: FastAPI,
    path: Path,
    group_access: bool = False,
    metrics_socket: Path | None = None,
) -> AsyncIterator[None]:
    """The admin socket, and the metrics socket when one is set."""
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(
            _serve(create_admin_app(source), bind_socket(path, group_access), path)
        )
        if metrics_socket is not None:
            # 0666 in a directory only its owner and NGINX's group traverse, as the API socket.
            metrics_socket.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            sock = bind_unix_socket(metrics_socket, 0o666, setting="KEEP_METRICS_SOCKET")
            await stack.enter_async_context(
                _serve(create_metrics_app(source), sock, metrics_socket)
            )
        yield
