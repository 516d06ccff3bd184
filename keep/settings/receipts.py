"""The receipt journal's settings and the admin socket control reaches the appliance through."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from keep.settings.shared import AdminSocket, MetricsSocket, StateDir, View


class ReceiptSettings(View):
    state_dir: StateDir
    receipt_key_file: Path | None = Field(
        None,
        description="The Ed25519 receipt signing key (PEM); unset means "
        "`<state_dir>/receipt-signing.key`, created with mode 0600 on first start.",
    )
    receipt_checkpoint_interval: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Receipts between two signed checkpoints kept beside the journal; a "
        "start checks the signature of every receipt after the last one.",
    )
    admin_socket: AdminSocket
    admin_socket_group_access: bool = Field(
        False,
        description="Make the admin socket 0660, for a control running as another user in "
        "the group of the socket's directory (set-group-ID, so the socket inherits it).",
    )
    metrics_socket: MetricsSocket
    policy_max_age_s: int = Field(
        120,
        ge=10,
        le=7 * 86400,
        description="Seconds without a policy push from control (keep-control-sync pushes "
        "every 10 s) after which the KeepPolicyStale alert fires; exported as "
        "keep_policy_max_age_seconds for the rule to compare against.",
    )
    admin_max_entries: int = Field(
        1000, ge=1, le=100_000, description="Most receipts one admin pull returns."
    )

    @property
    def receipt_key_path(self) -> Path:
        return self.receipt_key_file or self.state_dir / "receipt-signing.key"
