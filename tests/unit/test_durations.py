"""The summary of past durations: recent batches weigh more, it fits a table row, and it notices when the newest
batches stop looking like the history."""

from __future__ import annotations

import math
import random

import pytest

from shared.durations import BINS, DECAY, FORGOTTEN, DurationSummary, bin_of, bin_range, far_from_middle, summarise


def _lognormal(rng: random.Random, median: float = 480.0) -> float:
    return min(max(rng.lognormvariate(math.log(median), 1.0), 60.0), 86_400.0)


def test_each_batch_lands_in_the_bin_that_holds_its_duration() -> None:
    for duration in (0.0, 9.99, 10.0, 480.0, 86_400.0, 172_800.0):
        low, high = bin_range(bin_of(duration))
        assert low <= duration < high
    assert bin_of(1e12) == BINS - 1 and bin_of(-5.0) == 0


def test_recent_batches_weigh_more_and_the_weight_is_bounded() -> None:
    summary = summarise([100.0, 1000.0])
    assert summary.weights[bin_of(1000.0)] == 1.0
    assert summary.weights[bin_of(100.0)] == pytest.approx(DECAY)
    long = summarise([300.0] * 5000)
    assert long.batches == 5000 and long.weight == pytest.approx(1 / (1 - DECAY), rel=0.01)


@pytest.mark.parametrize("batches", [0, 1, 50, 200, 5000])
def test_the_aged_weights_are_worth_as_many_batches_as_their_spread_says(batches: int) -> None:
    """(sum w)^2 / sum w^2 over the batches' own weights, worked out here one batch at a time."""
    weights = [DECAY**age for age in range(batches)]
    expected = sum(weights) ** 2 / sum(weight * weight for weight in weights) if batches else 0.0
    assert summarise([300.0] * batches).effective_batches == pytest.approx(expected)
    assert summarise([300.0] * batches).effective_batches <= 2 / (1 - DECAY)


def test_the_summary_round_trips_through_table_properties_within_a_row() -> None:
    summary = summarise([float(d) for d in range(60, 5000, 7)])
    fields = summary.to_fields()
    assert len(fields["weights"]) < 4000  # far below the 64 KiB a property may hold
    again = DurationSummary.from_fields(fields)
    assert again is not None and again.batches == summary.batches
    assert again.position == summary.position
    assert again.weights == summary.weights


def test_a_stored_summary_keeps_ageing_its_oldest_batches_until_they_are_forgotten() -> None:
    """As the store adds batches: read the row, add one, write it back. A far bin weighing 0.0004 ages as in memory
    (rounded to 6 decimals it stayed 0.0004 forever), and a weight under FORGOTTEN is dropped."""
    weights = [0.0] * BINS
    weights[bin_of(300.0)], weights[bin_of(50_000.0)] = 500.0, 0.0004
    stored = DurationSummary(tuple(weights), 0.5, 10_000).to_fields()
    for _ in range(1000):
        summary = DurationSummary.from_fields(stored)
        assert summary is not None
        stored = summary.add(300.0).to_fields()
    aged = DurationSummary.from_fields(stored)
    assert aged is not None and aged.weights[bin_of(50_000.0)] == pytest.approx(0.0004 * DECAY**1000)
    weights[bin_of(50_000.0)] = FORGOTTEN * 1.0005
    assert DurationSummary(tuple(weights), 0.5, 10_000).add(300.0).weights[bin_of(50_000.0)] == 0.0


@pytest.mark.parametrize("fields", [
    {}, {"weights": "not json", "position": 0.5, "batches": 1}, {"weights": "[1, 2]", "position": 0.5, "batches": 1},
    {"weights": "[" + ",".join(["-1"] * BINS) + "]", "position": 0.5, "batches": 1},
    {"weights": "[" + ",".join(["0"] * BINS) + "]", "position": float("nan"), "batches": 1},
    {"weights": "[" + ",".join(["0"] * BINS) + "]", "position": 0.5, "batches": "many"},
])
def test_stored_properties_that_are_not_a_summary_read_as_none(fields: dict[str, object]) -> None:
    assert DurationSummary.from_fields(fields) is None


def test_batches_like_the_history_are_not_a_shift() -> None:
    rng = random.Random(3)
    summary = summarise([_lognormal(rng) for _ in range(2000)])
    assert abs(summary.position - 0.5) < 0.15 and not summary.shifted


@pytest.mark.parametrize("factor", [4.0, 0.25])
def test_batches_four_times_longer_or_shorter_are_a_shift_within_a_few_dozen(factor: float) -> None:
    rng = random.Random(4)
    summary = summarise([_lognormal(rng) for _ in range(300)])
    added = 0
    while not summary.shifted:
        summary = summary.add(factor * _lognormal(rng))
        added += 1
        assert added <= 40, "the shift was not noticed"
    # The history then learns the new durations and the shift is over.
    for _ in range(600):
        summary = summary.add(factor * _lognormal(rng))
    assert not summary.shifted


def test_the_first_batches_are_not_judged_against_a_history_too_small_to_say() -> None:
    summary = summarise([100.0] * 5 + [10_000.0] * 5)
    assert summary.position == 0.5


# For two log-normal laws of the same sigma 1, one 4 times the other: P(shorter < longer) = Phi(ln 4 / sqrt 2) = 0.84.
@pytest.mark.parametrize(("factor", "expected", "unlike"), [(1.0, 0.5, False), (4.0, 0.84, True), (0.25, 0.16, True)])
def test_where_one_summary_s_batches_sit_in_another_s_history(factor: float, expected: float, unlike: bool) -> None:
    rng = random.Random(6)
    history = summarise([_lognormal(rng) for _ in range(1000)])
    customer = summarise([factor * _lognormal(rng) for _ in range(30)])
    position = history.position_of(customer)
    assert abs(position - expected) < 0.08
    assert far_from_middle(position) == unlike
    assert DurationSummary().position_of(customer) == history.position_of(DurationSummary()) == 0.5


def test_a_summary_sits_in_the_middle_of_itself() -> None:
    summary = summarise([100.0, 200.0, 200.0, 5000.0])
    assert summary.position_of(summary) == pytest.approx(0.5)
