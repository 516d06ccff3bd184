"""The audit log's journald destination, against a datagram socket standing in for
journald's (no journald runs in the test's container), read back in journald's native
protocol; and NVML's absence leaves the GPU metrics out."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from appliance.journald import IDENTIFIER, JournaldHandler, configure_audit, encode
from appliance.nvml import Nvml


def parse(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().splitlines())


def test_each_audit_key_is_a_journald_field_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "journal.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journald:
        journald.bind(str(path))
        handler = JournaldHandler(path)
        logger = logging.getLogger("keep.audit.test")
        logger.addHandler(handler)
        logger.propagate = False
        line = {"request_id": "req-1", "client": "acme", "status": 200, "model": None}
        try:
            logger.warning(json.dumps(line), extra={"audit": line})
        finally:
            logger.removeHandler(handler)
            handler.close()
        fields = parse(journald.recv(65536))
    assert fields["MESSAGE"] == json.dumps(line)
    assert fields["SYSLOG_IDENTIFIER"] == IDENTIFIER
    assert (fields["AUDIT_REQUEST_ID"], fields["AUDIT_CLIENT"], fields["AUDIT_STATUS"]) == (
        "req-1",
        "acme",
        "200",
    )
    assert "AUDIT_MODEL" not in fields  # a null is left out, not written as "None"


def test_a_value_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        encode("m", {"client": "a\nMESSAGE=forged"})


def test_outside_systemd_the_audit_lines_go_to_stderr_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    handler = configure_audit(tmp_path / "absent.sock")
    try:
        assert isinstance(handler, logging.StreamHandler)
        assert logging.getLogger("keep.audit").propagate is False
    finally:
        logging.getLogger("keep.audit").removeHandler(handler)
        logging.getLogger("keep.audit").propagate = True


def test_without_nvml_there_is_no_gpu_reader() -> None:
    assert Nvml.open("libnvidia-ml-absent.so.1") is None
