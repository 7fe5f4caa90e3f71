"""`make bench`: cost per poll, throughput against the storage ceiling, persistence, memory, start-up, polling
efficiency against the peers, the learned schedule, and fleet throttling. Every time is reported as a ratio to
a ceiling measured in the same run, on a fresh Azurite per figure (Azurite slows as queues grow and stalls at
its clean-up). One module per figure; this one runs them and prints the results.

    python -m bench.run [--quick]
    python -m bench.run --only large_batch --large-devices 100000   (make bench-large: figure 10 alone)
    python -m bench.run --only finalize_memory                       (figure 11 alone)
    python -m bench.run --only learned_schedule                      (figure 8 alone)
    python -m bench.run --only learned_stack                         (figure 8b alone)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from local.azurite import PROJECT_ROOT

from .finalize_memory import finalize_memory
from .fleet_throttling import fleet_throttling
from .fleet_virtual import fleet_virtual
from .learned_schedule import learned_schedule
from .learned_stack import learned_stack
from .persistence import large_batch, persistence_and_memory
from .polling_efficiency import deployed_policy, polling_efficiency
from .requests_per_poll import requests_per_poll, token_requests
from .startup import startup
from .throughput import throughput

RESULTS = PROJECT_ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--large-devices", type=int, default=20_000, help="devices in the batch of figure 10")
    parser.add_argument("--only", choices=["learned_schedule", "learned_stack", "fleet_throttling", "large_batch",
                                           "finalize_memory"],
                        help="run this figure alone; its results go to bench/results/<figure>-latest.json")
    args = parser.parse_args(argv)
    quick = args.quick
    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "quick": quick,
    }
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("polling_efficiency", lambda: polling_efficiency(1000 if quick else 10_000)),
        ("learned_schedule", lambda: learned_schedule(1000 if quick else 10_000, deployed_policy())),
        ("learned_stack", lambda: learned_stack(3 if quick else 10)),
        ("startup", lambda: startup(3 if quick else 10)),
        ("requests_per_poll", lambda: requests_per_poll(3 if quick else 6)),
        ("token_requests", lambda: token_requests(100 if quick else 1000)),
        ("throughput_depth_100", lambda: throughput(100, 3 if quick else 6, 1 if quick else 3)),
        ("throughput_depth_1000", lambda: throughput(100 if quick else 1000, 3 if quick else 6, 1 if quick else 3)),
        ("persistence_and_memory", lambda: persistence_and_memory(500 if quick else 10_000)),
        ("fleet_virtual", lambda: fleet_virtual(1000 if quick else 10_000, deployed_policy())),
        ("fleet_throttling", lambda: fleet_throttling(60 if quick else 300)),
        # Azurite slows as a partition grows (bare transactions: ~100 rows/s at 20,000 devices), so 100,000
        # devices would take hours here: `python -m bench.run --large-devices 100000` runs it.
        ("large_batch", lambda: large_batch(2000 if quick else args.large_devices)),
        ("finalize_memory", lambda: finalize_memory((1000, 10_000) if quick else (10_000, 100_000, 300_000))),
    ]
    for name, step in steps:
        if args.only and name != args.only:
            continue
        print(f"... {name} ({time.monotonic() - started:.0f} s so far)", file=sys.stderr, flush=True)
        results[name] = step()
    results["wall_seconds"] = round(time.monotonic() - started)
    prefix = args.only.replace("_", "-") if args.only else "bench"
    if args.only:
        {"learned_schedule": _print_learned, "learned_stack": _print_learned_stack, "large_batch": _print_large,
         "fleet_throttling": lambda figure: _print_fleet("9a. fleet throttling on the real stack", figure),
         "finalize_memory": _print_memory}[args.only](results[args.only])
    else:
        results["persistence"], results["memory"] = results.pop("persistence_and_memory")
        _print(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    latest = RESULTS / (f"{prefix}-latest.json" if args.only else "latest.json")
    for path in (RESULTS / f"{prefix}-{stamp}.json", *(() if quick else (latest,))):
        path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {RESULTS / f'{prefix}-{stamp}.json'}" + ("" if quick else f" and {latest}"))
    return 0


def _print(results: dict[str, Any]) -> None:
    poll = results["requests_per_poll"]
    print(f"\nbatchwatch benchmark, {results['when']}, {results['machine']}, {results['wall_seconds']} s\n")
    if results["quick"]:
        print("(--quick: a smoke run at small sizes; its figures are not the ones the goals refer to)\n")
    print(
        f"1. storage requests per poll: {poll['storage_requests_per_poll']} (floor {poll['floor']}); "
        + ", ".join(f"{name} {count}" for name, count in poll["storage_by_operation"].items())
    )
    tokens = results["token_requests"]
    print(
        f"2. Partner Center requests per poll: {poll['partner_center_requests_per_poll']}; "
        f"token requests for {tokens['polls']} polls in one process: {tokens['token_requests']}"
    )
    for key in ("throughput_depth_100", "throughput_depth_1000"):
        figure = results[key]
        print(
            f"3. polls/s at depth {figure['depth']} (median of {figure['rounds']} alternating windows of "
            f"{figure['seconds_per_window']} s): ours {figure['ours_per_second']}, bare queue cycle "
            f"{figure['bare_per_second']}; ratio {figure['ratio']} (goal >= {figure['goal']}), per round "
            + ", ".join(str(ratio) for ratio in figure["round_ratios"])
        )
    persist = results["persistence"]
    print(
        f"4. persisting {persist['devices']} devices: ours {persist['ours_seconds']} s (device rows "
        f"{persist['ours_device_rows_seconds']} s, history {persist['ours_history_rows_seconds']} s), bare "
        f"{persist['bare_seconds']} s (mean of the runs before and after ours: "
        f"{', '.join(str(run) for run in persist['bare_runs_seconds'])} s; device rows "
        f"{persist['bare_device_rows_seconds']} s); ratio "
        f"{persist['ratio']}, device rows alone {persist['device_rows_ratio']} (goal >= {persist['goal']}); "
        f"{persist['transactions_device_table']} transactions (ceil(n/100) = {persist['expected_transactions']}),"
        f" {persist['history_single_upserts']} history upserts"
    )
    mem = results["memory"]
    print(
        f"5. memory for {mem['devices']} devices: RSS grew {mem['rss_growth_bytes'] / 1e6:.1f} MB for "
        f"{mem['json_bytes'] / 1e6:.1f} MB of JSON, ratio {mem['ratio_to_json']}"
    )
    start = results["startup"]
    print(
        f"6. cold start (median of {start['runs']}): check_batch_status imported and its handler built "
        f"{start['ours_ms']} ms, with Application Insights configured {start['with_application_insights_ms']} ms, "
        f"the SDK modules alone {start['sdk_only_ms']} ms; ratios {start['ratio']} and "
        f"{start['application_insights_ratio']}"
    )
    efficiency = results["polling_efficiency"]
    print(f"7. polling efficiency over {efficiency['batches']} batch durations (log-normal, median 8 min, sigma 1):")
    print(f"   {'policy':40} {'calls/batch':>11} {'mean lag':>9} {'p95 lag':>8} {'lag/duration':>12}")
    for name, figure in efficiency["policies"].items():
        print(
            f"   {name:40} {figure['calls_per_batch']:>11} {figure['mean_lag_s']:>8}s {figure['p95_lag_s']:>7}s "
            f"{figure['mean_lag_share']:>12.1%}"
        )
    print(
        "   goals: "
        + _verdicts(efficiency["goals_met"])
    )
    _print_learned(results["learned_schedule"])
    _print_learned_stack(results["learned_stack"])
    _print_fleet("9a. fleet throttling on the real stack", results["fleet_throttling"])
    _print_fleet("9b. fleet throttling in virtual time", results["fleet_virtual"])
    _print_large(results["large_batch"])
    _print_memory(results["finalize_memory"])


def _verdicts(goals: dict[str, bool]) -> str:
    return ", ".join(f"{goal} {'met' if met else 'MISSED'}" for goal, met in goals.items())


def _print_memory(figure: dict[str, Any]) -> None:
    print("11. a finalisation's peak RSS growth, storage left out (10% of devices failed, 2% repeated): "
          + ", ".join(f"{run['devices']:,} devices ({run['json_bytes'] / 1e6:.1f} MB of JSON) "
                      f"{run['rss_growth_bytes'] / 1e6:.1f} MB in {run['seconds']} s" for run in figure["runs"])
          + f"; the last two: {figure['size_ratio']:g} times the devices, {figure['rss_growth_ratio']:g} times "
            "the growth")


def _print_large(large: dict[str, Any]) -> None:
    print(f"10. a batch of {large['devices']} devices ({large['json_bytes'] / 1e6:.1f} MB of JSON): final after "
          f"{large['seconds_to_final']} s in {large['invocations']} invocations, the longest "
          f"{large['longest_invocation_seconds']} s; peak RSS grew {large['rss_growth_bytes'] / 1e6:.1f} MB; rows/s "
          f"ours {large['ours_rows_per_second']} (device and history rows), bare SDK transactions "
          f"{large['bare_transaction_rows_per_second']}, ratio {large['ratio']}; against bare device transactions "
          f"and history upserts {large['ratio_to_bare_with_history']}")


def _print_learned(learned: dict[str, Any]) -> None:
    print(f"8. learned schedule: trained on {learned['training']} batches, tested on {learned['batches']} others of "
          f"the same family, and on the same {learned['shift']:g} times longer:")
    print(f"   {'family / policy':44} {'calls/batch':>11} {'mean lag':>9} {'p95 lag':>8}")
    for family, figures in learned["families"].items():
        print(f"   {family} ({figures['schedule_points']} learned times)")
        rows = [*figures["policies"].items(), *((f"{rule}, shifted", f) for rule, f in figures["shift"].items())]
        for name, figure in rows:
            print(f"     {name:42} {figure['calls_per_batch']:>11} {figure['mean_lag_s']:>8}s "
                  f"{figure['p95_lag_s']:>7}s")
        print("     goals (the shift's as deployed): " + _verdicts(figures["goals_met"]))
        print(f"     by history length, over {figures['by_history'][0]['samples']} training samples each "
              "(ratio ranges to today and their means; on how many samples each goal is met):")
        for row in figures["by_history"]:
            ranges = ", ".join(f"{key} {low}-{high} (mean {row['ratio_means'][key]})"
                               for key, (low, high) in row["ratio_ranges"].items())
            met = ", ".join(f"{count}" for count in row["goals_met_on"].values())
            print(f"       {row['batches']:>5} batches: {ranges}; goals met on {met}")


def _print_learned_stack(figure: dict[str, Any]) -> None:
    print(f"8b. learned schedule on the real stack: {figure['batches_per_customer']} batches of "
          f"{figure['batch_seconds']} s per customer, one customer with {figure['history']} stored batches like "
          f"them, POLL_SCHEDULE=learned, delays 1-30 s ({figure['wall_seconds']} s):")
    for name, row in figure["customers"].items():
        print(f"   {name:14} {row['calls_per_batch']:>6} calls/batch, lag from completedTime {row['mean_lag_s']} s "
              f"mean, {row['max_lag_s']} s max, {', '.join(row['outcomes'])}")
    print(f"   the stored history holds {figure['history_after']} batches afterwards")


def _print_fleet(title: str, fleet: dict[str, Any]) -> None:
    print(f"{title}: {fleet['batches']} batches dropped at once, {fleet['instances']} instances, Partner Center "
          f"limited to {fleet['rate_limit']} per partner:")
    print(f"   {'coordination':34} {'calls':>7} {'calls/batch':>11} {'429 share':>9} {'median lag':>10} "
          f"{'p95 lag':>8}")
    for name, figure in fleet["modes"].items():
        print(f"   {name:34} {figure['calls']:>7} {figure['calls_per_batch']:>11} {figure['share_429']:>9.2%} "
              f"{figure['lag_median_s']:>9}s {figure['lag_p95_s']:>7}s")
    for name, met in fleet["goals_met"].items():
        print(f"   goals, {name}: " + _verdicts(met))


if __name__ == "__main__":
    sys.exit(main())
