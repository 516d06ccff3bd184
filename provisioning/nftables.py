"""The host firewall, rendered from the settings and applied as one nftables transaction.

Keep owns one table, `inet keep`. Its input and forward chains drop by default, so a packet
is dropped whatever other tables say (a drop verdict at any base chain is final):
- on the external interface: established traffic, UDP to WireGuard's port, and SSH and the
  admin console from the management networks only;
- on the WireGuard interface: TCP 443 to the appliance's tunnel address (NGINX), only from
  the tunnel subnet;
- loopback; the ICMPv6 that IPv6 neighbour discovery needs. Nothing else: a closed port
  answers neither RST nor ICMP, so a stranger cannot tell a closed port from a dead host.

The file deletes and recreates the table inside one `nft -f` transaction: it applies whole
or not at all, and a refused file leaves the previous ruleset in force.
"""

from __future__ import annotations

import subprocess
from ipaddress import ip_network

from keep.settings import PerimeterSettings
from provisioning import ipam

TABLE = "keep"


class FirewallError(Exception):
    """nft refused the ruleset; the previous one is still in force."""


def _family(net: str) -> str:
    return "ip6" if ip_network(net).version == 6 else "ip"


def render(settings: PerimeterSettings) -> str:
    if settings.wg_interface is None:
        raise ValueError("KEEP_WG_INTERFACE is not set: there is no perimeter to render")
    ext = settings.external_interface
    wg = settings.wg_interface
    subnet = settings.wg_subnet
    fam = _family(subnet)
    server = ipam.server_address(subnet)
    management = []
    for net in settings.management_networks:
        src = f"{_family(net)} saddr {net}"
        management += [
            f'        iifname "{ext}" {src} tcp dport {settings.ssh_port} accept',
            f'        iifname "{ext}" {src} tcp dport {settings.management_port} accept',
        ]
    lines = [
        "# Rendered by Keep's provisioning from the settings; edits are overwritten.",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "    chain input {",
        "        type filter hook input priority filter; policy drop;",
        "        ct state invalid drop",
        '        iifname "lo" accept',
        "        ct state established,related accept",
        "        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert }"
        " ip6 hoplimit 255 accept",
        f'        iifname "{ext}" udp dport {settings.wg_listen_port} accept',
        *management,
        f'        iifname "{wg}" {fam} saddr {subnet} {fam} daddr {server} tcp dport 443 accept',
        "    }",
        "    chain forward {",
        "        type filter hook forward priority filter; policy drop;",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _nft(args: list[str], text: str) -> None:
    result = subprocess.run(
        ["nft", *args, "-f", "-"], input=text, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise FirewallError(result.stderr.strip() or f"nft exited {result.returncode}")


def check(text: str) -> None:
    """`nft -c -f`: parse and evaluate without applying."""
    _nft(["-c"], text)


def apply(text: str) -> None:
    """One atomic transaction: all of it, or nothing and the old ruleset stays."""
    _nft([], text)
