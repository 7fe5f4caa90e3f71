"""Partner Center's throttling, obeyed by the whole fleet: when one poll is told to back off (429), every poll of
the partner, in every process, waits until the Retry-After has passed, without calling Partner Center.

The shared state is one small row in the batch table (PartitionKey ~throttle, RowKey partner) holding when the
partner may call again. Each process reads it at most every REFRESH_SECONDS and otherwise uses what it read, so a
poll in the normal case costs no storage request; a 429 another process got reaches this one within that time.
Partner Center throttles per partner (and for some APIs per partner + customer) and its 429 does not say which;
the partner scope is the safe one, so every 429 holds the whole partner.

An optional call budget (PARTNER_CENTER_MAX_CALLS_PER_MINUTE) is shared the same way: one row (RowKey budget)
counts the calls granted in the current UTC minute. A process claims calls in blocks, with an etag-checked write,
and spends them without a storage request; when the minute's budget is spent, polls wait for the next minute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from .log import context_logger

PARTNER_SCOPE = "partner"
BUDGET_WINDOW_SECONDS = 60.0
BLOCKS_PER_WINDOW = 20  # a process claims a twentieth of the minute's budget at a time (at least one call)
REFRESH_SECONDS = 5.0
DEFAULT_BACKOFF_SECONDS = 30.0  # a 429 without a usable Retry-After
# Polls resume spread over a tenth of the wait (as a poll's own 429 is jittered), and never over more than this:
# a wider spread only adds lag, since the limit's window has started afresh when the wait ends.
RESUME_SPREAD_SECONDS = 30.0
# The longest one wait at the gate: a message looks again after it, so a clock that jumped back, or a
# Retry-After of hours, never parks the fleet for long at once.
LONGEST_WAIT_SECONDS = 900.0

log = context_logger("batchwatch.throttle")


class ThrottleStore(Protocol):
    def get_throttle(self, scope: str) -> datetime | None:
        """Until when the scope must not call Partner Center (None: no throttle recorded)."""
        ...

    def extend_throttle(self, scope: str, until: datetime) -> None:
        """Record until, unless a later time is recorded already."""
        ...

    def claim_calls(self, window: datetime, wanted: int, budget: int) -> int:
        """Take up to wanted of the window's budget; how many were granted (0: the window's budget is spent)."""
        ...


class ThrottleGate:
    """The fleet's 429 state as this process knows it. Not shared (PARTNER_CENTER_FLEET_THROTTLE=false): every
    poll handles its own 429 and the others keep calling."""

    def __init__(self, store: ThrottleStore, monotonic: Callable[[], float] = time.monotonic,
                 shared: bool = True) -> None:
        self._store = store
        self._monotonic = monotonic
        self.shared = shared
        self._until: datetime | None = None
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def wait(self, now: datetime) -> float:
        """Seconds this process must still wait before calling Partner Center (0: go ahead)."""
        if not self.shared:
            return 0.0
        with self._lock:
            if self._monotonic() - self._read_at >= REFRESH_SECONDS:
                self._read_at = self._monotonic()
                try:
                    stored = self._store.get_throttle(PARTNER_SCOPE)
                except Exception as exc:  # the gate must never stop polling: without it, 429s are handled per poll
                    log.warning("could not read the fleet's throttle state: %s: %s", type(exc).__name__, exc)
                    stored = None
                if stored is not None and (self._until is None or stored > self._until):
                    self._until = stored
            until = self._until
        return min(LONGEST_WAIT_SECONDS, max(0.0, (until - now).total_seconds())) if until else 0.0

    def record(self, now: datetime, retry_after: float | None) -> None:
        """A 429: nobody in the fleet calls again before now + Retry-After."""
        if not self.shared:
            return
        until = now + timedelta(seconds=retry_after if retry_after and retry_after > 0 else DEFAULT_BACKOFF_SECONDS)
        with self._lock:
            if self._until is not None and self._until >= until:
                return
            self._until = until
        try:
            self._store.extend_throttle(PARTNER_SCOPE, until)
        except Exception as exc:
            log.warning("could not share the 429 with the fleet: %s: %s", type(exc).__name__, exc)


def resume_spread(wait: float) -> float:
    """The most a waiting poll adds to the wait, at random, so that the fleet does not come back in a burst."""
    return min(RESUME_SPREAD_SECONDS, wait / 10)


class CallBudget:
    """At most calls_per_minute Partner Center calls per UTC minute across the fleet (see the module's docstring).

    Exact per minute, given clocks in step: the row never grants more than the budget. Calls a process claimed and
    did not spend before the minute ended are lost to that minute, so the fleet may make fewer; and a burst at the
    end of one minute and the start of the next can put up to twice the budget into 60 s that straddle the two.
    A storage failure grants the call: the budget must never stop polling.
    """

    def __init__(self, store: ThrottleStore, calls_per_minute: int) -> None:
        self._store = store
        self.calls_per_minute = calls_per_minute
        self._block = max(1, calls_per_minute // BLOCKS_PER_WINDOW)
        self._window: datetime | None = None
        self._left = 0
        self._spent = False
        self._lock = threading.Lock()

    def take(self, now: datetime) -> float:
        """Spend one call now (0), or the seconds until the next minute, when the budget is spent."""
        window = now.replace(second=0, microsecond=0)
        with self._lock:
            if window != self._window:
                self._window, self._left, self._spent = window, 0, False
            if self._left == 0 and not self._spent:
                self._left = self._claim(window)
                self._spent = self._left == 0
            if self._left > 0:
                self._left -= 1
                return 0.0
        return max(0.001, (window + timedelta(seconds=BUDGET_WINDOW_SECONDS) - now).total_seconds())

    def _claim(self, window: datetime) -> int:
        try:
            return self._store.claim_calls(window, self._block, self.calls_per_minute)
        except Exception as exc:  # a block granted here, so that an outage does not cost a storage timeout per poll
            log.warning("could not claim from the fleet's call budget, calling anyway: %s: %s",
                        type(exc).__name__, exc)
            return self._block


def budget_spread() -> float:
    """The most a poll that waits for the next minute's budget adds, at random: the whole minute."""
    return BUDGET_WINDOW_SECONDS
