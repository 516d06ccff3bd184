"""GET /v1/receipts?session_id=, /v1/receipts/consistency, /v1/receipts/checkpoint.

A client fetches the receipt of a session it ran (the same peer), with its inclusion proof
and the latest checkpoint, and later a consistency proof between two checkpoints, so it can
check offline that the log was only ever appended to.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from appliance.errors import InvalidRequest, NotFound
from appliance.state import Caller, JournalDep
from transparency.verify import encode_hashes

router = APIRouter()


class ReceiptNotFound(NotFound):
    code = "receipt_not_found"


@router.get("/v1/receipts")
async def get_receipt(
    principal: Caller,
    journal: JournalDep,
    session_id: Annotated[str, Query(min_length=1, max_length=128)],
) -> dict[str, Any]:
    seq = journal.seq_of(session_id)
    if seq is None or journal.entry(seq).receipt["peer_id"] != principal.peer_id:
        raise ReceiptNotFound(
            "no receipt for this session; a receipt is issued when the session ends"
        )
    return journal.bundle(seq)


@router.get("/v1/receipts/checkpoint")
async def get_checkpoint(principal: Caller, journal: JournalDep) -> dict[str, Any]:
    size, note = journal.checkpoint()
    return {"size": size, "checkpoint": note, "verifier_key": journal.verifier.encode()}


@router.get("/v1/receipts/consistency")
async def get_consistency(
    principal: Caller,
    journal: JournalDep,
    old: Annotated[int, Query(alias="from", ge=0)],
    new: Annotated[int, Query(alias="to", ge=0)],
) -> dict[str, Any]:
    try:
        proof = journal.consistency(old, new)
    except ValueError:
        raise InvalidRequest(
            "from and to must satisfy 0 <= from <= to <= the log's size", param="to"
        ) from None
    return {"from": proof.old_size, "to": proof.size, "proof": encode_hashes(proof.proof)}
