"""Control's WireGuard peer handoff (KEEP_WG_PEER_HANDOFF): what control writes, and what
root's `keep provision sync` accepts from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keep.settings import Settings
from provisioning import keys, perimeter
from provisioning.perimeter import ActivePeer


def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "control",
        wg_interface="keep0",
        wg_subnet="10.66.0.0/24",
        wg_peer_handoff=True,
        nginx_dir=tmp_path / "nginx",
        nginx_runtime_dir=tmp_path / "run",
    )


def peer(address: str, psk: bool = True) -> ActivePeer:
    public = keys.public_of(keys.generate_private())
    return ActivePeer(public, address, keys.generate_preshared() if psk else None)


def test_handed_off_peers_round_trip_in_a_0600_file(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert perimeter.read_handoff(s) is None  # nothing handed off yet: root changes nothing
    peers = [peer("10.66.0.2"), peer("10.66.0.3", psk=False)]
    assert perimeter.hand_off(s, peers) is True
    path = perimeter.handoff_path(s)
    assert path.stat().st_mode & 0o777 == 0o600  # it holds preshared keys
    back = perimeter.read_handoff(s)
    assert back is not None
    assert sorted(back, key=lambda p: p.address) == peers
    assert [p.preshared_key for p in sorted(back, key=lambda p: p.address)] == [
        peers[0].preshared_key,
        None,
    ]


def test_an_unchanged_set_is_not_rewritten(tmp_path: Path) -> None:
    s = settings(tmp_path)
    peers = [peer("10.66.0.2")]
    assert perimeter.hand_off(s, peers) is True
    before = perimeter.handoff_path(s).stat().st_mtime_ns
    assert perimeter.hand_off(s, list(reversed(peers))) is False
    assert perimeter.handoff_path(s).stat().st_mtime_ns == before  # the path unit stays quiet


def test_sync_hands_off_and_writes_the_allowlist_without_touching_wireguard(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path)  # no keep0 device exists here: only the handoff can succeed
    peers = [peer("10.66.0.2"), peer("10.66.0.3")]
    assert perimeter.sync(s, peers) == (2, 0)
    assert perimeter.sync(s, peers) == (0, 0)
    from provisioning import nginx

    assert nginx.allowlist(s) == {"10.66.0.2", "10.66.0.3"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("not json", "is not JSON"),
        ({"public_key": "x"}, "is not a list"),
        ([{"public_key": "not-a-key", "address": "10.66.0.2", "preshared_key": None}], "peer 0"),
        ([{"address": "10.66.0.2", "preshared_key": None}], "peer 0 is malformed"),
        ([{"public_key": "PUB", "address": "192.0.2.9", "preshared_key": None}], "outside"),
        ([{"public_key": "PUB", "address": "10.66.0.2", "preshared_key": "short"}], "peer 0"),
    ],
)
def test_root_refuses_a_malformed_handoff_whole(tmp_path: Path, rows: object, message: str) -> None:
    s = settings(tmp_path)
    public = keys.public_of(keys.generate_private())
    text = rows if isinstance(rows, str) else json.dumps(rows).replace("PUB", public)
    path = perimeter.handoff_path(s)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as caught:
        perimeter.read_handoff(s)
    assert public not in str(caught.value)
