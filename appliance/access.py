"""Who may call: the API keys in force and the peer each one is bound to.

The settings' own keys are always in force. A policy from control adds its keys and their
peer bindings, and replaces the previous policy's whole: a key it leaves out is revoked.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from appliance.auth import Grant, KeyRing, Principal, authenticate
from appliance.errors import Forbidden
from appliance.policy import Policy

PEER_HEADER = "x-keep-peer"
PRINCIPAL_SCOPE_KEY = "keep.principal"  # where the authenticating middleware leaves it


class Access:
    def __init__(self, static_grants: Mapping[str, Grant]) -> None:
        self._static = dict(static_grants)
        self.keys = KeyRing(self._static)
        self.policy: Policy | None = None
        self.started_at = time.time()
        self.pushed_at: float | None = None  # when control last pushed a policy (any version)
        self._peer_addresses: dict[str, str] = {}  # peer id -> tunnel address

    def install(self, policy: Policy) -> None:
        """Put a checked policy in force."""
        self.keys = KeyRing({**self._static, **policy.grants()})
        self.policy = policy
        self._peer_addresses = {p.id: p.address for p in policy.peers}

    def pushed(self) -> None:
        """Control pushed a policy, new or the one in force: it can still reach us."""
        self.pushed_at = time.time()

    def silence_s(self) -> float:
        """Seconds without a push from control (since start-up, before the first)."""
        return time.time() - (self.pushed_at or self.started_at)

    def principal(self, headers: Mapping[str, str], *, behind_nginx: bool) -> Principal:
        """The principal a request's headers authenticate, or 401. Headers alone: the
        caller is known before its body is read or its route is looked up.

        Behind NGINX (the API on a unix socket) a key is also bound to its peer: NGINX names
        the tunnel address the request came from, and a key used from another peer's address
        gets 403, which NGINX turns into silence. The header is trusted only on the unix
        socket, which NGINX alone can reach."""
        principal = authenticate(self.keys, headers.get("authorization"))
        if behind_nginx and self._peer_addresses:
            bound = self._peer_addresses.get(principal.peer_id)
            if bound is not None and headers.get(PEER_HEADER) != bound:
                raise Forbidden("this key belongs to another peer")
        return principal
