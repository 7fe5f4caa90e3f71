"""POST an alert to the webhook; the answer becomes Delivered, RetryLater or Rejected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from .alert_log import CLAIM_SECONDS
from .bounded_http import DeadlineExceeded, request_within
from .http import pooled_session
from .log import redact_from_library_logs
from .partner_center import parse_retry_after


@dataclass(frozen=True)
class Delivered:
    status_code: int


@dataclass(frozen=True)
class RetryLater:
    reason: str
    retry_after: float | None = None


@dataclass(frozen=True)
class Rejected:
    status_code: int
    reason: str


DeliveryResult = Delivered | RetryLater | Rejected


def webhook_host(url: str) -> str:
    """Where an alert went, safe to store and log: the URL itself is a secret."""
    return urlsplit(url).hostname or "?"


# The whole POST (connect, request, answer headers) ends within this, well inside the AlertLog claim, so a
# sender that is still waiting never overlaps another copy that took an expired claim over.
POST_DEADLINE_SECONDS = CLAIM_SECONDS / 4


class WebhookSender:
    def __init__(self, url: str, session: requests.Session | None = None, timeout: tuple[float, float] = (5, 20),
                 deadline: float = POST_DEADLINE_SECONDS):
        self._url = url
        parts = urlsplit(url)
        redact_from_library_logs(url, parts.path + (f"?{parts.query}" if parts.query else ""), parts.path)
        self._session = session or pooled_session(pool_size=4)
        self._timeout = timeout
        self._deadline = deadline

    @property
    def host(self) -> str:
        return webhook_host(self._url)

    def send(self, payload: dict[str, Any], alert_id: str) -> DeliveryResult:
        try:  # only the status and headers matter: the body is never read
            response = request_within(self._session, "POST", self._url, deadline=self._deadline, max_bytes=0,
                                      max_decoded_bytes=0, read_body=lambda status: False, json=payload,
                                      timeout=self._timeout, allow_redirects=False,
                                      headers={"Idempotency-Key": alert_id, "X-Batchwatch-Alert-Id": alert_id})
        except DeadlineExceeded:
            return RetryLater(f"webhook gave no answer within {self._deadline:g} s")
        except requests.Timeout:
            return RetryLater("webhook timed out")
        except requests.RequestException as exc:
            return RetryLater(f"webhook unreachable: {type(exc).__name__}")
        code = response.status_code
        if 200 <= code < 300:
            return Delivered(code)
        if code == 429:
            return RetryLater("webhook answered 429", parse_retry_after(response.headers.get("Retry-After")))
        if code >= 500 or code == 408:
            return RetryLater(f"webhook answered {code}")
        hint = ("check ALERT_WEBHOOK_URL" if code in (401, 403, 404, 410)
                else "check that ALERT_WEBHOOK_FORMAT matches the receiver")
        return Rejected(code, f"webhook {self.host} answered {code}: {hint}")
