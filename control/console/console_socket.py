"""The console's unix socket, which NGINX's management listener alone may open.

Django trusts X-Forwarded-Proto (the console demands HTTPS) and X-Forwarded-For (the login
throttle's address) on this socket, so whoever can connect to it can claim both. The socket
is therefore bound mode 0660 before it listens, in a directory that grants others nothing:
on a host, tmpfiles makes it 2750 keep-control:www-data, so the socket belongs to NGINX's
group and no other local user can reach it."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

from durable import SocketPathError, bind_unix_socket

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
    try:
        return bind_unix_socket(path, SOCKET_MODE, setting="KEEP_CONTROL_SOCKET")
    except SocketPathError as exc:
        raise ConsoleSocketError(str(exc)) from None
