"""Control's writes, one function per `<entity>_<action>`, keyword-only and atomic. The
admin console, the signals, the management commands and the network lab call these and
selectors.py, never the models' managers for a write."""

from control.console.services.alerts import alert_acknowledge, alert_create
from control.console.services.api_keys import api_key_issue, api_key_revoke
from control.console.services.bundles import api_key_rotate, bundle_issue
from control.console.services.clients import client_create
from control.console.services.model_pins import (
    model_pin_create,
    model_pin_delete,
    model_pin_update,
)
from control.console.services.operators import login_failure_record, operator_ensure
from control.console.services.peers import (
    address_allocate,
    peer_create,
    peer_handshakes_record,
    peer_public_key_rotate,
    peer_revoke,
)
from control.console.services.policy_pushes import (
    perimeter_sync,
    policy_push,
    policy_push_on_commit,
)
from control.console.services.receipts import IngestStopped, receipt_ingest

__all__ = [
    "IngestStopped",
    "address_allocate",
    "alert_acknowledge",
    "alert_create",
    "api_key_issue",
    "api_key_revoke",
    "api_key_rotate",
    "bundle_issue",
    "client_create",
    "login_failure_record",
    "model_pin_create",
    "model_pin_delete",
    "model_pin_update",
    "operator_ensure",
    "peer_create",
    "peer_handshakes_record",
    "peer_public_key_rotate",
    "peer_revoke",
    "perimeter_sync",
    "policy_push",
    "policy_push_on_commit",
    "receipt_ingest",
]
