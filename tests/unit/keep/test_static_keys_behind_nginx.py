"""Static keys belong to no peer, so behind NGINX (KEEP_LISTEN_SOCKET set) they are refused at
start-up: they would work from every tunnel address and share one owner's receipts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keep.settings import SettingsError, load_settings

KEEP = str(Path(sys.executable).parent / "keep")
DIGEST = "a" * 64


def test_key_hashes_behind_nginx_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^KEEP_API_KEY_HASHES: .*behind NGINX"):
        load_settings(
            state_dir=tmp_path, listen_socket=tmp_path / "api.sock", api_key_hashes=(DIGEST,)
        )


def test_a_dev_key_behind_nginx_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^KEEP_DEV_API_KEY: .*behind NGINX"):
        load_settings(state_dir=tmp_path, listen_socket=tmp_path / "api.sock", dev_api_key="k" * 20)


def test_static_keys_stay_allowed_on_the_tcp_listener(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, api_key_hashes=(DIGEST,), dev_api_key="k" * 20)
    assert settings.appliance.api_key_hashes == (DIGEST,)
    assert load_settings(state_dir=tmp_path, listen_socket=tmp_path / "api.sock").listen_socket


def test_keep_serve_dev_key_behind_nginx_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEP_")}
    env |= {"KEEP_STATE_DIR": str(tmp_path), "KEEP_LISTEN_SOCKET": str(tmp_path / "api.sock")}
    result = subprocess.run(
        [KEEP, "serve", "--dev-key"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("keep: --dev-key: static keys are refused behind NGINX")
    assert not (tmp_path / "api.sock").exists()
