"""The batch row's typed read and write sides, and the one rule from field names to the table's property names."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.batch_row import BatchRow, BatchRowChange, column

WHEN = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_every_written_field_has_the_property_name_the_contract_and_the_readme_give() -> None:
    every = BatchRowChange(**{name: None for name in BatchRowChange.__dataclass_fields__})
    names = {column(name) for name in BatchRowChange.__dataclass_fields__}
    assert every.to_entity() == {}
    assert names == {
        "customerId", "batchTrackingId", "status", "outcome", "chainToken", "pollCount", "deviceCount",
        "failedDeviceCount", "inProgressDeviceCount", "firstSeenAt", "lastPolledAt", "nextPollAt", "finalizedAt",
        "startedTime", "completedTime", "lastResult", "correlationId", "source", "previousOutcome",
        "originalFirstSeenAt", "resubmittedAt", "resubmitCount", "devicesStored",
    }


def test_a_change_writes_only_what_it_sets_and_a_later_change_wins() -> None:
    first = BatchRowChange(outcome="pending", poll_count=1, chain_token="aaaa")
    assert first.to_entity() == {"outcome": "pending", "pollCount": 1, "chainToken": "aaaa"}
    later = first.then(BatchRowChange(chain_token="", next_poll_at=WHEN))
    assert later.to_entity() == {"outcome": "pending", "pollCount": 1, "chainToken": "", "nextPollAt": WHEN}


def test_a_written_row_reads_back_as_it_was_written() -> None:
    change = BatchRowChange(outcome="completed", status="finished", chain_token="bbbb", first_seen_at=WHEN,
                            next_poll_at=WHEN, last_polled_at=WHEN, poll_count=7, correlation_id="c", source="s",
                            devices_stored=3000)
    row = BatchRow.from_entity(change.to_entity(), "etag-1")
    assert row == BatchRow("etag-1", "completed", "finished", "bbbb", WHEN, WHEN, WHEN, 7, "c", "s", 3000)
    assert row.is_final


def test_a_row_with_missing_or_odd_values_reads_as_the_defaults() -> None:
    naive = datetime(2026, 11, 24, 12, 0)
    odd = {"pollCount": True, "firstSeenAt": "yesterday", "nextPollAt": naive, "outcome": None, "chainToken": 5}
    row = BatchRow.from_entity(odd, "e")
    assert (row.poll_count, row.first_seen_at, row.next_poll_at) == (0, None, naive.replace(tzinfo=UTC))
    assert (row.outcome, row.chain_token, row.is_final) == ("pending", "5", False)
