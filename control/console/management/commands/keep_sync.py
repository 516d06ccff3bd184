"""Push the policy and pull receipts, once or every --interval seconds (keep-control's loop)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from control.console import services


class Command(BaseCommand):
    help = "Push the access policy to the appliance and pull new receipts."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interval", type=float, default=0.0, help="repeat every N s")

    def handle(self, *args: Any, **options: Any) -> None:
        while True:
            services.perimeter_sync()
            pushed = services.policy_push()
            services.peer_handshakes_record()
            try:
                added = services.receipt_ingest()
                self.stdout.write(f"{pushed}; {added} receipt(s) added")
            except services.IngestStopped as exc:
                self.stderr.write(f"{pushed}; ingest stopped: {exc}")
            if options["interval"] <= 0:
                return
            time.sleep(options["interval"])
