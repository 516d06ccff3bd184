"""The embedder: a sentence-transformers model directory pinned by a tree sha256.

The tree sha256 is the sha256 of `sha256sum`-style lines ("<file sha256>  <relative path>"),
one per file, sorted by path, so an operator can reproduce it with coreutils:

    (cd DIR && find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum) \\
      | sha256sum

Encoding runs on one dedicated thread: callers on the asyncio loop await `encode_async`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import importlib.metadata
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.errors import EmbedderError

PACKAGE_SCHEME = "package://"
Vectors = npt.NDArray[np.float32]


def resolve_dir(spec: str) -> Path:
    if not spec.startswith(PACKAGE_SCHEME):
        return Path(spec)
    distribution, _, relative = spec.removeprefix(PACKAGE_SCHEME).partition("/")
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise EmbedderError(f"embedder package {distribution!r} is not installed") from None
    return Path(str(dist.locate_file(relative)))


def tree_sha256(root: Path) -> str:
    lines = []
    files = [p for p in root.rglob("*") if p.is_file()]
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix().encode()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(root).as_posix()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class EmbedderConfig:
    name: str
    path: str
    sha256: str
    threads: int = 0
    batch_size: int = 64


def verify_dir(name: str, path_spec: str, sha256: str) -> Path:
    """Resolve a pinned model directory; refuse it unless its tree sha256 matches."""
    root = resolve_dir(path_spec)
    if not root.is_dir():
        raise EmbedderError(f"embedder {name!r}: directory not found at {root}")
    actual = tree_sha256(root)
    if actual != sha256:
        raise EmbedderError(
            f"embedder {name!r}: tree sha256 of {root} is {actual}, "
            f"but the pin is {sha256}; refusing it"
        )
    return root


class Embedder:
    def __init__(self, config: EmbedderConfig) -> None:
        root = verify_dir(config.name, config.path, config.sha256)
        # Offline whatever the caller's environment says: no hub, no telemetry, ever.
        os.environ.update(
            HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1"
        )
        import torch
        from sentence_transformers import SentenceTransformer

        if config.threads:
            torch.set_num_threads(config.threads)
        # oneDNN JIT-compiles its kernels into writable executable memory, which the
        # appliance's unit forbids (MemoryDenyWriteExecute=yes): torch's own CPU kernels
        # give the same vectors (within 1e-7) at the same speed on this model.
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
        self.name = config.name
        self.sha256 = config.sha256
        self._batch_size = config.batch_size
        # local_files_only: the model comes from the pinned directory, never from a hub.
        self._model: Any = SentenceTransformer(
            str(root), device="cpu", local_files_only=True, trust_remote_code=False
        )
        dimension, max_tokens = (
            self._model.get_embedding_dimension(),
            self._model.get_max_seq_length(),
        )
        if dimension is None or max_tokens is None:
            raise EmbedderError(f"embedder {config.name!r}: dimension or length unknown")
        self.dimension = int(dimension)
        self.max_tokens = int(max_tokens)
        self._tokenizer = self._model.tokenizer
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="keep-embed")

    def offsets(self, text: str) -> list[tuple[int, int]]:
        encoded = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [(int(a), int(b)) for a, b in encoded["offset_mapping"]]

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model reads for each text, special tokens included, after truncation."""
        encoded = self._tokenizer(list(texts), truncation=True, max_length=self.max_tokens)
        return sum(len(ids) for ids in encoded["input_ids"])

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Unit-length float32 vectors, so inner product is cosine similarity."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    async def encode_async(self, texts: Sequence[str]) -> Vectors:
        return await asyncio.wrap_future(self._pool.submit(self.encode, texts))

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run `fn` on the embedder's thread (tokenizing large documents, chunking)."""
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
