"""POST /v1/sessions, GET and DELETE /v1/sessions/{session_id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from appliance.openai.protocol import SessionDeleted, SessionOut
from appliance.sessions import Session
from appliance.state import get_state, require_principal

router = APIRouter()


def _out(session: Session) -> SessionOut:
    return SessionOut(id=session.id, expires_at=int(session.expires_at))


@router.post("/v1/sessions", status_code=201)
async def create_session(
    request: Request, principal: Annotated[str, Depends(require_principal)]
) -> SessionOut:
    return _out(get_state(request).sessions.open(principal))


@router.get("/v1/sessions/{session_id}")
async def get_session(
    session_id: str, request: Request, principal: Annotated[str, Depends(require_principal)]
) -> SessionOut:
    return _out(get_state(request).sessions.get(session_id, principal))


@router.delete("/v1/sessions/{session_id}")
async def delete_session(
    session_id: str, request: Request, principal: Annotated[str, Depends(require_principal)]
) -> SessionDeleted:
    sessions = get_state(request).sessions
    await sessions.close(sessions.get(session_id, principal))
    return SessionDeleted(id=session_id)
