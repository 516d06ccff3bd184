"""The appliance host inside the lab: provisioned by `keep provision up`, then NGINX and the
appliance started in its namespace, exactly as a real host runs them.

Control is not a process here: it runs where the caller runs (the demo, or the test's Django),
and reaches the host through what is shared on one machine: the admin socket, WireGuard's
UAPI socket and NGINX's pid file.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from keep.settings import Settings, load_settings
from provisioning import ipam, perimeter
from provisioning.wgconfig import PRIVATE_KEY_PLACEHOLDER
from tests.netlab.net import MANAGEMENT, TUNNEL, LabError, Net

BIN = Path(sys.executable).parent
SERVER_NAME = "keep.internal"


class KeepHost:
    def __init__(self, net: Net, root: Path, extra: dict[str, str] | None = None) -> None:
        self.net = net
        self.root = root
        # NGINX temp paths on tmpfs, as on a host (/run); root-owned, named per lab.
        self.runtime = Path("/dev/shm") / f"{net.tag}-nginx"
        self.wg_interface = f"{net.tag}-wg"
        # Keep's settings for every process on this host, and for control wherever it runs.
        self.values: dict[str, Any] = {
            "state_dir": root / "state",
            "admin_socket": root / "run" / "admin.sock",
            "listen_socket": root / "run" / "api" / "api.sock",
            "wg_interface": self.wg_interface,
            "wg_subnet": TUNNEL,
            "wg_endpoint": f"{net.address('host')}:51820",
            "external_interface": "eth0",
            # The host's own Prometheus scrapes from loopback (tests/e2e/test_prometheus.py).
            "management_networks": (MANAGEMENT, "127.0.0.1/32"),
            "metrics_socket": root / "run" / "api" / "metrics.sock",
            "tls_server_name": SERVER_NAME,
            "nginx_dir": root / "nginx",
            "nginx_runtime_dir": self.runtime,
            "database_url": f"sqlite:///{root / 'control.sqlite3'}",
            "slots": 4,
            "n_threads": 1,
            "embed_threads": 1,
            # Small body limits, so that bodies near them cross the tunnel quickly.
            "rag_max_upload_bytes": 4 << 20,
            "rag_max_document_bytes": 1 << 20,
            **(extra or {}),
        }
        self.env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        for name, value in self.values.items():
            text = json.dumps(value) if isinstance(value, tuple | list) else str(value)
            self.env[f"KEEP_{name.upper()}"] = text
        self.appliance: subprocess.Popen[bytes] | None = None
        self.nginx: subprocess.Popen[bytes] | None = None

    def settings(self) -> Settings:
        return load_settings(**self.values)

    @property
    def address(self) -> str:
        return ipam.server_address(TUNNEL)

    @property
    def ca(self) -> Path:
        return perimeter.ca_dir(self.settings()) / "ca.crt"

    def prepare(self) -> None:
        """Directories as a host has them: the API socket's directory is traversable only
        by root and NGINX's group."""
        for sub in ("state", "run", "nginx"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.chmod(0o711)
        (self.root / "run").chmod(0o711)
        api = self.root / "run" / "api"
        api.mkdir(mode=0o750, exist_ok=True)
        os.chown(api, 0, grp.getgrnam("www-data").gr_gid)
        shutil.rmtree(self.runtime, ignore_errors=True)

    def provision(self) -> str:
        return self.net.check("host", [str(BIN / "keep"), "provision", "up"], self.env)

    def start(self, timeout: float = 180.0) -> None:
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        self.appliance = self.net.spawn(
            "host", [str(BIN / "keep"), "serve"], self.env, logs / "appliance.log"
        )
        conf = self.root / "nginx" / "nginx.conf"
        self.nginx = self.net.spawn(
            "host",
            ["nginx", "-e", "stderr", "-c", str(conf), "-g", "daemon off;"],
            {},
            logs / "nginx.log",
        )
        deadline = time.monotonic() + timeout
        api = Path(self.env["KEEP_LISTEN_SOCKET"])
        # Readiness from the admin socket, as the host's probes ask: the API's needs a key.
        admin = Path(self.env["KEEP_ADMIN_SOCKET"])
        while True:
            if self.appliance.poll() is not None:
                raise LabError(f"the appliance exited: {self.log('appliance')[-3000:]}")
            if api.exists() and admin.exists() and (self.runtime / "nginx.pid").exists():
                try:
                    transport = httpx.HTTPTransport(uds=str(admin))
                    with httpx.Client(transport=transport, base_url="http://admin") as c:
                        if c.get("/admin/readyz").status_code == 200:
                            return
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline:
                raise LabError("the appliance did not become ready")
            time.sleep(0.2)

    def log(self, name: str) -> str:
        path = self.root / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def nginx_pids(self) -> list[int]:
        """NGINX's master and workers."""
        master = int((self.runtime / "nginx.pid").read_text())
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return [master, *map(int, children)]

    def wireguard_pid(self) -> int:
        out = subprocess.run(
            ["pgrep", "-f", f"wireguard-go {self.wg_interface}$"], capture_output=True, text=True
        ).stdout.split()
        if not out:
            raise LabError("wireguard-go is not running")
        return int(out[0])


def join(net: Net, host: str, interface: str, config: str, private_key: str, root: Path) -> Path:
    """Bring up a client's tunnel with wg-quick from its bundle's config, as a user would."""
    path = root / f"{interface}.conf"
    text = config.replace(PRIVATE_KEY_PLACEHOLDER, private_key)
    path.write_text(text)
    path.chmod(0o600)
    net.check(host, ["wg-quick", "up", str(path)])
    return path
