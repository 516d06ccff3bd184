"""Retrieval on the real embedder, FAISS, Qdrant's local mode and the real chat model."""

from __future__ import annotations

import base64
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from fastapi.testclient import TestClient

from rag.collection import Collection, CollectionLimits, MemoryBudget, PreparedDocument
from rag.embedder import Embedder
from rag.index import FaissIndex
from tests.conftest import MODEL, AppFactory
from tests.unit.rag.test_parsing import docx_bomb, docx_bytes, many_pages_pdf, minimal_pdf

DATA = Path(__file__).resolve().parent.parent / "data"
ZORBLAX = "The Zorblax reactor in Tallinn was commissioned in 1987. It heats the old town."
DISTRACTORS = [
    {"name": "bread.txt", "text": "Sourdough bread needs a starter, flour, water and salt."},
    {"name": "terns.txt", "text": "Arctic terns migrate from the Arctic to the Antarctic."},
]
QUESTION = "When was the Zorblax reactor in Tallinn commissioned?"


def session_with(client: TestClient, documents: list[dict[str, str]]) -> dict[str, str]:
    session = client.post("/v1/sessions").json()["id"]
    headers = {"X-Keep-Session": session}
    r = client.post(f"/v1/sessions/{session}/documents", json={"documents": documents})
    assert r.status_code == 201, r.text
    return headers | {"session": session}


def ask(client: TestClient, headers: dict[str, str], **extra: Any) -> Any:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 0,
        "max_tokens": 40,
        **extra,
    }
    h = {k: v for k, v in headers.items() if k != "session"}
    response = client.post("/v1/chat/completions", json=body, headers=h)
    assert response.status_code == 200, response.text
    return response


def test_rag_answers_from_the_document_and_cites_it(client: TestClient) -> None:
    headers = session_with(client, [{"name": "reactor.txt", "text": ZORBLAX}, *DISTRACTORS])
    listed = client.get(f"/v1/sessions/{headers['session']}/documents").json()["data"]
    reactor = next(d for d in listed if d["name"] == "reactor.txt")
    on = ask(client, headers).json()
    assert "1987" in on["choices"][0]["message"]["content"]
    top = on["keep"]["citations"][0]
    assert top["document_id"] == reactor["id"]
    assert top["name"] == "reactor.txt"
    assert ZORBLAX[top["start"] : top["end"]].startswith("The Zorblax reactor")
    assert top["score"] > 0.5
    off = ask(client, headers, keep={"rag": False}).json()
    assert "1987" not in off["choices"][0]["message"]["content"]
    assert "keep" not in off
    client.delete(f"/v1/sessions/{headers['session']}")


def test_stream_carries_citations_in_its_final_chunk(client: TestClient) -> None:
    headers = session_with(client, [{"name": "reactor.txt", "text": ZORBLAX}])
    h = {"X-Keep-Session": headers["X-Keep-Session"]}
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 0,
        "max_tokens": 20,
        "stream": True,
    }
    with client.stream("POST", "/v1/chat/completions", json=body, headers=h) as r:
        chunks = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
    final = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"])
    assert final["keep"]["citations"][0]["name"] == "reactor.txt"
    assert all("keep" not in c for c in chunks if c is not final)
    client.delete(f"/v1/sessions/{headers['session']}")


def test_ephemeral_requests_and_empty_sessions_carry_no_rag(client: TestClient) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    assert "keep" not in client.post("/v1/chat/completions", json=body).json()


def test_deleting_a_document_removes_it_from_retrieval(client: TestClient) -> None:
    headers = session_with(client, [{"name": "reactor.txt", "text": ZORBLAX}, *DISTRACTORS])
    session = headers["session"]
    docs = client.get(f"/v1/sessions/{session}/documents").json()["data"]
    reactor = next(d for d in docs if d["name"] == "reactor.txt")
    assert client.delete(f"/v1/sessions/{session}/documents/{reactor['id']}").status_code == 200
    assert client.delete(f"/v1/sessions/{session}/documents/{reactor['id']}").status_code == 404
    names = [c["name"] for c in ask(client, headers).json()["keep"]["citations"]]
    assert "reactor.txt" not in names
    assert len(client.get(f"/v1/sessions/{session}/documents").json()["data"]) == 2
    client.delete(f"/v1/sessions/{session}")


def test_listing_shows_no_content(client: TestClient) -> None:
    headers = session_with(client, [{"name": "reactor.txt", "text": ZORBLAX}])
    listing = client.get(f"/v1/sessions/{headers['session']}/documents").text
    assert "Zorblax" not in listing
    (doc,) = json.loads(listing)["data"]
    assert set(doc) == {"id", "object", "name", "bytes", "chunks"}
    assert doc["bytes"] == len(ZORBLAX.encode())
    client.delete(f"/v1/sessions/{headers['session']}")


def test_documents_belong_to_their_session_only(make_client: AppFactory) -> None:
    client = make_client()
    headers = session_with(client, [{"name": "reactor.txt", "text": ZORBLAX}])
    other = client.post("/v1/sessions").json()["id"]
    assert client.get(f"/v1/sessions/{other}/documents").json()["data"] == []
    answer = ask(client, {"X-Keep-Session": other}).json()
    assert "keep" not in answer
    for s in (headers["session"], other):
        client.delete(f"/v1/sessions/{s}")


def test_multipart_upload_of_text_pdf_and_docx(client: TestClient) -> None:
    session = client.post("/v1/sessions").json()["id"]
    files = [
        ("file", ("notes.md", b"# Notes\nThe Zorblax reactor is in Tallinn.", "text/markdown")),
        (
            "file",
            ("report.pdf", minimal_pdf("Zorblax was commissioned in 1987"), "application/pdf"),
        ),
        (
            "file",
            (
                "memo.docx",
                docx_bytes("The reactor heats the old town."),
                "application/octet-stream",
            ),
        ),
    ]
    r = client.post(f"/v1/sessions/{session}/documents", files=files)
    assert r.status_code == 201, r.text
    assert [d["name"] for d in r.json()["data"]] == ["notes.md", "report.pdf", "memo.docx"]
    assert all(d["chunks"] >= 1 for d in r.json()["data"])
    client.delete(f"/v1/sessions/{session}")


def test_a_file_name_outside_latin_1_is_kept(client: TestClient) -> None:
    # Found by tests/integration/test_fuzz.py: a UTF-8 file name was a 500.
    session = client.post("/v1/sessions").json()["id"]
    names = ["Договор аренды.txt", "契約.md", "Ā.txt"]
    files = [("file", (name, b"A clause.", "text/plain")) for name in names]
    r = client.post(f"/v1/sessions/{session}/documents", files=files)
    assert r.status_code == 201, r.text
    assert [d["name"] for d in r.json()["data"]] == names
    client.delete(f"/v1/sessions/{session}")


def test_a_5_mib_multipart_upload_never_touches_disk(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a temporary file was opened during the upload")

    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    # A PDF over 5 MiB whose text is one line: the size is in the upload, not in the chunks.
    payload = minimal_pdf("Keep parses uploads in memory.", padding=5 << 20)
    assert len(payload) > 5 << 20
    session = client.post("/v1/sessions").json()["id"]
    limits = client.app.state.keep.collection_limits  # type: ignore[attr-defined]
    assert limits.max_document_bytes >= len(payload)
    r = client.post(
        f"/v1/sessions/{session}/documents",
        files=[("file", ("big.pdf", payload, "application/pdf"))],
    )
    assert r.status_code == 201, r.text
    assert r.json()["data"][0]["bytes"] == len(payload)
    assert list(spool.iterdir()) == []
    client.delete(f"/v1/sessions/{session}")


def test_limits_each_have_a_setting_and_a_clear_error(make_client: AppFactory) -> None:
    client = make_client(
        rag_max_documents_per_session=2,
        rag_max_document_bytes=400,
        rag_max_chunks_per_session=3,
        rag_max_upload_bytes=4096,
        rag_chunk_tokens=16,
        rag_chunk_overlap_tokens=0,
    )
    session = client.post("/v1/sessions").json()["id"]
    url = f"/v1/sessions/{session}/documents"

    def upload(*docs: dict[str, str]) -> Any:
        return client.post(url, json={"documents": list(docs)})

    too_big = upload({"name": "a", "text": "x" * 401})
    assert too_big.status_code == 413
    assert too_big.json()["error"]["param"] == "documents"
    too_many = upload(*({"name": f"d{i}", "text": "short"} for i in range(3)))
    assert too_many.status_code == 400
    long_text = " ".join(["word"] * 60)  # four 16-token chunks
    too_many_chunks = upload({"name": "long", "text": long_text})
    assert too_many_chunks.status_code == 400
    body_too_big = client.post(url, content=b"{" + b" " * 5000 + b"}")
    assert body_too_big.status_code == 413
    assert upload({"name": "ok", "text": "fine"}).status_code == 201  # nothing half-added before
    assert len(client.get(url).json()["data"]) == 1
    for bad in (b"not json", b'{"documents": []}', b'{"documents": [{"name": "x"}]}'):
        assert client.post(url, content=bad).status_code == 400
    client.delete(f"/v1/sessions/{session}")


def test_memory_budget_is_shared_and_given_back(make_client: AppFactory) -> None:
    client = make_client(rag_memory_bytes=1 << 20)
    budget = client.app.state.keep.budget  # type: ignore[attr-defined]
    first = client.post("/v1/sessions").json()["id"]
    text = " ".join(f"fact{i}" for i in range(400))
    ok = client.post(
        f"/v1/sessions/{first}/documents", json={"documents": [{"name": "a", "text": text}]}
    )
    assert ok.status_code == 201
    assert budget.used > 0
    second = client.post("/v1/sessions").json()["id"]
    big = [{"name": f"b{i}", "text": text} for i in range(60)]
    refused = client.post(f"/v1/sessions/{second}/documents", json={"documents": big})
    assert refused.status_code == 413
    client.delete(f"/v1/sessions/{first}")
    client.delete(f"/v1/sessions/{second}")
    assert budget.used == 0


def test_embeddings_endpoint_in_openai_shape(client: TestClient, embedder: Embedder) -> None:
    body = {"model": embedder.name, "input": ["first text", "second text"]}
    floats = client.post("/v1/embeddings", json=body).json()
    assert floats["object"] == "list"
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert len(floats["data"][0]["embedding"]) == embedder.dimension
    assert floats["usage"]["prompt_tokens"] == floats["usage"]["total_tokens"] > 4
    packed = client.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][1]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats["data"][1]["embedding"], atol=1e-6)
    single = client.post("/v1/embeddings", json={**body, "input": "first text"}).json()
    assert np.allclose(single["data"][0]["embedding"], floats["data"][0]["embedding"], atol=1e-5)
    assert client.post("/v1/embeddings", json={**body, "model": "other"}).status_code == 404
    assert client.post("/v1/embeddings", json={**body, "input": []}).status_code == 400
    assert client.post("/v1/embeddings", json={**body, "input": [""]}).status_code == 400
    assert client.post("/v1/embeddings", json={**body, "input": 5}).status_code == 400


def test_retrieval_quality_hit_at_5(embedder: Embedder) -> None:
    corpus = json.loads((DATA / "rag_corpus.json").read_text())
    assert len(corpus["documents"]) >= 50
    assert len(corpus["questions"]) >= 30
    collection = Collection(embedder, CollectionLimits(), MemoryBudget(1 << 30))
    prepared = [
        collection.prepare(d["name"], d["text"], len(d["text"])) for d in corpus["documents"]
    ]
    vectors = embedder.encode([c.text for p in prepared for c in p.chunks])
    collection.add(prepared, vectors)
    hits = 0
    for item in corpus["questions"]:
        query = embedder.encode([item["question"]])[0]
        names = [p.name for p in collection.search(query, top_k=5, min_score=-1.0)]
        hits += item["source"] in names
    collection.close()
    assert hits / len(corpus["questions"]) >= 0.9


def test_qdrant_local_mode_is_a_working_backend(embedder: Embedder) -> None:
    limits = CollectionLimits(backend="qdrant")
    collection = Collection(embedder, limits, MemoryBudget(1 << 30))
    docs = [{"name": "reactor.txt", "text": ZORBLAX}, *DISTRACTORS]
    prepared = [collection.prepare(d["name"], d["text"], len(d["text"])) for d in docs]
    collection.add(prepared, embedder.encode([c.text for p in prepared for c in p.chunks]))
    hits = collection.search(embedder.encode([QUESTION])[0], top_k=2, min_score=0.0)
    assert hits[0].name == "reactor.txt"
    reactor = next(d for d in collection.documents.values() if d.name == "reactor.txt")
    collection.remove(reactor.id)
    hits = collection.search(embedder.encode([QUESTION])[0], top_k=3, min_score=-1.0)
    assert "reactor.txt" not in [h.name for h in hits]
    collection.close()


def test_faiss_switches_to_hnsw_past_the_threshold_and_stays_accurate() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((2000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = FaissIndex(64, exact_max=1000)
    index.add(list(range(1000)), vectors[:1000])
    assert not index.approximate
    index.add(list(range(1000, 2000)), vectors[1000:])
    assert index.approximate
    found = [index.search(vectors[i], 1)[0][0] for i in range(0, 2000, 50)]
    assert found == list(range(0, 2000, 50))
    index.remove([0])
    assert index.search(vectors[0], 1)[0][0] != 0


def test_teardown_gives_collection_memory_back(embedder: Embedder) -> None:
    process = psutil.Process()
    budget = MemoryBudget(1 << 34)
    gc.collect()
    before = process.memory_info().rss
    limits = CollectionLimits(max_chunks=10**6, faiss_exact_max=10**7)  # flat: fast to build
    collection = Collection(embedder, limits, budget)
    # Vectors stand in for embedded chunks here: memory is about their size, not their values.
    n = 200_000
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, embedder.dimension)).astype(np.float32)
    from rag.chunking import Chunk

    chunks = [Chunk(text=f"chunk {i}", start=0, end=1) for i in range(n)]
    collection.add([PreparedDocument("synthetic", n, chunks)], vectors)
    del vectors, chunks
    gc.collect()
    grown = process.memory_info().rss
    assert grown - before > 300 << 20  # two copies of 200k x 384 floats are about 600 MiB
    collection.close()
    gc.collect()
    after = process.memory_info().rss
    assert budget.used == 0
    assert after - before < (grown - before) * 0.25, (before, grown, after)


def test_idle_ttl_drops_the_collection(make_client: AppFactory) -> None:
    client = make_client(session_idle_ttl_s=0.3)
    budget = client.app.state.keep.budget  # type: ignore[attr-defined]
    headers = session_with(client, [{"name": "reactor.txt", "text": ZORBLAX}])
    assert budget.used > 0
    deadline = time.monotonic() + 5
    while budget.used and time.monotonic() < deadline:
        time.sleep(0.05)
    assert budget.used == 0
    assert client.get(f"/v1/sessions/{headers['session']}/documents").status_code == 404


def test_document_bombs_get_413_at_once_in_little_memory(make_client: AppFactory) -> None:
    client = make_client(rag_max_chunks_per_session=50)
    session = client.post("/v1/sessions").json()["id"]
    url = f"/v1/sessions/{session}/documents"
    docx_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    bombs = [
        ("bomb.docx", docx_bomb(60 << 20), docx_type, 413),  # 60 MB of text in ~170 KB
        ("pages.pdf", many_pages_pdf(5000), "application/pdf", 413),
        ("long.txt", b"word " * 1_500_000, "text/plain", 400),  # 7.5 MB, far past 50 chunks
    ]
    for name, data, content_type, status in bombs:
        gc.collect()
        rss = psutil.Process().memory_info().rss
        started = time.monotonic()
        response = client.post(url, files={"file": (name, data, content_type)})
        elapsed = time.monotonic() - started
        grown = psutil.Process().memory_info().rss - rss
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"]["param"] == "documents"
        assert elapsed < 1.0, (name, elapsed)
        assert grown < 100 << 20, (name, grown >> 20)
    assert client.get(url).json()["data"] == []
    client.delete(f"/v1/sessions/{session}")
