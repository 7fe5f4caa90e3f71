"""Poison envelopes: a rejected message with its reason, split if the envelope would not fit."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .failure_chunks import MESSAGE_BUDGET_BYTES, encoded_size, fitting_prefix
from .storage import NEVER_EXPIRES
from .telemetry import POISONED

if TYPE_CHECKING:
    from .ports import Queues

POISON_SUFFIX = "-poison"


def poison_queue_name(queue_name: str) -> str:
    return queue_name + POISON_SUFFIX


def send_to_poison(queues: Queues, queue_name: str, original: str, reason: str, rejected_at: datetime) -> str:
    """Put a rejected message, with its reason, in <queue>-poison for good; returns that queue's name."""
    poison = poison_queue_name(queue_name)
    for envelope in poison_envelopes(original, reason, rejected_at):
        queues.send(poison, envelope, time_to_live=NEVER_EXPIRES)
    POISONED.add(1, {"queue": poison})
    return poison


def poison_envelopes(original: str, reason: str, rejected_at: datetime) -> list[str]:
    """One envelope, or several (part/parts/rejectionId) when the original is too large for one."""
    base: dict[str, Any] = {"reason": reason[:2048], "rejectedAt": rejected_at.isoformat()}
    whole = _render({**base, "original": original})
    if encoded_size(whole) <= MESSAGE_BUDGET_BYTES:
        return [whole]
    rejection_id = str(uuid.uuid4())
    pieces: list[str] = []
    rest = original
    widest = {**base, "rejectionId": rejection_id, "part": 999_999, "parts": 999_999, "original": ""}
    overhead = encoded_size(_render(widest))
    while rest:
        pieces.append(rest[: fitting_prefix(rest, MESSAGE_BUDGET_BYTES - overhead)])
        rest = rest[len(pieces[-1]) :]
    return [
        _render({**base, "rejectionId": rejection_id, "part": index, "parts": len(pieces), "original": piece})
        for index, piece in enumerate(pieces, start=1)
    ]


def _render(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"))


def read_envelope(content: str) -> dict[str, Any] | None:
    """The envelope batchwatch wrote, or None for anything else (a message the Functions host moved as it was)."""
    try:
        document = json.loads(content)
    except ValueError:
        return None
    if isinstance(document, dict) and "reason" in document and isinstance(document.get("original"), str):
        return document
    return None
