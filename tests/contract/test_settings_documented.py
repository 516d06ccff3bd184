"""Every setting is documented in docs/operations.md, by its environment variable name."""

from __future__ import annotations

import re

from keep.settings import Settings
from tests.conftest import ROOT


def documented() -> set[str]:
    text = (ROOT / "docs" / "operations.md").read_text()
    return set(re.findall(r"`(KEEP_[A-Z0-9_]+)`", text))


def test_every_setting_is_documented() -> None:
    names = {f"KEEP_{name.upper()}" for name in Settings.model_fields}
    missing = names - documented()
    assert missing == set()


def test_docs_name_no_setting_that_does_not_exist() -> None:
    names = {f"KEEP_{name.upper()}" for name in Settings.model_fields} | {"KEEP_CONFIG"}
    assert documented() - names == set()


def test_every_setting_has_a_description() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name
