"""The audit log's destinations: journald with its own fields under systemd, else stderr.

Under systemd (JOURNAL_STREAM set, journald's socket present) each audit line goes to
journald through its native protocol: MESSAGE is the JSON line, and every key of the line is
also a field of its own (AUDIT_REQUEST_ID, AUDIT_CLIENT, AUDIT_STATUS, ...), so that
`journalctl -u keep-appliance AUDIT_CLIENT=acme` finds a client's requests. Retention is
journald's (SystemMaxUse=, MaxRetentionSec=), which the host role sets. Elsewhere the line
is printed to stderr as it is, one JSON object per line.

The values are the audit record's own (appliance.middleware.Observe): identifiers from fixed
sets and numbers, never content.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
IDENTIFIER = "keep-audit"


def encode(message: str, fields: Mapping[str, object], priority: int = 6) -> bytes:
    """journald's native datagram: `NAME=value` lines; a value with a line break would take
    the binary form, which an audit value (an id, a number) never needs, so it is refused."""
    lines = [f"MESSAGE={message}", f"PRIORITY={priority}", f"SYSLOG_IDENTIFIER={IDENTIFIER}"]
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if "\n" in text:
            raise ValueError("an audit field holds a line break")
        lines.append(f"AUDIT_{key.upper()}={text}")
    return ("\n".join(lines) + "\n").encode()


class JournaldHandler(logging.Handler):
    def __init__(self, path: Path = JOURNAL_SOCKET) -> None:
        super().__init__()
        self._path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = getattr(record, "audit", {})
            self._sock.sendto(encode(record.getMessage(), fields), self._path)
        except (OSError, ValueError):
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


def configure_audit(journal_socket: Path = JOURNAL_SOCKET) -> logging.Handler:
    """Route the keep.audit logger to journald under systemd, or to stderr as JSON lines."""
    audit = logging.getLogger("keep.audit")
    audit.propagate = False
    audit.setLevel(logging.INFO)
    handler: logging.Handler
    if os.environ.get("JOURNAL_STREAM") and journal_socket.exists():
        handler = JournaldHandler(journal_socket)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
    for old in list(audit.handlers):
        audit.removeHandler(old)
    audit.addHandler(handler)
    return handler
