"""/healthz (the process answers) and /readyz (the model is loaded, its worker runs, and
receipts can be written). On the API they need a key, as every route does; the host's own
probes ask the admin socket's /admin/healthz and /admin/readyz, which answer the same."""

from __future__ import annotations

from fastapi import APIRouter

from appliance.errors import NotReady, ReceiptsUnavailable
from appliance.journal import ReceiptLog
from appliance.state import Caller, EngineDep, JournalDep
from inference.engine import Engine

ALIVE = {"status": "ok"}
READY = {"status": "ready"}

router = APIRouter()


def readiness(engine: Engine, journal: ReceiptLog) -> dict[str, str]:
    if not engine.alive:
        raise NotReady("the model is not loaded")
    if not journal.healthy:
        raise ReceiptsUnavailable("receipts cannot be written")
    return dict(READY)


@router.get("/healthz")
async def healthz(_: Caller) -> dict[str, str]:
    return dict(ALIVE)


@router.get("/readyz")
async def readyz(_: Caller, engine: EngineDep, journal: JournalDep) -> dict[str, str]:
    return readiness(engine, journal)
