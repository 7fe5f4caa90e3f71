"""Partner Center batch status client: requests in, typed PollResult out (never a requests exception)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests

from .auth import TokenSource, classify_token_failure
from .bounded_http import Answer, DeadlineExceeded, ResponseTooLarge, request_within
from .config import PartnerCenterSettings
from .http import pooled_session
from .ids import normalize_guid
from .log import context_logger
from .policy import Denied, NotFound, PollResult, StatusReceived, Throttled, TooLarge, Transient
from .status_parser import MalformedStatusError, parse_batch_status
from .telemetry import PARTNER_CENTER_ANSWERS, answer_class

log = context_logger("batchwatch.partner_center")
IN_PROCESS_RETRY_DELAYS = (0.5, 1.5)
POLL_BUDGET_CALLS = 3  # a poll, retries and token refresh included, ends within this many call deadlines


class PartnerCenterClient:
    def __init__(
        self,
        settings: PartnerCenterSettings,
        tokens: TokenSource,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        retry_delays: Sequence[float] = IN_PROCESS_RETRY_DELAYS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._tokens = tokens
        self._session = session or pooled_session()
        self._sleep = sleep
        self._retry_delays = tuple(retry_delays)
        self._monotonic = monotonic
        self.request_count = 0

    def status_url(self, customer_id: str, batch_tracking_id: str) -> str:
        customer = normalize_guid(customer_id, "customerId")
        tracking = normalize_guid(batch_tracking_id, "batchTrackingId")
        return f"{self._settings.base_url}/v1/customers/{customer}/batchJobStatus/{tracking}"

    def get_batch_status(self, customer_id: str, batch_tracking_id: str, correlation_id: str) -> PollResult:
        """One poll: a short in-process retry of quick transient faults, never a long sleep.

        Every request of the poll (retries and the token refresh included) ends within POLL_BUDGET_CALLS call
        deadlines in all, so a poll always fits inside the function's timeout.
        """
        url = self.status_url(customer_id, batch_tracking_id)
        budget_end = self._monotonic() + POLL_BUDGET_CALLS * self._settings.call_deadline
        result: PollResult = Transient("not attempted")
        for pause in (*self._retry_delays, None):
            result = self._get(url, batch_tracking_id, correlation_id, budget_end)
            if not isinstance(result, Transient) or not result.retry_now or pause is None:
                return result
            if budget_end - self._monotonic() < pause + 1:
                return result
            log.info("transient Partner Center fault (%s); retrying in %.1f s [correlationId=%s]",
                     result.reason, pause, correlation_id)
            self._sleep(pause)
        return result

    def _get(self, url: str, batch_tracking_id: str, correlation_id: str, budget_end: float) -> PollResult:
        refreshed = False
        while True:
            try:
                token = self._tokens.refresh() if refreshed else self._tokens.token()
            except Exception as exc:  # azure-identity raises several types; classify_token_failure sorts them
                self._tokens.discard()
                return _token_failure(exc, correlation_id)
            remaining = budget_end - self._monotonic()
            if remaining < 1:
                return Transient("the poll's time budget is spent", retry_now=False)
            answer = self._send(url, token, correlation_id, min(self._settings.call_deadline, remaining))
            if not isinstance(answer, Answer):
                return answer
            if answer.status_code == 401 and not refreshed:
                log.info("401 from Partner Center; fetching a new token once [correlationId=%s]", correlation_id)
                refreshed = True
                continue
            return self._classify(answer, batch_tracking_id, correlation_id)

    def _send(self, url: str, token: str, correlation_id: str, deadline: float) -> Answer | Transient | TooLarge:
        """GET within the deadline, the body of a 200 read under the size caps."""
        settings = self._settings
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "MS-RequestId": str(uuid.uuid4()),
            "MS-CorrelationId": correlation_id,
            "X-Locale": settings.locale,
        }
        self.request_count += 1
        outcome, answer_class = self._request(url, headers, deadline, correlation_id)
        PARTNER_CENTER_ANSWERS.add(1, {"class": answer_class})
        return outcome

    def _request(self, url: str, headers: dict[str, str], deadline: float,
                 correlation_id: str) -> tuple[Answer | Transient | TooLarge, str]:
        """The answer, or why there is none, with its class for PARTNER_CENTER_ANSWERS."""
        settings = self._settings
        try:
            answer = request_within(self._session, "GET", url, deadline=deadline, headers=headers,
                                    max_bytes=settings.max_response_bytes,
                                    max_decoded_bytes=settings.max_decompressed_bytes, allow_redirects=False,
                                    timeout=(settings.connect_timeout, settings.read_timeout))
            return answer, answer_class(answer.status_code)
        except ResponseTooLarge as exc:
            log.warning("Partner Center's answer was too large: %s [correlationId=%s]", exc, correlation_id)
            return TooLarge(f"answer too large: {exc}"), answer_class(None, "too_large")
        except DeadlineExceeded:
            return Transient(f"no complete answer within PARTNER_CENTER_CALL_DEADLINE_SECONDS "
                             f"({deadline:g} s)", retry_now=False), answer_class(None, "timeout")
        except requests.Timeout:
            return Transient("timeout"), answer_class(None, "timeout")
        except requests.ConnectionError as exc:
            return Transient(f"connection error: {type(exc).__name__}"), answer_class(None, "network")
        except requests.RequestException as exc:
            return (Transient(f"request failed: {type(exc).__name__}: {str(exc)[:200]}"),
                    answer_class(None, "network"))

    def _classify(self, answer: Answer, batch_tracking_id: str, correlation_id: str) -> PollResult:
        code = answer.status_code
        if code == 200:
            try:
                batch = parse_batch_status(answer.content)  # a stream over the spooled body
            except MalformedStatusError as exc:
                return Transient(f"malformed status body: {exc}")
            if batch.batch_tracking_id not in (None, batch_tracking_id):
                return Transient(f"status body is for another batch ({batch.batch_tracking_id})")
            return StatusReceived(batch)
        if code == 404:
            return NotFound()
        if code in (401, 403):
            log.warning("Partner Center answered %d (MS-RequestId %s) [correlationId=%s]",
                        code, answer.headers.get("MS-RequestId"), correlation_id)
            return Denied(code, f"Partner Center answered {code}")
        if code == 429:
            return Throttled(parse_retry_after(answer.headers.get("Retry-After")))
        if code >= 500:
            return Transient(f"HTTP {code}")
        log.warning("unexpected HTTP %d from Partner Center (MS-RequestId %s) [correlationId=%s]",
                    code, answer.headers.get("MS-RequestId"), correlation_id)
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


def _token_failure(exc: Exception, correlation_id: str) -> PollResult:
    """Entra refusing the credential for good counts toward access_denied; an identity outage is transient."""
    failure = classify_token_failure(exc)
    if failure.permanent:
        log.warning("could not get a Partner Center token, permanently: %s; this counts toward access_denied "
                    "[correlationId=%s]", failure.reason, correlation_id)
        return Denied(401, failure.reason)
    log.warning("could not get a Partner Center token, transient: %s; polling again later [correlationId=%s]",
                failure.reason, correlation_id)
    return Transient(f"token request failed: {failure.reason}", retry_now=False)
