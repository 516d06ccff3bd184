"""Django's manage.py for control; `keep control <command>` and `keep doctor` run the same."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "control.settings")
    from django.core.management import execute_from_command_line

    from keep.settings import SettingsError

    try:
        execute_from_command_line(list(sys.argv if argv is None else argv))
    except SettingsError as exc:
        print(f"keep: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
