"""Poison envelopes: a rejected message with its reason, split if the envelope would not fit."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from .failure_chunks import MESSAGE_BUDGET_BYTES, encoded_size
from .storage import NEVER_EXPIRES, StorageClients

POISON_SUFFIX = "-poison"


def poison_queue_name(queue_name: str) -> str:
    return queue_name + POISON_SUFFIX


def send_to_poison(clients: StorageClients, queue_name: str, original: str, reason: str,
                   rejected_at: datetime) -> str:
    """Put a rejected message, with its reason, in <queue>-poison for good; returns that queue's name."""
    poison = poison_queue_name(queue_name)
    for envelope in poison_envelopes(original, reason, rejected_at):
        clients.send(poison, envelope, time_to_live=NEVER_EXPIRES)
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
    overhead = encoded_size(_render({**base, "rejectionId": rejection_id, "part": 999, "parts": 999, "original": ""}))
    while rest:
        pieces.append(rest[: _fitting_prefix(rest, MESSAGE_BUDGET_BYTES - overhead)])
        rest = rest[len(pieces[-1]) :]
    return [
        _render({**base, "rejectionId": rejection_id, "part": index, "parts": len(pieces), "original": piece})
        for index, piece in enumerate(pieces, start=1)
    ]


def _fitting_prefix(text: str, budget: int) -> int:
    """The longest prefix length whose JSON string encoding fits the budget (at least 1)."""
    low, high = 1, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if encoded_size(json.dumps(text[:middle])) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def _render(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"))
