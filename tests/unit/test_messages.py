import base64
import json
from datetime import UTC, datetime

import pytest

from shared.messages import STATE_KEY, BadMessageError, ChainState, StatusRequest, parse_status_request

CUSTOMER = "47021739-3426-40bf-9601-61b4b6d7c793"
TRACKING = "0127ed8e-ff72-4983-a3d8-e8d8bd378932"


def _body(document: object) -> bytes:
    return json.dumps(document).encode()


def test_ids_form_is_accepted_and_lowercased() -> None:
    request = parse_status_request(_body({"customerId": CUSTOMER.upper(), "batchTrackingId": TRACKING.upper(),
                                          "correlationId": TRACKING, "source": "upload-job"}))
    assert (request.customer_id, request.batch_tracking_id) == (CUSTOMER, TRACKING)
    assert request.correlation_id == TRACKING and request.source == "upload-job" and request.state is None


def test_base64_encoded_message_is_accepted() -> None:
    raw = _body({"customerId": CUSTOMER, "batchTrackingId": TRACKING})
    assert parse_status_request(base64.b64encode(raw)).batch_tracking_id == TRACKING


@pytest.mark.parametrize("location", [
    f"/customers/{CUSTOMER}/batchJobStatus/{TRACKING}",
    f"/v1/customers/{CUSTOMER}/batchJobStatus/{TRACKING}",
    f"customers/{CUSTOMER}/batchjobstatus/{TRACKING}",
    f"https://api.partnercenter.microsoft.com/v1/customers/{CUSTOMER}/batchJobStatus/{TRACKING}",
    f"https://api.partnercenter.microsoft.com/v1//customers/{CUSTOMER}/batchJobStatus/{TRACKING.upper()}",
])
def test_every_location_form_is_accepted(location: str) -> None:
    request = parse_status_request(_body({"location": location}))
    assert (request.customer_id, request.batch_tracking_id) == (CUSTOMER, TRACKING)


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json at all", "message is not JSON"),
    (b"abcde", "neither JSON nor valid base64"),
    (base64.b64encode(b"\xff\xfe garbage \x00"), "as base64 it decodes to bytes that are not UTF-8"),
    (base64.b64encode(b"plain words"), "not JSON"),
    (b"\xff\xfe\xfd", "not UTF-8"),
    (b"   ", "empty"),
    (_body([CUSTOMER, TRACKING]), "not an object"),
    (_body({"customerId": CUSTOMER}), "batchTrackingId must be a GUID string"),
    (_body({"source": "x"}), "neither customerId and batchTrackingId nor location"),
    (_body({"customerId": "not-a-guid", "batchTrackingId": TRACKING}), "customerId is not a GUID"),
    (_body({"customerId": CUSTOMER, "batchTrackingId": "../../" + TRACKING}), "batchTrackingId is not a GUID"),
    (_body({"customerId": CUSTOMER, "batchTrackingId": TRACKING + "?$filter=x"}), "batchTrackingId is not a GUID"),
    (_body({"customerId": CUSTOMER, "batchTrackingId": 12345}), "must be a GUID string"),
    (_body({"location": f"/customers/{CUSTOMER}/devices/{TRACKING}"}), "location is not of the form"),
    (_body({"location": f"/customers/{CUSTOMER}/batchJobStatus/{TRACKING}/../x"}), "location is not of the form"),
    (_body({"location": f"/customers/{CUSTOMER}/batchJobStatus/{TRACKING}", "customerId": TRACKING,
            "batchTrackingId": CUSTOMER}), "different batches"),
    (_body({"customerId": CUSTOMER, "batchTrackingId": TRACKING, "correlationId": "abc"}), "correlationId"),
    (_body({"customerId": CUSTOMER, "batchTrackingId": TRACKING, "source": "s" * 257}), "at most 256"),
    (_body({"customerId": CUSTOMER, "batchTrackingId": TRACKING, "source": {"a": 1}}), "source must be a string"),
    (b'{"customerId": "%s", "customerId": "%s", "batchTrackingId": "%s"}' % (CUSTOMER.encode(), TRACKING.encode(),
                                                                             TRACKING.encode()), "more than once"),
    (_body({"customerId": CUSTOMER, "batchTrackingId": TRACKING, STATE_KEY: {"v": 9}}), "requeue state"),
    (_body({"customerId": CUSTOMER, "batchTrackingId": TRACKING, STATE_KEY: {"v": 1, "token": "t"}}), "malformed"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
])
def test_bad_messages_are_rejected_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(BadMessageError, match=None) as error:
        parse_status_request(body)
    assert reason in str(error.value)


def test_requeued_message_round_trips_its_state() -> None:
    state = ChainState("abc", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), poll_count=4, errors=2, auth_failures=1,
                       etag='W/"datetime\'2026\'"', watch=None)
    request = StatusRequest(CUSTOMER, TRACKING, TRACKING, "job", state)
    assert parse_status_request(request.to_message().encode()) == request


def test_state_queued_by_an_earlier_version_keeps_its_poll_count() -> None:
    state = ChainState("abc", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)).to_json()
    del state["pollCount"]
    state["attempt"] = 6  # the key's name before the poll count was named for what it counts
    request = parse_status_request(_body({"customerId": CUSTOMER, "batchTrackingId": TRACKING, STATE_KEY: state}))
    assert request.state is not None and request.state.poll_count == 6


@pytest.mark.parametrize("document", [
    {"customerId": CUSTOMER + "\n", "batchTrackingId": TRACKING},
    {"customerId": CUSTOMER, "batchTrackingId": TRACKING + "\n"},
    {"customerId": CUSTOMER, "batchTrackingId": TRACKING, "correlationId": TRACKING + "\r\n"},
    {"customerId": CUSTOMER, "batchTrackingId": TRACKING, "correlationId": TRACKING + "\nX-Injected: 1"},
    {"location": f"/customers/{CUSTOMER}/batchJobStatus/{TRACKING}%0A"},
    {"location": f"/customers/{CUSTOMER}%0A/batchJobStatus/{TRACKING}"},
], ids=["customer-newline", "tracking-newline", "correlation-crlf", "correlation-header", "location-newline",
        "location-customer-newline"])
def test_ids_with_a_trailing_newline_are_bad_messages(document: dict) -> None:
    with pytest.raises(BadMessageError, match="GUID"):
        parse_status_request(_body(document))


@pytest.mark.parametrize("state", [
    {"token": "abc\n"}, {"token": "ABC"}, {"token": "a" * 65}, {"token": 7}, {"watch": "x y"},
    {"etag": "W/\"x\"\r\nX-Injected: 1"}, {"etag": ""}, {"pollCount": "x"}, {"pollCount": -1}, {"pollCount": 10**12},
    {"pollCount": True}, {"attempt": "x"}, {"errors": 1.5}, {"authFailures": None},
], ids=str)
def test_hostile_chain_state_is_a_bad_message(state: dict) -> None:
    valid = {"v": 1, "token": "ab12", "firstSeenAt": "2026-01-01T00:00:00+00:00"}
    body = _body({"customerId": CUSTOMER, "batchTrackingId": TRACKING, STATE_KEY: {**valid, **state}})
    with pytest.raises(BadMessageError, match=r"_batchwatch|token|watch|etag|pollCount|errors|authFailures"):
        parse_status_request(body)


@pytest.mark.parametrize("first_seen", [
    "0001-01-01T00:00:00+14:00",  # OverflowError when turned into UTC
    "1500-06-01T00:00:00+00:00",  # before what Table Storage holds
    "2026-01-01T00:00:00",  # no time zone
    "2099-01-01T00:00:00+00:00",  # in the future: the batch would never time out
], ids=str)
def test_a_hostile_first_seen_time_is_a_bad_message(first_seen: str) -> None:
    state = {"v": 1, "token": "ab12", "firstSeenAt": first_seen}
    body = _body({"customerId": CUSTOMER, "batchTrackingId": TRACKING, STATE_KEY: state})
    with pytest.raises(BadMessageError, match=r"firstSeenAt|first seen"):
        parse_status_request(body, datetime(2026, 11, 24, tzinfo=UTC))
