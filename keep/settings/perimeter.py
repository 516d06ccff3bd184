"""The perimeter's view: what provisioning reads to render and apply WireGuard, nftables and
NGINX. It names the API's socket and the limits NGINX mirrors, which the API's view also
holds (declared once, in keep.settings.shared)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from keep.settings.shared import (
    ControlAllowedHosts,
    ControlSocket,
    ListenSocket,
    MaxBodyBytes,
    MetricsSocket,
    RagMaxUploadBytes,
    RequestDeadline,
    StateDir,
    View,
    WgInterface,
    WgPeerHandoff,
    WgSubnet,
)


class PerimeterSettings(View):
    state_dir: StateDir
    listen_socket: ListenSocket
    control_socket: ControlSocket
    metrics_socket: MetricsSocket
    control_allowed_hosts: ControlAllowedHosts
    max_body_bytes: MaxBodyBytes
    rag_max_upload_bytes: RagMaxUploadBytes
    request_deadline_s: RequestDeadline

    wg_subnet: WgSubnet
    wg_interface: WgInterface
    wg_listen_port: int = Field(51820, ge=1, le=65535, description="WireGuard's UDP port.")
    wg_mtu: int = Field(1420, ge=1280, le=9000, description="MTU of the WireGuard interface.")
    wg_peer_handoff: WgPeerHandoff
    external_interface: str = Field(
        "eth0",
        pattern=r"^[A-Za-z0-9_.@-]{1,15}$",
        description="The interface clients' WireGuard packets arrive on.",
    )
    management_networks: tuple[str, ...] = Field(
        (),
        description="Networks (CIDR) allowed to reach SSH and the admin console; empty means "
        "neither is reachable from outside the host.",
    )
    management_address: str = Field(
        "127.0.0.1",
        description="Address the admin console's TLS listener binds to (on the management "
        "network).",
    )
    management_port: int = Field(
        8443, ge=1, le=65535, description="TCP port of the admin console's TLS listener."
    )
    ssh_port: int = Field(22, ge=1, le=65535, description="SSH port, for the management networks.")
    tls_server_name: str = Field(
        "keep.internal",
        pattern=r"^[A-Za-z0-9.-]{1,253}$",
        description="The API's TLS name: its certificate's name and the only Host/SNI answered.",
    )
    tls_allow_v12: bool = Field(False, description="Also accept TLS 1.2 (TLS 1.3 only when false).")
    provisioning_dir: Path | None = Field(
        None,
        description="Provisioning's keys: the appliance CA and the WireGuard server key (0600, "
        "root's), beside their public halves (0644) that control reads; unset means "
        "`<state_dir>/provisioning`.",
    )
    nginx_dir: Path = Field(
        Path("/etc/keep/nginx"),
        description="Where provisioning writes NGINX's config and the "
        "server certificate and key (0600); the allowlist is in the state directory.",
    )
    nginx_runtime_dir: Path = Field(
        Path("/run/keep-nginx"),
        description="NGINX's pid file and temp paths; on tmpfs, so nothing spills to disk.",
    )
    nginx_rate_per_s: int = Field(
        20, ge=1, le=100_000, description="Requests per second per peer before NGINX's 429."
    )
    nginx_burst: int = Field(
        40, ge=0, le=100_000, description="Requests over the rate a peer may burst."
    )
    nginx_user: str | None = Field(
        "www-data",
        description="User NGINX's workers run as (when started as root); unset keeps the "
        "starting user.",
    )

    @field_validator("management_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from ipaddress import ip_network

        return tuple(str(ip_network(v, strict=True)) for v in value)

    @field_validator("management_address")
    @classmethod
    def _address(cls, value: str) -> str:
        from ipaddress import ip_address

        if "%" in value:  # an IPv6 scope may hold any character; this goes into NGINX's config
            raise ValueError("an address here has no scope")
        return str(ip_address(value))

    @property
    def provisioning_path(self) -> Path:
        return self.provisioning_dir or self.state_dir / "provisioning"
