"""Build llama-server from the llama.cpp that the installed llama-cpp-python vendors, once.

The sdist of the installed llama-cpp-python version is fetched into bench/.cache (from pip's
cache when present) and its vendored llama.cpp is built with CMake. The binary is cached, so
the reference costs its build only the first time.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"


def llama_cpp_python_version() -> str:
    return importlib.metadata.version("llama-cpp-python")


def source_dir(version: str) -> Path:
    root = CACHE / f"llama_cpp_python-{version}"
    if (root / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist = CACHE / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(CACHE),
                f"llama-cpp-python=={version}",
            ],
            check=True,
        )
    with tarfile.open(sdist) as tar:
        tar.extractall(CACHE, filter="data")
    return root


def llama_server() -> Path:
    version = llama_cpp_python_version()
    build = CACHE / f"build-{version}"
    binary = build / "bin" / "llama-server"
    if binary.is_file():
        return binary
    src = source_dir(version) / "vendor" / "llama.cpp"
    print(f"building llama-server from llama-cpp-python {version}'s llama.cpp (once)", flush=True)
    subprocess.run(
        [
            "cmake",
            "-S",
            str(src),
            "-B",
            str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DBUILD_SHARED_LIBS=OFF",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=ON",
            "-DLLAMA_OPENSSL=OFF",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    jobs = str(os.cpu_count() or 2)
    subprocess.run(
        ["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if not binary.is_file():
        found = shutil.which("llama-server", path=str(build / "bin"))
        raise SystemExit(f"llama-server was not built (looked for {binary}, found {found})")
    return binary


def command(
    model: Path, port: int, *, threads: int, slots: int, ctx_per_slot: int, extra: list[str]
) -> list[str]:
    """llama-server with Keep's slots, context per slot and threads (it splits -c among its
    -np slots), and its own defaults otherwise, but for `extra`. Keep runs without llama.cpp's
    extra buffer types (KEEP_LLAMA_EXTRA_BUFFERS), whose AMX kernels die with SIGILL on the
    Sapphire Rapids VMs measured here, so the reference does too (`--no-repack`)."""
    return [str(llama_server()), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
            "-t", str(threads), "-tb", str(threads), "-c", str(slots * ctx_per_slot),
            "-np", str(slots), "-ngl", "0", "--no-webui", "--no-repack", *extra]  # fmt: skip


if __name__ == "__main__":
    print(llama_server())
