"""The appliance's exception tree, and the one table that maps errors to OpenAI's envelope.

    APIError                      500 server_error
    ├── InvalidRequest            400 invalid_request_error
    │   └── ContextLengthExceeded 400 context_length_exceeded
    ├── Unauthorized              401 invalid_api_key
    ├── NotFound                  404 not_found
    │   ├── ModelNotFound         404 model_not_found
    │   └── SessionNotFound       404 session_not_found
    ├── MethodNotAllowed          405 method_not_allowed
    ├── PayloadTooLarge           413 payload_too_large
    ├── ToolCallInvalid           422 tool_call_invalid
    ├── TooManyRequests           429 too_many_sessions (with Retry-After)
    │   ├── QuotaExceeded         429 quota_exceeded
    │   ├── TooManyConcurrent     429 too_many_concurrent_requests
    │   └── RateLimited           429 rate_limited (Retry-After: when there is room again)
    ├── NotReady                  503 not_ready
    │   └── ReceiptsUnavailable   503 receipts_unavailable
    └── RequestTimeout            504 deadline_exceeded

Every error body is `{"error": {"message", "type", "param", "code"}}`. Messages are fixed
strings written here or in inference/errors.py: they never quote a request.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from appliance import observe
from inference import errors as inference
from inference.template import TemplateRenderError
from rag import errors as rag


class APIError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = "internal_error"
    headers: Mapping[str, str] = MappingProxyType({})  # an instance may carry its own
    limit: ClassVar[str | None] = None  # the client's rate limit a 429 names, for the metrics

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(APIError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class Unauthorized(APIError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"
    headers = MappingProxyType({"WWW-Authenticate": "Bearer"})


class Forbidden(APIError):
    status = 403
    type = "invalid_request_error"
    code = "peer_mismatch"


class NotFound(APIError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class SessionNotFound(NotFound):
    code = "session_not_found"


class MethodNotAllowed(APIError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(APIError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class ToolCallInvalid(APIError):
    """The model wrote a call its grammar allowed but its schema does not: a schema keyword
    the grammar cannot enforce. Keep returns no call that fails its function's schema."""

    status = 422
    type = "invalid_request_error"
    code = "tool_call_invalid"


class TooManyRequests(APIError):
    status = 429
    type = "rate_limit_error"
    code = "too_many_sessions"
    headers = MappingProxyType({"Retry-After": "1"})


class QuotaExceeded(TooManyRequests):
    code = "quota_exceeded"
    headers = MappingProxyType({"Retry-After": "3600"})


class TooManyConcurrent(TooManyRequests):
    code = "too_many_concurrent_requests"
    limit = "in_flight"


class RateLimited(TooManyRequests):
    """A 429 whose Retry-After says when to come back, in whole seconds (at least 1)."""

    code = "rate_limited"
    limit: ClassVar[str | None] = "embedding_inputs"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float = 1.0,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param)
        retry = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
        self.headers = MappingProxyType({**(headers or {}), **retry})


class RequestRateExceeded(RateLimited):
    """The client's requests per second (appliance.ratelimit), in OpenAI's shape: the type
    names the limit."""

    type = "requests"
    code = "rate_limit_exceeded"
    limit = "requests"


class TokenRateExceeded(RateLimited):
    type = "tokens"
    code = "rate_limit_exceeded"
    limit = "tokens"


class QueueFull(RateLimited):
    """Every KV sequence is busy and the waiting line is full, or the expected wait would
    outlast the request's deadline."""

    code = "queue_full"
    limit = None  # the appliance's capacity, not the client's limit


class NotReady(APIError):
    status = 503
    type = "server_error"
    code = "not_ready"


class ReceiptsUnavailable(NotReady):
    """The receipt journal cannot be written: the appliance serves nothing it cannot account
    for."""

    code = "receipts_unavailable"


class RequestTimeout(APIError):
    status = 504
    type = "timeout_error"
    code = "deadline_exceeded"


# The one table from inference errors to API errors: (API class, param it concerns).
_INFERENCE: dict[type[inference.InferenceError], tuple[type[APIError], str | None]] = {
    inference.GrammarError: (InvalidRequest, "response_format"),
    inference.InvalidTokenId: (InvalidRequest, "logit_bias"),
    TemplateRenderError: (InvalidRequest, "messages"),
    inference.ContextOverflow: (ContextLengthExceeded, "messages"),
    inference.QueueFull: (QueueFull, None),
    inference.DeadlineExceeded: (RequestTimeout, None),
    inference.EngineStopped: (NotReady, None),
    inference.ModelError: (NotReady, None),
}


# The same for retrieval errors.
_RAG: dict[type[rag.RagError], tuple[type[APIError], str | None]] = {
    rag.DocumentTooLarge: (PayloadTooLarge, "documents"),
    rag.MemoryBudgetExceeded: (PayloadTooLarge, "documents"),
    rag.TooManyDocuments: (InvalidRequest, "documents"),
    rag.TooManyChunks: (InvalidRequest, "documents"),
    rag.DocumentError: (InvalidRequest, "documents"),
    rag.EmbedderError: (NotReady, None),
}


def _mapped(
    table: Mapping[type[Exception], tuple[type[APIError], str | None]], exc: Exception
) -> APIError:
    for cls in type(exc).__mro__:
        if cls in table:
            api_cls, param = table[cls]
            return api_cls(str(exc), param=param)
    return APIError("the request could not be completed")


def from_inference(exc: inference.InferenceError) -> APIError:
    return _mapped(_INFERENCE, exc)  # type: ignore[arg-type]


def from_rag(exc: rag.RagError) -> APIError:
    return _mapped(_RAG, exc)  # type: ignore[arg-type]


def envelope(exc: APIError) -> dict[str, Any]:
    return {
        "error": {
            "message": exc.message,
            "type": exc.type,
            "param": exc.param,
            "code": exc.code,
        }
    }


def error_response(exc: APIError) -> JSONResponse:
    observe.failed(exc.code, exc.status, exc.limit)
    return JSONResponse(envelope(exc), status_code=exc.status, headers=dict(exc.headers))


async def send_error(send: Send, exc: APIError) -> None:
    """The envelope straight onto an ASGI connection, for the layers outside FastAPI's
    handlers. The connection closes after it: the request's body may be left unread."""
    observe.failed(exc.code, exc.status, exc.limit)
    payload = json.dumps(envelope(exc)).encode()
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
    await send(
        {
            "type": "http.response.start",
            "status": exc.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _param(loc: tuple[int | str, ...]) -> str | None:
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def _validation(exc: RequestValidationError) -> APIError:
    return from_validation(list(exc.errors()))


def from_validation(errors: list[Any]) -> APIError:
    """A 400 naming the first invalid field; pydantic's messages never quote the input."""
    if not errors:
        return InvalidRequest("the request body is not valid")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return InvalidRequest("the request body is not valid JSON")
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return InvalidRequest("the request body is missing")
    param = _param(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value"))
    where = f" at {param}" if param else ""
    return InvalidRequest(f"invalid request{where}: {message}", param=param)


def _http(exc: StarletteHTTPException) -> APIError:
    if exc.status_code == 404:
        return NotFound("no such route")
    if exc.status_code == 405:
        return MethodNotAllowed("method not allowed on this route")
    if exc.status_code == 413:
        return PayloadTooLarge("the request body is too large")
    if 400 <= exc.status_code < 500:
        err = InvalidRequest("the request body could not be parsed")
        return err
    return APIError("the request could not be completed")


def install(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return error_response(exc)

    async def on_inference_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, inference.InferenceError)
        return error_response(from_inference(exc))

    async def on_rag_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, rag.RagError)
        return error_response(from_rag(exc))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(_validation(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(_http(exc))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises it after this answer; appliance.shield logs its type alone.
        return error_response(APIError("the request could not be completed"))

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(inference.InferenceError, on_inference_error)
    app.add_exception_handler(rag.RagError, on_rag_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
