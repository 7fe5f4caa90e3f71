"""Make an entity fit Table Storage, whatever Partner Center sent: store what fits, never fail the write.

The limits (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model):
a string holds 64 KiB of UTF-16 (32K code units), a Python int is sent as Edm.Int32, a property name has at
most 255 characters, an entity at most 252 properties of ours and 1 MiB in all, an entity group transaction
at most 100 entities and 4 MiB.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from azure.data.tables import EdmType, EntityProperty

MAX_STRING_UNITS = 32_000  # UTF-16 code units; the service allows 32,768
MAX_PROPERTY_NAME = 255
MAX_OWN_PROPERTIES = 240  # 252 are allowed besides PartitionKey, RowKey and Timestamp; a margin for markers
ENTITY_BUDGET_BYTES = 900 * 1024  # of the 1 MiB an entity may hold, as the service counts it
TRANSACTION_BUDGET_BYTES = 3 * 1024 * 1024  # of the 4 MiB a transaction body may hold, as JSON
TRANSACTION_LIMIT = 100
SHORTEST_CUT = 1024  # a string cut to fit the entity keeps at least this many code units
TRUNCATED_MARKER = "truncatedFields"  # names of the properties cut short, comma-separated
FOLDED_PROPERTY = "extraFields"  # JSON of the fields that could not be properties of their own
EARLIEST_TIME = datetime(1601, 1, 1, tzinfo=UTC)
_INT32 = range(-(2**31), 2**31)
_INT64 = range(-(2**63), 2**63)


def fit_entity(entity: Mapping[str, Any], foldable: Iterable[str] = ()) -> dict[str, Any]:
    """The entity with every value storable; properties named in foldable may move into extraFields.

    Keys (PartitionKey, RowKey) are left as they are: they are derived to fit (device_keys).
    """
    fitted: dict[str, Any] = {}
    folded: dict[str, Any] = {}
    truncated: list[str] = []
    foldable = set(foldable)
    for name, value in entity.items():
        if name in foldable and (len(name) > MAX_PROPERTY_NAME or len(fitted) >= MAX_OWN_PROPERTIES
                                 or name in (FOLDED_PROPERTY, TRUNCATED_MARKER)):
            folded[name] = value
            continue
        fitted[name], was_cut = storable_value(value)
        if was_cut:
            truncated.append(name)
    if folded:
        share = max(256, MAX_STRING_UNITS // (4 * len(folded)))  # each value cut first, so the JSON stays whole
        for name, value in folded.items():
            if isinstance(value, str) and utf16_units(value) > share:
                folded[name] = cut_utf16(value, share)
                truncated.append(f"{FOLDED_PROPERTY}.{name[:64]}")
        fitted[FOLDED_PROPERTY], was_cut = storable_value(json.dumps(folded, ensure_ascii=False, default=str))
        if was_cut:
            truncated.append(FOLDED_PROPERTY)
    _shrink_to_budget(fitted, truncated)
    if truncated:
        fitted[TRUNCATED_MARKER] = ",".join(dict.fromkeys(truncated))[:MAX_STRING_UNITS // 2]
    return fitted


def storable_value(value: Any) -> tuple[Any, bool]:
    """(the value as Table Storage can hold it, whether text was cut)."""
    if isinstance(value, datetime):  # Edm.DateTime holds 1601..9999 (UTC); outside it the value is absent
        return (value, False) if _storable_time(value) else (None, False)
    if isinstance(value, bool) or value is None:
        return value, False
    if isinstance(value, int):
        if value in _INT32:
            return value, False
        if value in _INT64:
            return EntityProperty(value, EdmType.INT64), False
        return str(value), False
    if isinstance(value, float):
        return (value, False) if math.isfinite(value) else (str(value), False)
    if isinstance(value, str):
        cut = cut_utf16(value, MAX_STRING_UNITS)
        return cut, len(cut) != len(value)
    return value, False


def _storable_time(value: datetime) -> bool:
    try:
        in_utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except OverflowError:
        return False
    return in_utc >= EARLIEST_TIME


def utf16_units(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-16-le", "surrogatepass")) // 2


def cut_utf16(text: str, units: int) -> str:
    """The longest prefix of at most units UTF-16 code units (a character outside the BMP takes two)."""
    if len(text) <= units // 2 or utf16_units(text) <= units:
        return text
    head = text.encode("utf-16-le", "surrogatepass")[: 2 * units]
    if 0xD800 <= int.from_bytes(head[-2:], "little") <= 0xDBFF:  # never keep half of a surrogate pair
        head = head[:-2]
    return head.decode("utf-16-le", "surrogatepass")


def entity_size(entity: Mapping[str, Any]) -> int:
    """The size the service counts for an entity, near enough: names and strings as UTF-16, 8 per number."""
    size = 4
    for name, value in entity.items():
        size += 8 + 2 * len(name)
        if isinstance(value, EntityProperty):
            value = value.value
        size += 4 + 2 * utf16_units(value) if isinstance(value, str) else 8
    return size


def transaction_groups(entities: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Entities in groups of at most 100 whose JSON stays well under the 4 MiB transaction limit."""
    group: list[dict[str, Any]] = []
    size = 0
    for entity in entities:
        entity_bytes = len(json.dumps(entity, default=str).encode("utf-8", "surrogatepass")) + 512
        if group and (len(group) >= TRANSACTION_LIMIT or size + entity_bytes > TRANSACTION_BUDGET_BYTES):
            yield group
            group, size = [], 0
        group.append(entity)
        size += entity_bytes
    if group:
        yield group


def _shrink_to_budget(entity: dict[str, Any], truncated: list[str]) -> None:
    """Halve the longest strings until the entity fits its 1 MiB (keys and short fields stay whole)."""
    excess = entity_size(entity) - ENTITY_BUDGET_BYTES
    while excess > 0:
        longest = max((name for name, value in entity.items()
                       if isinstance(value, str) and name not in ("PartitionKey", "RowKey")),
                      key=lambda name: len(entity[name]), default=None)
        if longest is None or len(entity[longest]) <= SHORTEST_CUT:
            return  # nothing left to cut: the count of properties is bounded, so this does not happen
        before = utf16_units(entity[longest])
        entity[longest] = cut_utf16(entity[longest], max(SHORTEST_CUT, before // 2))
        excess -= 2 * (before - utf16_units(entity[longest]))
        truncated.append(longest)


def column(field_name: str) -> str:
    """The table property that holds a dataclass field: first_seen_at -> firstSeenAt. The one rule that ties the
    Python names of the typed rows (BatchRow, BatchRowChange, AlertAttempt) to the contract's property names."""
    head, *rest = field_name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def set_columns(row: Any) -> dict[str, Any]:
    """A dataclass row's fields that are set (not None), by their property names."""
    return {column(f.name): getattr(row, f.name) for f in dataclasses.fields(row) if getattr(row, f.name) is not None}
