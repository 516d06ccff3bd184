"""The API's settings: its listener, sessions, per-request limits and static keys."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator

from keep.settings.shared import (
    SHA256,
    ListenSocket,
    MaxBodyBytes,
    RequestDeadline,
    View,
)


class ApiSettings(View):
    host: str = Field("127.0.0.1", min_length=1, description="Address the API listens on.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port the API listens on.")
    listen_socket: ListenSocket

    max_sessions: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Open sessions at once, ephemeral ones included; past this a new one gets "
        "429. A session holds a KV sequence only while its turn runs (KEEP_SLOTS).",
    )
    client_max_sessions: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Open sessions one client may hold at once, ephemeral ones included; past "
        "this it gets 429 while other clients still get theirs.",
    )
    client_max_requests: int = Field(
        64,
        ge=1,
        le=4096,
        description="Requests one client may have in flight at once, streams until their last "
        "event, waiting ones included; past this it gets 429 before its body is read. A "
        "client's policy entry may set its own (max_in_flight).",
    )
    client_requests_per_second: float = Field(
        50.0,
        ge=0,
        le=100_000,
        description="Requests per second one client may make, a token bucket KEEP_CLIENT_"
        "REQUEST_BURST deep; past it 429 with Retry-After. 0 turns it off. A client's policy "
        "entry may set its own (requests_per_second).",
    )
    client_request_burst: int = Field(
        200,
        ge=1,
        le=1_000_000,
        description="Requests one client may make at once above its rate (request_burst).",
    )
    client_tokens_per_minute: int = Field(
        0,
        ge=0,
        le=10**12,
        description="Tokens (prompt, completion and embedded) one client may use per minute; "
        "past it 429 with Retry-After. 0 (the default) turns it off; the day's and month's "
        "quotas still apply. A client's policy entry may set its own (tokens_per_minute).",
    )
    queue_depth: int = Field(
        128,
        ge=0,
        le=100_000,
        description="Requests that may wait for a KV sequence when every one is running a "
        "turn. Past this, or when the expected wait would outlast the request's deadline, a "
        "request gets 429 `queue_full` with Retry-After. 0: no waiting line.",
    )
    priority_classes: int = Field(
        3,
        ge=1,
        le=16,
        description="Scheduling classes in the waiting line, 0 the lowest. A client's class "
        "is its `priority` in control's policy (capped to the highest class); higher classes "
        "are served first, and the clients within a class take turns.",
    )
    client_default_priority: int = Field(
        1,
        ge=0,
        le=15,
        description="The class of a client whose policy names no priority, and of static keys.",
    )
    client_embedding_inputs_per_minute: int = Field(
        4096,
        ge=1,
        le=10_000_000,
        description="Texts one client may embed per minute: /v1/embeddings inputs and uploaded "
        "documents' chunks. A token bucket; past it a request gets 429 with Retry-After.",
    )
    session_idle_ttl_s: float = Field(
        600.0, gt=0, le=86400, description="A session idle this long is torn down."
    )

    max_body_bytes: MaxBodyBytes
    max_tokens_cap: int = Field(
        1024,
        ge=1,
        le=262144,
        description="Largest `max_tokens` a request may ask for; more gets 400.",
    )
    max_stop_sequences: int = Field(
        4, ge=0, le=64, description="Most stop strings one request may give."
    )
    request_deadline_s: RequestDeadline
    stream_padding_bytes: int = Field(
        512,
        ge=0,
        le=65536,
        description="Every streamed event is padded to a multiple of this many bytes, so that "
        "encrypted record sizes do not follow token lengths (Whisper Leak). 0 turns it off.",
    )
    max_embedding_inputs: int = Field(
        256, ge=1, le=100_000, description="Inputs one /v1/embeddings request may carry."
    )

    api_key_hashes: tuple[str, ...] = Field(
        (),
        description="sha256 hex digests of the accepted API keys. Keys are never stored. "
        "Refused with `listen_socket` (behind NGINX, keys come from control's policy).",
    )
    dev_api_key: SecretStr | None = Field(
        None,
        description="A development API key, accepted alongside `api_key_hashes`. Refused "
        "with `listen_socket`.",
    )

    @field_validator("api_key_hashes")
    @classmethod
    def _hashes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for digest in value:
            if not SHA256.match(digest):
                raise ValueError("each entry must be 64 lower-case hex digits")
        return value

    @field_validator("dev_api_key")
    @classmethod
    def _dev_key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _default_priority_is_a_class(self) -> ApiSettings:
        if self.client_default_priority >= self.priority_classes:
            raise ValueError("KEEP_CLIENT_DEFAULT_PRIORITY must be below KEEP_PRIORITY_CLASSES")
        return self

    @model_validator(mode="after")
    def _no_static_keys_behind_nginx(self) -> ApiSettings:
        # A static key belongs to no peer, so it would work from every tunnel address and its
        # holders would share one owner's sessions and receipts.
        static = [
            name
            for name, value in (
                ("KEEP_API_KEY_HASHES", self.api_key_hashes),
                ("KEEP_DEV_API_KEY", self.dev_api_key),
            )
            if value
        ]
        if self.listen_socket is not None and static:
            raise ValueError(
                f"{' and '.join(static)}: static keys are refused behind NGINX "
                "(KEEP_LISTEN_SOCKET is set); keys come from control's policy, bound to a peer"
            )
        return self
