"""Render a failure-queue chunk as the alert a receiver accepts: generic JSON, Teams or Slack."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .remediation import Remediation, remediation_for

TEAMS_DEVICE_LIMIT = 25  # Teams cards must stay under about 28 KB
SLACK_TEXT_LIMIT = 3000  # characters in one section's text
SLACK_BLOCK_LIMIT = 50
SLACK_CODE_SECTIONS = 20
FIELD_LIMIT = 120

OUTCOME_GUIDANCE = {
    "timed_out": "Partner Center did not report the batch as final before the deadline. Check the batch in Partner "
                 "Center; once the cause is fixed, start tracking it again.",
    "not_found": "Partner Center does not know this tracking id for this customer. Check the customer id and the "
                 "Location header that the upload returned; the upload may have failed.",
    "access_denied": "Partner Center refused the credentials. Check the PARTNER_CENTER_* settings, the app's consent "
                     "in Partner Center (App management) and its Admin agent role.",
    "response_too_large": "Partner Center's answer for this batch was over the size cap several times in a row. "
                          "Raise PARTNER_CENTER_MAX_RESPONSE_BYTES / PARTNER_CENTER_MAX_DECOMPRESSED_BYTES if the "
                          "batch really is that large, then resubmit it (python -m shared.audit resubmit).",
    "completed_with_failures": "Partner Center reported errors for this batch without naming a failed device. "
                               "Check the batch in Partner Center (its device list) before you upload it again.",
}


@dataclass(frozen=True)
class CodeCount:
    remediation: Remediation
    count: int

    @property
    def label(self) -> str:
        return self.remediation.label


def code_counts(devices: list[dict[str, Any]]) -> list[CodeCount]:
    """Failed devices grouped by error code, most frequent first (808 x300 reads as one problem)."""
    by_code: Counter[str] = Counter()
    entries: dict[str, Remediation] = {}
    for device in devices:
        entry = remediation_for(device.get("errorCode"), device.get("errorDescription"))
        key = entry.code
        by_code[key] += 1
        entries.setdefault(key, entry)
    return [CodeCount(entries[key], count) for key, count in by_code.most_common()]


def query_hint(tracking_id: str) -> str:
    return (f"All devices: python -m shared.audit batch --tracking-id {tracking_id} "
            f"(table DeviceUploadStatus, PartitionKey {tracking_id}, failed eq true)")


def title(chunk: dict[str, Any]) -> str:
    if chunk["type"] == "daily_digest":
        return digest_title(chunk["digest"])
    if chunk["type"] == "batch_outcome":
        return f"Device batch ended without a result: {chunk['outcome']}"
    failed = chunk.get("failedDeviceCount") or len(chunk["devices"])
    return f"{failed} device(s) failed to register ({chunk['outcome']})"


def render(chunk: dict[str, Any], alert_format: str) -> dict[str, Any]:
    if chunk["type"] == "daily_digest":
        return {"generic": render_digest_generic, "teams": render_digest_teams,
                "slack": render_digest_slack}[alert_format](chunk)
    renderer = {"generic": render_generic, "teams": render_teams, "slack": render_slack}[alert_format]
    return renderer(chunk)


# --- the daily digest -------------------------------------------------------------------------------------
def digest_title(digest: dict[str, Any]) -> str:
    if digest["empty"]:
        return f"batchwatch, {digest['day']}: no batch finalised, none pending too long, no poison messages"
    final = sum(digest["finalizedByOutcome"].values())
    failed = sum(entry["failedDevices"] for entry in digest["topCustomers"])
    return f"batchwatch, {digest['day']}: {final} batch(es) finalised, {failed} failed device(s)"


def digest_sections(digest: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The digest as titled lists of lines, the same in every format."""
    pending = digest["pendingOverThreshold"]
    codes = [f"{code}: {count}" for code, count in digest["failedDevicesByErrorCode"].items()]
    if digest["errorCodesNotListed"]:
        codes.append(f"{digest['errorCodesNotListed']} more error code(s) not listed")
    return [
        ("Batches finalised, by outcome",
         [f"{outcome}: {count}" for outcome, count in digest["finalizedByOutcome"].items()] or ["none"]),
        ("Failed devices, by error code", codes or ["none"]),
        ("Customers with the most failed devices",
         [f"{entry['customerId']}: {entry['failedDevices']} device(s) in {entry['batches']} batch(es)"
          for entry in digest["topCustomers"]] or ["none"]),
        (f"Batches pending for more than {pending['thresholdHours']:g} hours: {pending['count']}",
         [f"{entry['batchTrackingId']} (customer {entry['customerId']}, first seen {entry['firstSeenAt']})"
          for entry in pending["oldest"]]
         + ([f"{pending['count'] - len(pending['oldest'])} more: python -m shared.audit pending"]
            if pending["count"] > len(pending["oldest"]) else [])),
        ("Messages in poison queues",
         [f"{queue}: {count}" for queue, count in digest["poisonMessages"].items()]
         + (["see python -m shared.audit poison list"] if any(digest["poisonMessages"].values()) else [])),
    ]


def render_digest_generic(chunk: dict[str, Any]) -> dict[str, Any]:
    return {"type": "daily_digest", "alertId": chunk["alertId"], "title": digest_title(chunk["digest"]),
            **chunk["digest"]}


def render_digest_teams(chunk: dict[str, Any]) -> dict[str, Any]:
    digest = chunk["digest"]
    body: list[dict[str, Any]] = [{"type": "TextBlock", "text": digest_title(digest), "weight": "Bolder",
                                   "size": "Medium", "wrap": True}]
    if not digest["empty"]:
        for heading, lines in digest_sections(digest):
            body.append({"type": "TextBlock", "text": heading, "weight": "Bolder", "wrap": True})
            body.extend({"type": "TextBlock", "text": _cut(line, 300), "wrap": True, "spacing": "None"}
                        for line in lines)
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": "1.4", "body": body, "msteams": {"width": "Full"}}
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


def render_digest_slack(chunk: dict[str, Any]) -> dict[str, Any]:
    digest = chunk["digest"]
    heading = _cut(digest_title(digest), 150)
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": heading}}]
    if not digest["empty"]:
        for section, lines in digest_sections(digest):
            text = f"*{_mrkdwn(section)}*\n" + "\n".join(_mrkdwn(line) for line in lines)
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut_escaped(text, SLACK_TEXT_LIMIT)}})
    return {"text": _mrkdwn(heading), "blocks": blocks}


def render_generic(chunk: dict[str, Any]) -> dict[str, Any]:
    """The contract's JSON: every device of the chunk, each with what to do about its error code."""
    devices = [
        {**{key: device.get(key) for key in ("serialNumber", "productKey", "deviceId", "status", "errorCode",
                                              "errorDescription")},
         "remediation": remediation_for(device.get("errorCode"), device.get("errorDescription")).action}
        for device in chunk["devices"]
    ]
    payload: dict[str, Any] = {
        key: chunk.get(key) for key in ("type", "alertId", "customerId", "batchTrackingId", "outcome", "chunk",
                                        "chunks", "deviceCount", "failedDeviceCount", "inProgressDeviceCount",
                                        "correlationId", "source")
    }
    payload["title"] = title(chunk)
    payload["countsByErrorCode"] = {count.label: count.count for count in code_counts(chunk["devices"])}
    payload["devices"] = devices
    if chunk["type"] == "batch_outcome":
        payload["reason"] = chunk.get("reason")
        payload["remediation"] = OUTCOME_GUIDANCE.get(chunk["outcome"], "")
    else:
        payload["query"] = query_hint(chunk["batchTrackingId"])
    return payload


def render_teams(chunk: dict[str, Any]) -> dict[str, Any]:
    """An Adaptive Card message for a Teams Workflows webhook ("When a Teams webhook request is received")."""
    facts = [{"title": "Customer", "value": chunk["customerId"]},
             {"title": "Tracking id", "value": chunk["batchTrackingId"]},
             {"title": "Outcome", "value": chunk["outcome"]}]
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": title(chunk), "weight": "Bolder", "size": "Medium", "wrap": True},
    ]
    if chunk["type"] == "batch_outcome":
        facts.append({"title": "Reason", "value": _cut(str(chunk.get("reason") or ""), 300)})
        body.append({"type": "FactSet", "facts": facts})
        body.append({"type": "TextBlock", "text": OUTCOME_GUIDANCE.get(chunk["outcome"], ""), "wrap": True})
    else:
        devices = chunk["devices"]
        facts.append({"title": "Alert part", "value": f"{chunk['chunk']} of {chunk['chunks']}"})
        in_batch = chunk.get("failedDeviceCount", len(devices))
        facts.append({"title": "Failed devices", "value": f"{len(devices)} in this part, {in_batch} in the batch"})
        body.append({"type": "FactSet", "facts": facts})
        body.append({"type": "TextBlock", "text": "By error code", "weight": "Bolder", "wrap": True})
        for count in code_counts(devices)[:SLACK_CODE_SECTIONS]:
            body.append({"type": "TextBlock", "wrap": True, "text": f"**{count.label}**: {count.count} device(s)"})
            body.append({"type": "TextBlock", "wrap": True, "isSubtle": True, "spacing": "None",
                         "text": count.remediation.action})
        listed = devices[:TEAMS_DEVICE_LIMIT]
        body.append({"type": "TextBlock", "text": f"Devices (first {len(listed)} of {len(devices)} in this part)",
                     "weight": "Bolder", "wrap": True})
        body.append({"type": "FactSet", "facts": [
            {"title": _cut(device.get("serialNumber") or device.get("productKey") or "(no serial)", 60),
             "value": _device_line(device)} for device in listed]})
        more = len(devices) - len(listed)
        body.append({"type": "TextBlock", "wrap": True, "isSubtle": True,
                     "text": (f"{more} more device(s) of this part are not listed here. " if more else "")
                     + query_hint(chunk["batchTrackingId"])})
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": "1.4", "body": body, "msteams": {"width": "Full"}}
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


def render_slack(chunk: dict[str, Any]) -> dict[str, Any]:
    """A Block Kit message for a Slack incoming webhook (at most 50 blocks, 3,000 characters a section)."""
    heading = _cut(title(chunk), 150)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": heading}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Customer*\n{_mrkdwn(chunk['customerId'])}"},
            {"type": "mrkdwn", "text": f"*Tracking id*\n{_mrkdwn(chunk['batchTrackingId'])}"},
            {"type": "mrkdwn", "text": f"*Outcome*\n{_mrkdwn(chunk['outcome'])}"},
            {"type": "mrkdwn", "text": f"*Alert part*\n{chunk['chunk']} of {chunk['chunks']}"},
        ]},
    ]
    if chunk["type"] == "batch_outcome":
        text = f"*Reason:* {_mrkdwn(chunk.get('reason') or '')}\n{_mrkdwn(OUTCOME_GUIDANCE.get(chunk['outcome'], ''))}"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut_escaped(text, SLACK_TEXT_LIMIT)}})
        return {"text": _mrkdwn(heading), "blocks": blocks}
    devices = chunk["devices"]
    blocks.append({"type": "divider"})
    for count in code_counts(devices)[:SLACK_CODE_SECTIONS]:
        text = f"*{_mrkdwn(count.label)}*: {count.count} device(s)\n{_mrkdwn(count.remediation.action)}"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut_escaped(text, SLACK_TEXT_LIMIT)}})
    lines: list[str] = []
    budget = SLACK_TEXT_LIMIT - 200
    for device in devices:
        line = _mrkdwn(f"{_cut(device.get('serialNumber') or device.get('productKey') or '(no serial)', 60)}  "
                       f"{_device_line(device)}")
        if sum(len(item) + 1 for item in lines) + len(line) > budget:
            break
        lines.append(line)
    listing = "```" + "\n".join(lines).replace("```", "'''") + "```"
    blocks.append({"type": "section", "text": {"type": "mrkdwn",
                   "text": f"*Devices* (first {len(lines)} of {len(devices)} in this part)\n{listing}"}})
    more = len(devices) - len(lines)
    note = (f"{more} more device(s) of this part are not listed. " if more else "") + query_hint(
        chunk["batchTrackingId"])
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn",
                                                    "text": _cut_escaped(_mrkdwn(note), SLACK_TEXT_LIMIT)}]})
    return {"text": _mrkdwn(heading), "blocks": blocks[:SLACK_BLOCK_LIMIT]}


def _device_line(device: dict[str, Any]) -> str:
    parts = [device.get("errorCode") or device.get("status") or "", device.get("errorDescription") or ""]
    if device.get("productKey") and device.get("serialNumber"):
        parts.append(f"(product key {device['productKey']})")
    return _cut(" ".join(part for part in parts if part), FIELD_LIMIT)


def _mrkdwn(text: str) -> str:
    """Text for a Slack mrkdwn field: &, < and > escaped, as Slack asks, so that text from Partner Center or a
    message can neither form a link or a mention nor be cut short."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut_escaped(text: str, limit: int) -> str:
    """_cut for escaped text: never ends inside an entity such as &amp;."""
    if len(text) <= limit:
        return text
    return re.sub(r"&[a-z]{0,3}$", "", text[: limit - 1]) + "…"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
