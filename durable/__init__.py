"""Durable writes for the few files Keep writes: keys, the kept policy and their directories.

Standard library only, so that every plane (appliance, control, provisioning) shares these.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a file created, renamed or removed in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_secret(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 under umask 077, write `data` and make it durable.
    Refuses to overwrite an existing file."""
    old = os.umask(0o077)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    finally:
        os.umask(old)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(path.parent)


def replace(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Atomically replace `path` (`mode`, 0600 unless said): write a sibling, fsync, rename,
    fsync the directory."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def replace_if_changed(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """`replace`, only when `path` does not already hold `data`; returns whether it wrote.
    An unchanged file keeps its mtime, so nothing that watches it is woken."""
    if path.exists() and path.read_bytes() == data:
        return False
    replace(path, data, mode)
    return True
