"""Modules stay small: past about 400 lines a module usually holds two ideas. One that is
longer must say, in its docstring, why it is one idea ("One idea: ...")."""

from __future__ import annotations

import ast
import subprocess

from tests.conftest import ROOT

LIMIT = 400


def python_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # Django writes the migrations; nobody reads them as modules.
    return [path for path in listed if "/migrations/" not in path and (ROOT / path).exists()]


def test_the_scan_sees_the_whole_tree() -> None:
    files = python_files()
    assert "keep/cli.py" in files
    assert "tests/contract/test_module_size.py" in files
    assert len(files) > 100


def test_no_module_is_over_400_lines_without_saying_why() -> None:
    long = []
    for path in python_files():
        text = (ROOT / path).read_text(encoding="utf-8")
        if text.count("\n") <= LIMIT:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if "One idea:" not in docstring:
            long.append(f"{path}: {text.count(chr(10))} lines")
    assert long == []
