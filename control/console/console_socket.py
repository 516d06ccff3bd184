"""The console's unix socket, which NGINX's management listener alone may open.

Django trusts X-Forwarded-Proto (the console demands HTTPS) and X-Forwarded-For (the login
throttle's address) on this socket, so whoever can connect to it can claim both. The socket
is therefore bound mode 0660 before it listens, in a directory that grants others nothing:
on a host, tmpfiles makes it 2750 keep-control:www-data, so the socket belongs to NGINX's
group and no other local user can reach it."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

SOCKET_MODE = 0o660
DIRECTORY_MODE = 0o750


class ConsoleSocketError(RuntimeError):
    pass


def bind_console_socket(path: Path) -> socket.socket:
    """A unix socket bound at `path` (mode 0660), in a directory created 0750 if absent. A
    directory open to other users, a live socket (another console) or a file that is no
    socket stops start-up; a stale socket is replaced."""
    directory = path.parent
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o007:
        raise ConsoleSocketError(
            f"KEEP_CONTROL_SOCKET: {directory} is open to other users (mode {mode:04o}); "
            "it must grant others nothing (0750, or 2750 with NGINX's group)"
        )
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConsoleSocketError("KEEP_CONTROL_SOCKET: the path exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()
            else:
                raise ConsoleSocketError("KEEP_CONTROL_SOCKET: another process serves it")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~SOCKET_MODE)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, SOCKET_MODE)
    return sock
