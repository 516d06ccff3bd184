"""Pinned models: a model is a GGUF file and its sha256; its version is name plus sha256.

A file is used only after its bytes hash to the pinned value.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from inference.errors import ModelIntegrityError, ModelNotFound

PACKAGE_SCHEME = "package://"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PinnedModel:
    name: str
    path: Path
    sha256: str

    @property
    def version(self) -> str:
        return f"{self.name}@sha256:{self.sha256}"


def resolve_path(spec: str) -> Path:
    """A plain path, or `package://<distribution>/<file>` inside an installed distribution."""
    if not spec.startswith(PACKAGE_SCHEME):
        return Path(spec)
    distribution, _, relative = spec.removeprefix(PACKAGE_SCHEME).partition("/")
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFound(f"model package {distribution!r} is not installed") from None
    return Path(str(dist.locate_file(relative)))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(name: str, path_spec: str, sha256: str) -> PinnedModel:
    """Resolve and hash a pinned model file; refuse it unless the hash matches."""
    path = resolve_path(path_spec)
    if not path.is_file():
        raise ModelNotFound(f"model {name!r}: file not found at {path}")
    actual = file_sha256(path)
    if actual != sha256:
        raise ModelIntegrityError(
            f"model {name!r}: sha256 of {path} is {actual}, but the pin is {sha256}; refusing it"
        )
    return PinnedModel(name=name, path=path, sha256=sha256)
