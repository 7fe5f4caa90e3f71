"""The schedule learned from past durations: fewer calls where batches do not finish, the elapsed rule past
the history, and nothing odd from empty or tiny histories."""

from __future__ import annotations

import math
import random
import statistics

import pytest

import shared.schedule as schedule_module
from shared.durations import BIN_RATIO, EDGES, DurationSummary, summarise
from shared.policy import PollingPolicy, scheduled_delay
from shared.schedule import (
    KERNEL_WIDTH,
    TARGET_SHARE,
    WIDEST_KERNEL,
    Density,
    History,
    evaluate,
    expect,
    following,
    learn_schedule,
    rule_of_thumb,
    smooth,
)

POLICY = PollingPolicy()


def _lognormal(seed: int, count: int) -> list[float]:
    rng = random.Random(seed)
    return [min(max(rng.lognormvariate(math.log(480), 1.0), 60.0), 86_400.0) for _ in range(count)]


def _pareto(seed: int, count: int) -> list[float]:
    rng = random.Random(seed)
    return [min(120 * rng.paretovariate(1.5), 86_400.0) for _ in range(count)]


def _bimodal(seed: int, count: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(120, 300) if rng.random() < 0.9 else rng.uniform(7_200, 21_600) for _ in range(count)]


def _today(history: History) -> tuple[float, float, float]:
    outcome = evaluate(lambda elapsed: scheduled_delay(elapsed, POLICY), history)
    return outcome.calls, outcome.mean_lag, outcome.p95_lag


def test_an_empty_history_learns_nothing_and_the_elapsed_rule_stands() -> None:
    assert learn_schedule(DurationSummary(), POLICY) == ()
    assert following((), POLICY)(1000.0) == scheduled_delay(1000.0, POLICY)


@pytest.mark.parametrize("durations", [[300.0], [45.0, 50.0], [3600.0] * 3])
def test_a_tiny_history_gives_a_schedule_within_the_delays_and_the_elapsed_rule_after_it(
        durations: list[float]) -> None:
    schedule = learn_schedule(summarise(durations), POLICY)
    assert schedule and list(schedule) == sorted(schedule)
    gaps = [later - earlier for earlier, later in zip((0.0, *schedule), schedule, strict=False)]
    assert all(gap <= POLICY.max_delay + 1e-6 for gap in gaps)
    assert all(gap >= POLICY.initial_delay - 1e-6 for gap in gaps[:-1])
    delay = following(schedule, POLICY)
    for elapsed in (schedule[-1], schedule[-1] + 1, 10 * schedule[-1]):
        assert delay(elapsed) == scheduled_delay(elapsed, POLICY)  # past the history: today's rule


@pytest.mark.parametrize("policy", [PollingPolicy(initial_delay=0.0), PollingPolicy(max_delay=0.0),
                                    PollingPolicy(initial_delay=1.0, max_delay=1.0)])
def test_delays_that_leave_nothing_to_choose_or_too_much_learn_nothing(policy: PollingPolicy) -> None:
    """0 s delays, or 1 s delays over a day of history (over MAX_CANDIDATES poll times), are left to the elapsed
    rule, at once rather than after a long or endless computation."""
    assert learn_schedule(summarise([86_400.0, 600.0]), policy) == ()


def test_a_history_whose_schedules_save_too_few_calls_is_left_to_the_elapsed_rule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Mostly very short batches with a few of many hours: the only schedules at the target lag save almost no
    calls on the history (the best, 0.999 of them, made 1.01 times the elapsed rule's calls at 1.02 times its lag
    on 20,000 new batches like it). None is learned: a schedule must save at least a tenth of the calls."""
    rng = random.Random(8)
    durations = [rng.uniform(20, 150) if rng.random() < 0.97 else rng.uniform(21_600, 79_200) for _ in range(300)]
    assert learn_schedule(summarise(durations), POLICY) == ()
    monkeypatch.setattr(schedule_module, "CALLS_SHARE", 1.0)
    assert learn_schedule(summarise(durations), POLICY)


def test_a_schedule_that_would_make_more_calls_than_the_elapsed_rule_is_not_learned(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With a lag target of a third of the elapsed rule's, only dense schedules reach it: more calls, so none."""
    history = summarise(_lognormal(1, 200))
    assert learn_schedule(history, POLICY)
    monkeypatch.setattr(schedule_module, "TARGET_SHARE", 0.3)
    assert learn_schedule(history, POLICY) == ()


def test_a_poll_the_jitter_brought_early_aims_at_the_next_time() -> None:
    learned = PollingPolicy(learned=(100.0, 200.0, 300.0))
    assert scheduled_delay(95.0, learned) == 105.0  # 5 s early for 100 s (within 10% of its 100 s gap): aim at 200
    assert scheduled_delay(85.0, learned) == POLICY.initial_delay  # 15 s early: 100 s is still due (30 s at least)
    assert scheduled_delay(295.0, learned) == scheduled_delay(295.0, POLICY)  # the last time: the elapsed rule


def test_a_learned_delay_stays_between_the_initial_and_the_maximum_delay() -> None:
    learned = PollingPolicy(learned=(31.0, 40.0, 2000.0))
    assert scheduled_delay(0.0, learned) == 31.0
    assert scheduled_delay(31.0, learned) == POLICY.initial_delay  # 9 s to the next time: the smallest delay
    assert scheduled_delay(40.0, learned) == POLICY.max_delay  # 1,960 s to the next time: the largest delay


def test_the_density_counts_weight_and_moment_evenly_within_each_piece() -> None:
    density = Density((100.0, 200.0, 400.0), (1.0, 2.0))
    masses, moments = density.below([50.0, 150.0, 200.0, 300.0, 1000.0])
    assert masses == pytest.approx([0.0, 0.5, 1.0, 2.0, 3.0])
    assert moments == pytest.approx([0.0, 0.5 * 125, 150.0, 150.0 + 250.0, 150.0 + 2 * 300.0])
    # One poll at 0, then every 100 s: a uniform piece over 100-200 s is caught 50 s late on average, by the
    # poll at 200 s, after the polls at 0 and 100 s.
    expected = expect(lambda elapsed: 100.0, Density((100.0, 200.0), (1.0,)))
    assert expected.mean_lag == pytest.approx(50.0) and expected.calls == pytest.approx(3.0)
    # Every 150 s: half is caught at 150 s (25 s late, 2 calls), half at 300 s (125 s late, 3 calls).
    expected = expect(lambda elapsed: 150.0, Density((100.0, 200.0), (1.0,)))
    assert expected.mean_lag == pytest.approx(75.0) and expected.calls == pytest.approx(2.5)


def test_the_smoothing_keeps_the_weight_and_spreads_it_to_nearby_durations() -> None:
    summary = summarise([600.0] * 10)
    density = smooth(summary)
    assert density.total == pytest.approx(summary.weight)
    assert density.edges[0] > 300.0 and density.end < 1200.0  # within 3 kernel widths of 600 s
    assert len(density.weights) > 3


def test_on_batches_like_its_history_it_makes_far_fewer_calls_at_no_worse_lag() -> None:
    schedule = learn_schedule(summarise(_lognormal(1, 200)), POLICY)
    test = History.recent(_lognormal(2, 2000), decay=1.0)
    today_calls, today_mean, today_p95 = _today(test)
    learned = evaluate(following(schedule, POLICY), test)
    assert learned.calls < 0.62 * today_calls
    assert learned.mean_lag < 1.1 * today_mean and learned.p95_lag < today_p95


def test_a_denser_history_gets_denser_polls_where_its_batches_finish() -> None:
    short = learn_schedule(summarise([float(d) for d in range(200, 260)]), POLICY)
    long = learn_schedule(summarise([float(d) for d in range(2000, 2600, 10)]), POLICY)
    polls_in = lambda schedule, low, high: sum(1 for time in schedule if low <= time <= high)  # noqa: E731
    assert polls_in(short, 190, 270) > polls_in(long, 190, 270)
    assert polls_in(long, 1900, 2700) > polls_in(short, 1900, 2700)


def test_frozen_when_batches_take_four_times_longer_it_makes_no_more_calls() -> None:
    """Before the summary has seen a shifted batch: past the history the elapsed rule, so no call storm."""
    schedule = learn_schedule(summarise(_lognormal(1, 200)), POLICY)
    shifted = History.recent([4 * duration for duration in _lognormal(2, 1000)], decay=1.0)
    today_calls, today_mean, _ = _today(shifted)
    learned = evaluate(following(schedule, POLICY), shifted)
    assert learned.calls <= 1.3 * today_calls and learned.mean_lag <= 1.3 * today_mean


def test_a_short_history_is_smoothed_wider_than_a_long_one_like_it() -> None:
    short, long = rule_of_thumb(summarise(_lognormal(1, 50))), rule_of_thumb(summarise(_lognormal(1, 2000)))
    assert short > long >= KERNEL_WIDTH
    assert short == pytest.approx(0.9 * 50**-0.2, rel=0.25)  # Silverman's rule for a deviation of 1 in log time
    assert rule_of_thumb(summarise([600.0] * 10)) == KERNEL_WIDTH  # no spread at all: the narrowest kernel


def test_the_width_follows_the_narrower_of_the_deviation_and_the_interquartile_range() -> None:
    # Half at 100 s, half at 1,000 s: the deviation (ln 10 / 2) is below the interquartile range / 1.34.
    two_points = summarise([100.0, 1_000.0] * 50)
    assert rule_of_thumb(two_points) == pytest.approx(0.9 * math.log(10) / 2 * 100**-0.2, rel=0.05)
    # A crowd within one bin and 10% far longer: the quartiles share a bin, so the range is a bin's width, and the
    # crowd is smoothed as tightly as one spread over two bins (not by the deviation the outliers make).
    rng = random.Random(1)
    outliers = [rng.uniform(3_000, 20_000) for _ in range(10)]
    crowd, looser = summarise([300.0] * 90 + outliers), summarise([280.0, 300.0] * 45 + outliers)
    assert rule_of_thumb(crowd) == rule_of_thumb(looser) == KERNEL_WIDTH


def test_a_thinned_schedule_over_the_target_lag_is_not_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Polls are left out by a sum worked out from the poll times alone; the lag is checked again on the delays
    themselves, and a schedule over the target is not taken: the one before it stands."""
    summary = summarise(_lognormal(3, 200))
    monkeypatch.setattr(schedule_module, "_thinned", lambda schedule, *_: schedule)
    unthinned = learn_schedule(summary, POLICY)
    monkeypatch.setattr(schedule_module, "_thinned", lambda schedule, *_: schedule[-1:])
    assert unthinned and learn_schedule(summary, POLICY) == unthinned


def test_the_quartiles_are_read_within_their_bins_not_to_the_bin() -> None:
    """45 batches spread evenly in log time over 8 bins, and 5 far longer: the width follows the crowd's
    interquartile range (4.5 bins). Read to the whole bin, the quartiles were 4 bins apart and the width 12% off."""
    crowd = [EDGES[27] * BIN_RATIO ** (8 * (index + 0.5) / 45) for index in range(45)]
    durations = crowd + [20_000.0 * BIN_RATIO**index for index in range(5)]
    first, _, third = statistics.quantiles([math.log(duration) for duration in durations], n=4)
    assert rule_of_thumb(summarise(durations)) == pytest.approx(0.9 * (third - first) / 1.34 * 50**-0.2, rel=0.04)


@pytest.mark.parametrize("durations", [_lognormal(3, 200), _bimodal(3, 200), _pareto(3, 1000)],
                         ids=["log-normal", "bimodal", "heavy tail"])
def test_no_poll_of_a_learned_schedule_can_be_left_out_within_the_target_lag(durations: list[float]) -> None:
    """A cost per call alone stops at a schedule on the hull of calls against lag, and on each of these histories
    that left polls to spare (3 to 13) under the target lag. Now leaving out any one poll would pass the target, or
    stretch a gap past the maximum delay."""
    summary = summarise(durations)
    density, schedule = smooth(summary), learn_schedule(summary, POLICY)
    target = TARGET_SHARE * expect(following((), POLICY), density).mean_lag
    assert expect(following(schedule, POLICY), density).mean_lag <= target
    times = (0.0, *schedule)
    for k in range(1, len(schedule)):
        if times[k + 1] - times[k - 1] <= POLICY.max_delay:
            fewer = schedule[:k - 1] + schedule[k:]
            assert expect(following(fewer, POLICY), density).mean_lag > target


def test_the_width_counts_what_the_aged_weights_are_worth_not_every_batch_ever_added() -> None:
    """20,000 batches weigh about as much as 5,000 (each new batch ages the others): about the same width (their
    newest batches differ), not 4^-1/5 = 0.76 of it."""
    assert rule_of_thumb(summarise(_lognormal(1, 20_000))) == pytest.approx(
        rule_of_thumb(summarise(_lognormal(1, 5_000))), rel=0.1)


def test_a_lone_batch_however_far_is_spread_at_most_the_widest_kernel() -> None:
    """1,000 batches at 300 s and one at 20,000 s: its own width would be over 3, and is cut to WIDEST_KERNEL, so
    none of its weight reaches below 3 such widths under 20,000 s."""
    density = smooth(summarise([300.0] * 1000 + [20_000.0]))
    masses, _ = density.below([300.0 * math.exp(0.5), 20_000.0 / math.exp(3.1 * WIDEST_KERNEL), 20_000.0])
    assert masses[1] - masses[0] == pytest.approx(0.0, abs=1e-9)
    assert masses[2] - masses[1] > 0.3


def test_a_lone_batch_far_from_the_others_is_spread_wider_than_the_crowd() -> None:
    """100 batches at 300 s and one at 5,000 s: the crowd stays within about 3 narrow kernels of 300 s, while the
    lone batch's weight reaches below 5,000 s / e^0.5, where one narrow kernel for all would have left nothing.
    Past the longest batch, the density ends where a narrow kernel would (the elapsed rule takes over there)."""
    summary = summarise([300.0] * 100 + [5_000.0])
    density = smooth(summary)
    masses, _ = density.below([300.0 / math.exp(0.35), 300.0 * math.exp(0.35), 5_000.0 / math.exp(0.5), 5_000.0])
    assert masses[1] - masses[0] == pytest.approx(summary.weight - 1.0, abs=0.05)
    assert 0.1 < masses[2] - masses[1] < 0.5  # the lone batch, well below its own duration
    assert 5_000.0 < density.end <= 5_000.0 * math.exp(3 * KERNEL_WIDTH) * 1.1
    assert summary.weight - 0.5 < density.total <= summary.weight  # only what went far past 5,000 s is dropped


def test_the_sparse_tail_of_a_short_heavy_tailed_history_does_not_cost_lag() -> None:
    """Pareto batches, learned from 100 each time: where the history holds a few long batches far apart, one narrow
    kernel for all left the maximum delay between them, and every one of these 8 samples gave more mean lag than
    the elapsed rule (1.01 to 1.16 of it). The adaptive kernel polls there as the batches around suggest: 2 of the 8
    samples give more lag than the elapsed rule, by at most 6%, and their mean is 0.93."""
    test = History.recent(_pareto(99, 3000), decay=1.0)
    _, today_mean, today_p95 = _today(test)
    ratios = []
    for seed in range(8):
        learned = evaluate(following(learn_schedule(summarise(_pareto(seed, 100)), POLICY), POLICY), test)
        ratios.append(learned.mean_lag / today_mean)
        assert learned.p95_lag < today_p95
    assert sum(ratio > 1 for ratio in ratios) <= 2 and max(ratios) < 1.06 and sum(ratios) / len(ratios) < 0.95
