"""The installed llama-cpp-python is portable: several CPU variants, loaded from the package.

A wheel built with the build machine's native instruction set dies with SIGILL on a CPU that
lacks one of them (AVX-512 on an older host). The portable build carries one CPU backend per
instruction-set level and ggml picks the best at load time; the baseline variant is what a
CPU without AVX gets, and it must run the model too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from inference import backends
from inference.engine import Engine

# Every x86-64 level ggml's CMake builds with GGML_CPU_ALL_VARIANTS.
LEVELS = {"x64", "sse42", "sandybridge", "haswell", "skylakex", "icelake", "alderlake"}


def test_the_wheel_carries_every_cpu_variant() -> None:
    variants = backends.cpu_variants()
    assert len(variants) > 1, variants
    assert set(variants) >= LEVELS, variants
    assert not (backends.LIB_DIR / "libggml-cpu.so").exists()  # no native CPU backend


def test_the_engine_runs_on_a_variant_loaded_from_the_package(engine: Engine) -> None:
    maps = Path("/proc/self/maps").read_text()
    loaded = {line.split()[-1] for line in maps.splitlines() if "libggml-cpu-" in line}
    assert len(loaded) == 1, loaded  # one variant mapped, not all of them
    (path,) = loaded
    assert Path(path).parent == backends.LIB_DIR
    assert (
        Path(path).name.removeprefix("libggml-cpu-").removesuffix(".so") in backends.cpu_variants()
    )


BASELINE = """
import asyncio, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from inference import backends
loaded = backends.load(Path({lib!r}))
assert loaded.dynamic and loaded.cpu_variant == "x64", loaded
from tests.conftest import make_settings
from appliance.app import load_engine
from inference.generation import Finished, GenerationRequest, TextDelta

async def main() -> str:
    engine = load_engine(make_settings())
    seq = engine.open_context()
    text = "The capital of France is"
    prompt = engine.model.tokenize(text, add_special=True, parse_special=False)
    generation = engine.submit(seq, GenerationRequest(prompt=prompt, max_tokens=8))
    text = ""
    while not isinstance(event := await generation.next_event(), Finished):
        text += event.text if isinstance(event, TextDelta) else ""
    await asyncio.wrap_future(engine.release(seq))
    engine.close()
    return text

print("generated", len(asyncio.run(main())))
"""


def test_the_baseline_variant_runs_the_model(tmp_path: Path) -> None:
    """What a CPU without AVX gets: only the x64 variant in the directory ggml loads from."""
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(backends.LIB_DIR / "libggml-cpu-x64.so", lib)
    root = str(Path(__file__).resolve().parents[3])
    result = subprocess.run(
        [sys.executable, "-c", BASELINE.format(root=root, lib=str(lib))],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "generated" in result.stdout
    assert int(result.stdout.split("generated")[1]) > 0
