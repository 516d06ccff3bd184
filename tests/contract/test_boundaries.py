"""The planes stay separate: checked statically by import-linter and at run time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

FORBIDDEN_IN_DATA_PLANE = ("control", "provisioning", "django", "pyroute2", "keep.cli")


# llama-cpp-python imports diskcache, whose package __init__ loads its optional Django cache
# adapter whenever Django is installed (control shares the venv). That is a third-party
# import, not one of Keep's: the probe blocks that one adapter, so any Django module still
# loaded would have been imported by Keep's data plane itself.
BLOCK_THIRD_PARTY_ADAPTER = "sys.modules['diskcache.djangocache'] = None\n"


def loaded_modules(*imports: str) -> set[str]:
    code = "import json, sys\n" + BLOCK_THIRD_PARTY_ADAPTER
    code += "".join(f"import {m}\n" for m in imports)
    code += "print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(json.loads(out.stdout))


def test_data_plane_loads_nothing_of_the_management_plane() -> None:
    modules = loaded_modules("appliance.app", "inference.engine", "rag")
    leaked = {
        m for m in modules for f in FORBIDDEN_IN_DATA_PLANE if m == f or m.startswith(f + ".")
    }
    assert leaked == set()
    assert "appliance.app" in modules  # the probe really imported the data plane
    assert "diskcache" in modules  # and the adapter it blocks is the only one in the way


def test_inference_loads_nothing_else_of_keep() -> None:
    modules = loaded_modules("inference.engine", "inference.grammar")
    assert not {m for m in modules if m.split(".")[0] in {"appliance", "keep", "rag"}}


def test_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint), "--no-cache"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
