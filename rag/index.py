"""One `VectorIndex` interface, two backends: FAISS in-process (default) and Qdrant.

Vectors are unit length and scored by inner product (cosine similarity). Ids are the
collection's integer chunk ids. An index belongs to exactly one collection.

FAISS is exact (`IndexFlatIP`) up to `exact_max` vectors and HNSW beyond it. HNSW cannot
remove vectors, so the index keeps its own copy of the vectors and rebuilds after a removal.
Qdrant runs in its local in-memory mode by default; with a URL it uses a server, whose
storage must be on tmpfs for Keep's RAM-only promise to hold.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
Hit = tuple[int, float]


class VectorIndex(Protocol):
    def add(self, ids: Sequence[int], vectors: Vectors) -> None: ...
    def remove(self, ids: Sequence[int]) -> None: ...
    def search(self, query: Vectors, k: int) -> list[Hit]: ...
    def __len__(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def close(self) -> None: ...


class FaissIndex:
    def __init__(self, dimension: int, *, exact_max: int = 50_000, hnsw_m: int = 32) -> None:
        self.dimension = dimension
        self.exact_max = exact_max
        self.hnsw_m = hnsw_m
        self._ids = np.zeros((0,), dtype=np.int64)
        self._vectors = np.zeros((0, dimension), dtype=np.float32)
        self._index: Any = self._build(self._vectors)

    @property
    def approximate(self) -> bool:
        return len(self._ids) > self.exact_max

    def _build(self, vectors: Vectors) -> Any:
        import faiss

        index: Any
        if len(vectors) > self.exact_max:
            index = faiss.IndexHNSWFlat(self.dimension, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = 64
        else:
            index = faiss.IndexFlatIP(self.dimension)
        if len(vectors):
            index.add(vectors)
        return index

    def add(self, ids: Sequence[int], vectors: Vectors) -> None:
        was_exact = not self.approximate
        self._ids = np.concatenate([self._ids, np.asarray(ids, dtype=np.int64)])
        self._vectors = np.concatenate([self._vectors, vectors])
        if was_exact and self.approximate:
            self._index = self._build(self._vectors)
        else:
            self._index.add(vectors)

    def remove(self, ids: Sequence[int]) -> None:
        keep = ~np.isin(self._ids, np.asarray(ids, dtype=np.int64))
        self._ids = self._ids[keep]
        self._vectors = np.ascontiguousarray(self._vectors[keep])
        self._index = self._build(self._vectors)

    def search(self, query: Vectors, k: int) -> list[Hit]:
        if not len(self._ids):
            return []
        k = min(k, len(self._ids))
        scores, rows = self._index.search(query.reshape(1, -1), k)
        return [
            (int(self._ids[row]), float(score))
            for row, score in zip(rows[0], scores[0], strict=True)
            if row >= 0
        ]

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def nbytes(self) -> int:
        graph = len(self._ids) * self.hnsw_m * 2 * 4 if self.approximate else 0
        index_copy = self._vectors.nbytes
        return int(self._vectors.nbytes + self._ids.nbytes + index_copy + graph)

    def close(self) -> None:
        self._index = None
        self._vectors = np.zeros((0, self.dimension), dtype=np.float32)
        self._ids = np.zeros((0,), dtype=np.int64)


class QdrantIndex:
    """A Qdrant collection of its own: `:memory:` local mode, or a server at `url`."""

    def __init__(self, dimension: int, *, url: str | None = None) -> None:
        from qdrant_client import QdrantClient, models

        self._models = models
        self._client = QdrantClient(location=":memory:") if url is None else QdrantClient(url=url)
        self._name = "keep-" + uuid.uuid4().hex
        self.dimension = dimension
        self._count = 0
        self._client.create_collection(
            self._name,
            vectors_config=models.VectorParams(size=dimension, distance=models.Distance.DOT),
        )

    def add(self, ids: Sequence[int], vectors: Vectors) -> None:
        points = [
            self._models.PointStruct(id=int(i), vector=v.tolist())
            for i, v in zip(ids, vectors, strict=True)
        ]
        self._client.upsert(self._name, points=points, wait=True)
        self._count += len(points)

    def remove(self, ids: Sequence[int]) -> None:
        selector = self._models.PointIdsList(points=[int(i) for i in ids])
        self._client.delete(self._name, points_selector=selector, wait=True)
        self._count -= len(ids)

    def search(self, query: Vectors, k: int) -> list[Hit]:
        if not self._count:
            return []
        result = self._client.query_points(self._name, query=query.tolist(), limit=k)
        return [(int(p.id), float(p.score)) for p in result.points]

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return self._count * self.dimension * 4

    def close(self) -> None:
        self._client.delete_collection(self._name)
        self._client.close()
