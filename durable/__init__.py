"""Durable writes for the few files Keep writes: keys, the kept policy and their directories,
and the unix sockets the planes listen on.

Standard library only, so that every plane (appliance, control, provisioning) shares these.
"""

from __future__ import annotations

import os
import socket
import stat
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


class SocketPathError(RuntimeError):
    """The socket's path is in use: a live socket, or a file that is no socket."""


def bind_unix_socket(path: Path, mode: int, *, setting: str) -> socket.socket:
    """A unix socket bound at `path` with `mode` from the start (bound under the matching
    umask, never briefly wider). A stale socket is replaced; a live one (another process) or a
    file that is no socket raises SocketPathError, whose message names `setting`. The caller
    makes and checks the directory."""
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise SocketPathError(f"{setting}: the path exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()
            else:
                raise SocketPathError(f"{setting}: another process serves this socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, mode)
    return sock
