"""The access policy control pushes over the admin socket: which keys are valid, for which
peer and client, with which quotas, and which model versions may be served.

Invariants:
- A policy is applied whole or not at all: a bad one is rejected with the reason and the
  last good policy stays in force.
- Versions only go up. An older version is refused, so a replayed policy cannot bring back a
  revoked key; the same version is accepted again only with the same content.
- The applied policy is kept in the state directory (key digests only, no keys), so a restart
  while control is down comes back with the last good policy.
"""

from __future__ import annotations

import hashlib
import json
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import durable
from appliance.auth import Grant
from inference.registry import PinnedModel

POLICY_FILE = "policy.json"
_ID = r"^[A-Za-z0-9._:-]{1,64}$"
_SHA256 = r"^[0-9a-f]{64}$"
Count = Annotated[int, Field(ge=0, le=10**15)]


class PolicyError(ValueError):
    """The policy is refused whole; the message says why, without echoing key material."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyGrant(_Strict):
    sha256: Annotated[str, Field(pattern=_SHA256)]
    peer_id: Annotated[str, Field(pattern=_ID)]
    client_id: Annotated[str, Field(pattern=_ID)]
    expires_at: Annotated[int, Field(ge=0)] | None = None


class Peer(_Strict):
    id: Annotated[str, Field(pattern=_ID)]
    address: str

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return str(ip_address(value))


class Quota(_Strict):
    client_id: Annotated[str, Field(pattern=_ID)]
    requests_per_day: Count | None = None
    tokens_per_day: Count | None = None
    requests_per_month: Count | None = None
    tokens_per_month: Count | None = None
    # The client's class in the waiting line for KV sequences (KEEP_PRIORITY_CLASSES).
    priority: Annotated[int, Field(ge=0, le=15)] | None = None
    # Rates (appliance.ratelimit) and requests in flight; unset: the settings' defaults.
    requests_per_second: Annotated[float, Field(ge=0, le=100_000)] | None = None
    request_burst: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    tokens_per_minute: Count | None = None
    max_in_flight: Annotated[int, Field(ge=1, le=4096)] | None = None


class ModelVersion(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    sha256: Annotated[str, Field(pattern=_SHA256)]


class Policy(_Strict):
    version: Annotated[int, Field(ge=1)]
    keys: Annotated[tuple[KeyGrant, ...], Field(max_length=100_000)] = ()
    peers: Annotated[tuple[Peer, ...], Field(max_length=100_000)] = ()
    quotas: Annotated[tuple[Quota, ...], Field(max_length=100_000)] = ()
    models: Annotated[tuple[ModelVersion, ...], Field(max_length=1000)] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        peers = {p.id for p in self.peers}
        if len(peers) != len(self.peers):
            raise ValueError("peer ids must be unique")
        addresses = [p.address for p in self.peers]
        if len(set(addresses)) != len(addresses):
            raise ValueError("two peers share a tunnel address")
        if len({k.sha256 for k in self.keys}) != len(self.keys):
            raise ValueError("a key digest appears twice")
        if any(k.peer_id not in peers for k in self.keys):
            raise ValueError("a key is bound to a peer the policy does not list")
        if len({q.client_id for q in self.quotas}) != len(self.quotas):
            raise ValueError("a client has two quotas")
        return self

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def grants(self) -> dict[str, Grant]:
        return {
            k.sha256: Grant(
                peer_id=k.peer_id,
                client_id=k.client_id,
                expires_at=None if k.expires_at is None else float(k.expires_at),
            )
            for k in self.keys
        }


def parse(raw: bytes) -> Policy:
    try:
        return Policy.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "policy"
        raise PolicyError(f"{where}: {first['msg']}") from None


def check_transition(current: Policy | None, new: Policy, model: PinnedModel) -> None:
    """Refuse a policy that would roll back, or that does not pin the model being served."""
    if current is not None:
        if new.version < current.version:
            raise PolicyError(f"version {new.version} is older than {current.version} in force")
        if new.version == current.version and new.digest() != current.digest():
            raise PolicyError("a different policy with the version in force")
    if new.models:
        same_name = [m for m in new.models if m.name == model.name]
        if not any(m.sha256 == model.sha256 for m in same_name):
            raise PolicyError(
                "the policy does not pin the served model's name and sha256; "
                "restart the appliance with the pinned model first"
            )


def save(state_dir: Path, policy: Policy) -> None:
    """Atomically replace the kept policy: write, fsync, rename, fsync the directory."""
    data = json.dumps(policy.model_dump(mode="json"), sort_keys=True).encode()
    durable.replace(state_dir / POLICY_FILE, data)


def load(state_dir: Path) -> Policy | None:
    path = state_dir / POLICY_FILE
    if not path.exists():
        return None
    return parse(path.read_bytes())
