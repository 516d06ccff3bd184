"""create_app(settings, engine): the FastAPI application, built once from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from appliance import errors, health
from appliance import policy as policies
from appliance.access import Access
from appliance.admin_socket import install_policy, serve_admin
from appliance.auth import Grant, key_digest
from appliance.journal import ReceiptLog, load_or_create_key
from appliance.keep_api import documents, receipts, sessions
from appliance.metrics import Metrics
from appliance.middleware import Authenticate, BodyLimit, ClientConcurrency, Observe, RateLimit
from appliance.openai.chat import router as chat
from appliance.openai.completions import router as completions
from appliance.openai.embeddings import router as embeddings
from appliance.openai.models import router as models
from appliance.openai.models.serving import ModelServing
from appliance.quotas import QuotaBook
from appliance.ratelimit import RateBook, RateLimits
from appliance.sessions import SessionRegistry
from appliance.shares import ClientShares
from appliance.shield import ShieldedFastAPI
from appliance.state import ApplianceState, app_state
from inference.engine import Engine
from inference.lookup import LookupConfig
from inference.model import LlamaModel, ModelConfig
from inference.registry import verify
from keep.settings import ApplianceSettings
from rag.collection import CollectionLimits, MemoryBudget
from rag.embedder import Embedder, EmbedderConfig
from rag.parsing import ParseLimits

log = logging.getLogger("keep.appliance")


def load_engine(settings: ApplianceSettings) -> Engine:
    """Verify the pinned model's sha256, load it, and start the engine's worker."""
    pin = settings.model_pin()
    pinned = verify(pin.name, pin.path, pin.sha256)
    config = ModelConfig(
        n_gpu_layers=settings.n_gpu_layers,
        n_threads=settings.n_threads,
        n_ctx_per_seq=settings.n_ctx_per_session,
        n_seq_max=settings.slots,
        n_batch=settings.n_batch,
        extra_buffers=settings.llama_extra_buffers,
    )
    return Engine(
        LlamaModel(pinned, config),
        prefill_order=settings.prefill_order,
        park_budget_bytes=settings.kv_park_bytes,
        eviction=settings.kv_eviction,
        preempt=settings.preempt,
        lookup=LookupConfig(
            max_draft=settings.lookup_draft,
            ngram_min=settings.lookup_ngram,
            max_turns=settings.lookup_max_turns,
        ),
    )


def load_embedder(settings: ApplianceSettings) -> Embedder:
    """Verify the embedder directory's tree sha256 and load it, offline."""
    pin = settings.embedder
    return Embedder(
        EmbedderConfig(
            name=pin.name, path=pin.path, sha256=pin.sha256, threads=settings.embed_threads
        )
    )


def collection_limits(settings: ApplianceSettings) -> CollectionLimits:
    return CollectionLimits(
        max_documents=settings.rag_max_documents_per_session,
        max_document_bytes=settings.rag_max_document_bytes,
        max_chunks=settings.rag_max_chunks_per_session,
        chunk_tokens=settings.rag_chunk_tokens,
        chunk_overlap=settings.rag_chunk_overlap_tokens,
        backend=settings.rag_backend,
        faiss_exact_max=settings.rag_faiss_exact_max,
        qdrant_url=settings.rag_qdrant_url,
        parsing=ParseLimits(
            max_unzipped_bytes=settings.rag_max_unzipped_bytes,
            max_text_chars=settings.rag_max_document_chars,
            max_pdf_pages=settings.rag_max_pdf_pages,
        ),
    )


def static_grants(settings: ApplianceSettings) -> dict[str, Grant]:
    """Keys from the settings: they belong to the peer `local` and have no client quota."""
    digests = list(settings.api_key_hashes)
    if settings.dev_api_key is not None:
        digests.append(key_digest(settings.dev_api_key.get_secret_value()))
    return dict.fromkeys(digests, Grant())


def open_receipt_log(settings: ApplianceSettings) -> ReceiptLog:
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return ReceiptLog(
        settings.state_dir,
        load_or_create_key(settings.receipt_key_path),
        checkpoint_interval=settings.receipt_checkpoint_interval,
    )


def create_app(
    settings: ApplianceSettings,
    *,
    engine: Engine | None = None,
    embedder: Embedder | None = None,
    on_ready: Callable[[], None] | None = None,
) -> FastAPI:
    """Build the app. An engine or embedder passed in stays the caller's; one loaded here is
    closed here."""
    metrics = Metrics(policy_max_age_s=settings.policy_max_age_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = engine is None
        running = await asyncio.to_thread(load_engine, settings) if engine is None else engine
        owned_embedder = embedder is None
        embedding = (
            await asyncio.to_thread(load_embedder, settings) if embedder is None else embedder
        )
        receipt_log = await asyncio.to_thread(open_receipt_log, settings)
        registry = SessionRegistry(
            running,
            receipt_log,
            max_sessions=settings.max_sessions,
            max_per_client=settings.client_max_sessions,
            idle_ttl_s=settings.session_idle_ttl_s,
        )
        budget = MemoryBudget(settings.rag_memory_bytes)
        state = ApplianceState(
            settings=settings,
            engine=running,
            models=ModelServing(running.model.pinned, loaded_at=int(time.time())),
            sessions=registry,
            access=Access(static_grants(settings)),
            quotas=QuotaBook(),
            receipts=receipt_log,
            embedder=embedding,
            collection_limits=collection_limits(settings),
            budget=budget,
            shares=ClientShares(
                rag_budget=budget,
                rag_bytes=settings.rag_client_memory_bytes,
                max_requests=settings.client_max_requests,
                embedding_inputs_per_minute=settings.client_embedding_inputs_per_minute,
            ),
            rates=RateBook(
                RateLimits(
                    requests_per_s=settings.client_requests_per_second,
                    burst=settings.client_request_burst,
                    tokens_per_minute=settings.client_tokens_per_minute,
                )
            ),
            metrics=metrics,
        )
        metrics.attach(state)
        kept = policies.load(settings.state_dir)
        if kept is not None:  # checked when it was applied; checked against this model again
            policies.check_transition(None, kept, state.pinned)
            await install_policy(state, kept)
        app.state.keep = state
        reaper = asyncio.create_task(registry.run_reaper())
        try:
            async with serve_admin(
                app,
                settings.admin_socket,
                settings.admin_socket_group_access,
                settings.metrics_socket,
            ):
                if on_ready is not None:
                    on_ready()
                yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            await registry.close_all()
            receipt_log.close()
            if owned:
                await asyncio.to_thread(running.close)
            if owned_embedder:
                embedding.close()

    app = ShieldedFastAPI(
        title="Keep",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    errors.install(app)
    for module in (health, models, chat, completions, embeddings, sessions, documents, receipts):
        app.include_router(module.router)
    # The last added runs first: the request's record, the key, the client's rates, its share
    # of requests in flight, the body, then routing.
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        per_route=((documents.UPLOAD_ROUTE, settings.rag_max_upload_bytes),),
    )
    app.add_middleware(ClientConcurrency, shares=lambda: app_state(app).shares)
    app.add_middleware(RateLimit, rates=lambda: app_state(app).rates)
    app.add_middleware(
        Authenticate,
        access=lambda: app_state(app).access,
        behind_nginx=settings.listen_socket is not None,
    )
    app.add_middleware(Observe, metrics=metrics, behind_nginx=settings.listen_socket is not None)
    return app
