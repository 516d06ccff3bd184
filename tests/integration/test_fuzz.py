"""Property-based fuzzing of the API's bodies against one real `keep serve`.

Hypothesis generates chat, completions, embeddings and documents bodies: shapes the schema
expects and shapes it does not, sizes, nesting, unicode (lone surrogates included), and
numbers at the limits (0, -1, 2^31, 2^53 + 1, 2^63, 2^64, 1e308, NaN, Infinity). Every answer
must come within the client's timeout (no hang) with a status below 500, in the error shape
when it is an error; afterwards the appliance is still ready and its log holds no traceback.
The server runs with a small `max_tokens` cap so that valid generations stay short.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import (
    MODEL,
    LiveServer,
    free_port,
    make_settings,
    start_server,
    stop_server,
)

EMBEDDER = make_settings().embedder.name
CAP = 8
FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,  # nothing of a run is kept on disk
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

EDGE_NUMBERS = st.sampled_from(
    [0, -1, 1, CAP, CAP + 1, 2**31, 2**53 + 1, 2**63, 2**64, -(2**63), 1e308, -1e308, 5e-324,
     0.5, 2.0, -0.0, math.nan, math.inf, -math.inf]
)  # fmt: skip
SURROGATES = st.sampled_from(["\ud800", "a\udfffb", "\udbff\udc00\ud800"])
TEXT = st.one_of(
    st.text(max_size=64),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=2000),
    SURROGATES,
    st.integers(0, 20_000).map(lambda n: "word " * n),
)
SCALARS = st.one_of(st.none(), st.booleans(), EDGE_NUMBERS, st.integers(), st.floats(), TEXT)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The field's expected shape, a number at a limit, or any JSON at all."""
    return st.one_of(value, EDGE_NUMBERS, JSON)


ROLE = st.one_of(st.sampled_from(["system", "user", "assistant", "tool", "developer"]), TEXT)
MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": ROLE, "content": maybe(TEXT)}),
    st.fixed_dictionaries(
        {
            "role": st.just("user"),
            "content": st.lists(
                st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=3
            ),
        }
    ),
    JSON,
)
SCHEMA = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"type": st.just("string"), "minLength": EDGE_NUMBERS, "maxLength": EDGE_NUMBERS}
    ),
    st.fixed_dictionaries({"type": st.just("array"), "items": JSON, "minItems": EDGE_NUMBERS}),
    st.integers(1, 200).map(lambda d: json.loads('{"type":"array","items":' * d + "{}" + "}" * d)),
)
RESPONSE_FORMAT = st.one_of(
    st.fixed_dictionaries({"type": st.just("json_object")}),
    st.fixed_dictionaries(
        {
            "type": st.just("json_schema"),
            "json_schema": st.fixed_dictionaries({"name": TEXT, "schema": SCHEMA}),
        }
    ),
    JSON,
)
SAMPLING = {
    "temperature": maybe(st.floats(0, 2)),
    "top_p": maybe(st.floats(0, 1)),
    "max_tokens": maybe(st.integers(1, CAP)),
    "seed": maybe(st.integers()),
    "stop": maybe(st.lists(TEXT, max_size=6)),
    "stream": maybe(st.booleans()),
    "stream_options": maybe(st.fixed_dictionaries({"include_usage": st.booleans()})),
    "logit_bias": maybe(
        st.dictionaries(st.integers(-5, 100_000).map(str), EDGE_NUMBERS, max_size=4)
    ),
    "n": maybe(st.integers(1, 3)),
    "presence_penalty": maybe(st.floats(-2, 2)),
}
# Within the schema, at its edges: what reaches the model (and the grammar compiler).
VALID_SAMPLING = {
    "temperature": st.sampled_from([0, 0.0, 2, 1e-9]),
    "top_p": st.sampled_from([0, 1, 5e-324]),
    "max_tokens": st.sampled_from([1, CAP]),
    "seed": st.sampled_from([0, -1, 2**63 - 1, 2**64 - 1]),
    "stop": st.lists(st.text(min_size=1, max_size=8), max_size=4),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "logit_bias": st.dictionaries(
        st.integers(0, 40_000).map(str), st.sampled_from([-100, 100, 0]), max_size=3
    ),
}
NAME = st.one_of(st.from_regex(r"\A[a-zA-Z0-9_-]{1,64}\Z"), TEXT)
TOOL = st.fixed_dictionaries(
    {
        "type": st.one_of(st.just("function"), TEXT),
        "function": st.fixed_dictionaries(
            {"name": NAME}, optional={"description": TEXT, "parameters": maybe(JSON)}
        ),
    }
)
TOOL_CHOICE = st.one_of(
    st.sampled_from(["auto", "none", "required"]),
    st.fixed_dictionaries(
        {"type": st.just("function"), "function": st.fixed_dictionaries({"name": NAME})}
    ),
    JSON,
)
VALID_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": TEXT}
)
CHAT = st.one_of(
    st.fixed_dictionaries(
        {"model": st.just(MODEL), "messages": st.lists(VALID_MESSAGE, min_size=1, max_size=4)},
        optional={**VALID_SAMPLING, "response_format": RESPONSE_FORMAT},
    ),
    st.fixed_dictionaries(
        {
            "model": st.one_of(st.just(MODEL), TEXT),
            "messages": maybe(st.lists(MESSAGE, max_size=6)),
        },
        optional={
            **SAMPLING,
            "response_format": RESPONSE_FORMAT,
            "tools": st.one_of(JSON, st.lists(TOOL, max_size=3)),
            "tool_choice": TOOL_CHOICE,
            "parallel_tool_calls": maybe(st.booleans()),
            "top_k": maybe(st.integers()),
        },
    ),
)
COMPLETION = st.one_of(
    st.fixed_dictionaries({"model": st.just(MODEL), "prompt": TEXT}, optional=VALID_SAMPLING),
    st.fixed_dictionaries(
        {
            "model": st.one_of(st.just(MODEL), TEXT),
            "prompt": maybe(st.one_of(TEXT, st.lists(TEXT, max_size=3))),
        },
        optional={**SAMPLING, "echo": maybe(st.booleans()), "suffix": maybe(TEXT)},
    ),
)
EMBEDDING = st.one_of(
    st.fixed_dictionaries(
        {
            "model": st.just(EMBEDDER),
            "input": st.one_of(TEXT, st.lists(TEXT, min_size=1, max_size=40)),
        },
        optional={"encoding_format": st.sampled_from(["float", "base64"])},
    ),
    st.fixed_dictionaries(
        {
            "model": st.one_of(st.just(EMBEDDER), TEXT),
            "input": maybe(
                st.one_of(TEXT, st.lists(TEXT, max_size=300), st.lists(st.integers(), max_size=20))
            ),
        },
        optional={
            "encoding_format": maybe(st.sampled_from(["float", "base64"])),
            "dimensions": EDGE_NUMBERS,
        },
    ),
)
DOCUMENTS = st.one_of(
    st.fixed_dictionaries(
        {
            "documents": maybe(
                st.lists(
                    st.fixed_dictionaries({"name": maybe(TEXT), "text": maybe(TEXT)}), max_size=3
                )
            )
        }
    ),
    JSON,
)
FILES = st.tuples(
    st.one_of(TEXT, st.sampled_from(["a.pdf", "b.docx", "c.md", "d.txt", "../../etc/passwd"])),
    st.one_of(
        st.binary(max_size=4096),
        st.just(b"%PDF-1.7\n" + b"\x00" * 100),
        st.just(b"PK\x03\x04" + b"\xff" * 200),
    ),
    st.sampled_from(
        [
            "application/pdf",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "text/plain",
            "x/y",
            "",
        ]
    ),
)
RAW = st.one_of(
    st.binary(max_size=2048),
    st.integers(1, 200_000).map(lambda d: b"[" * d),
    st.integers(1, 200_000).map(lambda d: b'{"a":' * d),
    st.just(b'{"model": "x", "messages": [{"role": "user", "content": "\\ud800"}]}'),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(
        tmp_path_factory.mktemp("fuzz"), free_port(), {"KEEP_MAX_TOKENS_CAP": str(CAP)}
    )
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    auth = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.base_url, headers=auth, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def session_id(http: httpx.Client) -> str:
    created = http.post("/v1/sessions")
    assert created.status_code == 201
    return str(created.json()["id"])


def _encode(body: Any) -> bytes:
    # allow_nan: NaN and Infinity go out as the bare words Python's json writes; ensure_ascii
    # spells lone surrogates as \\ud800 escapes.
    return json.dumps(body, allow_nan=True).encode()


SEEN: dict[str, set[int]] = defaultdict(set)  # statuses per route, over the whole run


def check(response: httpx.Response) -> None:
    """Answered (the client's timeout is the hang detector), below 500, errors in shape."""
    path = response.request.url.path
    SEEN["/v1/sessions/{id}/documents" if path.endswith("/documents") else path].add(
        response.status_code // 100
    )
    assert response.status_code < 500, response.status_code
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
    elif response.headers.get("content-type", "").startswith("text/event-stream"):
        assert response.text.rstrip().endswith("data: [DONE]")


def post(
    http: httpx.Client, path: str, content: bytes, content_type: str = "application/json"
) -> None:
    check(http.post(path, content=content, headers={"Content-Type": content_type}))


@FUZZ
@given(body=CHAT)
def test_chat_bodies(http: httpx.Client, body: Any) -> None:
    post(http, "/v1/chat/completions", _encode(body))


@FUZZ
@given(body=COMPLETION)
def test_completions_bodies(http: httpx.Client, body: Any) -> None:
    post(http, "/v1/completions", _encode(body))


@FUZZ
@given(body=EMBEDDING)
def test_embeddings_bodies(http: httpx.Client, body: Any) -> None:
    post(http, "/v1/embeddings", _encode(body))


@FUZZ
@given(body=DOCUMENTS)
def test_documents_json_bodies(http: httpx.Client, session_id: str, body: Any) -> None:
    post(http, f"/v1/sessions/{session_id}/documents", _encode(body))


def multipart(files: list[tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart body built by hand, so that a file name may be any bytes (a lone surrogate
    goes out as invalid UTF-8, which no client library would send)."""
    boundary = "keepfuzzboundary"
    out = b""
    for name, data, content_type in files:
        quoted = name.encode("utf-8", "surrogatepass").replace(b'"', b"%22")
        out += (
            f"--{boundary}\r\n".encode()
            + b'Content-Disposition: form-data; name="file"; filename="'
            + quoted
            + b'"\r\n'
            + f"Content-Type: {content_type}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


@FUZZ
@given(files=st.lists(FILES, max_size=3))
def test_documents_multipart_bodies(
    http: httpx.Client, session_id: str, files: list[tuple[str, bytes, str]]
) -> None:
    body, content_type = multipart(files)
    post(http, f"/v1/sessions/{session_id}/documents", body, content_type)


@FUZZ
@given(
    raw=RAW,
    path=st.sampled_from(
        ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "documents"]
    ),
)
def test_raw_bytes(http: httpx.Client, session_id: str, raw: bytes, path: str) -> None:
    if path == "documents":
        path = f"/v1/sessions/{session_id}/documents"
    post(http, path, raw)


def test_the_appliance_is_ready_and_its_log_clean_after_the_fuzz(
    server: LiveServer, http: httpx.Client
) -> None:
    # Runs after the fuzz tests above (file order), on the same process.
    assert server.process.poll() is None
    assert http.get("/readyz").status_code == 200
    log = server.log()
    assert "Traceback" not in log
    assert " 500 " not in log
    # The fuzz reached the models, not only the validators: every route answered both.
    for route in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        assert SEEN[route] >= {2, 4}, (route, SEEN[route])
    assert 4 in SEEN["/v1/sessions/{id}/documents"]
