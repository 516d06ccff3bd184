"""What the per-plane settings views share: their base, the error, and the settings that more
than one plane reads.

A setting read by two planes (the state directory, a socket both ends of which are configured
from it, a limit NGINX mirrors) is declared here once, as an annotated type with its default,
bounds and description, and each view that reads it names it with that type. The composed
`Settings` therefore holds it once, and every view sees the same validated value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class SettingsError(Exception):
    """A setting is missing or out of bounds. The message names it, never its value."""


class View(BaseModel):
    """One plane's settings: validated, frozen, and refusing names it does not know."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _unix_socket_path(path: Path | None) -> Path | None:
    if path is not None and len(str(path).encode()) > 107:
        raise ValueError("a unix socket path has at most 107 bytes")
    return path


def _subnet(value: str) -> str:
    from ipaddress import ip_network

    if "%" in value:  # an IPv6 scope may hold any character, and the subnet goes into configs
        raise ValueError("a subnet has no scope")
    net = ip_network(value, strict=True)
    if net.num_addresses < 4:
        raise ValueError("the subnet must hold at least two hosts")
    return value


StateDir = Annotated[
    Path,
    Field(
        Path("/var/lib/keep"),
        description="The appliance's only writable directory: the receipt journal, its "
        "signing key and the last good policy. Never holds client content.",
    ),
]
ListenSocket = Annotated[
    Path | None,
    AfterValidator(_unix_socket_path),
    Field(
        None,
        description="Unix socket the API listens on instead of host:port, for NGINX to proxy "
        "to. Set, the appliance trusts NGINX's `X-Keep-Peer` header and binds every key to "
        "its peer's tunnel address.",
    ),
]
MetricsSocket = Annotated[
    Path | None,
    AfterValidator(_unix_socket_path),
    Field(
        None,
        description="A second unix socket that serves /metrics alone (mode 0666, in a "
        "directory of NGINX's group), for NGINX's management listener to expose to the "
        "management networks. Unset: /metrics only on the admin socket.",
    ),
]
AdminSocket = Annotated[
    Path,
    AfterValidator(_unix_socket_path),
    Field(
        Path("/run/keep-admin/admin.sock"),
        description="The admin unix socket (mode 0600) through which control pushes policy "
        "and pulls receipts. The appliance never listens for admin on TCP.",
    ),
]
ControlSocket = Annotated[
    Path,
    Field(
        Path("/run/keep-control/control.sock"),
        description="Unix socket keep-control serves the console on; NGINX's management "
        "listener proxies to it.",
    ),
]
MaxBodyBytes = Annotated[
    int,
    Field(
        1 << 20,
        ge=1024,
        le=1 << 30,
        description="Largest request body accepted; larger gets 413.",
    ),
]
RagMaxUploadBytes = Annotated[
    int,
    Field(
        32 << 20,
        ge=1024,
        le=1 << 31,
        description="Largest document upload request body; larger gets 413.",
    ),
]
RequestDeadline = Annotated[
    float,
    Field(
        120.0,
        gt=0,
        le=3600,
        description="Wall-clock limit for one request, queueing included; past it the "
        "request is stopped and gets 504.",
    ),
]
WgSubnet = Annotated[
    str,
    AfterValidator(_subnet),
    Field(
        "10.66.0.0/24",
        description="The tunnel subnet; the first host address is the appliance's.",
    ),
]
WgInterface = Annotated[
    str | None,
    Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,15}$",
        description="The WireGuard interface provisioning manages; unset means no perimeter "
        "(development: control changes only the database and the policy).",
    ),
]
WgPeerHandoff = Annotated[
    bool,
    Field(
        False,
        description="Control does not change WireGuard itself: it writes the active peers "
        "(keys, addresses, preshared keys) to `<state_dir>/wireguard-peers.json` (0600), and "
        "root's `keep provision sync` (keep-wireguard-sync.path) applies them. For "
        "wireguard-go, whose UAPI socket only root may open; the playbook sets it with "
        "`keep_wireguard_userspace=true`.",
    ),
]
ControlAllowedHosts = Annotated[
    tuple[str, ...],
    Field(
        ("localhost", "127.0.0.1"),
        min_length=1,
        description="Host names the admin console answers to on the management network.",
    ),
]
LogLevel = Annotated[
    Literal["debug", "info", "warning", "error"],
    Field("info", description="Level of Keep's content-free logs."),
]
