"""How long past batches took, summarised small enough for one table row: a histogram of durations over fixed
log-spaced bins, where each new batch first ages the others (recent batches weigh more), and a running measure
of how the newest batches sit against the history before them, which tells when batches stop looking like it.

A batch's duration is the time from when batchwatch first saw it to when Partner Center completed it: what the
poll schedule waits through. The summary is pure data; shared/results_store.py keeps it in Table Storage.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SHORTEST = 10.0  # seconds: the first bin holds everything up to here
LONGEST = 172_800.0  # the default deadline: the last bin (from about 166,700 s) holds everything longer
BIN_RATIO = 1.1  # each bin 10% wider than the one before
BINS = math.ceil(math.log(LONGEST / SHORTEST) / math.log(BIN_RATIO)) + 1
EDGES = tuple(SHORTEST * BIN_RATIO**index for index in range(BINS))  # bin i holds [EDGES[i-1], EDGES[i])
DECAY = 0.999  # each new batch ages every other by this: the newest ~1,000 batches make up most of the weight
FORGOTTEN = 1e-6  # a bin's weight below this is dropped: a lone batch is forgotten about 13,800 batches later
# The position of each new batch in the history before it (its share of the weight below its duration) is 0.5 on
# average while batches look like the history. Its running mean over about the last 20 batches (SHIFT_MEMORY) away
# from 0.5 by more than SHIFT_THRESHOLD means they no longer do.
SHIFT_MEMORY = 0.05
SHIFT_THRESHOLD = 0.2
SHIFT_EVIDENCE = 20.0  # batches of history needed before a position counts


@dataclass(frozen=True)
class DurationSummary:
    weights: tuple[float, ...] = (0.0,) * BINS  # per bin, aged by DECAY at every new batch
    position: float = 0.5  # running mean of each new batch's position in the history before it
    batches: int = 0  # every batch ever added, not aged

    @property
    def weight(self) -> float:
        """The history's aged weight, in batches: at most 1 / (1 - DECAY)."""
        return sum(self.weights)

    @property
    def effective_batches(self) -> float:
        """How many equally weighted batches the aged weights are worth as a sample ((sum w)^2 / sum w^2): the
        batch count while it is small, at most about 2 / (1 - DECAY) however many batches were added."""
        if self.batches <= 0:
            return 0.0
        total = (1 - DECAY**self.batches) / (1 - DECAY)
        squares = (1 - DECAY ** (2 * self.batches)) / (1 - DECAY**2)
        return total * total / squares

    @property
    def shifted(self) -> bool:
        """The newest batches no longer look like the history: longer or shorter by far."""
        return far_from_middle(self.position)

    def position_of(self, others: DurationSummary) -> float:
        """The mean position of the other summary's batches in this history (each one's share_below): 0.5 when
        they look like it, towards 1 when they take longer, towards 0 when shorter."""
        total, their_total = self.weight, others.weight
        if total <= 0 or their_total <= 0:
            return 0.5
        below = position = 0.0
        for mine, theirs in zip(self.weights, others.weights, strict=True):
            position += theirs * (below + mine / 2)
            below += mine
        return position / (total * their_total)

    def add(self, duration: float) -> DurationSummary:
        """This summary with one more batch of this many seconds."""
        position = self.position
        if self.weight >= SHIFT_EVIDENCE:
            position += SHIFT_MEMORY * (self.share_below(duration) - position)
        index = bin_of(duration)
        aged = [weight * DECAY + (1.0 if bin_index == index else 0.0) for bin_index, weight in enumerate(self.weights)]
        return DurationSummary(tuple(weight if weight >= FORGOTTEN else 0.0 for weight in aged), position,
                               self.batches + 1)

    def to_fields(self) -> dict[str, Any]:
        """As table properties: the weights as a JSON list (1 to 2 KB), unrounded, so that the stored summary ages
        as it would in memory (rounded to 6 decimals, a weight under 0.0005 came back to itself after each batch's
        ageing, and an old batch was never forgotten)."""
        return {"weights": json.dumps(list(self.weights), separators=(",", ":")),
                "position": self.position, "batches": self.batches}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> DurationSummary | None:
        """None when the stored properties are not a summary of these bins (then a new one starts)."""
        try:
            weights = tuple(float(weight) for weight in json.loads(fields["weights"]))
            position, batches = float(fields["position"]), int(fields["batches"])
        except (KeyError, TypeError, ValueError):
            return None
        usable = all(math.isfinite(weight) and weight >= 0 for weight in weights)
        if len(weights) != BINS or not usable or not 0 <= position <= 1 or batches < 0:
            return None
        return cls(weights, position, batches)

    def share_below(self, duration: float) -> float:
        """The share of the history's weight below this duration, half of its own bin counted."""
        index = bin_of(duration)
        total = self.weight
        if total <= 0:
            return 0.5
        return (sum(self.weights[:index]) + self.weights[index] / 2) / total


def far_from_middle(position: float) -> bool:
    """A mean position in a history (0.5 on average for batches like it) that says the batches are unlike it."""
    return abs(position - 0.5) > SHIFT_THRESHOLD


def bin_of(duration: float) -> int:
    return min(BINS - 1, bisect.bisect_right(EDGES, duration))


def bin_range(index: int) -> tuple[float, float]:
    """Where bin index's durations lie (the first from 0; longer ones than the last bin's are counted in it)."""
    return EDGES[index - 1] if index else 0.0, EDGES[index]


def summarise(durations_oldest_first: Sequence[float]) -> DurationSummary:
    summary = DurationSummary()
    for duration in durations_oldest_first:
        summary = summary.add(duration)
    return summary
