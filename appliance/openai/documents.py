"""Session documents: POST, GET /v1/sessions/{id}/documents and DELETE .../{doc_id}.

Uploads are JSON (`{"documents": [{"name", "text"}]}`) or multipart/form-data with one file
per part. Everything is parsed, chunked and embedded in memory; a listing shows names, sizes
and chunk counts, never content.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from pydantic import ValidationError

from appliance import multipart
from appliance.errors import InvalidRequest, NotFound
from appliance.openai.protocol import (
    DocumentDeleted,
    DocumentList,
    DocumentOut,
    DocumentsIn,
)
from appliance.sessions import Session
from appliance.state import ApplianceState, Caller, get_state
from rag.collection import Collection, Document, PreparedDocument
from rag.parsing import to_text

router = APIRouter()


def _out(collection: Collection, document: Document) -> DocumentOut:
    return DocumentOut(
        id=document.id, name=document.name, bytes=document.bytes, chunks=len(document.chunk_ids)
    )


def collection_of(state: ApplianceState, session: Session) -> Collection:
    if session.collection is None:
        session.collection = Collection(
            embedder=state.embedder, limits=state.collection_limits, budget=state.budget
        )
    return session.collection


async def _incoming(request: Request) -> list[tuple[str, str | None, bytes]]:
    """(name, content type, bytes) of each uploaded document."""
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    if content_type.startswith("multipart/form-data"):
        files = [p for p in multipart.parse(content_type, body) if p.filename is not None]
        if not files:
            raise InvalidRequest("the upload carries no file parts", param="documents")
        return [(p.filename or "document", p.content_type, bytes(p.data)) for p in files]
    try:
        parsed = DocumentsIn.model_validate_json(body)
    except ValidationError:
        raise InvalidRequest(
            'expected {"documents": [{"name", "text"}]} or a multipart upload',
            param="documents",
        ) from None
    return [(d.name, "text/plain", d.text.encode("utf-8")) for d in parsed.documents]


@router.post("/v1/sessions/{session_id}/documents", status_code=201)
async def add_documents(session_id: str, request: Request, principal: Caller) -> DocumentList:
    state = get_state(request)
    session = state.sessions.get(session_id, principal)
    incoming = await _incoming(request)
    embedder = state.embedder
    deadline = time.monotonic() + state.settings.request_deadline_s
    async with state.sessions.use(session, deadline=deadline):
        collection = collection_of(state, session)

        def prepare() -> list[PreparedDocument]:
            prepared = []
            for name, content_type, data in incoming:
                collection.check_size(len(data))  # before parsing, not after
                text = to_text(name, content_type, data)
                prepared.append(collection.prepare(name, text, len(data)))
            collection.check_room(prepared)  # before the costly part: embedding
            return prepared

        prepared = await embedder.run(prepare)
        vectors = await embedder.encode_async([c.text for p in prepared for c in p.chunks])
        added = await embedder.run(collection.add, prepared, vectors)
    return DocumentList(data=[_out(collection, d) for d in added])


@router.get("/v1/sessions/{session_id}/documents")
async def list_documents(session_id: str, request: Request, principal: Caller) -> DocumentList:
    state = get_state(request)
    session = state.sessions.get(session_id, principal)
    collection = session.collection
    if collection is None:
        return DocumentList(data=[])
    return DocumentList(data=[_out(collection, d) for d in collection.documents.values()])


@router.delete("/v1/sessions/{session_id}/documents/{document_id}")
async def delete_document(
    session_id: str,
    document_id: str,
    request: Request,
    principal: Caller,
) -> DocumentDeleted:
    state = get_state(request)
    session = state.sessions.get(session_id, principal)
    deadline = time.monotonic() + state.settings.request_deadline_s
    async with state.sessions.use(session, deadline=deadline):
        collection = session.collection
        if collection is None or not await state.embedder.run(collection.remove, document_id):
            raise NotFound("no such document", param="document_id")
    return DocumentDeleted(id=document_id)
