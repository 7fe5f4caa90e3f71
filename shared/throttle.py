"""Partner Center's throttling, obeyed by the whole fleet: when one poll is told to back off (429), every poll of
the partner, in every process, waits until the Retry-After has passed, without calling Partner Center.

The shared state is one small row in the batch table (PartitionKey ~throttle, RowKey partner) holding when the
partner may call again. Each process reads it at most every REFRESH_SECONDS and otherwise uses what it read, so a
poll in the normal case costs no storage request; a 429 another process got reaches this one within that time.
Partner Center throttles per partner (and for some APIs per partner + customer); the partner scope is the safe one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from .log import context_logger

PARTNER_SCOPE = "partner"
REFRESH_SECONDS = 5.0
DEFAULT_BACKOFF_SECONDS = 30.0  # a 429 without a usable Retry-After
RESUME_SPREAD_SECONDS = 30.0  # polls resume spread over up to this long (a fifth of the wait at most)
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


class ThrottleGate:
    def __init__(self, store: ThrottleStore, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._monotonic = monotonic
        self._until: datetime | None = None
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def wait(self, now: datetime) -> float:
        """Seconds this process must still wait before calling Partner Center (0: go ahead)."""
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
    return min(RESUME_SPREAD_SECONDS, wait / 5)
