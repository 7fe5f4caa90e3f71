"""Which poll schedule a batch follows (POLL_SCHEDULE=learned): the one learned from its customer's past batches when
the customer has POLL_LEARN_MIN_BATCHES of them, else from every customer's, else today's elapsed rule.

The summaries (shared/durations.py) are rows in the batch table (PartitionKey ~durations, RowKey the customer id or
ALL), updated under their etag when a batch is finalised. Each process reads a scope's rows at most every
REFRESH_SECONDS and relearns its schedule only when they changed, so a poll in the normal case costs no storage
request and no computation. A scope whose newest batches no longer look like its history (DurationSummary.shifted)
goes back to the elapsed rule until the history has caught up with them. Nothing here ever stops a poll: a summary
that cannot be read or written is logged and the elapsed rule stands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from .durations import DurationSummary
from .log import context_logger
from .policy import PollingPolicy
from .schedule import learn_schedule

ALL = "~all"  # the scope of every customer's batches (a customer id never starts with ~)
REFRESH_SECONDS = 300.0
# A schedule is learned again once its summary holds this many more batches (or when it starts or stops looking
# shifted): one batch more changes a summary of about 200 too little to be worth a dynamic program.
RELEARN_AFTER = 10

log = context_logger("batchwatch.poll_schedule")


class DurationStore(Protocol):
    def get_durations(self, scope: str) -> DurationSummary | None:
        """The scope's summary (None: no batch recorded yet)."""
        ...

    def add_duration(self, scope: str, seconds: float) -> None:
        """Add one batch to the scope's summary, under its etag (a lost race is retried or dropped)."""
        ...


@dataclass(frozen=True)
class Chosen:
    """A scope's schedule as this process last worked it out."""

    read_at: float
    batches: int  # the summary's batch count it was learned from
    schedule: tuple[float, ...]
    why: str
    verdict: str  # few (batches), shifted or learned


class LearnedSchedules:
    def __init__(self, store: DurationStore, min_batches: int, enabled: bool = True,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self.min_batches = min_batches
        self.enabled = enabled
        self._monotonic = monotonic
        self._chosen: dict[str, Chosen] = {}
        self._lock = threading.Lock()

    def policy_for(self, customer_id: str, policy: PollingPolicy) -> PollingPolicy:
        """The policy with the customer's learned schedule (none: the elapsed rule)."""
        if not self.enabled:
            return policy
        customer = self._choose(customer_id, policy)
        if customer.schedule or customer.batches >= self.min_batches:
            return replace(policy, learned=customer.schedule)
        return replace(policy, learned=self._choose(ALL, policy).schedule)

    def record(self, customer_id: str, seconds: float) -> None:
        """A finalised batch took this many seconds from first seen to complete: add it to both scopes."""
        for scope in (customer_id, ALL):
            try:
                self._store.add_duration(scope, max(0.0, seconds))
            except Exception as exc:  # a summary is statistics: a batch missing from it changes little
                log.warning("could not add a batch's duration to the %s summary: %s: %s", _name(scope),
                            type(exc).__name__, exc)

    def _choose(self, scope: str, policy: PollingPolicy) -> Chosen:
        with self._lock:
            chosen = self._chosen.get(scope)
            now = self._monotonic()
            if chosen is not None and now - chosen.read_at < REFRESH_SECONDS:
                return chosen
            try:
                summary = self._store.get_durations(scope)
            except Exception as exc:
                log.warning("could not read the %s summary of durations: %s: %s", _name(scope),
                            type(exc).__name__, exc)
                summary = None
                if chosen is not None:  # keep what was learned; read again after REFRESH_SECONDS
                    self._chosen[scope] = replace(chosen, read_at=now)
                    return self._chosen[scope]
            batches = summary.batches if summary else 0
            if (chosen is not None and 0 <= batches - chosen.batches < RELEARN_AFTER
                    and chosen.verdict == self._verdict(summary)):
                self._chosen[scope] = replace(chosen, read_at=now)
                return self._chosen[scope]
            fresh = self._learn(summary, policy, now)
            if chosen is None or fresh.verdict != chosen.verdict:
                log.info("poll schedule for %s: %s", _name(scope), fresh.why)
            self._chosen[scope] = fresh
            return fresh

    def _verdict(self, summary: DurationSummary | None) -> str:
        if summary is None or summary.batches < self.min_batches:
            return "few"
        return "shifted" if summary.shifted else "learned"

    def _learn(self, summary: DurationSummary | None, policy: PollingPolicy, now: float) -> Chosen:
        verdict = self._verdict(summary)
        if summary is None or verdict == "few":
            batches = summary.batches if summary else 0
            return Chosen(now, batches, (), f"the elapsed rule ({batches} batches recorded, "
                                             f"{self.min_batches} needed to learn)", verdict)
        if verdict == "shifted":
            return Chosen(now, summary.batches, (), "the elapsed rule (the newest batches no longer look like the "
                                                    f"history: their mean position in it is {summary.position:.2f})",
                          verdict)
        schedule = learn_schedule(summary, replace(policy, learned=()))
        return Chosen(now, summary.batches, schedule, f"learned from {summary.batches} batches, {len(schedule)} "
                                                      f"poll times up to {schedule[-1] if schedule else 0:.0f} s",
                      verdict)


def _name(scope: str) -> str:
    return "every customer" if scope == ALL else f"customer {scope}"
