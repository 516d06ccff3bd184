"""/healthz (the process answers) and /readyz (the model is loaded, its worker runs, and
receipts can be written)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from appliance.errors import NotReady, ReceiptsUnavailable
from appliance.state import get_state

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> dict[str, str]:
    state = get_state(request)
    if not state.engine.alive:
        raise NotReady("the model is not loaded")
    if not state.receipts.healthy:
        raise ReceiptsUnavailable("receipts cannot be written")
    return {"status": "ready"}
