"""POST /v1/sessions, GET and DELETE /v1/sessions/{session_id}."""

from __future__ import annotations

from fastapi import APIRouter

from appliance.keep_api.protocol import SessionDeleted, SessionOut
from appliance.sessions import Session
from appliance.state import Caller, SessionsDep

router = APIRouter()


def _out(session: Session) -> SessionOut:
    return SessionOut(id=session.id, expires_at=int(session.expires_at))


@router.post("/v1/sessions", status_code=201)
async def create_session(principal: Caller, sessions: SessionsDep) -> SessionOut:
    return _out(sessions.open(principal))


@router.get("/v1/sessions/{session_id}")
async def get_session(session_id: str, principal: Caller, sessions: SessionsDep) -> SessionOut:
    return _out(sessions.get(session_id, principal))


@router.delete("/v1/sessions/{session_id}")
async def delete_session(
    session_id: str, principal: Caller, sessions: SessionsDep
) -> SessionDeleted:
    await sessions.close(sessions.get(session_id, principal))
    return SessionDeleted(id=session_id)
