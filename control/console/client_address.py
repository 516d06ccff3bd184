"""The address a console request came from, as far as it can be trusted.

keep-control serves the console on a unix socket that only NGINX's group can open, and NGINX
replaces any X-Forwarded-For a client sent with the address it saw (`$remote_addr`). So:
a request with no TCP peer (the unix socket) is known by X-Forwarded-For; a request that has
one (a development server) is known by that peer, and its X-Forwarded-For, which the client
chose, is ignored."""

from __future__ import annotations

from ipaddress import ip_address

from django.http import HttpRequest


def client_address(request: HttpRequest) -> str | None:
    """The client's address, or None when nothing trustworthy names one."""
    peer = request.META.get("REMOTE_ADDR") or ""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "") if not peer else ""
    return _address(peer or forwarded)


def _address(text: str) -> str | None:
    try:
        return str(ip_address(text.strip()))
    except ValueError:
        return None
