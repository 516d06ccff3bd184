"""What one request did, in figures: the record the audit log, the metrics and the token
rate limit read when the request ends.

The outermost middleware (appliance.middleware.Observe) opens a record per request and
handlers add to it through the functions here: the model they served, the tokens they used,
when the first token came, the error they answered with. A record holds no content by
construction: it has no field a prompt, a document or a completion could go into, and its
strings are a route template, a model name the appliance serves, a client id from the policy
and an error code from appliance.errors.
"""

from __future__ import annotations

import re
import secrets
import time
from contextvars import ContextVar
from dataclasses import dataclass

REQUEST_ID_HEADER = "x-request-id"
# A caller's own correlation id is kept when it is this plain: no spaces, quotes or controls,
# so it cannot forge a field or a line in a log.
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass
class RequestRecord:
    request_id: str
    started: float  # time.perf_counter()
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: float | None = None
    error_code: str | None = None
    error_status: int | None = None
    limit: str | None = None  # the client's rate limit that refused it

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


_current: ContextVar[RequestRecord | None] = ContextVar("keep_request_record", default=None)


def request_id(offered: str | None) -> str:
    """The caller's X-Request-Id if it is well-formed, or a new random one."""
    if offered is not None and _WELL_FORMED_ID.fullmatch(offered):
        return offered
    return "req-" + secrets.token_hex(12)


def begin(offered_id: str | None) -> RequestRecord:
    record = RequestRecord(request_id(offered_id), time.perf_counter())
    _current.set(record)
    return record


def current() -> RequestRecord | None:
    return _current.get()


def served(model: str) -> None:
    """The request is for `model`, one the appliance serves (never a name a client made up)."""
    record = _current.get()
    if record is not None:
        record.model = model


def tokens(prompt: int, completion: int = 0) -> None:
    record = _current.get()
    if record is not None:
        record.prompt_tokens += prompt
        record.completion_tokens += completion


def first_token() -> None:
    record = _current.get()
    if record is not None and record.first_token_s is None:
        record.first_token_s = time.perf_counter() - record.started


def failed(code: str | None, status: int, limit: str | None = None) -> None:
    """The request was answered with an error (an appliance.errors.APIError's code and
    status, and the client's rate limit it names): before its response began, or as a
    stream's last event (its HTTP status was already 200 then)."""
    record = _current.get()
    if record is not None:
        record.error_code = code
        record.error_status = status
        record.limit = limit
