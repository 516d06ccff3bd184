"""Report drift between control's database and the host: WireGuard's peers, NGINX's
allowlist and the appliance's policy. Exit status 1 when anything differs."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from control.console.selectors import perimeter_drift


class Command(BaseCommand):
    help = "Report drift between the database, WireGuard, NGINX and the appliance's policy."

    def handle(self, *args: Any, **options: Any) -> None:
        problems = perimeter_drift()
        for line in problems:
            self.stdout.write(line)
        if problems:
            raise CommandError(f"{len(problems)} difference(s) from the database")
        self.stdout.write("in step: WireGuard, NGINX and the policy match the database")
