"""The whole appliance in network namespaces, shared by the end-to-end tests of a module.

`keep-host` runs wireguard-go, nftables, NGINX and the appliance, provisioned by
`keep provision up`; control runs here, in the test's Django, on the lab's settings. The
peers `client` and `revoked` are enrolled through the admin console and bring their tunnels
up with wg-quick from their bundles; `stranger` has no tunnel.

These tests need root and /dev/net/tun. Without them they fail and say so; they are skipped
only when KEEP_E2E=0 is set.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from provisioning import keys
from tests.netlab.keephost import SERVER_NAME, KeepHost, join
from tests.netlab.net import LabError, Net, preflight

PY = sys.executable


@dataclass
class Member:
    host: str  # the lab host it lives on
    interface: str
    address: str
    api_key: str
    peer_pk: int


@dataclass
class Lab:
    net: Net
    keep: KeepHost
    root: Path
    console: Any
    members: dict[str, Member] = field(default_factory=dict)

    def probe(self, host: str, *args: str, timeout: float = 300) -> dict[str, Any]:
        import json

        out = self.net.check(host, [PY, "-m", "tests.netlab.probe", *args], timeout=timeout)
        result: dict[str, Any] = json.loads(out)
        return result

    def raw(self, host: str, key: str, sni: str = SERVER_NAME, hostname: str = SERVER_NAME):  # type: ignore[no-untyped-def]
        return self.probe(
            host,
            "raw",
            "--target",
            self.keep.address,
            "--sni",
            sni,
            "--host",
            hostname,
            "--key",
            key,
            "--ca",
            str(self.keep.ca),
        )

    def curl(self, host: str, *args: str, timeout: float = 60) -> Any:
        base = [
            "curl",
            "-sS",
            "--cacert",
            str(self.keep.ca),
            "--resolve",
            f"{SERVER_NAME}:443:{self.keep.address}",
        ]
        return self.net.exec(host, [*base, *args], timeout=timeout)


def _require_lab() -> None:
    if os.environ.get("KEEP_E2E") == "0":
        pytest.skip("KEEP_E2E=0: end-to-end network tests switched off explicitly")
    try:
        preflight()
    except LabError as exc:
        pytest.fail(f"{exc}. Run as root with /dev/net/tun, or set KEEP_E2E=0 to skip.")


def enroll(lab: Lab, host: str, name: str) -> Member:
    from django.urls import reverse

    from control.console.models import Client, Peer

    client, _ = Client.objects.get_or_create(name="Law firm", kind="organisation")
    private = keys.generate_private()
    added = lab.console.post(
        reverse("keep:console_peer_add"),
        {"client": client.pk, "name": name, "public_key": keys.public_of(private)},
    )
    assert added.status_code == 302, added.content[:2000]
    peer = Peer.objects.get(name=name, revoked_at__isnull=True)
    response = lab.console.action(
        reverse("keep:console_peer_changelist"), "download_bundle", [peer.pk]
    )
    bundle = zipfile.ZipFile(io.BytesIO(response.content))
    interface = f"{lab.net.tag}-{name[0]}"
    join(lab.net, host, interface, bundle.read(f"{name}.conf").decode(), private, lab.root)
    api_key = bundle.read("api-key.txt").decode().strip()
    return Member(host, interface, peer.address, api_key, peer.pk)


@pytest.fixture(scope="package")
def lab(django_db_blocker: Any) -> Iterator[Lab]:
    _require_lab()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client as HttpClient

    from tests.control.conftest import PASSWORD, Console

    tag = f"k{os.getpid() % 100000}"
    net = Net(tag)
    net.down()
    root = Path(tempfile.mkdtemp(prefix=f"{tag}-lab-"))
    keep = KeepHost(net, root)
    saved = settings.KEEP
    try:
        net.up()
        for host in ("client", "revoked", "stranger"):
            net.resolve(host, {SERVER_NAME: keep.address})
        keep.prepare()
        keep.provision()
        keep.start()
        settings.KEEP = keep.settings()
        # Control's throwaway database for this run (tests/controlenv.py), migrated here: the
        # lab's control state lives across this module's tests, and is flushed at the end.
        with django_db_blocker.unblock():
            call_command("migrate", interactive=False, verbosity=0)
            operator = User.objects.create_superuser("operator", "op@example.internal", PASSWORD)
            http = HttpClient()
            http.force_login(operator)
            lab = Lab(net, keep, root, Console(http))
            lab.members["client"] = enroll(lab, "client", "client")
            lab.members["revoked"] = enroll(lab, "revoked", "revoked")
            yield lab
            call_command("flush", interactive=False, verbosity=0)
    finally:
        settings.KEEP = saved
        net.down()


@pytest.fixture
def unblocked(django_db_blocker: Any) -> Iterator[None]:
    with django_db_blocker.unblock():
        yield


BASE = f"https://{SERVER_NAME}"
QUESTION = "What is the capital of France?"


def wg_peers(lab: Lab) -> set[str]:
    out = lab.net.check("host", ["wg", "show", lab.keep.wg_interface, "peers"])
    return set(out.split())


def db_active_keys() -> set[str]:
    from control.console.models import Peer

    return set(Peer.objects.active().exclude(public_key="").values_list("public_key", flat=True))
