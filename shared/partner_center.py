"""Partner Center batch status client: requests in, typed PollResult out (never a requests exception)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests

from .auth import TokenSource
from .config import PartnerCenterSettings
from .http import pooled_session
from .ids import normalize_guid
from .policy import Denied, NotFound, PollResult, StatusReceived, Throttled, Transient
from .status_parser import MalformedStatusError, parse_batch_status

log = logging.getLogger("batchwatch.partner_center")
IN_PROCESS_RETRY_DELAYS = (0.5, 1.5)


class PartnerCenterClient:
    def __init__(
        self,
        settings: PartnerCenterSettings,
        tokens: TokenSource,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        retry_delays: Sequence[float] = IN_PROCESS_RETRY_DELAYS,
    ) -> None:
        self._settings = settings
        self._tokens = tokens
        self._session = session or pooled_session()
        self._sleep = sleep
        self._retry_delays = tuple(retry_delays)
        self.request_count = 0

    def status_url(self, customer_id: str, batch_tracking_id: str) -> str:
        customer = normalize_guid(customer_id, "customerId")
        tracking = normalize_guid(batch_tracking_id, "batchTrackingId")
        return f"{self._settings.base_url}/v1/customers/{customer}/batchJobStatus/{tracking}"

    def get_batch_status(self, customer_id: str, batch_tracking_id: str, correlation_id: str) -> PollResult:
        """One poll: a short in-process retry of transient faults, never a long sleep."""
        url = self.status_url(customer_id, batch_tracking_id)
        result: PollResult = Transient("not attempted")
        for pause in (*self._retry_delays, None):
            result = self._get(url, batch_tracking_id, correlation_id)
            if not isinstance(result, Transient) or pause is None:
                return result
            log.info("transient Partner Center fault (%s); retrying in %.1f s [correlationId=%s]",
                     result.reason, pause, correlation_id)
            self._sleep(pause)
        return result

    def _get(self, url: str, batch_tracking_id: str, correlation_id: str) -> PollResult:
        refreshed = False
        while True:
            try:
                token = self._tokens.refresh() if refreshed else self._tokens.token()
            except Exception as exc:  # azure-identity raises several types; classify by name
                return _token_failure(exc)
            response = self._send(url, token, correlation_id)
            if isinstance(response, Transient):
                return response
            if response.status_code == 401 and not refreshed:
                log.info("401 from Partner Center; fetching a new token once [correlationId=%s]", correlation_id)
                refreshed = True
                continue
            return self._classify(response, batch_tracking_id, correlation_id)

    def _send(self, url: str, token: str, correlation_id: str) -> requests.Response | Transient:
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "MS-RequestId": str(uuid.uuid4()),
            "MS-CorrelationId": correlation_id,
            "X-Locale": self._settings.locale,
        }
        self.request_count += 1
        try:
            return self._session.get(
                url,
                headers=headers,
                timeout=(self._settings.connect_timeout, self._settings.read_timeout),
                allow_redirects=False,
            )
        except requests.Timeout:
            return Transient("timeout")
        except requests.ConnectionError as exc:
            return Transient(f"connection error: {type(exc).__name__}")
        except requests.RequestException as exc:
            return Transient(f"request failed: {type(exc).__name__}")

    def _classify(self, response: requests.Response, batch_tracking_id: str, correlation_id: str) -> PollResult:
        code = response.status_code
        if code == 200:
            try:
                batch = parse_batch_status(response.content)
            except MalformedStatusError as exc:
                return Transient(f"malformed status body: {exc}")
            except requests.RequestException as exc:  # body cut off while reading
                return Transient(f"truncated body: {type(exc).__name__}")
            if batch.batch_tracking_id not in (None, batch_tracking_id):
                return Transient(f"status body is for another batch ({batch.batch_tracking_id})")
            return StatusReceived(batch)
        if code == 404:
            return NotFound()
        if code in (401, 403):
            log.warning("Partner Center answered %d (MS-RequestId %s) [correlationId=%s]",
                        code, response.headers.get("MS-RequestId"), correlation_id)
            return Denied(code)
        if code == 429:
            return Throttled(parse_retry_after(response.headers.get("Retry-After")))
        if code >= 500:
            return Transient(f"HTTP {code}")
        log.warning("unexpected HTTP %d from Partner Center (MS-RequestId %s) [correlationId=%s]",
                    code, response.headers.get("MS-RequestId"), correlation_id)
        return Transient(f"HTTP {code}")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, 7 * 24 * 3600.0))


def _token_failure(exc: Exception) -> PollResult:
    """A refused credential is an access problem; anything else (network, Entra outage) is transient."""
    if type(exc).__name__ in ("ClientAuthenticationError", "CredentialUnavailableError"):
        log.warning("could not get a Partner Center token: %s", type(exc).__name__)
        return Denied(401)
    return Transient(f"token request failed: {type(exc).__name__}")
