"""`keep provision`: host provisioning, run as root on the appliance host. Ansible and the
network lab call it, so both produce the same configs."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from keep.settings import PerimeterSettings
from provisioning import nftables, nginx, perimeter, wireguard


def run(action: str, settings: PerimeterSettings, *, out: Path | None = None) -> int:
    if settings.wg_interface is None or settings.listen_socket is None:
        return _fail("KEEP_WG_INTERFACE and KEEP_LISTEN_SOCKET must be set to provision")
    try:
        if action == "up":
            print(json.dumps(perimeter.up(settings, settings.listen_socket), indent=2))
        elif action == "sync":
            added, removed = perimeter.apply_handoff(settings)
            print(json.dumps({"set": added, "removed": removed}))
        elif action == "check":
            # Checked where they are rendered, in a scratch directory: a check changes nothing
            # on the host. NGINX's config names the installed certificate and allowlist.
            nftables.check(nftables.render(settings))
            with tempfile.TemporaryDirectory(prefix="keep-check-") as scratch:
                conf = Path(scratch) / nginx.CONF
                conf.write_text(nginx.render(settings, settings.listen_socket))
                nginx.check(conf)
            print("nft -c and nginx -t: both configs pass")
        elif action == "render":
            perimeter.server_public_key(settings)  # the WireGuard key pair, for bundles
            target = out or settings.nginx_dir
            nginx.write(settings, settings.listen_socket, perimeter.ca_dir(settings), target)
            (target / "keep.nft").write_text(nftables.render(settings))
            print(f"rendered into {target}")
        else:
            return _fail(f"provision: unknown action {action!r}")
    except (
        OSError,
        RuntimeError,
        ValueError,
        nftables.FirewallError,
        wireguard.WireGuardError,
    ) as exc:
        return _fail(f"provision {action}: {exc}")
    return 0


def _fail(message: str) -> int:
    print(f"keep: {message}", file=sys.stderr)
    return 2
