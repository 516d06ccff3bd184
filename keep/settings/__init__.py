"""Keep's one settings object, composed from one view per plane.

`Settings` is built once at start-up by `load_settings()`. Sources, highest priority first:
keyword arguments, `KEEP_*` environment variables, the TOML file named by `KEEP_CONFIG`, then
the defaults. A bad value stops start-up with `SettingsError`, whose message names the setting
and never echoes its value.

Every `KEEP_*` name is a field of exactly one kind: the views below are projections of one flat
namespace, and a setting that two planes read is declared once (keep.settings.shared). The
composition root hands each plane only its own view (`settings.appliance`, `.perimeter`,
`.control`); the appliance passes inference and rag their own small configs.

    Settings
    ├── ApplianceSettings   keep serve
    │   ├── ApiSettings       listener, sessions, limits, static keys
    │   ├── EngineSettings    pinned models, llama.cpp
    │   ├── RagSettings       embedder, index, document limits
    │   └── ReceiptSettings   journal, signing key, admin socket
    └── ControlSettings     the console and its sync loop
        └── PerimeterSettings keep provision: WireGuard, nftables, NGINX
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError as PydanticSettingsError

from keep.settings.appliance import ApplianceSettings
from keep.settings.control import ControlSettings
from keep.settings.engine import DEFAULT_MODEL_NAME, DEFAULT_MODELS, ModelPin
from keep.settings.perimeter import PerimeterSettings
from keep.settings.rag import DEFAULT_EMBEDDER
from keep.settings.shared import SettingsError, View

__all__ = [
    "DEFAULT_EMBEDDER",
    "DEFAULT_MODELS",
    "DEFAULT_MODEL_NAME",
    "ApplianceSettings",
    "ControlSettings",
    "ModelPin",
    "PerimeterSettings",
    "Settings",
    "SettingsError",
    "load_settings",
]

V = TypeVar("V", bound=View)


class Settings(BaseSettings, ApplianceSettings, ControlSettings):
    model_config = SettingsConfigDict(
        env_prefix="KEEP_",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    def view(self, cls: type[V]) -> V:
        """This plane's settings alone: the values already validated here, nothing else."""
        values = {name: getattr(self, name) for name in cls.model_fields}
        return cast(V, cls.model_construct(**values))

    @property
    def appliance(self) -> ApplianceSettings:
        return self.view(ApplianceSettings)

    @property
    def control(self) -> ControlSettings:
        return self.view(ControlSettings)

    @property
    def perimeter(self) -> PerimeterSettings:
        return self.view(PerimeterSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("KEEP_CONFIG")
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build and validate the settings, or raise SettingsError naming the bad setting."""
    config = os.environ.get("KEEP_CONFIG")
    if config and not Path(config).is_file():
        raise SettingsError("KEEP_CONFIG: file not found")
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except PydanticSettingsError as exc:  # a list or object setting that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"KEEP_{field.group(1).upper()}" if field else "a KEEP_* setting"
        raise SettingsError(f"{name}: not valid JSON (lists and objects are JSON)") from None
    settings.model_pin()
    return settings


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_input=False, include_url=False)[0]
    loc = [str(part) for part in first["loc"]]
    more = len(exc.errors())
    suffix = f" (and {more - 1} more)" if more > 1 else ""
    message = first["msg"].removeprefix("Value error, ")
    if not loc:  # a check across settings names them in its own message
        return message + suffix
    where = "".join(f"[{part}]" for part in loc[1:])
    return f"KEEP_{loc[0].upper()}{where}: {message}{suffix}"
