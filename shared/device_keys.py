"""Table keys derived from device identities.

Table Storage forbids / \\ # ? and control characters in keys, and Azurite caps a key at 512
characters. escape_key() keeps letters, digits, '-', '_' and '.' and writes every other character
as '!' followed by the hex of its UTF-8 bytes, so it is injective and readable for ordinary serials.
An escaped value longer than MAX_READABLE is cut and followed by '!!' and a SHA-256 of the whole
value; '!!' never occurs in a short escaped value, so the two forms cannot collide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from .models import DeviceStatus
from .occurrences import numbered

MAX_READABLE = 160  # three of them plus separators stay under the 512-character key limit
_KEEP = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
_SEPARATOR = "~"  # never produced by escape_key


def escape_key(value: str) -> str:
    escaped = "".join(
        char if char in _KEEP else "".join(f"!{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        for char in value
    )
    if len(escaped) <= MAX_READABLE:
        return escaped
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    head = escaped[: MAX_READABLE - 2 - len(digest)]
    partial_escape = head.find("!", len(head) - 2)
    if partial_escape != -1:
        head = head[:partial_escape]
    return head + "!!" + digest


def history_partition_key(device: DeviceStatus) -> str:
    """DeviceUploadHistory PartitionKey: the serial number, else the product key, else the device id."""
    if device.serial_number:
        return "sn" + _SEPARATOR + escape_key(device.serial_number)
    if device.product_key:
        return "pk" + _SEPARATOR + escape_key(device.product_key)
    if device.device_id:
        return "id" + _SEPARATOR + escape_key(device.device_id)
    return "none"


def serial_partition_key(serial_number: str) -> str:
    return "sn" + _SEPARATOR + escape_key(serial_number)


def product_key_partition_key(product_key: str) -> str:
    return "pk" + _SEPARATOR + escape_key(product_key)


def device_identity_key(device: DeviceStatus) -> str:
    """serial~productKey~deviceId, each escaped (an absent value is empty)."""
    parts = (device.serial_number or "", device.product_key or "", device.device_id or "")
    return _SEPARATOR.join(escape_key(part) for part in parts)


def device_row_keys(devices: Iterable[DeviceStatus]) -> Iterator[str]:
    """A RowKey per device, unique within the batch.

    The same device can appear twice in one upload (Partner Center answers ZtdDeviceDuplicated for
    the copies), so the n-th repeat of an identity gets a ~n suffix. The order is the response's,
    which is stable for a final batch.
    """
    for identity, count in numbered(device_identity_key(device) for device in devices):
        yield identity if count == 1 else f"{identity}{_SEPARATOR}{count}"
