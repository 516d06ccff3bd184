"""One loaded GGUF model and its llama.cpp context, at the level of llama.cpp's C API.

The context has one KV stream per sequence (`kv_unified` off), so sequences never share
cache cells. Every method that touches the context must run on the engine's worker thread;
tokenizing and detokenizing only read the vocabulary and may run anywhere.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import llama_cpp
import numpy as np

from inference import backends
from inference.errors import InferenceError, ModelLoadError
from inference.registry import PinnedModel
from inference.template import ChatTemplate

log = logging.getLogger("keep.inference")

# Every layer, as llama.cpp reads an oversized count.
ALL_LAYERS = 0x7FFFFFFF


@dataclass(frozen=True)
class ModelConfig:
    n_gpu_layers: int | Literal["auto"] = "auto"
    n_threads: int = 0
    n_ctx_per_seq: int = 2048
    n_seq_max: int = 8
    n_batch: int = 512
    # llama.cpp's extra CPU buffer types: weights repacked for AMX or for AVX2/AVX-512 kernels.
    # Off unless asked for: its AMX kernels die with SIGILL (tileloadd, #UD) on the Sapphire
    # Rapids VMs Keep is tested on, which would take every session down with the process.
    extra_buffers: bool = False


class _LlamaLog:
    """llama.cpp's log, routed so that nothing it prints can carry request content.

    Its lines are counted and dropped, never printed: a grammar parse error, for one,
    quotes the grammar, which comes from a request.
    """

    def __init__(self) -> None:
        self.dropped = 0
        self._callback = llama_cpp.llama_log_callback(self._on_log)

    def _on_log(self, level: int, text: bytes, user_data: Any) -> None:
        self.dropped += 1

    def install(self) -> None:
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))


_LOG = _LlamaLog()
_BACKEND = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    with _BACKEND:
        if not _backend_ready:
            _LOG.install()
            backends.load()  # before llama_backend_init, which would search elsewhere
            llama_cpp.llama_backend_init()
            _backend_ready = True


def resolve_gpu_layers(requested: int | Literal["auto"]) -> int:
    """`auto` is every layer when llama.cpp can offload to a GPU, else none."""
    if requested == "auto":
        return ALL_LAYERS if llama_cpp.llama_supports_gpu_offload() else 0
    return requested


class LlamaModel:
    def __init__(self, pinned: PinnedModel, config: ModelConfig) -> None:
        _init_backend()
        self.pinned = pinned
        self.config = config
        self.n_gpu_layers = resolve_gpu_layers(config.n_gpu_layers)
        self._model, self._ctx = self._load()
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.n_layer = int(llama_cpp.llama_model_n_layer(self._model))
        self.n_seq_max = int(llama_cpp.llama_n_seq_max(self._ctx))
        self.n_ctx_per_seq = int(llama_cpp.llama_n_ctx_seq(self._ctx))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(config.n_batch, 0, 1)
        self.template = self._chat_template()
        offloaded = min(self.n_gpu_layers, self.n_layer + 1)
        log.info(
            "model %s loaded: %d layers, %d offloaded to GPU (n_gpu_layers=%s, gpu offload %s)",
            pinned.version,
            self.n_layer,
            offloaded,
            config.n_gpu_layers,
            "available" if llama_cpp.llama_supports_gpu_offload() else "not built in",
        )

    def _load(self) -> tuple[Any, Any]:
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = self.n_gpu_layers
        mparams.use_extra_bufts = self.config.extra_buffers
        model = llama_cpp.llama_model_load_from_file(str(self.pinned.path).encode(), mparams)
        if not model:
            raise ModelLoadError(f"llama.cpp could not load model {self.pinned.name!r}")
        threads = self.config.n_threads or len(os.sched_getaffinity(0))
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.config.n_ctx_per_seq * self.config.n_seq_max
        cparams.n_batch = self.config.n_batch
        cparams.n_ubatch = self.config.n_batch
        cparams.n_seq_max = self.config.n_seq_max
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.kv_unified = False
        cparams.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise ModelLoadError(f"llama.cpp could not create a context for {self.pinned.name!r}")
        return model, ctx

    def _chat_template(self) -> ChatTemplate | None:
        source = llama_cpp.llama_model_chat_template(self._model, None)
        if not source:
            return None
        return ChatTemplate(
            source.decode("utf-8"),
            bos_token=self.token_text(llama_cpp.llama_vocab_bos(self._vocab)),
            eos_token=self.token_text(llama_cpp.llama_vocab_eos(self._vocab)),
        )

    # Vocabulary: safe from any thread.

    def token_text(self, token: int) -> str:
        if token == llama_cpp.LLAMA_TOKEN_NULL:
            return ""
        text = llama_cpp.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", "replace") if text else ""

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), buf, capacity, add_special, parse_special
            )
            if n >= 0:
                return list(buf[:n])
            capacity = -n

    def tokenize_prompt(self, rendered: str) -> list[int]:
        """Tokens of a rendered chat prompt: special tokens parsed, BOS added only if the
        model wants one and the template did not already write it."""
        bos = self.token_text(llama_cpp.llama_vocab_bos(self._vocab))
        add = self.add_bos and not (bos and rendered.startswith(bos))
        return self.tokenize(rendered, add_special=add, parse_special=True)

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def logits(self, index: int) -> np.ndarray:
        """The logits row of batch entry `index` of the last decode, as a view into
        llama.cpp's buffer: valid until the next decode. Worker thread only."""
        row = llama_cpp.llama_get_logits_ith(self._ctx, index)
        return np.ctypeslib.as_array(row, shape=(self.n_vocab,))

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    @property
    def vocab(self) -> Any:
        return self._vocab

    @property
    def ctx(self) -> Any:
        return self._ctx

    # Context: worker thread only.

    def decode_batch(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """One llama_decode over `(seq, token, pos, want_logits)` entries, in batch order."""
        if not 0 < len(entries) <= self.config.n_batch:
            raise ValueError("batch size out of range")
        batch = self._batch
        for i, (seq, token, pos, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if logits else 0
        batch.n_tokens = len(entries)
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            raise InferenceError(f"llama_decode failed with status {rc}")

    def forget(self, seq: int, from_pos: int = 0) -> bool:
        """Drop sequence `seq`'s KV cells from `from_pos` on."""
        return bool(llama_cpp.llama_memory_seq_rm(self._memory, seq, from_pos, -1))

    def state_size(self, seq: int) -> int:
        """Bytes of sequence `seq`'s KV state, as llama.cpp would copy it."""
        return int(llama_cpp.llama_state_seq_get_size(self._ctx, seq))

    def save_state(self, seq: int, into: bytearray) -> bool:
        """Copy sequence `seq`'s KV state into `into`, which is exactly `state_size` long."""
        buf = (ctypes.c_uint8 * len(into)).from_buffer(into)
        return int(llama_cpp.llama_state_seq_get_data(self._ctx, buf, len(into), seq)) == len(into)

    def load_state(self, seq: int, state: bytearray) -> bool:
        """Restore a state `save_state` copied into sequence `seq`, which holds no cells."""
        buf = (ctypes.c_uint8 * len(state)).from_buffer(state)
        return int(llama_cpp.llama_state_seq_set_data(self._ctx, buf, len(state), seq)) > 0

    def seq_pos_max(self, seq: int) -> int:
        return int(llama_cpp.llama_memory_seq_pos_max(self._memory, seq))

    def close(self) -> None:
        if self._ctx:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            llama_cpp.llama_model_free(self._model)
            self._ctx = None
            self._model = None
