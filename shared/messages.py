"""The status request message: parse what upstream jobs send, and encode what we requeue."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from .ids import InvalidIdError, normalize_guid, parse_location

STATE_KEY = "_batchwatch"
MAX_SOURCE_LENGTH = 256
MAX_STATUS_LENGTH = 64
MAX_RESULT_LENGTH = 1024
_TOKEN = re.compile(r"[0-9a-f]{1,64}")  # chain tokens are uuid4().hex
_ETAG = re.compile(r"[\x20-\x7e]{1,256}")  # sent in If-Match: printable ASCII, no CR or LF
_BASE64 = re.compile(r"[A-Za-z0-9+/\r\n]+={0,2}")  # encoders may wrap lines, never add spaces


class BadMessageError(ValueError):
    """A message that can never be processed; the reason goes into the poison envelope."""


@dataclass(frozen=True)
class ChainState:
    """Requeue state that travels in the message; upstream jobs never set it.

    token identifies the message the batch row expects next; etag is the row's etag after the predecessor's
    last write, so the holder can move the chain on without reading the row first (a stale etag only costs
    a read: the write is refused and the row decides).
    watch, when set, makes this message a watchdog over a chain whose token it holds.
    """

    token: str
    first_seen_at: datetime
    poll_count: int = 0  # polls of this run so far
    errors: int = 0
    auth_failures: int = 0
    too_large: int = 0
    etag: str | None = None
    watch: str | None = None
    last_status: str | None = None  # the previous poll's answer, written to the row when the next poll starts
    last_result: str | None = None

    @property
    def run_started_at(self) -> str:
        """Names this run of the batch (first seen, or resubmitted) in its alert ids."""
        return self.first_seen_at.astimezone(UTC).isoformat(timespec="milliseconds")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "v": 1,
            "token": self.token,
            "firstSeenAt": self.first_seen_at.isoformat(),
            "pollCount": self.poll_count,
            "errors": self.errors,
            "authFailures": self.auth_failures,
        }
        if self.too_large:
            data["tooLarge"] = self.too_large
        if self.last_status:
            data["lastStatus"] = self.last_status
        if self.last_result:
            data["lastResult"] = self.last_result
        if self.etag:
            data["etag"] = self.etag
        if self.watch:
            data["watch"] = self.watch
        return data

    @classmethod
    def from_json(cls, data: Any) -> ChainState:
        if not isinstance(data, dict) or data.get("v") != 1:
            raise BadMessageError(f"'{STATE_KEY}' is not batchwatch requeue state (version 1)")
        try:
            first_seen = _first_seen(data["firstSeenAt"])
            state = cls(
                token=_token(data["token"], "token"),
                first_seen_at=first_seen,
                # "attempt": its name in messages queued by earlier versions
                poll_count=_count(data.get("pollCount", data.get("attempt", 0)), "pollCount"),
                errors=_count(data.get("errors", 0), "errors"),
                auth_failures=_count(data.get("authFailures", 0), "authFailures"),
                too_large=_count(data.get("tooLarge", 0), "tooLarge"),
                etag=_etag(data.get("etag")),
                watch=None if data.get("watch") is None else _token(data["watch"], "watch"),
                last_status=_optional_text(data.get("lastStatus"), "lastStatus", MAX_STATUS_LENGTH),
                last_result=_optional_text(data.get("lastResult"), "lastResult", MAX_RESULT_LENGTH),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, BadMessageError):
                raise
            raise BadMessageError(f"'{STATE_KEY}' requeue state is malformed: {exc}") from exc
        return state


# firstSeenAt is written into the batch row as Edm.DateTime, which holds 1601..9999, and the deadline counts
# from it: a time in the future would keep a batch polling for ever.
EARLIEST_FIRST_SEEN = datetime(1601, 1, 2, tzinfo=UTC)
FUTURE_SLACK = timedelta(hours=1)


def _first_seen(value: Any) -> datetime:
    first_seen = datetime.fromisoformat(value)
    if first_seen.tzinfo is None:
        raise ValueError("firstSeenAt has no time zone")
    try:
        first_seen = first_seen.astimezone(UTC)
    except OverflowError:  # at the edges of the calendar
        raise ValueError("firstSeenAt is outside the calendar once in UTC") from None
    if first_seen < EARLIEST_FIRST_SEEN:
        raise ValueError("firstSeenAt is before 1601")
    return first_seen


@dataclass(frozen=True)
class StatusRequest:
    customer_id: str
    batch_tracking_id: str
    correlation_id: str | None = None
    source: str | None = None
    state: ChainState | None = None

    def with_state(self, state: ChainState | None) -> StatusRequest:
        return replace(self, state=state)

    def to_message(self) -> str:
        body: dict[str, Any] = {"customerId": self.customer_id, "batchTrackingId": self.batch_tracking_id}
        if self.correlation_id:
            body["correlationId"] = self.correlation_id
        if self.source:
            body["source"] = self.source
        if self.state:
            body[STATE_KEY] = self.state.to_json()
        return json.dumps(body, separators=(",", ":"), ensure_ascii=True)


def decode_message_text(body: bytes) -> str:
    """The message text: raw UTF-8 JSON, or base64 of it (the Functions default encoding)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessageError(f"message is not UTF-8 text: {exc}") from exc
    stripped = text.strip()
    if not stripped:
        raise BadMessageError("message is empty")
    if stripped.startswith("{") or not _BASE64.fullmatch(stripped):
        return text
    try:
        decoded = base64.b64decode("".join(stripped.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadMessageError("message is neither JSON nor valid base64") from exc
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessageError("message is not JSON, and as base64 it decodes to bytes that are not UTF-8 text") from exc


def parse_status_request(body: bytes, now: datetime | None = None) -> StatusRequest:
    """The request in a status message; BadMessageError says why a message can never be processed.

    now: the clock, to refuse requeue state whose firstSeenAt lies in the future (the deadline counts from it).
    """
    text = decode_message_text(body)
    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except BadMessageError:
        raise
    except (ValueError, RecursionError) as exc:
        raise BadMessageError(f"message is not JSON: {str(exc)[:200]}") from exc
    if not isinstance(document, dict):
        raise BadMessageError(f"message is a JSON {type(document).__name__}, not an object")
    try:
        customer_id, tracking_id = _ids(document)
    except InvalidIdError as exc:
        raise BadMessageError(str(exc)) from exc
    correlation_id = document.get("correlationId")
    if correlation_id is not None:
        try:
            correlation_id = normalize_guid(correlation_id, "correlationId")
        except InvalidIdError as exc:
            raise BadMessageError(str(exc)) from exc
    source = _optional_text(document.get("source"), "source", MAX_SOURCE_LENGTH)
    state = ChainState.from_json(document[STATE_KEY]) if STATE_KEY in document else None
    if state is not None and now is not None and state.first_seen_at > now + FUTURE_SLACK:
        raise BadMessageError(f"'{STATE_KEY}' requeue state says the batch was first seen in the future "
                              f"({state.first_seen_at.isoformat()})")
    return StatusRequest(customer_id, tracking_id, correlation_id, source or None, state)


def _ids(document: dict[str, Any]) -> tuple[str, str]:
    has_ids = "customerId" in document or "batchTrackingId" in document
    if "location" in document:
        customer_id, tracking_id = parse_location(document["location"])
        if has_ids:
            given = (
                normalize_guid(document.get("customerId"), "customerId"),
                normalize_guid(document.get("batchTrackingId"), "batchTrackingId"),
            )
            if given != (customer_id, tracking_id):
                raise InvalidIdError("location and customerId/batchTrackingId name different batches")
        return customer_id, tracking_id
    if not has_ids:
        raise InvalidIdError("message has neither customerId and batchTrackingId nor location")
    return (
        normalize_guid(document.get("customerId"), "customerId"),
        normalize_guid(document.get("batchTrackingId"), "batchTrackingId"),
    )


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadMessageError(f"message has the key {key[:64]!r} more than once")
        result[key] = value
    return result


def _optional_text(value: Any, field: str, limit: int) -> str | None:
    if value is None:
        return None
    return _bounded_text(value, field, limit)


def _bounded_text(value: Any, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise BadMessageError(f"{field} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise BadMessageError(f"{field} is {len(value)} characters long; at most {limit} are allowed")
    return value


def _token(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise BadMessageError(f"{field} must be a chain token of lowercase hex digits")
    return value


def _etag(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _ETAG.fullmatch(value):
        raise BadMessageError("etag must be printable ASCII of at most 256 characters")
    return value


def _count(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 10**9:
        raise BadMessageError(f"{field} must be a small non-negative integer")
    return value
