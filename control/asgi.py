"""ASGI entry point: keep-control serves the console with uvicorn on a unix socket."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "control.settings")
application = get_asgi_application()
