"""Receipt exports: JSON Lines of bundles that `keep verify` checks offline, each with its
inclusion proof against the latest checkpoint control verified."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

from control.console.ingest import stored_tree
from control.console.models import Checkpoint, Client, Receipt
from keep.transparency.verify import encode_hashes


def export_lines(client: Client, start: datetime, end: datetime) -> Iterator[str]:
    checkpoint = Checkpoint.objects.order_by("-size").first()
    if checkpoint is None:
        return
    tree = stored_tree()
    rows = Receipt.objects.filter(
        client=client, ended_at__gte=start, ended_at__lt=end, seq__lt=checkpoint.size
    ).order_by("seq")
    for row in rows:
        bundle = {
            "receipt": json.loads(row.body),
            "signature": row.signature,
            "index": row.seq,
            "inclusion_proof": encode_hashes(tree.inclusion_proof(row.seq, checkpoint.size)),
            "checkpoint": checkpoint.note,
        }
        yield json.dumps(bundle, separators=(",", ":")) + "\n"
