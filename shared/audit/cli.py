"""python -m shared.audit: answers for auditors and operators from Table Storage and the poison queues.

Exit codes: 0 success (also when nothing matched; a line on stderr says so), 1 storage unreachable or
refused, 2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TextIO

from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ServiceRequestError

from ..config import ConfigError, StorageNames, load_storage_names
from ..ids import InvalidIdError, normalize_guid
from ..models import Outcome
from ..results_store import ResultsStore
from ..storage import StorageClients
from . import operator_log
from .operator import RESUBMITTABLE, PoisonQueues, resubmit
from .operator_log import OPERATOR_LOG_COLUMNS
from .output import BATCH_COLUMNS, DEVICE_COLUMNS, HISTORY_COLUMNS, PENDING_COLUMNS, POISON_COLUMNS, write_rows
from .queries import AuditQueries, Summary
from .report import Progress, build_report
from .report_html import render_report

MAX_TEXT_ARGUMENT = 1024
POISON_LIST_LIMIT = 1000  # poison list reads at most this many messages unless told otherwise


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        names = load_storage_names(os.environ)
    except ConfigError as exc:
        err.write(f"error: {exc}\n")
        return 2
    clients = StorageClients(names.storage)
    try:
        return COMMANDS[args.command](args, names, clients, out, err)
    except (ServiceRequestError, ClientAuthenticationError, HttpResponseError, AzureError) as exc:
        endpoint = clients.queue_endpoint if args.command in ("poison",) else clients.table_endpoint
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        err.write(f"error: cannot read storage at {endpoint}: {first_line[:300]}\n")
        return 1


def build_parser() -> argparse.ArgumentParser:
    formats = argparse.ArgumentParser(add_help=False)
    formats.add_argument("--format", choices=("table", "csv", "json"), default="table",
                         help="table for people; csv or json (JSON Lines) for tools")
    parser = argparse.ArgumentParser(prog="python -m shared.audit", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    batch = commands.add_parser("batch", parents=[formats], help="a batch and every device in it")
    batch.add_argument("--tracking-id", required=True, type=_guid)
    batch.add_argument("--customer", type=_guid, help="optional; without it the tracking id index is read")

    batches = commands.add_parser("batches", parents=[formats], help="a customer's batches")
    batches.add_argument("--customer", required=True, type=_guid)
    _period(batches)
    batches.add_argument("--outcome", choices=[outcome.value for outcome in Outcome])

    device = commands.add_parser("device", parents=[formats], help="every batch a device was in, newest first")
    which = device.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial", type=_text)
    which.add_argument("--product-key", type=_text, help="for devices uploaded without a serial number")

    summary = commands.add_parser("summary", parents=[formats], help="outcomes, error codes, serials that failed most")
    _period(summary)
    summary.add_argument("--customer", type=_guid)
    summary.add_argument("--top", type=int, default=10)

    commands.add_parser("pending", parents=[formats], help="batches still being polled, oldest first")

    poison = commands.add_parser("poison", help="list or re-drive poison messages")
    poison_commands = poison.add_subparsers(dest="action", required=True, metavar="action")
    listing = poison_commands.add_parser("list", parents=[formats], help="poison messages and their reasons")
    listing.add_argument("--queue", choices=("status", "failures"), default="status")
    listing.add_argument("--limit", type=_positive, default=POISON_LIST_LIMIT,
                         help=f"read at most this many messages (default {POISON_LIST_LIMIT})")
    replay = poison_commands.add_parser("replay", help="send originals back to their queue")
    replay.add_argument("--queue", choices=("status", "failures"), default="status")
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument("--id", help="a poison message id (from poison list)")
    target.add_argument("--all", action="store_true")
    replay.add_argument("--dry-run", action="store_true")
    replay.add_argument("--operator", type=_text, help="who you are, for the OperatorLog (default: the local account)")

    again = commands.add_parser("resubmit", help="poll again batches that ended without a result")
    chosen = again.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--tracking-id", type=_guid)
    chosen.add_argument("--outcome", choices=RESUBMITTABLE)
    again.add_argument("--customer", type=_guid)
    again.add_argument("--since", type=_date)
    again.add_argument("--dry-run", action="store_true")
    again.add_argument("--operator", type=_text, help="who you are, for the OperatorLog (default: the local account)")
    report = commands.add_parser("report", help="one self-contained HTML page of charts and tables")
    _period(report)
    report.add_argument("--customer", type=_guid)
    report.add_argument("--by", choices=("day", "week"), default="day", help="outcomes per day or per week")
    report.add_argument("--output", default="batchwatch-report.html", help="the HTML file to write")
    log = commands.add_parser("operator-log", parents=[formats], help="poison replays and resubmits: who, when, what")
    _period(log)
    return parser


def _period(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=_date, help="first seen at or after (YYYY-MM-DD or ISO time, UTC)")
    parser.add_argument("--until", type=_date, help="first seen before (YYYY-MM-DD or ISO time, UTC)")


def _guid(value: str) -> str:
    try:
        return normalize_guid(value, "value")
    except InvalidIdError:
        raise argparse.ArgumentTypeError(f"not a GUID: {value[:80]!r}") from None


def _date(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD) or ISO time: {value[:80]!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _text(value: str) -> str:
    if not value or len(value) > MAX_TEXT_ARGUMENT:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_TEXT_ARGUMENT} characters")
    return value


# --- commands -------------------------------------------------------------------------------------------
def _batch(args: argparse.Namespace, names: StorageNames, clients: StorageClients, out: TextIO, err: TextIO) -> int:
    queries = AuditQueries(names, clients)
    row = queries.batch(args.tracking_id, args.customer)
    if row is None:
        err.write(f"no batch with tracking id {args.tracking_id}\n")
        return 0
    if args.format == "table":
        out.write(f"batch {row['RowKey']}  customer {row['PartitionKey']}\n"
                  f"outcome {row.get('outcome')}  status {row.get('status')}  devices {row.get('deviceCount')} "
                  f"({row.get('failedDeviceCount')} failed)  polls {row.get('pollCount')}\n"
                  f"first seen {row.get('firstSeenAt')}  last polled {row.get('lastPolledAt')}  "
                  f"finalized {row.get('finalizedAt') or '-'}\n"
                  f"source {row.get('source') or '-'}  correlation id {row.get('correlationId')}  "
                  f"last result: {row.get('lastResult') or '-'}\n\n")
    elif args.format == "json":
        write_rows([row], BATCH_COLUMNS, "json", out, record="batch")
    else:
        err.write(f"batch {row['RowKey']}: {row.get('outcome')}, {row.get('deviceCount')} devices\n")
    count = write_rows(queries.devices(args.tracking_id), DEVICE_COLUMNS, args.format, out,
                       record="device" if args.format == "json" else None)
    if count != int(row.get("deviceCount") or 0) and row.get("outcome") != "pending":
        err.write(f"warning: the batch row says {row.get('deviceCount')} devices but {count} device rows exist\n")
    return 0


def _batches(args: argparse.Namespace, names: StorageNames, clients: StorageClients, out: TextIO,
             err: TextIO) -> int:
    rows = AuditQueries(names, clients).batches(args.customer, args.since, args.until, args.outcome)
    if not write_rows(rows, BATCH_COLUMNS, args.format, out):
        err.write(f"no batches for customer {args.customer} with these filters\n")
    return 0


def _device(args: argparse.Namespace, names: StorageNames, clients: StorageClients, out: TextIO, err: TextIO) -> int:
    rows = AuditQueries(names, clients).device_history(args.serial, args.product_key)
    if not write_rows(rows, HISTORY_COLUMNS, args.format, out):
        what = f"serial number {args.serial!r}" if args.serial else f"product key {args.product_key!r}"
        err.write(f"no device with {what} in any batch\n")
    return 0


def _summary(args: argparse.Namespace, names: StorageNames, clients: StorageClients, out: TextIO,
             err: TextIO) -> int:
    summary = AuditQueries(names, clients).summary(args.customer, args.since, args.until)
    if not summary.batches:
        err.write("no batches in this period\n")
    _write_summary(summary, args.top, args.format, out)
    return 0


def _write_summary(summary: Summary, top: int, output_format: str, out: TextIO) -> None:
    sections = {"outcome": summary.outcomes.most_common(), "errorCode": summary.error_codes.most_common(),
                "failedSerial": summary.failed_serials.most_common(top)}
    if output_format == "json":
        import json

        out.write(json.dumps({"batches": summary.batches, **{name: dict(rows) for name, rows in sections.items()}},
                             ensure_ascii=False) + "\n")
    elif output_format == "csv":
        write_rows(({"section": name, "key": key, "count": count} for name, rows in sections.items()
                    for key, count in rows), {"section": 0, "key": 0, "count": 0}, "csv", out)
    else:
        out.write(f"{summary.batches} batches\n")
        titles = {"outcome": "batches by outcome", "errorCode": "failed devices by error code",
                  "failedSerial": f"serial numbers that failed most (top {top})"}
        for name, rows in sections.items():
            out.write(f"\n{titles[name]}\n")
            for key, count in rows:
                out.write(f"  {count:>7}  {key}\n")


def _pending(args: argparse.Namespace, names: StorageNames, clients: StorageClients, out: TextIO,
             err: TextIO) -> int:
    if not write_rows(AuditQueries(names, clients).pending(), PENDING_COLUMNS, args.format, out):
        err.write("no batch is being polled\n")
    return 0


def _poison(args: argparse.Namespace, names: StorageNames, clients: StorageClients, out: TextIO, err: TextIO) -> int:
    queues = PoisonQueues(names, clients)
    if args.action == "list":
        listed = write_rows(queues.listing(args.queue, args.limit), POISON_COLUMNS, args.format, out)
        if not listed:
            err.write(f"the {args.queue} poison queue is empty\n")
        elif listed == args.limit and (total := queues.count(args.queue)) > listed:
            err.write(f"showed {listed} of about {total} messages (--limit)\n")
        return 0
    with _logged(args, names, clients, "poison replay", f"--queue {args.queue} " + (
            "--all" if args.all else f"--id {args.id}")) as results:
        replays = queues.replay(args.queue, None if args.all else args.id, args.dry_run)
        results.append(f"{sum(1 for r in replays if r.sent)} sent back, "
                       f"{sum(1 for r in replays if r.missing_parts)} kept (parts missing), "
                       f"{len(replays)} in all")
    if not replays:
        err.write("nothing to replay\n" if args.all else f"no poison message with id {args.id}\n")
    for replay in replays:
        if replay.missing_parts:
            err.write(f"kept {', '.join(replay.message_ids)}: parts {replay.missing_parts} are missing\n")
        verb = "sent back" if replay.sent else "would send back"
        out.write(f"{verb} to {queues.source_queue(args.queue)}: {replay.original[:100]!r} "
                  f"(was rejected: {replay.reason})\n")
    return 0


def _resubmit(args: argparse.Namespace, names: StorageNames, clients: StorageClients, out: TextIO,
              err: TextIO) -> int:
    queries = AuditQueries(names, clients)
    if args.tracking_id:
        found = queries.batch(args.tracking_id, args.customer)
        if found is None:
            err.write(f"no batch with tracking id {args.tracking_id}\n")
            return 0
        if found.get("outcome") not in RESUBMITTABLE:
            err.write(f"batch {args.tracking_id} is {found.get('outcome')}; only {', '.join(RESUBMITTABLE)} "
                      "batches are polled again\n")
            return 0
        candidates = [found]
    elif args.customer:
        candidates = list(queries.batches(args.customer, args.since, None, args.outcome))
    else:
        candidates = list(queries.all_batches(args.since, None, args.outcome))
    store = ResultsStore(clients, names.batch_table, names.device_table, names.history_table)
    chosen = (f"--tracking-id {args.tracking_id}" if args.tracking_id
              else f"--outcome {args.outcome}" + (f" --customer {args.customer}" if args.customer else "")
              + (f" --since {args.since.isoformat()}" if args.since else ""))
    with _logged(args, names, clients, "resubmit", chosen) as results:
        done = resubmit(queries, store, clients, names, candidates, datetime.now(UTC), args.dry_run)
        results.append(f"{len(done)} batches polled again: " + ", ".join(row["RowKey"] for row in done[:50])
                       + (" …" if len(done) > 50 else ""))
    verb = "would poll again" if args.dry_run else "polling again"
    for row in done:
        previous = row.get("previousOutcome") or row.get("outcome")
        out.write(f"{verb}: customer {row['PartitionKey']} batch {row['RowKey']} (was {previous})\n")
    if not done:
        err.write("no batch to poll again\n")
    return 0


def _operator_log(args: argparse.Namespace, names: StorageNames, clients: StorageClients, out: TextIO,
                  err: TextIO) -> int:
    if not write_rows(operator_log.read(clients, names.operator_log_table, args.since, args.until),
                      OPERATOR_LOG_COLUMNS, args.format, out):
        err.write("no operator action in that period\n")
    return 0


@contextmanager
def _logged(args: argparse.Namespace, names: StorageNames, clients: StorageClients, action: str,
            arguments: str) -> Iterator[list[str]]:
    """Record the action in the OperatorLog when it ends: the result the block appends, or the error it raised."""
    results: list[str] = []
    try:
        yield results
    except Exception as exc:
        results.append(f"failed: {type(exc).__name__}: {str(exc)[:300]}")
        raise
    finally:
        entry = operator_log.OperatorAction(operator_log.who(args.operator, clients), action, arguments, args.dry_run,
                                            "; ".join(results) or "no result", datetime.now(UTC))
        operator_log.record(clients, names.operator_log_table, entry)


def _report(args: argparse.Namespace, names: StorageNames, clients: StorageClients, out: TextIO,
            err: TextIO) -> int:
    queries = AuditQueries(names, clients)
    report = build_report(queries.in_period(args.customer, args.since, args.until),
                          lambda tracking: queries.devices(tracking, failed_only=True), since=args.since,
                          until=args.until, customer=args.customer, bucket=args.by, now=datetime.now(UTC),
                          progress=Progress(err))
    try:
        # errors: a serial stored with a lone surrogate is shown as its \\udXXX escape, not a crash
        with open(args.output, "w", encoding="utf-8", errors="backslashreplace") as page:
            page.write(render_report(report))
    except OSError as exc:
        err.write(f"error: cannot write {args.output}: {exc.strerror or exc}\n")
        return 2
    if not report.batches:
        err.write("no batches in this period\n")
    out.write(f"wrote {args.output}: {report.batches} batches\n")
    return 0


COMMANDS = {"batch": _batch, "batches": _batches, "device": _device, "summary": _summary, "pending": _pending,
            "poison": _poison, "resubmit": _resubmit, "operator-log": _operator_log, "report": _report}
