"""Partner Center behaviours for the fake: what a batch answers at a given time and call."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from shared.models import BatchStatus, DeviceStatus
from shared.policy import Denied, NotFound, PollResult, StatusReceived, Throttled, TooLarge, Transient
from shared.status_parser import parse_batch_status

Script = Callable[[datetime, int], PollResult]
FAULTS: dict[str, PollResult] = {
    "429": Throttled(45.0),
    "503": Transient("HTTP 503"),
    "timeout": Transient("timeout"),
    "too-large": TooLarge("answer too large: over 1 bytes arrived"),
}


def devices(serials: Sequence[str], failing: Sequence[str] = ()) -> tuple[DeviceStatus, ...]:
    return tuple(DeviceStatus(serial, None, None, "finished_with_errors" if serial in failing else "finished",
                              "808" if serial in failing else None, "ZtdDeviceAssignedToOtherTenant"
                              if serial in failing else None) for serial in serials)


def finishes(started: datetime, after: timedelta, final: tuple[DeviceStatus, ...], status: str = "finished",
             faults: Sequence[str] = ()) -> Script:
    """Queued, then processing, then final from started + after on; the first calls answer the faults. The final
    answer is read as the client reads it (the parser's devices, parsed from the body on each pass)."""
    answered = parse_batch_status(json.dumps({"status": status, "devicesStatus": [
        {"serialNumber": d.serial_number, "productKey": d.product_key, "deviceId": d.device_id, "status": d.status,
         "errorCode": d.error_code, "errorDescription": d.error_description, **d.extra} for d in final]}))

    def answer(now: datetime, call: int) -> PollResult:
        if call < len(faults):
            return FAULTS[faults[call]]
        if now < started + after:
            in_progress = tuple(DeviceStatus(d.serial_number, None, None, "processing", None, None) for d in final)
            return StatusReceived(BatchStatus(None, "processing", started, None, in_progress))
        return StatusReceived(BatchStatus(None, answered.status, started, started + after, answered.devices))

    return answer


def never_final(faults: Sequence[str] = ()) -> Script:
    def answer(now: datetime, call: int) -> PollResult:
        if call < len(faults):
            return FAULTS[faults[call]]
        return StatusReceived(BatchStatus(None, "queued", None, None, ()))

    return answer


def unknown(faults: Sequence[str] = ()) -> Script:
    return lambda now, call: FAULTS[faults[call]] if call < len(faults) else NotFound()


def denied(faults: Sequence[str] = ()) -> Script:
    return lambda now, call: FAULTS[faults[call]] if call < len(faults) else Denied(403, "Partner Center answered 403")
