"""Control's test environment, set up from tests/conftest.py's pytest_configure, before
pytest-django sets Django up: a throwaway state directory and database and, for
`--keep-database=postgresql`, a private PostgreSQL cluster (Debian's binaries) listening only
on a unix socket."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest

_CLUSTER: dict[str, Path] = {}


def addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--keep-database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="control's database for this run (PostgreSQL: a private cluster is started)",
    )


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise pytest.UsageError(
            "PostgreSQL is not installed: `make test` installs Debian's postgresql package"
        )
    return found[-1].parent


def start_postgres(base: Path) -> str:
    bindir = _pg_bin()
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        base.parent.chmod(0o711)  # postgres may pass through, not list
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "keep",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        ),
        **run,
    )  # type: ignore[call-overload]
    options = f"-k {sock} -c listen_addresses='' -c fsync=off"
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(base / "log"),
                "-w",
                "start",
            ]
        ),
        **run,
    )  # type: ignore[call-overload]
    _CLUSTER["data"] = data
    subprocess.run(
        _as_postgres([str(bindir / "createdb"), "-h", str(sock), "-U", "keep", "keep"]), **run
    )  # type: ignore[call-overload]
    return f"postgresql://keep@{quote(str(sock), safe='')}/keep"


def configure(config: pytest.Config) -> None:
    base = Path(tempfile.mkdtemp(prefix="keep-control-", dir="/tmp"))
    _CLUSTER["base"] = base
    state = base / "state"
    state.mkdir(mode=0o700)
    os.environ["KEEP_STATE_DIR"] = str(state)
    os.environ["KEEP_ADMIN_SOCKET"] = str(base / "admin.sock")
    os.environ["KEEP_CONTROL_ALLOWED_HOSTS"] = '["testserver", "localhost"]'
    if config.getoption("keep_database") == "postgresql":
        pg = base / "pg"
        pg.mkdir()
        os.environ["KEEP_DATABASE_URL"] = start_postgres(pg)
    else:
        os.environ["KEEP_DATABASE_URL"] = f"sqlite:///{state / 'control.sqlite3'}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "control.settings"
    from django.conf import settings

    settings.DATABASES  # noqa: B018  (loads the settings; pytest-django then sets Django up)


def unconfigure() -> None:
    if "data" in _CLUSTER:
        subprocess.run(
            _as_postgres(
                [str(_pg_bin() / "pg_ctl"), "-D", str(_CLUSTER["data"]), "-m", "fast", "stop"]
            ),
            check=False,
            capture_output=True,
        )
    if "base" in _CLUSTER:
        shutil.rmtree(_CLUSTER["base"], ignore_errors=True)
