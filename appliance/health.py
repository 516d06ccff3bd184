"""/healthz (the process answers) and /readyz (the model is loaded, its worker runs, and
receipts can be written)."""

from __future__ import annotations

from fastapi import APIRouter

from appliance.errors import NotReady, ReceiptsUnavailable
from appliance.state import EngineDep, JournalDep

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(engine: EngineDep, journal: JournalDep) -> dict[str, str]:
    if not engine.alive:
        raise NotReady("the model is not loaded")
    if not journal.healthy:
        raise ReceiptsUnavailable("receipts cannot be written")
    return {"status": "ready"}
