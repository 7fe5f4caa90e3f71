"""Partner Center identifiers: GUID validation and parsing of the upload's Location header."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

# Matched with fullmatch everywhere: "$" would also match before a final newline.
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_LOCATION_PATH = re.compile(
    r"/*(?:v1/+)?customers/+(?P<customer>[^/]+)/+batchJobStatus/+(?P<tracking>[^/]+)/*",
    re.IGNORECASE,
)
MAX_LOCATION_LENGTH = 2048


class InvalidIdError(ValueError):
    """An identifier that is not what Partner Center issues."""


def normalize_guid(value: object, field: str) -> str:
    """Return the GUID in lowercase, or raise InvalidIdError naming the field."""
    if not isinstance(value, str):
        raise InvalidIdError(f"{field} must be a GUID string, got {type(value).__name__}")
    if not _GUID.fullmatch(value):
        raise InvalidIdError(f"{field} is not a GUID: {_preview(value)}")
    return value.lower()


def parse_location(location: object) -> tuple[str, str]:
    """(customerId, batchTrackingId) from a Location header, relative or absolute, with or without /v1."""
    if not isinstance(location, str):
        raise InvalidIdError(f"location must be a string, got {type(location).__name__}")
    if len(location) > MAX_LOCATION_LENGTH:
        raise InvalidIdError(f"location is longer than {MAX_LOCATION_LENGTH} characters")
    text = location.strip()
    path = urlsplit(text).path if "://" in text else text.split("?", 1)[0]
    match = _LOCATION_PATH.fullmatch(path)
    if not match:
        raise InvalidIdError(
            "location is not of the form /customers/{customer-id}/batchJobStatus/{batchtracking-id}: "
            + _preview(location)
        )
    customer = normalize_guid(unquote(match["customer"]), "customerId in location")
    tracking = normalize_guid(unquote(match["tracking"]), "batchTrackingId in location")
    return customer, tracking


def _preview(value: str, limit: int = 80) -> str:
    text = value if len(value) <= limit else value[:limit] + f"... ({len(value)} characters)"
    return repr(text)
