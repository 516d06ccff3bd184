"""Retrieval benchmarks, each against a reference measured in the same run.

1. Ingest: chunks/s through Keep's HTTP upload path (parse, chunk, embed, index) against raw
   `SentenceTransformer.encode` on the same chunk texts.
2. Search: p50 and p99 latency of Keep's FaissIndex, exact and approximate, at each size,
   against the same raw FAISS index searched directly. Latency depends on size and dimension,
   not on the values, so these vectors are random unit vectors.
3. Recall@10 of the approximate (HNSW) index against exact search, on real embeddings of
   real text.
4. Retrieval's cost in time to first token: the same prompt is sent with RAG (retrieving from
   a session collection of the given size) and without RAG (the same passages written into the
   request), and the difference of median TTFT is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine_vs_llama_server import free_port, serve
from keep.settings import DEFAULT_EMBEDDER, DEFAULT_MODEL_NAME
from rag.chunking import chunk_text
from rag.embedder import Embedder, EmbedderConfig, resolve_dir
from rag.index import FaissIndex

KEY = "keep-bench-key-0123456789abcdef"
CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "rag_corpus.json"


def texts(n_docs: int, seed: int = 1) -> list[str]:
    """Documents of real sentences: the test corpus's sentences, shuffled and recombined."""
    docs = json.loads(CORPUS.read_text())["documents"]
    sentences = [s.strip() + "." for d in docs for s in d["text"].split(".") if s.strip()]
    rng = random.Random(seed)
    return [" ".join(rng.sample(sentences, 24)) for _ in range(n_docs)]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def bench_ingest(embedder: Embedder, n_docs: int) -> None:
    documents = texts(n_docs)
    chunks = [
        c.text for d in documents for c in chunk_text(d, embedder.offsets, size=128, overlap=32)
    ]
    from sentence_transformers import SentenceTransformer

    raw = SentenceTransformer(
        str(resolve_dir(DEFAULT_EMBEDDER.path)), device="cpu", local_files_only=True
    )
    raw.encode(chunks[:64], batch_size=64)  # warm-up
    start = time.perf_counter()
    raw.encode(chunks, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    raw_rate = len(chunks) / (time.perf_counter() - start)
    del raw

    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEP_")}
    env |= {
        "KEEP_DEV_API_KEY": KEY,
        "KEEP_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
        "KEEP_RAG_MAX_DOCUMENTS_PER_SESSION": "100000",
        "KEEP_RAG_MAX_CHUNKS_PER_SESSION": "10000000",
        # One client measures ingest here: the embedder is all its own.
        "KEEP_CLIENT_EMBEDDING_INPUTS_PER_MINUTE": "10000000",
        "KEEP_RAG_CLIENT_MEMORY_BYTES": str(1 << 30),
    }
    cmd = [str(Path(sys.executable).parent / "keep"), "serve", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with (
        serve(cmd, env, url + "/readyz", {"Authorization": f"Bearer {KEY}"}),
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=3600
        ) as client,
    ):
        warm = client.post("/v1/sessions").json()["id"]
        client.post(
            f"/v1/sessions/{warm}/documents",
            json={"documents": [{"name": "w", "text": documents[0]}]},
        )
        session = client.post("/v1/sessions").json()["id"]
        body = {"documents": [{"name": f"d{i}", "text": t} for i, t in enumerate(documents)]}
        start = time.perf_counter()
        response = client.post(f"/v1/sessions/{session}/documents", json=body)
        elapsed = time.perf_counter() - start
        response.raise_for_status()
        keep_chunks = sum(d["chunks"] for d in response.json()["data"])
    keep_rate = keep_chunks / elapsed
    print(
        f"ingest: {keep_chunks} chunks; keep {keep_rate:.1f} chunks/s, raw encode "
        f"{raw_rate:.1f} chunks/s, ratio {keep_rate / raw_rate:.2f}x"
    )


def bench_search(sizes: list[int], dim: int, queries: int) -> None:
    import faiss

    rng = np.random.default_rng(7)
    for n in sizes:
        vectors = rng.standard_normal((n, dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        qs = vectors[rng.integers(0, n, queries)] + 0.01
        for label, exact_max in (("exact", n), ("approximate", n - 1)):
            start = time.perf_counter()
            keep = FaissIndex(dim, exact_max=exact_max)
            keep.add(list(range(n)), vectors)
            build = time.perf_counter() - start
            raw = keep._index  # the same FAISS object, searched directly as the reference
            keep_t, raw_t = [], []
            for q in qs:
                t0 = time.perf_counter()
                keep.search(q, 10)
                t1 = time.perf_counter()
                raw.search(q.reshape(1, -1), 10)
                t2 = time.perf_counter()
                keep_t.append((t1 - t0) * 1000)
                raw_t.append((t2 - t1) * 1000)
            print(
                f"search {label:<11} n={n:>8}: keep p50 {pct(keep_t, 50):.3f} ms "
                f"p99 {pct(keep_t, 99):.3f} ms; raw faiss p50 {pct(raw_t, 50):.3f} ms "
                f"p99 {pct(raw_t, 99):.3f} ms; ratio p50 "
                f"{pct(keep_t, 50) / pct(raw_t, 50):.2f}x (built in {build:.0f} s)",
                flush=True,
            )
            keep.close()
        del vectors
        faiss.omp_set_num_threads(os.cpu_count() or 1)


def bench_recall(embedder: Embedder, n_docs: int, queries: int) -> None:
    documents = texts(n_docs, seed=2)
    chunks = [
        c.text for d in documents for c in chunk_text(d, embedder.offsets, size=32, overlap=8)
    ]
    vectors = embedder.encode(chunks)
    rng = np.random.default_rng(5)
    held = rng.choice(len(vectors), queries, replace=False)
    mask = np.ones(len(vectors), dtype=bool)
    mask[held] = False
    base, qs = vectors[mask], vectors[held]
    exact = FaissIndex(embedder.dimension, exact_max=len(base))
    approx = FaissIndex(embedder.dimension, exact_max=0)
    ids = list(range(len(base)))
    exact.add(ids, base)
    approx.add(ids, base)
    recalls = []
    for q in qs:
        truth = {i for i, _ in exact.search(q, 10)}
        found = {i for i, _ in approx.search(q, 10)}
        recalls.append(len(truth & found) / 10)
    print(
        f"recall@10 of HNSW against exact, {len(base)} real embeddings, {queries} queries: "
        f"{statistics.mean(recalls):.3f}"
    )


def bench_rag_ttft(embedder: Embedder, n_chunks: int, runs: int) -> None:
    """Retrieval's share of time to first token, in-process on the real app."""
    from fastapi.testclient import TestClient

    from appliance.app import create_app, load_engine
    from keep.settings import load_settings
    from rag.chunking import Chunk
    from rag.collection import Collection, PreparedDocument

    state = Path(tempfile.mkdtemp(prefix="keep-bench-", dir="/tmp"))
    settings = load_settings(
        dev_api_key=KEY,
        max_sessions=2,
        n_ctx_per_session=2048,
        state_dir=state,
        admin_socket=state / "admin.sock",
    )
    engine = load_engine(settings)
    app = create_app(settings, engine=engine, embedder=embedder)
    question = "How many strokes does the host use to whisk the tea?"
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as client:
        state = app.state.keep
        principal = state.access.keys.principal(KEY)
        corpus = json.loads(CORPUS.read_text())["documents"]
        real = [d["text"] for d in corpus]
        rng = np.random.default_rng(11)
        filler = rng.standard_normal((n_chunks - len(real), embedder.dimension), dtype=np.float32)
        filler /= np.linalg.norm(filler, axis=1, keepdims=True)
        vectors = np.concatenate([embedder.encode(real), filler * 0.2])
        chunks, offset = [], 0
        for text in real + [f"filler {i}" for i in range(len(filler))]:
            chunks.append(Chunk(text, offset, offset + len(text)))
            offset += len(text)
        limits = replace(state.collection_limits, max_chunks=n_chunks)
        collection = Collection(embedder, limits, state.budget)
        collection.add([PreparedDocument("bench", 0, chunks)], vectors)
        by_start = {c.start: c.text for c in chunks}
        body = {"model": DEFAULT_MODEL_NAME, "temperature": 0, "max_tokens": 1, "stream": True}
        with_rag = {**body, "messages": [{"role": "user", "content": question}]}

        def in_fresh_session(payload: dict[str, object], ttft: bool) -> object:
            # A new session each time, so no run re-uses another's KV prefix; the collection
            # is lent to it and taken back before the session is torn down.
            session = client.post("/v1/sessions").json()["id"]
            live = state.sessions.get(session, principal)
            live.collection = collection
            try:
                return (
                    measure(payload, {"X-Keep-Session": session})
                    if ttft
                    else (
                        client.post(
                            "/v1/chat/completions",
                            json={**payload, "stream": False},
                            headers={"X-Keep-Session": session},
                        ).json()
                    )
                )
            finally:
                live.collection = None
                client.delete(f"/v1/sessions/{session}")

        def measure(payload: dict[str, object], headers: dict[str, str]) -> float:
            t0 = time.perf_counter()
            with client.stream("POST", "/v1/chat/completions", json=payload, headers=headers) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        return time.perf_counter() - t0
            raise SystemExit("no chunk")

        from appliance.openai.chat.prompt import with_passages
        from inference.template import ChatMessage
        from rag.collection import Passage

        cited = in_fresh_session(with_rag, ttft=False)["keep"]["citations"]  # type: ignore[index]
        inline = with_passages(
            [ChatMessage("user", question)],
            [
                Passage(
                    c["document_id"],
                    c["name"],
                    c["start"],
                    c["end"],
                    c["score"],
                    by_start[c["start"]],
                )
                for c in cited
            ],
        )
        without_rag = {
            **body,
            "messages": [{"role": m.role, "content": m.content} for m in inline],
        }
        on, off = [], []
        for _ in range(runs):
            on.append(in_fresh_session(with_rag, ttft=True))
            off.append(measure(without_rag, {}))
        collection.close()
    engine.close()
    delta = (statistics.median(on) - statistics.median(off)) * 1000
    print(
        f"ttft with rag over {n_chunks} chunks: {statistics.median(on) * 1000:.1f} ms; "
        f"same prompt without rag: {statistics.median(off) * 1000:.1f} ms; "
        f"retrieval adds {delta:.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ingest-docs", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--recall-docs", type=int, default=600)
    parser.add_argument("--ttft-chunks", type=int, default=100_000)
    parser.add_argument("--ttft-runs", type=int, default=15)
    parser.add_argument("--only", choices=["ingest", "search", "recall", "ttft"], nargs="*")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pin = DEFAULT_EMBEDDER
    embedder = Embedder(EmbedderConfig(name=pin.name, path=pin.path, sha256=pin.sha256))
    only = set(args.only or ["ingest", "search", "recall", "ttft"])
    if "ingest" in only:
        bench_ingest(embedder, args.ingest_docs)
    if "recall" in only:
        bench_recall(embedder, args.recall_docs, args.queries)
    if "ttft" in only:
        bench_rag_ttft(embedder, args.ttft_chunks, args.ttft_runs)
    if "search" in only:
        bench_search(args.sizes, embedder.dimension, args.queries)
    embedder.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
