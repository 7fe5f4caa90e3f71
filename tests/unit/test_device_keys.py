import re

from shared.device_keys import (
    MAX_READABLE,
    device_row_keys,
    escape_key,
    history_partition_key,
    serial_partition_key,
)
from shared.models import DeviceStatus

FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
AWKWARD = ["", "SN/1", "SN\\1", "SN#1", "SN?1", "SN 1", "sn1", "SN1", "Ünïcödé-序列", "tab\there", "nl\n", "\x7f\x9f",
           "!41", "A", "~", "a~b", "%2F", "\ud800", "x" * 5000, "x" * 5001, "y" * 159, "😀" * 300]


def _device(serial: str | None, product_key: str | None = None, device_id: str | None = None) -> DeviceStatus:
    return DeviceStatus(serial, product_key, device_id, "finished", None, None)


def test_escaped_keys_are_valid_bounded_and_distinct() -> None:
    keys = [escape_key(value) for value in AWKWARD]
    assert len(set(keys)) == len(AWKWARD)
    for key in keys:
        assert not FORBIDDEN.search(key)
        assert len(key) <= MAX_READABLE
        assert "~" not in key


def test_ordinary_serials_stay_readable() -> None:
    assert escape_key("PF3ABC12-x_y.z") == "PF3ABC12-x_y.z"
    assert escape_key("SN/1") == "SN!2F1"


def test_duplicates_in_one_batch_get_distinct_row_keys() -> None:
    devices = [_device("A"), _device("A"), _device("A", "PK"), _device(None, "PK"), _device(None), _device(None)]
    keys = list(device_row_keys(devices))
    assert len(set(keys)) == len(keys)
    assert keys[0] == "A~~" and keys[1] == "A~~~2"


def test_history_partition_uses_serial_then_product_key_then_device_id() -> None:
    assert history_partition_key(_device("SN/1", "PK")) == serial_partition_key("SN/1") == "sn~SN!2F1"
    assert history_partition_key(_device(None, "PK-1")) == "pk~PK-1"
    assert history_partition_key(_device(None, None, "id-1")) == "id~id-1"
    assert history_partition_key(_device("PK-1")) != history_partition_key(_device(None, "PK-1"))
