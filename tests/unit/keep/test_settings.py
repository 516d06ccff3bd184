import subprocess
from pathlib import Path

import pytest

from keep.settings import DEFAULT_MODEL_NAME, SettingsError, load_settings
from tests.conftest import KEEP


def test_defaults_are_valid() -> None:
    settings = load_settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.model == DEFAULT_MODEL_NAME
    assert settings.model_pin().name == DEFAULT_MODEL_NAME


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEP_PORT", "9001")
    monkeypatch.setenv("KEEP_N_GPU_LAYERS", "12")
    settings = load_settings()
    assert settings.port == 9001
    assert settings.n_gpu_layers == 12


def test_toml_file_named_by_keep_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "keep.toml"
    config.write_text('port = 9100\nmax_sessions = 3\nn_gpu_layers = "auto"\n')
    monkeypatch.setenv("KEEP_CONFIG", str(config))
    monkeypatch.setenv("KEEP_MAX_SESSIONS", "5")
    settings = load_settings()
    assert settings.port == 9100
    assert settings.max_sessions == 5  # the environment beats the file


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KEEP_PORT", "70000"),
        ("KEEP_PORT", "eighty"),
        ("KEEP_N_GPU_LAYERS", "most"),
        ("KEEP_MAX_SESSIONS", "0"),
        ("KEEP_MAX_BODY_BYTES", "12"),
        ("KEEP_REQUEST_DEADLINE_S", "-1"),
        ("KEEP_API_KEY_HASHES", '["not-a-digest"]'),
        ("KEEP_DEV_API_KEY", "short"),
        ("KEEP_LOG_LEVEL", "chatty"),
    ],
)
def test_bad_value_names_the_setting_and_not_the_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(name)
    assert value not in message.removeprefix(name)


def test_unknown_model_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEP_MODEL", "gpt-17")
    with pytest.raises(SettingsError, match=r"^KEEP_MODEL"):
        load_settings()


def test_missing_config_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KEEP_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(SettingsError, match=r"^KEEP_CONFIG"):
        load_settings()


def test_keep_serve_exits_nonzero_with_one_line_naming_the_setting() -> None:
    result = subprocess.run(
        [KEEP, "serve"],
        env={"KEEP_PORT": "99999", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("keep: KEEP_PORT")


def test_keep_serve_refuses_to_start_without_any_api_key() -> None:
    result = subprocess.run(
        [KEEP, "serve"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "KEEP_API_KEY_HASHES" in result.stderr


def test_batch_must_fit_one_token_per_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEP_SLOTS", "64")
    monkeypatch.setenv("KEEP_N_BATCH", "32")
    with pytest.raises(SettingsError, match=r"^KEEP_N_BATCH must be at least KEEP_SLOTS"):
        load_settings()


def test_a_list_setting_that_is_not_json_names_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a shell makes of KEEP_CONTROL_ALLOWED_HOSTS=["a"] when it strips the quotes.
    monkeypatch.setenv("KEEP_CONTROL_ALLOWED_HOSTS", "[keep-1.example.internal]")
    with pytest.raises(SettingsError, match=r"^KEEP_CONTROL_ALLOWED_HOSTS: not valid JSON"):
        load_settings()
