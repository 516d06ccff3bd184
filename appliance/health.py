"""/healthz (the process answers) and /readyz (the model is loaded and its worker runs)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from appliance.errors import NotReady
from appliance.state import get_state

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> dict[str, str]:
    if not get_state(request).engine.alive:
        raise NotReady("the model is not loaded")
    return {"status": "ready"}
