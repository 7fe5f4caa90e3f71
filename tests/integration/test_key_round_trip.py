"""Any serial number, written as Table Storage rows, is read back verbatim under its derived key."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.azurite import Azurite
from shared.device_keys import serial_partition_key

pytestmark = pytest.mark.integration
SERIALS = st.one_of(
    st.text(min_size=1, max_size=80),
    st.text(alphabet=st.sampled_from("/\\#?'\"% \t\n\x01\x7f\x9fé序😀~!\ud800"), min_size=1, max_size=40),
    st.text(min_size=300, max_size=2000),
)


@pytest.fixture(scope="module")
def history_table(azurite: Azurite):  # type: ignore[no-untyped-def]
    from azure.data.tables import TableClient

    table = TableClient.from_connection_string(azurite.connection_string, f"RoundTrip{uuid.uuid4().hex[:8]}")
    table.create_table()
    return table


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(SERIALS)
def test_any_serial_round_trips_under_its_key(history_table, serial: str) -> None:  # type: ignore[no-untyped-def]
    key = serial_partition_key(serial)
    history_table.upsert_entity({"PartitionKey": key, "RowKey": "batch", "serialNumber": serial})
    [row] = list(history_table.query_entities("PartitionKey eq @pk", parameters={"pk": key}))
    assert row["serialNumber"] == serial
