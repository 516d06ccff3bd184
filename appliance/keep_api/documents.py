"""Session documents: POST, GET /v1/sessions/{id}/documents and DELETE .../{doc_id}.

Uploads are JSON (`{"documents": [{"name", "text"}]}`) or multipart/form-data with one file
per part. Everything is parsed, chunked and embedded in memory; a listing shows names, sizes
and chunk counts, never content.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from appliance import multipart, observe
from appliance.errors import InvalidRequest, NotFound, RateLimited, from_validation
from appliance.keep_api.protocol import DocumentDeleted, DocumentList, DocumentOut, DocumentsIn
from appliance.quotas import QuotaBook
from appliance.sessions import Session, SessionRegistry
from appliance.shares import ClientShares
from appliance.state import (
    Caller,
    CollectionLimitsDep,
    EmbedderDep,
    QuotasDep,
    SessionsDep,
    SettingsDep,
    SharesDep,
)
from rag.collection import Collection, CollectionLimits, Document, PreparedDocument
from rag.embedder import Embedder
from rag.parsing import to_text

# The one route that takes bodies up to KEEP_RAG_MAX_UPLOAD_BYTES; BodyLimit keys on it.
UPLOAD_ROUTE = "/v1/sessions/{session_id}/documents"

Upload = tuple[str, str | None, bytes]  # name, content type, bytes

router = APIRouter()


class DocumentServing:
    def __init__(
        self,
        sessions: SessionRegistry,
        *,
        embedder: Embedder,
        limits: CollectionLimits,
        shares: ClientShares,
        quotas: QuotaBook,
        deadline_s: float,
    ) -> None:
        self.sessions = sessions
        self.embedder = embedder
        self.limits = limits
        self.shares = shares
        self.quotas = quotas
        self.deadline_s = deadline_s

    def _collection_of(self, session: Session) -> Collection:
        if session.collection is None:
            # The client's budget, which takes from the appliance's as well.
            session.collection = Collection(
                embedder=self.embedder, limits=self.limits, budget=self.shares.budget(session.share)
            )
        return session.collection

    async def add(self, session: Session, uploads: list[Upload]) -> list[Document]:
        """Parse, chunk, embed and add. The upload counts in the client's quota (a request,
        its chunks' tokens) and its chunks in the client's embedding share."""
        embedder = self.embedder
        deadline = time.monotonic() + self.deadline_s
        self.quotas.admit(session.client_id)
        async with self.sessions.use(session, deadline=deadline):
            collection = self._collection_of(session)

            def prepare() -> list[PreparedDocument]:
                prepared: list[PreparedDocument] = []
                for name, content_type, data in uploads:
                    collection.check_size(len(data))  # before parsing, not after
                    text = to_text(name, content_type, data, self.limits.parsing)
                    prepared.append(collection.prepare(name, text, len(data), also=prepared))
                collection.check_room(prepared)  # before the costly part: embedding
                self.shares.spend(session.share, sum(len(p.chunks) for p in prepared))
                return prepared

            try:
                prepared = await embedder.run(prepare)
            except RateLimited:
                self.quotas.refund(session.client_id)
                raise
            vectors = await embedder.encode_async([c.text for p in prepared for c in p.chunks])
            added: list[Document] = await embedder.run(collection.add, prepared, vectors)
            embedded = sum(c.tokens for p in prepared for c in p.chunks)
            self.quotas.charge(session.client_id, embedded)
            observe.served(embedder.name)
            observe.tokens(embedded)
            session.touch()
        return added

    async def remove(self, session: Session, document_id: str) -> None:
        deadline = time.monotonic() + self.deadline_s
        async with self.sessions.use(session, deadline=deadline):
            collection = session.collection
            if collection is None or not await self.embedder.run(collection.remove, document_id):
                raise NotFound("no such document", param="document_id")
            session.touch()


async def get_documents(
    sessions: SessionsDep,
    embedder: EmbedderDep,
    limits: CollectionLimitsDep,
    shares: SharesDep,
    quotas: QuotasDep,
    settings: SettingsDep,
) -> DocumentServing:
    return DocumentServing(
        sessions,
        embedder=embedder,
        limits=limits,
        shares=shares,
        quotas=quotas,
        deadline_s=settings.request_deadline_s,
    )


DocumentsDep = Annotated[DocumentServing, Depends(get_documents)]


def _out(document: Document) -> DocumentOut:
    return DocumentOut(
        id=document.id, name=document.name, bytes=document.bytes, chunks=len(document.chunk_ids)
    )


async def _uploads(request: Request) -> list[Upload]:
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    if content_type.startswith("multipart/form-data"):
        files = [p for p in multipart.parse(content_type, body) if p.filename is not None]
        if not files:
            raise InvalidRequest("the upload carries no file parts", param="documents")
        return [(p.filename or "document", p.content_type, bytes(p.data)) for p in files]
    try:
        # json, not pydantic's own parser, so that a bad string is named by its field.
        raw = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidRequest(
            'expected {"documents": [{"name", "text"}]} or a multipart upload',
            param="documents",
        ) from None
    try:
        parsed = DocumentsIn.model_validate(raw)
    except ValidationError as exc:
        raise from_validation(exc.errors(include_input=False, include_url=False)) from None
    return [(d.name, "text/plain", d.text.encode("utf-8")) for d in parsed.documents]


@router.post(UPLOAD_ROUTE, status_code=201)
async def add_documents(
    session_id: str,
    request: Request,
    principal: Caller,
    sessions: SessionsDep,
    documents: DocumentsDep,
) -> DocumentList:
    session = sessions.get(session_id, principal)
    added = await documents.add(session, await _uploads(request))
    return DocumentList(data=[_out(d) for d in added])


@router.get("/v1/sessions/{session_id}/documents")
async def list_documents(session_id: str, principal: Caller, sessions: SessionsDep) -> DocumentList:
    collection = sessions.get(session_id, principal).collection
    if collection is None:
        return DocumentList(data=[])
    return DocumentList(data=[_out(d) for d in collection.documents.values()])


@router.delete("/v1/sessions/{session_id}/documents/{document_id}")
async def delete_document(
    session_id: str,
    document_id: str,
    principal: Caller,
    sessions: SessionsDep,
    documents: DocumentsDep,
) -> DocumentDeleted:
    await documents.remove(sessions.get(session_id, principal), document_id)
    return DocumentDeleted(id=document_id)
