"""llama.cpp's compute backends, loaded from llama-cpp-python's own library directory.

Keep's wheel of llama-cpp-python is built portable (`GGML_BACKEND_DL`, `GGML_CPU_ALL_VARIANTS`,
no `-march=native`): the CPU backend is a set of shared objects, one per instruction-set
level (x64, sse42, haswell, skylakex, icelake, sapphirerapids, zen4, ...), and ggml scores
them against the running CPU and loads the best that it supports. A wheel built on one host
therefore runs on any x86-64 host instead of dying with SIGILL on an older CPU.

ggml's own default search looks beside the executable and in the current directory, which
for Python is neither the package nor a place Keep controls; Keep loads from the package's
`lib/` directory only, before `llama_backend_init` would search anywhere else. A build that
links its backends in (a native build) has them registered already and loads nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from inference.errors import ModelLoadError

log = logging.getLogger("keep.inference")

LIB_DIR = Path(llama_cpp.__file__).resolve().parent / "lib"
_VARIANT = re.compile(r"libggml-cpu-([A-Za-z0-9_.]+)\.so$")


@dataclass(frozen=True)
class Backends:
    dynamic: bool  # loaded at run time from LIB_DIR (a portable build)
    cpu_variant: str | None  # the CPU variant ggml chose, for a portable build


def cpu_variants(lib_dir: Path = LIB_DIR) -> list[str]:
    """The CPU variants the installed wheel carries; empty for a native build."""
    return sorted(
        m.group(1) for p in lib_dir.glob("libggml-cpu-*.so") if (m := _VARIANT.match(p.name))
    )


def _loaded_cpu_variant() -> str | None:
    """Which libggml-cpu-*.so this process mapped: ggml does not say, the kernel does."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    found = {m.group(1) for line in maps.splitlines() if (m := _VARIANT.search(line.strip()))}
    return ",".join(sorted(found)) or None


def _ggml() -> ctypes.CDLL:
    """The libggml that libllama linked. By soname and RTLD_NOLOAD: a wheel holds its
    libraries as copies (libggml.so, libggml.so.0, ...), and opening another file of the same
    library would map a second ggml whose registry libllama never sees."""
    try:
        return ctypes.CDLL("libggml.so.0", mode=os.RTLD_NOLOAD)
    except OSError:
        raise ModelLoadError("llama.cpp's libggml is not loaded") from None


def load(lib_dir: Path = LIB_DIR) -> Backends:
    ggml = _ggml()
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    ggml.ggml_backend_reg_count.argtypes = []
    if ggml.ggml_backend_reg_count() > 0:
        return Backends(dynamic=False, cpu_variant=None)
    ggml.ggml_backend_load_all_from_path.restype = None
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load_all_from_path(str(lib_dir).encode())
    if ggml.ggml_backend_reg_count() == 0:
        raise ModelLoadError(f"no llama.cpp backend could be loaded from {lib_dir}")
    backends = Backends(dynamic=True, cpu_variant=_loaded_cpu_variant())
    log.info(
        "llama.cpp backends loaded from the package: CPU variant %s of %d",
        backends.cpu_variant or "unknown",
        len(cpu_variants(lib_dir)),
    )
    return backends
