"""A polling schedule learned from how long past batches took: dense where batches tend to finish, sparse where
they do not.

A schedule is the tuple of poll times (seconds since first seen) after the first poll at 0. It is chosen by a
dynamic program over a smooth density of durations made from the summary of past batches (shared/durations.py):
each bin's weight spread over its neighbours by a log-normal kernel, wider for a short history and where batches
are few (smooth), each piece uniform within its bin. The program minimises the expected lag from a batch's
completion to the poll that sees it, plus a cost per call; the cost is the largest one whose mean lag on that
density is at most TARGET_SHARE of the elapsed-proportional rule's (policy.scheduled_delay), and then polls are
left out one at a time while the lag stays within that (_thinned), so the schedule makes fewer calls at no worse
mean lag. A schedule that does not save at least 1 - CALLS_SHARE of the elapsed rule's calls is not learned.
Lags are worked out on the density, never on the durations seen: a schedule that polls just after each duration
seen looks perfect on them and is not on the next batches. Gaps stay between the policy's initial and maximum
delay. Past the last time in the schedule, polling goes on with the elapsed rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .durations import BIN_RATIO, BINS, DurationSummary, bin_range
from .policy import PollingPolicy, scheduled_delay

COST_SEARCH_STEPS = 14
COST_LOWEST = 0.01  # seconds of lag a call is worth at the least
# Poll times the program chooses among. The defaults give about 400 for a 2-day history; delays of a second or
# two give one per delay, so a long history there is left to the elapsed rule rather than a slow program.
MAX_CANDIDATES = 2000
TARGET_SHARE = 0.95  # of the elapsed rule's mean lag on the density: a margin for batches unlike the history
# The most of the elapsed rule's calls on the density that a schedule may make to be learned: one that saves less is
# within what a sample's luck can cost on the next batches.
CALLS_SHARE = 0.9
GRID_STEP = 5.0  # seconds between candidate poll times at first, at most
GRID_SHARE = 0.02  # later, the step is this share of the time since first seen
LOG_BIN = math.log(BIN_RATIO)  # a bin's width in log time
# Kernel widths, in log time: a bin's weight is spread as a normal law of this deviation there.
KERNEL_WIDTH = 0.1  # the narrowest for a whole history (a bin in a crowd may get a little less: local_widths)
WIDEST_KERNEL = 1.0  # the widest, for a lone batch far from the others
RULE_OF_THUMB = 0.9  # Silverman's factor


@dataclass(frozen=True)
class Density:
    """Durations as pieces of weight, each spread evenly over its bin [edges[i], edges[i + 1])."""

    edges: tuple[float, ...]
    weights: tuple[float, ...]

    @property
    def total(self) -> float:
        return sum(self.weights)

    @property
    def end(self) -> float:
        return self.edges[-1]

    def below(self, times: Sequence[float]) -> tuple[list[float], list[float]]:
        """For ascending times: the weight of durations below each, and their weight times duration."""
        masses, moments = [], []
        piece, mass, moment = 0, 0.0, 0.0
        for time in times:
            while piece < len(self.weights) and self.edges[piece + 1] <= time:
                mass += self.weights[piece]
                moment += self.weights[piece] * (self.edges[piece] + self.edges[piece + 1]) / 2
                piece += 1
            partial_mass = partial_moment = 0.0
            if piece < len(self.weights) and time > self.edges[piece]:
                low, high = self.edges[piece], self.edges[piece + 1]
                share = (time - low) / (high - low)
                partial_mass = self.weights[piece] * share
                partial_moment = partial_mass * (low + time) / 2
            masses.append(mass + partial_mass)
            moments.append(moment + partial_moment)
        return masses, moments


@dataclass(frozen=True)
class History:
    """Past durations in seconds with their weights (recent batches weigh more)."""

    durations: tuple[float, ...]
    weights: tuple[float, ...]

    @classmethod
    def recent(cls, durations_oldest_first: Sequence[float], decay: float = 0.99) -> History:
        """Each batch weighs decay times the one after it: the newest weighs 1."""
        count = len(durations_oldest_first)
        weights = tuple(decay ** (count - 1 - index) for index in range(count))
        return cls(tuple(float(duration) for duration in durations_oldest_first), weights)


@dataclass(frozen=True)
class Outcome:
    calls: float  # mean calls per batch, the first poll included
    mean_lag: float
    p95_lag: float


def learn_schedule(summary: DurationSummary, policy: PollingPolicy) -> tuple[float, ...]:
    """The poll times for this history. Empty (the elapsed rule) when it holds no batch, when the delays leave
    nothing to choose (0 s, or so small that there would be over MAX_CANDIDATES poll times to choose among), or
    when no schedule at the target lag makes at most CALLS_SHARE of the elapsed rule's calls on this history."""
    if min(policy.initial_delay, policy.max_delay) <= 0:
        return ()
    density = smooth(summary)
    candidates = _candidates(density.end, policy)
    if density.total <= 0 or candidates is None:
        return ()
    today = expect(lambda elapsed: scheduled_delay(elapsed, policy), density)
    # The cost per call, in seconds of expected lag, searched in log space: a lag within 0.5% of the target is
    # as good as the target, and each step is one dynamic program.
    low, high = math.log(COST_LOWEST), math.log(4.0 * density.end)
    lag_limit = TARGET_SHARE * today.mean_lag
    best: tuple[float, ...] = ()
    best_expected = today
    for _ in range(COST_SEARCH_STEPS):
        middle = (low + high) / 2
        schedule = _optimal(density, candidates, policy, math.exp(middle))
        expected = expect(following(schedule, policy), density)
        if expected.mean_lag <= lag_limit:
            best, best_expected, low = schedule, expected, middle
        else:
            high = middle
    if not best:
        return ()
    # _thinned works the lag out from the poll times alone; should the delays ever give other times (a jitter
    # rule that skips a time, say), the lag is checked again here and the schedule before it stands.
    thinned = _thinned(best, density, policy, lag_limit)
    thinned_expected = expect(following(thinned, policy), density)
    if thinned_expected.mean_lag <= lag_limit:
        best, best_expected = thinned, thinned_expected
    return best if best_expected.calls <= CALLS_SHARE * today.calls else ()


def _thinned(schedule: tuple[float, ...], density: Density, policy: PollingPolicy,
             lag_limit: float) -> tuple[float, ...]:
    """The schedule with polls left out, one at a time, while its mean lag on the density stays within lag_limit:
    each time the one that adds the least lag per call saved. A cost per call only reaches the schedules on the
    convex hull of calls against lag, and one poll more or less in a crowd of batches moves the lag by a step:
    the schedule on the hull can be well under the limit with a poll to spare. Leaving out the poll at times[k]
    makes the batches that end since the poll before it wait for the poll after, and saves a call for every batch
    still running at it. A gap may not grow past the maximum delay, and the last time stays (past it the elapsed
    rule takes over)."""
    times = [0.0, *schedule]
    while len(times) > 2:
        mass, _ = density.below(times)
        room = (lag_limit - expect(following(tuple(times[1:]), policy), density).mean_lag) * density.total
        left_out: int | None = None
        least = math.inf
        for k in range(1, len(times) - 1):
            saved = density.total - mass[k]  # weight of the batches still running at times[k]: calls saved
            added = (times[k + 1] - times[k]) * (mass[k] - mass[k - 1])  # weighted lag added
            if times[k + 1] - times[k - 1] > policy.max_delay + 1e-9 or saved <= 0 or added > room:
                continue
            if added / saved < least:
                left_out, least = k, added / saved
        if left_out is None:
            break
        del times[left_out]
    return tuple(times[1:])


def smooth(summary: DurationSummary) -> Density:
    """The summary's weights spread over nearby bins, so that the schedule does not poll at the bins that happened to
    fill: a few hundred batches are a sample, not the law. Each bin is spread as a normal law in log time whose width
    adapts to the history (an adaptive kernel estimate):
    - the width for the whole history follows Silverman's rule of thumb (rule_of_thumb): a short history is
      smoothed more than a long one;
    - each bin's own width grows where the history's batches are few (local_widths). A sparse tail is where a
      sample misleads most: with one width for all, the schedule left the maximum delay between the few long
      batches seen, and new batches that ended there waited longer than by the elapsed rule.
    The density ends as far past the longest batch seen as the narrowest kernel reaches (about a third longer), so
    that past the history the elapsed rule applies, however wide that batch was spread; the weight beyond is left
    out."""
    if summary.weight <= 0:
        return Density((0.0, 0.0), (0.0,))
    weights = _spread(summary.weights, local_widths(summary, rule_of_thumb(summary)))
    longest = max(index for index, weight in enumerate(summary.weights) if weight > 0)
    filled = [index for index, weight in enumerate(weights) if weight > 0]
    used = range(filled[0], min(filled[-1], longest + _reach(KERNEL_WIDTH)) + 1)
    edges = (*(bin_range(index)[0] for index in used), bin_range(used[-1])[1])
    return Density(edges, tuple(weights[index] for index in used))


def rule_of_thumb(summary: DurationSummary) -> float:
    """Silverman's kernel width in log time for this history, 0.9 x min(deviation, interquartile range / 1.34) x
    batches^-1/5, at least KERNEL_WIDTH. The batches are the aged weights' worth (effective_batches). Quartiles are
    read within their bins (_quantile), and are at least a bin's width apart: less, and a tight crowd with a few
    outliers would fall back to the deviation they make, and be smoothed far wider than a looser one."""
    total = summary.weight
    if total <= 0:
        return KERNEL_WIDTH
    positions = [index * LOG_BIN for index in range(BINS)]
    mean = sum(weight * position for weight, position in zip(summary.weights, positions, strict=True)) / total
    deviation = math.sqrt(sum(weight * (position - mean) ** 2
                              for weight, position in zip(summary.weights, positions, strict=True)) / total)
    first, third = _quantile(summary, 0.25), _quantile(summary, 0.75)
    spread = min(deviation, max(third - first, 1) * LOG_BIN / 1.34)
    return max(KERNEL_WIDTH, RULE_OF_THUMB * spread * max(summary.effective_batches, 1.0) ** -0.2)


def local_widths(summary: DurationSummary, width: float) -> list[float]:
    """Each filled bin's own kernel width by Abramson's square-root law: the history's width times the square root
    of the geometric mean density over its batches divided by the density at the bin (a first estimate with the
    history's width), at most WIDEST_KERNEL. Narrower than the history's width in a crowd, wider where batches are
    few. Empty bins are not spread, and keep the history's width."""
    pilot = _spread(summary.weights, [width] * BINS)
    seen = [(index, weight) for index, weight in enumerate(summary.weights) if weight > 0 and pilot[index] > 0]
    if not seen:
        return [width] * BINS
    typical = math.exp(sum(weight * math.log(pilot[index]) for index, weight in seen)
                       / sum(weight for _, weight in seen))
    widths = [width] * BINS
    for index, _ in seen:
        widths[index] = min(WIDEST_KERNEL, width * math.sqrt(typical / pilot[index]))
    return widths


def _quantile(summary: DurationSummary, share: float) -> float:
    """Where this share of the history's weight is reached, in bins: the bin's index plus how far into it, each
    bin's weight taken as even across it in log time. Read to the bin, two quartiles 4.5 bins apart could be 4
    or 5 apart, and the width a tenth off either way."""
    below = 0.0
    target = share * summary.weight
    for index, weight in enumerate(summary.weights):
        if weight > 0 and below + weight >= target:
            return index + (target - below) / weight
        below += weight
    return float(BINS)


def _reach(width: float) -> int:
    """How many bins a kernel of this width reaches on either side: 3 widths."""
    return int(3 * width / LOG_BIN)


def _spread(weights: Sequence[float], widths: Sequence[float]) -> list[float]:
    """Each bin's weight spread over its neighbours as a normal law of its width in log time, cut at 3 widths;
    what would fall outside the bins goes to the first or the last."""
    spread = [0.0] * BINS
    for index, weight in enumerate(weights):
        if weight <= 0:
            continue
        reach = _reach(widths[index])
        shares = [math.exp(-0.5 * (offset * LOG_BIN / widths[index]) ** 2) for offset in range(-reach, reach + 1)]
        scale = sum(shares)
        for offset, share in enumerate(shares, start=-reach):
            spread[min(BINS - 1, max(0, index + offset))] += weight * share / scale
    return spread


def following(schedule: tuple[float, ...], policy: PollingPolicy) -> Callable[[float], float]:
    """The delay after a poll at elapsed: to the schedule's next time, or past its end the elapsed rule."""
    learned = replace(policy, learned=schedule)
    return lambda elapsed: scheduled_delay(elapsed, learned)


def evaluate(delay_after: Callable[[float], float], history: History) -> Outcome:
    """Calls and lag of a schedule over these durations, as if every poll came exactly when planned."""
    total = sum(history.weights)
    if not total:
        return Outcome(0.0, 0.0, 0.0)
    results = []
    for duration, weight in zip(history.durations, history.weights, strict=True):
        elapsed, calls = 0.0, 1
        while elapsed < duration:
            elapsed += delay_after(elapsed)
            calls += 1
        results.append((elapsed - duration, calls, weight))
    results.sort()
    cumulative, p95 = 0.0, results[-1][0]
    for lag, _, weight in results:
        cumulative += weight
        if cumulative >= 0.95 * total:
            p95 = lag
            break
    return Outcome(sum(c * w for _, c, w in results) / total, sum(lag * w for lag, _, w in results) / total, p95)


@dataclass(frozen=True)
class Expected:
    calls: float  # per batch, the first poll included
    mean_lag: float


def expect(delay_after: Callable[[float], float], density: Density) -> Expected:
    """Calls and mean lag of a schedule over the density: a poll is made while the batch is still running at the
    poll before it, and between two polls every duration is caught by the later."""
    times = [0.0]
    while times[-1] < density.end:
        times.append(times[-1] + delay_after(times[-1]))
    masses, moments = density.below(times)
    calls = sum(density.total - below for below in masses[:-1])
    lag = sum(times[k] * (masses[k] - masses[k - 1]) - (moments[k] - moments[k - 1]) for k in range(1, len(times)))
    return Expected(1 + calls / density.total, lag / density.total)


def _candidates(horizon: float, policy: PollingPolicy) -> list[float] | None:
    """Where a poll may go: every GRID_STEP seconds at first (or the initial delay, when shorter), then a step that
    grows with the time (GRID_SHARE of it), never wider than the maximum delay, up to the longest duration. None:
    more than MAX_CANDIDATES."""
    first_step = min(GRID_STEP, policy.initial_delay)
    times: list[float] = []
    time = 0.0
    while time < horizon:
        if len(times) == MAX_CANDIDATES:
            return None
        time += min(policy.max_delay, max(first_step, GRID_SHARE * time))
        times.append(min(time, horizon))
    return times


def _optimal(density: Density, candidates: list[float], policy: PollingPolicy, cost: float) -> tuple[float, ...]:
    """Poll times minimising expected lag + cost x calls, by dynamic programming from the last candidate back.

    best[i] is the weighted cost still to come after a poll at times[i] that found the batch not final:
    the cost of each later call weighs by the weight still running, and the lag of every batch that
    completes between two polls counts once."""
    times = [0.0, *candidates]
    mass, moment = density.below(times)
    running = [density.total - below for below in mass]
    count = len(times)
    smallest = min(policy.initial_delay, policy.max_delay)
    best = [0.0] * count
    step = [count] * count
    for i in range(count - 2, -1, -1):
        if running[i] <= 0:
            continue
        choice, value = count, math.inf
        for j in range(i + 1, count):
            gap = times[j] - times[i]
            if gap > policy.max_delay + 1e-9:
                break
            if gap < smallest - 1e-9 and j < count - 1:
                continue  # closer than the smallest delay; only the schedule's last time may be
            lag = times[j] * (mass[j] - mass[i]) - (moment[j] - moment[i])
            total = cost * running[i] + lag + best[j]
            if total < value:
                choice, value = j, total
        best[i], step[i] = value, choice
    schedule = []
    index = step[0]
    while index < count:
        schedule.append(times[index])
        index = step[index]
    return tuple(schedule)
