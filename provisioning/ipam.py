"""Tunnel addresses from the configured subnet. The first host address is the appliance's.
An address that was revoked is not handed out again until its quarantine has passed, so a
stale allowlist entry can never point at a new peer."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_network


class AddressPoolExhausted(Exception):
    """No free address is left in the subnet."""


def network(subnet: str) -> IPv4Network | IPv6Network:
    return ip_network(subnet, strict=True)


def server_address(subnet: str) -> str:
    return str(next(network(subnet).hosts()))


def allocate(subnet: str, taken: Iterable[str]) -> str:
    """The lowest free host address. `taken`: active peers' addresses and quarantined ones."""
    used = set(taken) | {server_address(subnet)}
    for host in network(subnet).hosts():
        if str(host) not in used:
            return str(host)
    raise AddressPoolExhausted("no free tunnel address in the subnet")
