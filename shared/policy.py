"""Pure polling decisions: what to do with one poll's result, and when to poll next."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field, replace

from .models import BatchStatus, Outcome, UploadStatus


@dataclass(frozen=True)
class PollingPolicy:
    initial_delay: float = 30.0
    max_delay: float = 600.0
    deadline: float = 172_800.0
    not_found_grace: float = 900.0
    # The next delay is this fraction of the time already waited (bounded by the two delays above):
    # poll times grow geometrically, so the lag after completion stays near a fixed share of the
    # batch's duration while the number of calls grows only with the logarithm of it.
    backoff_factor: float = 0.18
    jitter: float = 0.1
    auth_failure_limit: int = 3
    # Answers over the size caps in a row before the batch ends response_too_large.
    too_large_limit: int = 3
    # Poll times learned from past batches (shared/schedule.py); empty: the elapsed-proportional rule alone.
    learned: tuple[float, ...] = ()


# Results of one poll, as classified by the Partner Center client.
@dataclass(frozen=True)
class StatusReceived:
    batch: BatchStatus


@dataclass(frozen=True)
class NotFound:
    pass


@dataclass(frozen=True)
class Throttled:
    retry_after: float | None
    # True: this poll did not call: the fleet waits (another poll of the partner was told to back off, or the
    # minute's call budget is spent; shared/throttle.py). Not this batch's fault, so not counted as an error.
    shared: bool = field(default=False, compare=False)
    why: str = field(default="the partner is throttled", compare=False)  # why a shared wait waits


@dataclass(frozen=True)
class Transient:
    reason: str
    retry_now: bool = field(default=True, compare=False)  # worth a short in-process retry before requeueing


@dataclass(frozen=True)
class TooLarge:
    """The answer was over a size cap (PARTNER_CENTER_MAX_RESPONSE_BYTES / _MAX_DECOMPRESSED_BYTES)."""

    reason: str


@dataclass(frozen=True)
class Denied:
    """Partner Center refused the token (401/403 after one refresh), or Entra refused it for good."""

    status_code: int
    reason: str = field(default="", compare=False)


PollResult = StatusReceived | NotFound | Throttled | Transient | TooLarge | Denied


@dataclass(frozen=True)
class Requeue:
    delay: float
    reason: str
    errors: int = 0
    auth_failures: int = 0
    too_large: int = 0


@dataclass(frozen=True)
class Finalize:
    outcome: Outcome
    reason: str


Decision = Requeue | Finalize


def final_outcome(batch: BatchStatus) -> Outcome:
    """completed_with_failures when any device failed, whatever the batch's own status says, and when the
    batch says finished_with_errors even if no listed device failed (a batch-level error is never dropped)."""
    if batch.failed_devices or batch.status == UploadStatus.FINISHED_WITH_ERRORS:
        return Outcome.COMPLETED_WITH_FAILURES
    return Outcome.COMPLETED


def decide(
    result: PollResult,
    elapsed: float,
    errors: int,
    auth_failures: int,
    policy: PollingPolicy,
    rng: random.Random,
    too_large: int = 0,
) -> Decision:
    """Decide after one poll. elapsed: seconds since the batch was first seen; errors, auth_failures and
    too_large: the chain's consecutive transient faults, refusals and oversized answers so far."""
    if isinstance(result, StatusReceived) and result.batch.is_final:
        return Finalize(final_outcome(result.batch), f"batch status {result.batch.status}")
    if isinstance(result, Denied):
        denied = auth_failures + 1
        if denied >= policy.auth_failure_limit:
            detail = f": {result.reason}" if result.reason else ""
            return Finalize(Outcome.ACCESS_DENIED, f"HTTP {result.status_code} on {denied} polls in a row{detail}")
    if isinstance(result, TooLarge) and too_large + 1 >= policy.too_large_limit:
        return Finalize(Outcome.RESPONSE_TOO_LARGE, f"{result.reason} on {too_large + 1} polls in a row")
    if isinstance(result, NotFound) and elapsed >= policy.not_found_grace:
        return Finalize(Outcome.NOT_FOUND, f"404 {elapsed:.0f} s after first seen")
    if elapsed >= policy.deadline:
        return Finalize(Outcome.TIMED_OUT, f"not final {elapsed:.0f} s after first seen; last answer: "
                                           f"{describe(result)}")

    scheduled = scheduled_delay(elapsed, policy)
    if isinstance(result, StatusReceived):
        return _requeue(scheduled, f"batch status {result.batch.status}", 0, 0, elapsed, policy, rng)
    if isinstance(result, NotFound):
        return _requeue(scheduled, "404: batch not visible yet", 0, 0, elapsed, policy, rng)
    if isinstance(result, Throttled) and result.shared:
        wait = result.retry_after or 0.0
        return _requeue(max(scheduled, wait), f"{result.why}: waiting {wait:.0f} s", errors, auth_failures,
                        elapsed, policy, rng, floor=wait)
    failures = errors + 1
    delay = max(scheduled, error_backoff(failures, policy))
    if isinstance(result, Throttled):
        retry_after = result.retry_after or 0.0
        return _requeue(
            max(delay, retry_after), f"429 (Retry-After {retry_after:g} s)", failures, auth_failures,
            elapsed, policy, rng, floor=retry_after,
        )
    if isinstance(result, Denied):
        reason = f"HTTP {result.status_code}" + (f": {result.reason}" if result.reason else "")
        return _requeue(delay, reason, errors, auth_failures + 1, elapsed, policy, rng)
    if isinstance(result, TooLarge):
        return replace(_requeue(delay, result.reason, failures, auth_failures, elapsed, policy, rng),
                       too_large=too_large + 1)
    return _requeue(delay, result.reason, failures, auth_failures, elapsed, policy, rng)


def describe(result: PollResult) -> str:
    """One poll's result in a few words, for the batch row's lastResult and the alert's reason."""
    if isinstance(result, StatusReceived):
        return f"batch status {result.batch.status}"
    if isinstance(result, NotFound):
        return "404"
    if isinstance(result, Throttled):
        return "429"
    if isinstance(result, Denied):
        return f"HTTP {result.status_code}" + (f": {result.reason}" if result.reason else "")
    return result.reason


def scheduled_delay(elapsed: float, policy: PollingPolicy) -> float:
    """The delay to the next poll after an ordinary answer: to the learned schedule's next time while there is
    one, else this share of the time already waited; always between the initial and the maximum delay."""
    by_elapsed = min(policy.max_delay, max(policy.initial_delay, policy.backoff_factor * elapsed))
    learned = policy.learned
    due = bisect.bisect_right(learned, elapsed)
    if due < len(learned):
        aimed_from = learned[due - 1] if due else 0.0
        # A poll that the jitter brought a little early is the poll it was aiming for: aim at the next time, or
        # it would poll again an initial delay later, one call more than the schedule.
        if learned[due] - elapsed <= policy.jitter * (learned[due] - aimed_from):
            due += 1
    if due < len(learned):
        return min(policy.max_delay, max(policy.initial_delay, learned[due] - elapsed))
    return by_elapsed


def error_backoff(consecutive_errors: int, policy: PollingPolicy) -> float:
    exponent = min(max(consecutive_errors - 1, 0), 32)
    return min(policy.max_delay, policy.initial_delay * 2.0**exponent)


def _requeue(
    delay: float,
    reason: str,
    errors: int,
    auth_failures: int,
    elapsed: float,
    policy: PollingPolicy,
    rng: random.Random,
    floor: float = 0.0,
) -> Requeue:
    jittered = delay * (1.0 + rng.uniform(-policy.jitter, policy.jitter))
    jittered = max(floor, min(jittered, max(policy.max_delay, floor)))
    # One last poll at the deadline rather than after it.
    remaining = policy.deadline - elapsed
    jittered = max(0.0, min(jittered, remaining)) if remaining > 0 else 0.0
    return Requeue(round(jittered, 3), reason, errors, auth_failures)
