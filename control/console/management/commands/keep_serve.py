"""keep-control's process: the console under uvicorn on KEEP_CONTROL_SOCKET (see
control/console/console_socket.py for who may open it)."""

from __future__ import annotations

from typing import Any

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from control.console.console_socket import ConsoleSocketError, bind_console_socket


class Command(BaseCommand):
    help = "Serve the console on KEEP_CONTROL_SOCKET, for NGINX's management listener."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            sock = bind_console_socket(settings.KEEP.control_socket)
        except (ConsoleSocketError, OSError) as exc:
            raise CommandError(str(exc)) from None
        config = uvicorn.Config(
            "control.asgi:application",
            lifespan="off",  # Django's ASGI handler has no lifespan
            access_log=False,
            server_header=False,
            # The client's address is Django's to read (control.console.client_address):
            # uvicorn would take X-Forwarded-For from any peer it calls trusted.
            proxy_headers=False,
            log_level=settings.KEEP.log_level.lower(),
        )
        uvicorn.Server(config).run(sockets=[sock])
