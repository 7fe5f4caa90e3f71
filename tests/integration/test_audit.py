"""python -m shared.audit against Azurite, with rows written by the real pipeline and seeded rows."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.app import get_app
from shared.audit.cli import main
from shared.device_keys import serial_partition_key
from tests.conftest import PROJECT_ROOT, Stack

pytestmark = pytest.mark.integration


def audit(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _finish(stack: Stack, customer: str, devices: list[dict[str, str]], errors: dict[str, str] | None = None) -> str:
    """Upload and run the batch through check_batch_status to its final rows."""
    for serial, code in (errors or {}).items():
        stack.control("device-errors", {"serialNumber": serial, "errorCode": code})
    tracking = stack.upload(customer, devices).rsplit("/", 1)[1]
    get_app().status_check.handle(json.dumps({"customerId": customer, "batchTrackingId": tracking,
                                              "source": "audit-test"}).encode())
    return tracking


@pytest.fixture
def seeded(stack: Stack) -> dict[str, str]:
    stack.control("config", {"queuedSeconds": 0, "processingSeconds": 0})
    customer = str(uuid.uuid4())
    awkward = "SN'quote/#?\\"
    first = _finish(stack, customer, [{"serialNumber": awkward}, {"serialNumber": "PLAIN-1"},
                                      {"productKey": "PK-ONLY-1"}], {awkward: "808"})
    second = _finish(stack, customer, [{"serialNumber": awkward}, {"serialNumber": "PLAIN-2"}],
                     {awkward: "808", "PLAIN-2": "802"})
    return {"customer": customer, "first": first, "second": second, "awkward": awkward}


def test_batch_in_every_format_with_and_without_the_customer(seeded: dict[str, str]) -> None:
    code, table, _ = audit("batch", "--tracking-id", seeded["first"])
    assert code == 0 and "outcome completed_with_failures" in table and "PLAIN-1" in table
    code, with_customer, _ = audit("batch", "--tracking-id", seeded["first"].upper(), "--customer", seeded["customer"])
    assert code == 0 and with_customer == table
    code, text, err = audit("batch", "--tracking-id", seeded["first"], "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert code == 0 and len(rows) == 3 and {r["serialNumber"] for r in rows} == {seeded["awkward"], "PLAIN-1", ""}
    assert "completed_with_failures" in err
    code, text, _ = audit("batch", "--tracking-id", seeded["first"], "--format", "json")
    records = [json.loads(line) for line in text.splitlines()]
    assert records[0]["record"] == "batch" and records[0]["deviceCount"] == 3
    assert [r["record"] for r in records[1:]] == ["device"] * 3


def test_no_match_is_exit_0_with_a_line_on_stderr(seeded: dict[str, str]) -> None:
    missing = str(uuid.uuid4())
    assert audit("batch", "--tracking-id", missing) == (0, "", f"no batch with tracking id {missing}\n")
    code, out, err = audit("device", "--serial", "NEVER-SEEN")
    assert code == 0 and "no device with serial number" in err and out.count("\n") == 1  # the header only


def test_batches_with_date_bounds_and_outcome(stack: Stack, seeded: dict[str, str]) -> None:
    customer = seeded["customer"]
    table = stack.table("BATCH_TABLE_NAME")
    for days, outcome in ((40, "timed_out"), (10, "not_found")):
        table.create_entity({"PartitionKey": customer, "RowKey": str(uuid.uuid4()), "outcome": outcome,
                             "firstSeenAt": datetime.now(UTC) - timedelta(days=days)})
    since = (datetime.now(UTC) - timedelta(days=20)).date().isoformat()
    code, text, _ = audit("batches", "--customer", customer, "--since", since, "--format", "json")
    outcomes = sorted(json.loads(line)["outcome"] for line in text.splitlines())
    assert code == 0 and outcomes == ["completed_with_failures", "completed_with_failures", "not_found"]
    until = (datetime.now(UTC) - timedelta(days=20)).isoformat()
    code, text, _ = audit("batches", "--customer", customer, "--until", until, "--format", "csv")
    assert [row["outcome"] for row in csv.DictReader(io.StringIO(text))] == ["timed_out"]
    code, text, _ = audit("batches", "--customer", customer, "--outcome", "not_found", "--format", "json")
    assert [json.loads(line)["outcome"] for line in text.splitlines()] == ["not_found"]


def test_device_history_by_serial_with_awkward_characters_newest_first(seeded: dict[str, str]) -> None:
    code, text, _ = audit("device", "--serial", seeded["awkward"], "--format", "json")
    rows = [json.loads(line) for line in text.splitlines()]
    assert code == 0 and [r["batchTrackingId"] for r in rows] == [seeded["second"], seeded["first"]]
    assert all(r["serialNumber"] == seeded["awkward"] and r["errorCode"] == "808" for r in rows)
    code, text, _ = audit("device", "--product-key", "PK-ONLY-1")
    assert code == 0 and seeded["first"] in text


@pytest.mark.parametrize("argv", [
    ("device", "--serial", "x' or PartitionKey ne '"),
    ("device", "--serial", "' or 1 eq 1 or RowKey eq '"),
    ("device", "--product-key", "PK' or 'a' eq 'a"),
])
def test_injection_in_free_text_changes_nothing(seeded: dict[str, str], argv: tuple[str, ...]) -> None:
    code, out, err = audit(*argv)
    assert code == 0 and "no device with" in err and out.count("\n") == 1


@pytest.mark.parametrize("argv", [
    ("batches", "--customer", "x' or PartitionKey ne '"),
    ("batch", "--tracking-id", "../../etc"),
    ("batches", "--customer", "47021739-3426-40bf-9601-61b4b6d7c793", "--outcome", "completed' or '1' eq '1"),
    ("batches", "--customer", "47021739-3426-40bf-9601-61b4b6d7c793", "--since", "yesterday"),
    ("resubmit", "--outcome", "completed"),
    ("nonsense",),
])
def test_bad_arguments_exit_2_with_usage(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code == 2 and "usage:" in capsys.readouterr().err


def test_paging_past_1000_rows_streams_every_device(stack: Stack) -> None:
    stack.control("config", {"queuedSeconds": 0, "processingSeconds": 0})
    customer = str(uuid.uuid4())
    tracking = _finish(stack, customer, [{"serialNumber": f"MANY-{i:05}"} for i in range(1500)])
    code, text, _ = audit("batch", "--tracking-id", tracking, "--format", "csv")
    serials = [row["serialNumber"] for row in csv.DictReader(io.StringIO(text))]
    assert code == 0 and len(serials) == 1500 and len(set(serials)) == 1500


def test_summary_counts_outcomes_codes_and_repeated_serials(seeded: dict[str, str]) -> None:
    code, text, _ = audit("summary", "--customer", seeded["customer"], "--format", "json")
    summary = json.loads(text)
    assert code == 0 and summary["batches"] == 2
    assert summary["outcome"] == {"completed_with_failures": 2}
    assert summary["errorCode"] == {"808 ZtdDeviceAssignedToOtherTenant": 2, "802 InvalidZtdHardwareHash": 1}
    assert summary["failedSerial"][seeded["awkward"]] == 2
    code, table, _ = audit("summary")
    assert code == 0 and "failed devices by error code" in table and "808 ZtdDeviceAssignedToOtherTenant" in table


def test_pending_lists_batches_still_polled_oldest_first(stack: Stack) -> None:
    table = stack.table("BATCH_TABLE_NAME")
    table.create_table()
    now = datetime.now(UTC)
    for hours, tracking in ((1, "b"), (5, "a")):
        table.upsert_entity({"PartitionKey": str(uuid.uuid4()), "RowKey": tracking, "outcome": "pending",
                             "firstSeenAt": now - timedelta(hours=hours), "lastPolledAt": now})
    table.upsert_entity({"PartitionKey": str(uuid.uuid4()), "RowKey": "c", "outcome": "completed",
                         "firstSeenAt": now})
    code, text, _ = audit("pending", "--format", "json")
    assert code == 0 and [json.loads(line)["RowKey"] for line in text.splitlines()] == ["a", "b"]


def test_unreachable_storage_exits_1_naming_the_endpoint(stack: Stack) -> None:
    env = {**os.environ, "AzureWebJobsStorage": stack.azurite.connection_string.replace(
        str(stack.azurite.table_port), "9")}
    result = subprocess.run([sys.executable, "-m", "shared.audit", "batches", "--customer", str(uuid.uuid4())],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "cannot read storage at http://127.0.0.1:9/devstoreaccount1" in result.stderr
    assert "Traceback" not in result.stderr


def test_poison_list_and_replay_send_the_original_back_then_remove_it(stack: Stack) -> None:
    check = get_app().status_check
    check.reject(b"first bad message", "message is not JSON")
    check.reject(json.dumps({"source": "x" * 63_000}).encode(), "source is too long")  # split in parts
    code, text, _ = audit("poison", "list", "--format", "json")
    listed = [json.loads(line) for line in text.splitlines()]
    assert code == 0 and {row["reason"] for row in listed} == {"message is not JSON", "source is too long"}
    first_id = next(row["messageId"] for row in listed if row["reason"] == "message is not JSON")

    code, out, _ = audit("poison", "replay", "--id", first_id, "--dry-run")
    assert code == 0 and out.startswith("would send back")
    assert len(stack.peek(stack.env["STATUS_QUEUE_NAME"] + "-poison")) == len(listed)

    code, out, _ = audit("poison", "replay", "--all")
    assert code == 0 and out.count("sent back") == 2
    replayed = stack.drain(stack.env["STATUS_QUEUE_NAME"])
    assert sorted(replayed) == sorted(["first bad message", json.dumps({"source": "x" * 63_000})])
    assert stack.peek(stack.env["STATUS_QUEUE_NAME"] + "-poison") == []


def test_resubmit_polls_an_access_denied_batch_again_and_keeps_one_row(stack: Stack) -> None:
    stack.control("config", {"queuedSeconds": 0, "processingSeconds": 0})
    customer = str(uuid.uuid4())
    tracking = stack.upload(customer, [{"serialNumber": "RETRY-1"}]).rsplit("/", 1)[1]
    stack.control("script", {"trackingId": tracking, "responses": ["403"] * 3})
    stack.start_host(functions=["check_batch_status"])
    stack.send({"customerId": customer, "batchTrackingId": tracking})
    assert stack.wait_final(customer, tracking)["outcome"] == "access_denied"

    code, out, _ = audit("resubmit", "--outcome", "access_denied", "--dry-run")
    assert code == 0 and f"would poll again: customer {customer} batch {tracking}" in out
    code, out, _ = audit("resubmit", "--tracking-id", tracking)
    assert code == 0 and "polling again" in out

    row = stack.wait_final(customer, tracking)
    assert row["outcome"] == "completed" and row["previousOutcome"] == "access_denied" and row["resubmitCount"] == 1
    assert row["originalFirstSeenAt"] < row["firstSeenAt"]
    assert len([r for r in stack.rows("BATCH_TABLE_NAME") if r["PartitionKey"] == customer]) == 1
    assert len(stack.rows("DEVICE_TABLE_NAME", "PartitionKey eq @t", t=tracking)) == 1
    code, text, _ = audit("operator-log", "--format", "json")
    logged = [json.loads(line) for line in text.splitlines()]
    assert code == 0 and [(r["action"], r["dryRun"]) for r in logged] == [("resubmit", False), ("resubmit", True)]
    assert logged[0]["arguments"] == f"--tracking-id {tracking}" and tracking in logged[0]["result"]
    assert logged[1]["arguments"] == "--outcome access_denied" and logged[0]["operator"].endswith("(local account)")


def test_every_operator_action_is_in_the_operator_log_with_who_what_and_the_result(stack: Stack) -> None:
    check = get_app().status_check
    check.reject(b"first bad message", "message is not JSON")
    check.reject(b"second bad message", "message is not JSON")
    code, text, _ = audit("poison", "list", "--format", "json")
    first_id = json.loads(text.splitlines()[0])["messageId"]
    assert audit("poison", "replay", "--id", first_id, "--dry-run", "--operator", "bob@contoso.com")[0] == 0
    assert audit("poison", "replay", "--all", "--operator", "alice@contoso.com")[0] == 0
    code, text, err = audit("operator-log", "--format", "json")
    logged = [json.loads(line) for line in text.splitlines()]
    assert code == 0 and [r["operator"] for r in logged] == ["alice@contoso.com", "bob@contoso.com"]
    assert logged[0]["action"] == "poison replay" and logged[0]["arguments"] == "--queue status --all"
    assert logged[0]["result"] == "2 sent back, 0 kept (parts missing), 2 in all" and logged[0]["dryRun"] is False
    assert logged[1]["arguments"] == f"--queue status --id {first_id}" and logged[1]["dryRun"] is True
    assert logged[1]["result"] == "0 sent back, 0 kept (parts missing), 1 in all"
    code, text, err = audit("operator-log", "--since", "2020-01-01", "--until", "2020-02-01")
    assert code == 0 and "no operator action in that period" in err


def test_every_final_batch_has_its_rows_and_matching_counts(stack: Stack, seeded: dict[str, str]) -> None:
    for tracking in (seeded["first"], seeded["second"]):
        row = stack.batch_row(seeded["customer"], tracking)
        assert row is not None
        devices = stack.rows("DEVICE_TABLE_NAME", "PartitionKey eq @t", t=tracking)
        history = stack.rows("DEVICE_HISTORY_TABLE_NAME", "RowKey eq @t", t=tracking)
        assert row["deviceCount"] == len(devices) == len(history)
        assert row["failedDeviceCount"] == sum(1 for device in devices if device["failed"])
        index = stack.table("BATCH_TABLE_NAME").get_entity("~tracking", tracking)
        assert index["customerId"] == seeded["customer"]
    assert {h["PartitionKey"] for h in stack.rows("DEVICE_HISTORY_TABLE_NAME")} >= {
        serial_partition_key(seeded["awkward"])}


@pytest.mark.parametrize("output_format", ["table", "csv", "json"])
def test_every_command_answers_in_every_format(stack: Stack, seeded: dict[str, str], output_format: str) -> None:
    get_app().status_check.reject(b"not json", "message is not JSON")
    commands = [
        ("batch", "--tracking-id", seeded["first"]),
        ("batches", "--customer", seeded["customer"]),
        ("device", "--serial", seeded["awkward"]),
        ("summary",),
        ("pending",),
        ("poison", "list"),
    ]
    stack.table("BATCH_TABLE_NAME").upsert_entity({"PartitionKey": str(uuid.uuid4()), "RowKey": str(uuid.uuid4()),
                                                   "outcome": "pending", "firstSeenAt": datetime.now(UTC)})
    for command in commands:
        code, out, err = audit(*command, "--format", output_format)
        assert code == 0, (command, err)
        lines = out.strip().splitlines()
        assert lines, (command, err)
        if output_format == "json":
            assert all(isinstance(json.loads(line), dict) for line in lines), command
        elif output_format == "csv":
            assert len(list(csv.reader(io.StringIO(out)))) >= 2, command  # a header and at least one row


def test_the_sweep_wraps_what_the_host_moved_to_poison_in_a_never_expiring_envelope(stack: Stack) -> None:
    from shared import poison_sweep
    from shared.config import load_storage_names

    poison_name = stack.env["STATUS_QUEUE_NAME"] + "-poison"
    poison = stack.queue(poison_name)
    poison.send_message('{"customerId": "moved by the host"}')  # as the host moves it: default time-to-live
    get_app().status_check.reject(b"not json", "message is not JSON")  # batchwatch's own envelope

    wrapped = poison_sweep.sweep(get_app().clients, load_storage_names(os.environ), datetime.now(UTC))
    assert wrapped == {poison_name: 1, stack.env["FAILURE_QUEUE_NAME"] + "-poison": 0}
    assert poison_sweep.sweep(get_app().clients, load_storage_names(os.environ), datetime.now(UTC))[poison_name] == 0

    code, text, _ = audit("poison", "list", "--format", "json")
    rows = {row["original"]: row for row in map(json.loads, text.splitlines())}
    assert code == 0 and set(rows) == {'{"customerId": "moved by the host"}', "not json"}
    assert "after maxDequeueCount (5) deliveries" in rows['{"customerId": "moved by the host"}']["reason"]
    assert rows["not json"]["reason"] == "message is not JSON"
    for message in poison.peek_messages(max_messages=32):
        assert message.expires_on is None or message.expires_on.year >= 9999  # nothing left that expires
    code, _, _ = audit("poison", "replay", "--all")
    assert code == 0 and sorted(stack.drain(stack.env["STATUS_QUEUE_NAME"])) == sorted([
        '{"customerId": "moved by the host"}', "not json"])


def test_poison_list_reads_at_most_its_limit_and_says_how_many_there_are(stack: Stack) -> None:
    check = get_app().status_check
    for index in range(5):
        check.reject(f"bad message {index}".encode(), "message is not JSON")
    code, text, err = audit("poison", "list", "--format", "json", "--limit", "3")
    assert code == 0 and len(text.splitlines()) == 3
    assert "showed 3 of about 5 messages (--limit)" in err
    code, text, err = audit("poison", "list", "--format", "json")
    assert code == 0 and len(text.splitlines()) == 5 and err == ""
    assert len(stack.peek(stack.env["STATUS_QUEUE_NAME"] + "-poison")) == 5  # listing never removes anything
    with pytest.raises(SystemExit) as refused:
        audit("poison", "list", "--limit", "0")
    assert refused.value.code == 2
