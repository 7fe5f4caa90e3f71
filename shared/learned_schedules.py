"""Which poll schedule a batch follows (POLL_SCHEDULE=learned): the one learned from its customer's past batches when
the customer has POLL_LEARN_MIN_BATCHES of them, else from every customer's (unless the customer's own batches,
once there are FIT_EVIDENCE of them, do not look like everyone's), else today's elapsed rule.

The summaries (shared/durations.py) are rows in the batch table (PartitionKey ~durations, RowKey the customer id or
~all), updated under their etag when a batch completes. Each process reads a scope's row at most once every
REFRESH_SECONDS, and learns its schedule again only when RELEARN_AFTER more batches were added; a customer polled
more often than that costs no storage request and no computation per poll. The row is read and the schedule learned
outside the lock, so other polls in the process go on with what was known. A scope whose newest batches no longer
look like its history (DurationSummary.shifted) goes back to the elapsed rule until the history has caught up with
them. Nothing here ever stops a poll: a summary that cannot be read, written or learned from is logged, and what
was learned before, or else the elapsed rule, stands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from .durations import DurationSummary, far_from_middle
from .log import context_logger
from .policy import PollingPolicy
from .schedule import learn_schedule

ALL = "~all"  # the scope of every customer's batches (a customer id never starts with ~)
REFRESH_SECONDS = 300.0
# A schedule is learned again once its summary holds this many more batches (or when it starts or stops looking
# shifted): one batch more changes a summary of hundreds too little to be worth a dynamic program.
RELEARN_AFTER = 10
# A customer short of its own schedule follows every customer's only while its batches sit in their history as
# theirs do. From this many batches its mean position there says whether they do (about 3% of customers whose batches
# are like everyone's are told otherwise by chance, and are polled by the elapsed rule instead).
FIT_EVIDENCE = 10

log = context_logger("batchwatch.poll_schedule")

# unknown: not read yet (the first read is under way) or unreadable: the elapsed rule meanwhile.
Verdict = Literal["unknown", "few batches", "shifted", "learned"]


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
    verdict: Verdict
    summary: DurationSummary | None = None  # as last read


class LearnedSchedules:
    def __init__(self, store: DurationStore, min_batches: int, enabled: bool = True,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._min_batches = min_batches
        self._enabled = enabled
        self._monotonic = monotonic
        self._chosen: dict[str, Chosen] = {}
        self._unlike: set[str] = set()  # customers whose batches do not look like every customer's, as last logged
        self._lock = threading.Lock()

    def policy_for(self, customer_id: str, policy: PollingPolicy) -> PollingPolicy:
        """The policy with the customer's learned schedule (none: the elapsed rule)."""
        if not self._enabled:
            return policy
        customer = self._choose(customer_id, policy)
        if customer.verdict != "few batches":
            return replace(policy, learned=customer.schedule)
        everyone = self._choose(ALL, policy)
        if everyone.schedule and not self._looks_like_everyone(customer_id, customer.summary, everyone.summary):
            return replace(policy, learned=())
        return replace(policy, learned=everyone.schedule)

    def record(self, customer_id: str, seconds: float) -> None:
        """A batch completed this many seconds after it was first seen: add it to both scopes. A batch complete
        before it was first seen is final at the first poll whatever the schedule, and is left out."""
        if seconds <= 0:
            return
        for scope in (customer_id, ALL):
            try:
                self._store.add_duration(scope, seconds)
            except Exception as exc:  # a summary is statistics: a batch missing from it changes little
                log.warning("could not add a batch's duration to the %s summary: %s: %s", _name(scope),
                            type(exc).__name__, exc)

    def _looks_like_everyone(self, customer_id: str, own: DurationSummary | None,
                             everyone: DurationSummary | None) -> bool:
        """Whether the customer's batches sit in every customer's history as theirs do (with too few of its own to
        tell: yes). A change of answer is logged."""
        if own is None or everyone is None or own.batches < FIT_EVIDENCE:
            return True
        position = everyone.position_of(own)
        unlike = far_from_middle(position)
        with self._lock:
            changed = unlike != (customer_id in self._unlike)
            if unlike:
                self._unlike.add(customer_id)
            else:
                self._unlike.discard(customer_id)
        if changed:
            log.info("poll schedule for %s: %s", _name(customer_id),
                     f"the elapsed rule (its {own.batches} batches do not look like every customer's: their mean "
                     f"position in that history is {position:.2f})" if unlike
                     else "every customer's (its batches look like theirs again)")
        return not unlike

    def _choose(self, scope: str, policy: PollingPolicy) -> Chosen:
        with self._lock:
            chosen = self._chosen.get(scope)
            now = self._monotonic()
            if chosen is not None and now - chosen.read_at < REFRESH_SECONDS:
                return chosen
            # The others go on with what was known (or the elapsed rule) while this poll reads the row.
            self._chosen[scope] = (replace(chosen, read_at=now) if chosen is not None
                                   else Chosen(now, 0, (), "the elapsed rule (reading the history)", "unknown"))
        fresh = self._refresh(scope, chosen, policy, now)
        with self._lock:
            self._chosen[scope] = fresh
        if chosen is None or fresh.verdict != chosen.verdict:
            log.info("poll schedule for %s: %s", _name(scope), fresh.why)
        return fresh

    def _refresh(self, scope: str, chosen: Chosen | None, policy: PollingPolicy, now: float) -> Chosen:
        try:
            summary = self._store.get_durations(scope)
            verdict = self._verdict(summary)
            if chosen is not None and verdict == chosen.verdict and summary is not None and (
                    0 <= summary.batches - chosen.batches < RELEARN_AFTER):
                return replace(chosen, read_at=now, summary=summary)
            return self._learn(scope, summary, verdict, policy, now)
        except Exception as exc:  # keep what was learned (or the elapsed rule); read again after REFRESH_SECONDS
            log.warning("could not read or learn from the %s summary of durations: %s: %s", _name(scope),
                        type(exc).__name__, exc)
            return (replace(chosen, read_at=now) if chosen
                    else Chosen(now, 0, (), "the elapsed rule (the history cannot be read)", "unknown"))

    def _verdict(self, summary: DurationSummary | None) -> Verdict:
        if summary is None or summary.batches < self._min_batches:
            return "few batches"
        return "shifted" if summary.shifted else "learned"

    def _learn(self, scope: str, summary: DurationSummary | None, verdict: Verdict, policy: PollingPolicy,
               now: float) -> Chosen:
        if summary is None or verdict == "few batches":
            batches = summary.batches if summary else 0
            count = f"{batches} batches recorded, {self._min_batches} needed to learn"
            why = (f"the elapsed rule ({count})" if scope == ALL
                   else f"every customer's schedule while there is one, else the elapsed rule ({count} its own)")
            return Chosen(now, batches, (), why, verdict, summary)
        if verdict == "shifted":
            return Chosen(now, summary.batches, (), "the elapsed rule (the newest batches no longer look like the "
                                                    f"history: their mean position in it is {summary.position:.2f})",
                          verdict, summary)
        schedule = learn_schedule(summary, replace(policy, learned=()))
        why = (f"learned from {summary.batches} batches, {len(schedule)} poll times up to {schedule[-1]:.0f} s"
               if schedule else f"the elapsed rule (nothing learned from {summary.batches} batches makes fewer "
                                "calls at no worse lag)")
        return Chosen(now, summary.batches, schedule, why, verdict, summary)


def _name(scope: str) -> str:
    return "every customer" if scope == ALL else f"customer {scope}"
