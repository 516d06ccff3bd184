"""The settings are one flat `KEEP_*` namespace seen through one view per plane: each view
holds only its plane's settings, every setting is in some view, and a setting two planes read
has one value in both."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from keep.settings import (
    ApplianceSettings,
    ControlSettings,
    PerimeterSettings,
    Settings,
    SettingsError,
    load_settings,
)
from keep.settings.api import ApiSettings
from keep.settings.engine import EngineSettings
from keep.settings.rag import RagSettings
from keep.settings.receipts import ReceiptSettings

VIEWS = (ApplianceSettings, ControlSettings, PerimeterSettings)


def test_every_setting_belongs_to_a_plane_and_no_view_invents_one() -> None:
    every = set(Settings.model_fields)
    seen: set[str] = set()
    for view in VIEWS:
        assert set(view.model_fields) <= every, view.__name__
        seen |= set(view.model_fields)
    assert seen == every


def test_each_view_is_only_its_plane() -> None:
    settings = load_settings()
    perimeter = settings.perimeter
    assert type(perimeter) is PerimeterSettings
    assert not hasattr(perimeter, "database_url")  # control's
    assert not hasattr(perimeter, "n_batch")  # the engine's
    assert not hasattr(settings.appliance, "nginx_user")  # the perimeter's
    assert not hasattr(settings.appliance, "database_url")
    assert not hasattr(settings.control, "dev_api_key")  # the API's
    # The appliance's view is composed of exactly these groups.
    groups = (ApiSettings, EngineSettings, RagSettings, ReceiptSettings)
    names = set().union(*(group.model_fields for group in groups)) | {"log_level"}
    assert set(ApplianceSettings.model_fields) == names


def test_a_setting_two_planes_read_has_one_value_in_both() -> None:
    settings = load_settings(
        state_dir="/srv/keep", max_body_bytes=4096, listen_socket="/run/k/api.sock"
    )
    assert settings.appliance.state_dir == settings.perimeter.state_dir == settings.state_dir
    assert settings.appliance.max_body_bytes == settings.perimeter.max_body_bytes == 4096
    assert str(settings.perimeter.listen_socket) == "/run/k/api.sock"
    assert settings.control.provisioning_path == settings.perimeter.provisioning_path


def test_views_are_frozen_and_refuse_unknown_names() -> None:
    perimeter = load_settings().perimeter
    with pytest.raises(ValidationError):
        perimeter.wg_mtu = 1500  # type: ignore[misc]
    with pytest.raises(ValidationError):
        PerimeterSettings(database_url="sqlite://")  # type: ignore[call-arg]


def test_a_view_validates_on_its_own() -> None:
    with pytest.raises(ValidationError, match="subnet must hold at least two hosts"):
        PerimeterSettings(wg_subnet="10.0.0.0/31")
    with pytest.raises(ValidationError, match="KEEP_N_BATCH must be at least KEEP_SLOTS"):
        ApplianceSettings(n_batch=32, slots=64)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("wg_subnet", "fe80::%x;\n}/64"),
        ("wg_subnet", "fe80::%eth0/64"),
        ("management_address", "fe80::1%eth0;\n} include /etc/passwd"),
    ],
)
def test_an_ipv6_scope_cannot_carry_text_into_the_configs(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^KEEP_{name.upper()}: "):
        load_settings(**{name: value})
