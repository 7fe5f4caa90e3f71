import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.models import DeviceStatus
from shared.status_parser import MalformedStatusError, parse_batch_status, parse_time

DOC_EXAMPLE = b"""{
    "batchTrackingId": "0127ed8e-ff72-4983-a3d8-e8d8bd378932",
    "status": "finished",
    "startedTime": "2017-07-25T10:00:00",
    "completedTime": "2017-07-25T10:10:00",
    "devicesStatus": [{
            "serialNumber": "1234567890",
            "productKey": "12345-67890-09876-54321-13579",
            "status": "finished_with_errors",
            "errorCode": "808",
            "errorDescription": "ZtdDeviceAssignedToOtherTenant",
            "attributes": {"objectType": "DeviceUploadDetails"}
        }],
    "attributes": {"objectType": "BatchUploadDetails"}
}"""


def test_documented_example_is_final_with_one_failed_device() -> None:
    batch = parse_batch_status(DOC_EXAMPLE)
    assert batch.is_final and batch.status == "finished"
    assert batch.started_time == datetime(2017, 7, 25, 10, 0, tzinfo=UTC)
    [device] = batch.failed_devices
    assert (device.serial_number, device.error_code, device.device_id) == ("1234567890", "808", None)


def test_missing_devices_unknown_fields_and_unrecognised_status_are_tolerated() -> None:
    batch = parse_batch_status(b'{"status": "In-Progress", "newField": {"x": 1}}')
    assert batch.status == "in-progress" and not batch.is_final and batch.devices == ()


def test_device_extra_scalar_fields_are_kept_and_numeric_codes_become_text() -> None:
    batch = parse_batch_status(b'{"status": "finished", "devicesStatus": [{"status": "finished", "errorCode": 0,'
                               b' "modelName": "Surface", "nested": {"a": 1}}]}')
    [device] = batch.devices
    assert device.error_code == "0" and device.failed  # a code is a failure, even 0
    assert device.extra == {"modelName": "Surface"}


def test_a_device_is_fine_only_when_finished_without_code() -> None:
    batch = parse_batch_status(b'{"status": "finished", "devicesStatus": [{"status": "finished", "errorCode": ""},'
                               b' {"status": "finished"}, {"status": "processing"}, {}]}')
    assert [device.failed for device in batch.devices] == [False, False, True, True]


@pytest.mark.parametrize(("text", "expected"), [
    ("2017-07-25T10:00:00", datetime(2017, 7, 25, 10, tzinfo=UTC)),
    ("2017-07-25T10:00:00Z", datetime(2017, 7, 25, 10, tzinfo=UTC)),
    ("2017-07-25T12:00:00+02:00", datetime(2017, 7, 25, 10, tzinfo=UTC)),
    ("2017-07-25T10:00:00.1234567Z", datetime(2017, 7, 25, 10, 0, 0, 123456, tzinfo=UTC)),
    ("not a time", None),
    (None, None),
    (17, None),
])
def test_times_with_or_without_zone(text: object, expected: datetime | None) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("body", [
    b"<html>busy</html>", b'{"status": "fini', b"[]", b'{"devicesStatus": []}', b'{"status": "finished",'
    b' "devicesStatus": {}}', b'{"status": "finished", "devicesStatus": [1]}', b"",
    b'{"status": "finished", "devicesStatus": [], "devicesStatus": [{}]}',  # which list would be the answer?
    b'{"status": "finished", "devicesStatus.item": {"serialNumber": "forged"}}',
    b'{"status": "finished"} trailing', b'{"status": NaN}',
    b'{"status": "finished", "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",  # memory would grow with depth squared
    b'{"status": "finished", "devicesStatus": [{"errorCode": ' + b"[" * 65 + b"]" * 65 + b"}]}",
    b'{"status": "finished", "devicesStatus": [{"errorCode": ' + b"9" * 5000 + b"}]}",  # over Python's int digits
])
def test_malformed_bodies_are_rejected(body: bytes) -> None:
    with pytest.raises(MalformedStatusError):
        parse_batch_status(body)


@pytest.mark.parametrize("text", [
    "0001-01-01T00:00:00",  # a .NET DateTime that was never set
    "0001-01-01T00:00:00+01:00",  # OverflowError when turned into UTC
    "9999-12-31T23:59:59-01:00",
    "1600-12-31T23:59:59Z",
    "0001-01-01T00:00:00.0000000Z",
])
def test_times_table_storage_cannot_hold_are_absent(text: str) -> None:
    assert parse_time(text) is None
    body = json.dumps({"status": "queued", "startedTime": text, "completedTime": text})
    batch = parse_batch_status(body)
    assert batch.started_time is None and batch.completed_time is None


def test_the_earliest_storable_time_is_kept() -> None:
    assert parse_time("1601-01-01T00:00:00Z") == datetime(1601, 1, 1, tzinfo=UTC)


TEXT = st.text(alphabet=st.sampled_from("aZ09-_ /<&>\"\\\u00e9\u5e8f\U0001f600\ud800\udc00"), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) \
    | TEXT
DEVICES = st.lists(st.dictionaries(st.sampled_from(["serialNumber", "productKey", "deviceId", "status", "errorCode",
                                                    "errorDescription", "modelName", "attributes", "x y"]),
                                   SCALARS | st.dictionaries(TEXT, SCALARS, max_size=2), max_size=7), max_size=6)


def _reference(document: dict[str, Any]) -> list[DeviceStatus]:
    """The devices as a whole-document parse (json.loads) gives them."""
    from shared.status_parser import _parse_device

    return [_parse_device(item, index) for index, item in enumerate(document.get("devicesStatus") or [])]


@settings(max_examples=300, deadline=None)
@given(DEVICES, TEXT | st.just("finished"), SCALARS)
def test_the_streamed_answer_is_what_a_whole_document_parse_reads(devices: list[dict[str, Any]], status: str,
                                                                   tracking: Any) -> None:
    document = {"batchTrackingId": tracking, "status": status.strip() or "x", "devicesStatus": devices}
    body = json.dumps(document).encode("utf-8", "surrogatepass")  # lone surrogates as \\udXXX escapes
    batch = parse_batch_status(io.BytesIO(body))
    reference = json.loads(body)
    assert batch.status == reference["status"].strip().lower()
    assert list(batch.devices) == _reference(reference) and len(batch.devices) == len(devices)
    assert list(batch.devices) == list(batch.devices)  # each pass reads the same devices again
    assert len(batch.failed_devices) == sum(1 for device in _reference(reference) if batch.is_failed(device))


def test_two_passes_over_the_devices_may_run_side_by_side() -> None:
    body = json.dumps({"status": "finished", "devicesStatus": [{"serialNumber": f"S{i}"} for i in range(5000)]})
    batch = parse_batch_status(io.BytesIO(body.encode()))
    pairs = list(zip(batch.devices, batch.devices, strict=True))
    assert len(pairs) == 5000 and all(a.serial_number == b.serial_number for a, b in pairs)


def test_a_lone_surrogate_escape_is_read_as_json_reads_it() -> None:
    body = b'{"status": "finished", "devicesStatus": [{"serialNumber": "\\udc00SN", "errorCode": "808"}]}'
    [device] = parse_batch_status(body).failed_devices
    assert device.serial_number == "\udc00SN" == json.loads(body)["devicesStatus"][0]["serialNumber"]


def test_nesting_up_to_the_limit_is_read() -> None:
    from shared.status_parser import MAX_DEPTH

    nested = b"[" * (MAX_DEPTH - 3) + b"]" * (MAX_DEPTH - 3)  # the body, devicesStatus and the device hold it
    [device] = parse_batch_status(b'{"status": "finished", "devicesStatus": [{"errorCode": ' + nested + b"}]}").devices
    assert device.error_code is not None and device.error_code.startswith("[[")


def test_only_an_unpaired_surrogate_escape_or_a_long_digit_run_needs_the_slow_parser() -> None:
    from shared.status_parser import _needs_exact_parser

    assert not _needs_exact_parser(io.BytesIO(b'{"s": "\\ud83d\\ude00 \\u00e9"}'))
    for text in (b'"\\ud800"', b'"\\udc00"', b'"\\ud800\\ud800"', b'"\\ud83d x\\ude00"', b"[" + b"1" * 1000 + b"]"):
        assert _needs_exact_parser(io.BytesIO(text)), text


def test_hostile_answers_one_after_another_are_each_malformed() -> None:
    """The C parser crashed the process on a long integer after another hostile answer; each is refused now."""
    deep = b'{"status": "finished", "devicesStatus": [{"errorCode": ' + b"[" * 65 + b"]" * 65 + b"}]}"
    digits = b'{"status": "finished", "devicesStatus": [{"errorCode": ' + b"9" * 5000 + b"}]}"
    for body in (deep, digits, deep, digits):
        with pytest.raises(MalformedStatusError):
            parse_batch_status(body)
