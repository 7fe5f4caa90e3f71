"""OperatorLog: every operator action (poison replay, resubmit) with who, when, what and the result.

PartitionKey: the month (YYYY-MM, UTC), so a period is read with one range query per month. RowKey: the time
in fixed-width ISO form (UTC) and a random suffix, so rows sort by time and two actions in the same
microsecond never collide.
"""

from __future__ import annotations

import base64
import getpass
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..storage import StorageClients
from .queries import query_rows

Row = dict[str, Any]
OPERATOR_LOG_COLUMNS = {"at": 19, "operator": 30, "action": 14, "arguments": 40, "dryRun": 6, "result": 50}
MAX_RESULT_CHARS = 4000


@dataclass(frozen=True)
class OperatorAction:
    operator: str
    action: str  # "poison replay", "resubmit"
    arguments: str  # the options it was given
    dry_run: bool
    result: str
    at: datetime

    def entity(self) -> Row:
        return {"PartitionKey": self.at.strftime("%Y-%m"), "RowKey": f"{_key_time(self.at)}~{uuid.uuid4().hex[:8]}",
                "at": self.at, "operator": self.operator, "action": self.action, "arguments": self.arguments,
                "dryRun": self.dry_run, "result": self.result[:MAX_RESULT_CHARS]}


def who(explicit: str | None, clients: StorageClients | None = None) -> str:
    """The name the operator gave (--operator), else the signed-in Entra identity that storage is read with,
    else (a connection string) the local account that ran the command."""
    if explicit:
        return explicit
    try:
        token = clients.storage_token() if clients is not None else None
    except Exception:  # the command itself reports a credential that does not work
        token = None
    signed_in = identity_from_token(token) if token else None
    if signed_in:
        return f"{signed_in} (Entra ID)"
    try:
        return f"{getpass.getuser()}@{socket.gethostname()} (local account)"
    except Exception:  # no user name in this environment (getpass raises OSError or KeyError)
        return f"unknown@{socket.gethostname()} (local account)"


def identity_from_token(token: str) -> str | None:
    """Who an Entra access token was issued to: a user's sign-in name, else an app's id, else the object id.
    The token is not verified: it was just issued to this process, and the name only labels a log row."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    if not isinstance(claims, dict):
        return None
    for claim in ("upn", "preferred_username", "unique_name", "appid", "azp", "oid"):
        value = claims.get(claim)
        if isinstance(value, str) and value:
            return value if claim not in ("appid", "azp") else f"app {value}"
    return None


def record(clients: StorageClients, table: str, action: OperatorAction) -> None:
    clients.with_table(table, lambda client: client.create_entity(action.entity()))


def read(clients: StorageClients, table: str, since: datetime | None, until: datetime | None,
         now: datetime | None = None) -> Iterator[Row]:
    """Actions from since (default: 90 days ago) to until (default: now), newest first: one range query per month."""
    until = until or now or datetime.now(UTC)
    since = since or until.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=90)
    months: list[str] = []
    month = datetime(until.year, until.month, 1, tzinfo=UTC)
    while month >= datetime(since.year, since.month, 1, tzinfo=UTC):
        months.append(month.strftime("%Y-%m"))
        month = datetime(month.year - (month.month == 1), 12 if month.month == 1 else month.month - 1, 1, tzinfo=UTC)
    for partition in months:
        query = "PartitionKey eq @month and RowKey ge @since and RowKey lt @until"
        parameters = {"month": partition, "since": _key_time(since), "until": _key_time(until)}
        rows = query_rows(clients.table(table), query, **parameters)
        yield from sorted(rows, key=lambda row: row["RowKey"], reverse=True)


def _key_time(when: datetime) -> str:
    """A time as RowKeys hold it: fixed width, so that text order is time order."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
