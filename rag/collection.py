"""A session's document collection, and the RAM budget all collections share.

Invariants:
- A collection belongs to one session and is never shared or persisted.
- Every limit is checked before anything is added, so a refused upload changes nothing.
- `close()` drops every document, chunk and vector and returns their bytes to the budget.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from rag.chunking import Chunk, chunk_text
from rag.embedder import Embedder, Vectors
from rag.errors import (
    DocumentTooLarge,
    MemoryBudgetExceeded,
    TooManyChunks,
    TooManyDocuments,
)
from rag.index import FaissIndex, QdrantIndex, VectorIndex
from rag.parsing import ParseLimits


@dataclass(frozen=True)
class CollectionLimits:
    max_documents: int = 64
    max_document_bytes: int = 8 << 20
    max_chunks: int = 8192
    chunk_tokens: int = 128
    chunk_overlap: int = 32
    backend: Literal["faiss", "qdrant"] = "faiss"
    faiss_exact_max: int = 50_000
    qdrant_url: str | None = None
    parsing: ParseLimits = field(default_factory=ParseLimits)


class MemoryBudget:
    """Bytes of RAM that collections together may hold: all of them (the appliance's budget),
    or one client's, whose budget is taken from the appliance's as well (`parent`)."""

    def __init__(
        self, limit: int, *, parent: MemoryBudget | None = None, owner: str = "the appliance's"
    ) -> None:
        self.limit = limit
        self.parent = parent
        self._owner = owner
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def _full(self) -> MemoryBudgetExceeded:
        return MemoryBudgetExceeded(f"{self._owner} RAM budget for documents is full")

    def check(self, n: int) -> None:
        if self._used + n > self.limit:
            raise self._full()
        if self.parent is not None:
            self.parent.check(n)

    def take(self, n: int) -> None:
        with self._lock:
            if self._used + n > self.limit:
                raise self._full()
            if self.parent is not None:
                self.parent.take(n)  # raises, and nothing is taken, if the appliance is full
            self._used += n

    def give(self, n: int) -> None:
        with self._lock:
            given = min(n, self._used)
            self._used -= given
            if self.parent is not None:
                self.parent.give(given)


@dataclass(frozen=True)
class Document:
    id: str
    name: str
    bytes: int
    chunk_ids: tuple[int, ...]


@dataclass(frozen=True)
class Passage:
    document_id: str
    name: str
    start: int
    end: int
    score: float
    text: str


@dataclass(frozen=True)
class PreparedDocument:
    """A document parsed and chunked, before its chunks are embedded."""

    name: str
    bytes: int
    chunks: list[Chunk]


@dataclass
class Collection:
    embedder: Embedder
    limits: CollectionLimits
    budget: MemoryBudget
    documents: dict[str, Document] = field(default_factory=dict)
    _chunks: dict[int, tuple[str, Chunk]] = field(default_factory=dict)
    _next_id: int = 0
    _held: int = 0
    _index: VectorIndex | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _make_index(self) -> VectorIndex:
        if self.limits.backend == "qdrant":
            return QdrantIndex(self.embedder.dimension, url=self.limits.qdrant_url)
        return FaissIndex(self.embedder.dimension, exact_max=self.limits.faiss_exact_max)

    @property
    def chunk_count(self) -> int:
        return len(self._chunks)

    @property
    def nbytes(self) -> int:
        return self._held

    def check_size(self, size: int) -> None:
        if size > self.limits.max_document_bytes:
            raise DocumentTooLarge(
                f"a document may be at most {self.limits.max_document_bytes} bytes"
            )

    def prepare(
        self, name: str, text: str, size: int, *, also: Sequence[PreparedDocument] = ()
    ) -> PreparedDocument:
        """Check the document's size and chunk it, stopping as soon as its chunks (with those
        of `also`, prepared in the same upload) would pass the session's chunk limit. Runs on
        the embedder's thread."""
        self.check_size(size)
        room = self.limits.max_chunks - self.chunk_count - sum(len(p.chunks) for p in also)
        try:
            chunks = chunk_text(
                text,
                self.embedder.offsets,
                size=self.limits.chunk_tokens,
                overlap=self.limits.chunk_overlap,
                max_chunks=max(0, room),
            )
        except TooManyChunks:
            raise TooManyChunks(
                f"a session may hold at most {self.limits.max_chunks} chunks"
            ) from None
        return PreparedDocument(name=name, bytes=size, chunks=chunks)

    def check_room(self, prepared: Sequence[PreparedDocument]) -> None:
        """Raise unless the documents fit every limit, the shared RAM budget included."""
        self.budget.check(self.cost(prepared))
        if len(self.documents) + len(prepared) > self.limits.max_documents:
            raise TooManyDocuments(
                f"a session may hold at most {self.limits.max_documents} documents"
            )
        new_chunks = sum(len(p.chunks) for p in prepared)
        if self.chunk_count + new_chunks > self.limits.max_chunks:
            raise TooManyChunks(f"a session may hold at most {self.limits.max_chunks} chunks")

    def cost(self, prepared: Sequence[PreparedDocument]) -> int:
        """Bytes the documents will hold: chunk text plus vectors (kept twice by FAISS)."""
        text = sum(len(c.text.encode()) for p in prepared for c in p.chunks)
        vectors = sum(len(p.chunks) for p in prepared) * self.embedder.dimension * 4 * 2
        return text + vectors

    def add(self, prepared: Sequence[PreparedDocument], vectors: Vectors) -> list[Document]:
        """Add chunked documents with their chunk vectors (in order). All or nothing."""
        with self._lock:
            return self._add(prepared, vectors)

    def _add(self, prepared: Sequence[PreparedDocument], vectors: Vectors) -> list[Document]:
        self.check_room(prepared)
        cost = self.cost(prepared)
        self.budget.take(cost)
        self._held += cost
        if self._index is None:
            self._index = self._make_index()
        added: list[Document] = []
        ids: list[int] = []
        for doc in prepared:
            doc_id = "doc_" + secrets.token_urlsafe(12)
            chunk_ids = []
            for chunk in doc.chunks:
                self._chunks[self._next_id] = (doc_id, chunk)
                chunk_ids.append(self._next_id)
                self._next_id += 1
            ids.extend(chunk_ids)
            document = Document(doc_id, doc.name, doc.bytes, tuple(chunk_ids))
            self.documents[doc_id] = document
            added.append(document)
        if ids:
            self._index.add(ids, vectors)
        return added

    def remove(self, doc_id: str) -> bool:
        with self._lock:
            return self._remove(doc_id)

    def _remove(self, doc_id: str) -> bool:
        document = self.documents.pop(doc_id, None)
        if document is None:
            return False
        removed = [self._chunks.pop(i)[1] for i in document.chunk_ids]
        if self._index is not None and document.chunk_ids:
            self._index.remove(document.chunk_ids)
        cost = self.cost([PreparedDocument(document.name, document.bytes, removed)])
        self._held -= cost
        self.budget.give(cost)
        return True

    def search(self, query: Vectors, *, top_k: int, min_score: float) -> list[Passage]:
        with self._lock:
            return self._search(query, top_k=top_k, min_score=min_score)

    def _search(self, query: Vectors, *, top_k: int, min_score: float) -> list[Passage]:
        if self._index is None or not self._chunks:
            return []
        passages = []
        for chunk_id, score in self._index.search(query, top_k):
            if score < min_score or chunk_id not in self._chunks:
                continue
            doc_id, chunk = self._chunks[chunk_id]
            name = self.documents[doc_id].name
            passages.append(Passage(doc_id, name, chunk.start, chunk.end, score, chunk.text))
        return passages

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
        self.documents.clear()
        self._chunks.clear()
        self.budget.give(self._held)
        self._held = 0
