"""Whatever Partner Center sends, the entity written fits Table Storage's limits."""

import json

from azure.data.tables import EdmType, EntityProperty
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.table_values import (
    MAX_STRING_UNITS,
    TRANSACTION_LIMIT,
    entity_size,
    fit_entity,
    transaction_groups,
    utf16_units,
)

ENTITY_LIMIT_BYTES = 1024 * 1024
VALUES = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80), st.floats(), st.booleans(),
    st.text(max_size=50), st.builds(lambda n, c: c * n, st.integers(0, 40_000), st.sampled_from("x😀é")),
)
NAMES = st.one_of(st.from_regex(r"[a-z][A-Za-z0-9_]{0,20}", fullmatch=True), st.builds(lambda n: "n" * n,
                                                                                       st.integers(200, 400)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.dictionaries(NAMES, VALUES, max_size=300))
def test_any_device_fields_fit_one_entity(extras: dict) -> None:
    entity = fit_entity({"PartitionKey": "p", "RowKey": "r", "status": "finished", **extras}, foldable=extras)
    assert len(entity) <= 252 and entity_size(entity) <= ENTITY_LIMIT_BYTES
    if "extraFields" not in entity:
        assert set(extras) <= set(entity)
    for name, value in entity.items():
        assert len(name) <= 255
        if isinstance(value, str):
            assert utf16_units(value) <= MAX_STRING_UNITS
        elif isinstance(value, int) and not isinstance(value, bool):
            assert -(2**31) <= value < 2**31
        elif isinstance(value, EntityProperty):
            assert value.edm_type == EdmType.INT64 and -(2**63) <= value.value < 2**63
        elif isinstance(value, float):
            assert value == value and abs(value) != float("inf")
    if "extraFields" in entity and "extraFields" not in entity.get("truncatedFields", "").split(","):
        kept = set(entity) | set(json.loads(entity["extraFields"]))
        assert set(extras) <= kept  # every field is stored: as a property, or folded into extraFields


def test_transactions_are_split_by_size_as_well_as_by_count() -> None:
    small = [{"PartitionKey": "p", "RowKey": str(i), "v": "x"} for i in range(250)]
    assert [len(group) for group in transaction_groups(small)] == [TRANSACTION_LIMIT, TRANSACTION_LIMIT, 50]
    large = [{"PartitionKey": "p", "RowKey": str(i), "v": "y" * 60_000} for i in range(100)]
    groups = list(transaction_groups(large))
    assert len(groups) > 1 and sum(len(group) for group in groups) == 100
    assert all(len(json.dumps(group).encode()) < 4 * 1024 * 1024 for group in groups)


def test_times_table_storage_cannot_hold_are_left_out() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    edge = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    entity = fit_entity({"PartitionKey": "p", "RowKey": "r", "early": datetime(1500, 1, 1, tzinfo=UTC),
                         "edge": edge, "fine": datetime(2026, 1, 1, tzinfo=UTC)})
    assert entity["early"] is None and entity["edge"] is None and entity["fine"].year == 2026
