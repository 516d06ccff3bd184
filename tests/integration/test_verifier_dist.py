"""keep-verify, the client's verifier, installed alone into an empty venv: it needs nothing
of Keep's server, and it checks a real bundle from a running appliance."""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT, AppFactory, chat_body

WHEELHOUSE = ROOT / "build" / "wheelhouse"
VERIFIER = ROOT / "build" / "verifier"
# What a verifier needs: cryptography and its own dependencies, and pip in the venv.
ALLOWED = {"keep-verify", "cryptography", "cffi", "pycparser", "pip"}
SERVER = {
    "keep",
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "torch",
    "django",
    "llama-cpp-python",
    "numpy",
    "jinja2",
    "pyroute2",
    "httpx",
}


@pytest.fixture(scope="module")
def verifier_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # No-ops when `make test` has already built both; the wheelhouse holds cryptography.
    subprocess.run(["make", "-s", "-C", str(ROOT), "wheelhouse", "verifier"], check=True)
    (wheel,) = VERIFIER.glob("keep_verify-*.whl")
    env_dir = tmp_path_factory.mktemp("verifier") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--find-links",
            str(WHEELHOUSE),
            str(wheel),
        ],
        check=True,
    )
    return env_dir


def test_the_verifier_venv_holds_cryptography_and_nothing_of_the_server(
    verifier_venv: Path,
) -> None:
    listed = subprocess.run(
        [str(verifier_venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = {entry["name"].lower() for entry in json.loads(listed.stdout)}
    names.discard("setuptools")  # Python 3.11's venv seeds it; nothing imports it
    assert {"keep-verify", "cryptography"} <= names
    assert names <= ALLOWED, names - ALLOWED
    assert not names & SERVER
    # Its modules load with the venv's own interpreter, away from this checkout.
    probe = subprocess.run(
        [
            str(verifier_venv / "bin" / "python"),
            "-I",
            "-c",
            "import transparency.cli, sys; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('keep', 'appliance', 'pydantic', 'fastapi', 'torch')))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=verifier_venv,
    )
    assert probe.stdout.strip() == "[]"


def test_the_verifier_alone_checks_a_real_bundle_and_refuses_a_tampered_one(
    verifier_venv: Path, make_client: AppFactory, tmp_path: Path
) -> None:
    client = make_client()
    response = client.post("/v1/chat/completions", json=chat_body(max_tokens=4))
    assert response.status_code == 200
    bundle = client.get("/v1/receipts", params={"session_id": response.headers["x-keep-session"]})
    assert bundle.status_code == 200
    key = client.get("/v1/receipts/checkpoint").json()["verifier_key"]
    good = tmp_path / "bundle.json"
    good.write_text(bundle.text)
    command = [str(verifier_venv / "bin" / "keep-verify"), "--key", key]
    done = subprocess.run(
        [*command, str(good)], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid: session" in done.stdout

    tampered = json.loads(bundle.text)
    tampered["receipt"]["completion_tokens"] += 1
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(tampered))
    done = subprocess.run(
        [*command, str(bad)], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "invalid" in done.stdout
