"""Control's view. Control drives provisioning (peers, the allowlist, the CA), so its view is
the perimeter's plus its own: the database, the console's secrets and login throttle, and the
tunnel settings written into clients' bundles."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from keep.settings.perimeter import PerimeterSettings
from keep.settings.shared import AdminSocket, LogLevel


class ControlSettings(PerimeterSettings):
    admin_socket: AdminSocket
    log_level: LogLevel
    database_url: str = Field(
        "sqlite:////var/lib/keep/control.sqlite3",
        min_length=1,
        description="Control's database: `sqlite:///<path>` or "
        "`postgresql://<user>@/<db>?host=<socket dir>`.",
    )
    control_secret_key_file: Path | None = Field(
        None,
        description="Django's secret key file; unset means `<state_dir>/control-secret.key`, "
        "created with mode 0600 on first start.",
    )
    control_login_attempts: int = Field(
        5,
        ge=1,
        le=1000,
        description="Failed console logins for one user name from one address before that "
        "address gets 429 for that name.",
    )
    control_login_address_attempts: int = Field(
        20,
        ge=1,
        le=100_000,
        description="Failed console logins from one address, across user names, before that "
        "address gets 429 for every name.",
    )
    control_login_window_s: int = Field(
        900, ge=1, le=86400, description="Window over which failed logins are counted."
    )
    wg_endpoint: str = Field(
        "keep.example.internal:51820",
        min_length=3,
        description="host:port clients dial, written into their WireGuard configs.",
    )
    wg_address_quarantine_s: int = Field(
        86400,
        ge=0,
        le=365 * 86400,
        description="How long a revoked peer's tunnel address stays out of use.",
    )

    @property
    def control_secret_path(self) -> Path:
        return self.control_secret_key_file or self.state_dir / "control-secret.key"
