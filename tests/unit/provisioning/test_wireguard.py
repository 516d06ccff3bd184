"""Peer diffs and preshared-key fingerprints: what sync changes, and what it leaves alone."""

from __future__ import annotations

import pytest

from provisioning import keys
from provisioning.wireguard import (
    ZERO_KEY,
    DeviceState,
    NetlinkDevice,
    PeerSpec,
    PeerState,
    WireGuardError,
    diff,
    psk_fingerprint,
)

A = keys.public_of(keys.generate_private())
B = keys.public_of(keys.generate_private())
PSK = keys.generate_preshared()
IPS = ("10.66.0.2/32",)


def state(*peers: PeerState) -> DeviceState:
    return DeviceState(peers={p.public_key: p for p in peers})


def test_a_peer_in_step_is_left_alone_psk_included() -> None:
    current = state(PeerState(A, IPS, preshared=psk_fingerprint(PSK)))
    assert diff(current, [PeerSpec(A, IPS, PSK)]) == ([], [])


def test_a_new_changed_or_dropped_preshared_key_updates_the_peer() -> None:
    other = keys.generate_preshared()
    with_psk = state(PeerState(A, IPS, preshared=psk_fingerprint(PSK)))
    without = state(PeerState(A, IPS))
    assert diff(without, [PeerSpec(A, IPS, PSK)]) == ([PeerSpec(A, IPS, PSK)], [])
    assert diff(with_psk, [PeerSpec(A, IPS, other)]) == ([PeerSpec(A, IPS, other)], [])
    assert diff(with_psk, [PeerSpec(A, IPS)]) == ([PeerSpec(A, IPS)], [])


def test_peers_are_added_updated_and_removed_by_key() -> None:
    current = state(PeerState(A, IPS), PeerState(B, ("10.66.0.3/32",)))
    wanted = [PeerSpec(A, ("10.66.0.9/32",))]
    assert diff(current, wanted) == (wanted, [B])


def test_fingerprints_tell_keys_apart_and_zero_is_none() -> None:
    other = keys.generate_preshared()
    assert psk_fingerprint(PSK) == psk_fingerprint(keys.decode(PSK))
    assert psk_fingerprint(PSK) != psk_fingerprint(other)
    assert psk_fingerprint(None) is None
    assert psk_fingerprint(ZERO_KEY) is None
    assert psk_fingerprint(bytes(32)) is None
    fingerprint = psk_fingerprint(PSK)
    assert fingerprint is not None
    assert fingerprint not in keys.decode(PSK).hex()  # not a piece of the key itself


def test_a_spec_never_shows_its_preshared_key() -> None:
    spec = PeerSpec(A, IPS, PSK)
    assert PSK not in repr(spec)
    assert keys.decode(PSK).hex() not in repr(spec)
    assert A in repr(spec)


def test_the_kernel_path_turns_netlink_refusals_into_wireguard_errors() -> None:
    """Here the kernel has no WireGuard module; on a host with one, the device is absent.
    Either way control's sync gets a WireGuardError (an alert), not a crash."""
    with pytest.raises(WireGuardError, match="keep-absent0: no such interface"):
        NetlinkDevice("keep-absent0").state()
