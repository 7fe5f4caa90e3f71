"""Property tests: whatever arrives is accepted correctly or rejected with a reason, never a crash."""

from __future__ import annotations

import base64
import json
import re
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.device_keys import MAX_READABLE, device_identity_key, escape_key, serial_partition_key
from shared.messages import BadMessageError, parse_status_request
from shared.models import DeviceStatus
from shared.status_parser import MalformedStatusError, parse_batch_status

FORBIDDEN_IN_KEYS = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
HOSTILE_TEXT = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from("/\\#?'\"%$&()=@ .-_~!\x00\x1f\ud800\udfff😀")),
    st.sampled_from(["../../x", "x' or 'a' eq 'a", "$filter=1", "%2F", "\u202e", "a" * 60_000]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | HOSTILE_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(HOSTILE_TEXT, children, max_size=4),
    max_leaves=12,
)
ID_LIKE = st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), HOSTILE_TEXT)
MESSAGE_DOCUMENTS = st.fixed_dictionaries({}, optional={
    "customerId": ID_LIKE, "batchTrackingId": ID_LIKE, "location": HOSTILE_TEXT | ID_LIKE,
    "correlationId": ID_LIKE, "source": HOSTILE_TEXT, "_batchwatch": JSON_VALUES, "extra": JSON_VALUES,
})
HOSTILE_BODIES = st.one_of(
    st.binary(max_size=2048),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    MESSAGE_DOCUMENTS.map(lambda doc: json.dumps(doc).encode("utf-8", "surrogatepass")),
    MESSAGE_DOCUMENTS.map(lambda doc: base64.b64encode(json.dumps(doc).encode("utf-8", "surrogatepass"))),
    st.integers(min_value=1, max_value=50_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(min_value=4000, max_value=20_000).map(lambda digits: b'{"customerId": ' + b"9" * digits + b"}"),
    st.just(b'{"customerId": "a", "customerId": "b"}'),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(HOSTILE_BODIES)
def test_any_status_message_is_accepted_correctly_or_rejected_with_a_reason(body: bytes) -> None:
    try:
        request = parse_status_request(body)
    except BadMessageError as exc:
        assert str(exc)  # a reason for the poison envelope
        return
    for value in (request.customer_id, request.batch_tracking_id):
        assert str(uuid.UUID(value)) == value  # a lowercase GUID, nothing else reaches a URL path
    assert request.source is None or len(request.source) <= 256


@settings(max_examples=200, deadline=None)
@given(st.uuids(), st.uuids(), st.sampled_from(["{}", "/v1{}", "https://api.partnercenter.microsoft.com/v1{}"]))
def test_valid_requests_are_always_accepted(customer: uuid.UUID, tracking: uuid.UUID, form: str) -> None:
    location = form.format(f"/customers/{str(customer).upper()}/batchJobStatus/{tracking}")
    for body in ({"location": location}, {"customerId": str(customer), "batchTrackingId": str(tracking).upper()}):
        request = parse_status_request(json.dumps(body).encode())
        assert (request.customer_id, request.batch_tracking_id) == (str(customer), str(tracking))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(st.binary(max_size=2048), JSON_VALUES.map(lambda value: json.dumps(value).encode()),
                 st.fixed_dictionaries({"status": HOSTILE_TEXT}, optional={
                     "devicesStatus": st.lists(st.dictionaries(HOSTILE_TEXT, JSON_VALUES, max_size=6), max_size=5),
                     "startedTime": JSON_VALUES, "batchTrackingId": JSON_VALUES,
                 }).map(lambda doc: json.dumps(doc).encode("utf-8", "surrogatepass"))))
def test_any_status_body_parses_or_is_malformed(body: bytes) -> None:
    try:
        batch = parse_batch_status(body)
    except MalformedStatusError as exc:
        assert str(exc)
        return
    assert isinstance(batch.status, str) and all(isinstance(device.failed, bool) for device in batch.devices)


@settings(max_examples=500, deadline=None)
@given(st.text(), st.text())
def test_serial_keys_are_valid_and_no_two_serials_share_one(first: str, second: str) -> None:
    for serial in (first, second):
        key = serial_partition_key(serial)
        assert not FORBIDDEN_IN_KEYS.search(key) and len(key) <= MAX_READABLE + 3
    if first != second:
        assert escape_key(first) != escape_key(second)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1), st.text(), st.text())
def test_device_keys_stay_within_the_key_length_limit(serial: str, product_key: str, device_id: str) -> None:
    key = device_identity_key(DeviceStatus(serial, product_key, device_id, "finished", None, None))
    assert not FORBIDDEN_IN_KEYS.search(key) and len(key) + len("~999") <= 512
