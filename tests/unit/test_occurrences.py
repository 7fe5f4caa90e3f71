from itertools import islice

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.occurrences import Occurrences, numbered


def _by_dict(keys: list[str]) -> list[int]:
    seen: dict[str, int] = {}
    numbers = []
    for key in keys:
        seen[key] = seen.get(key, 0) + 1
        numbers.append(seen[key])
    return numbers


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ab\x00~\ud800😀", max_size=3), max_size=60), st.integers(1, 7))
def test_each_key_is_numbered_by_its_occurrence_across_pages(keys: list[str], page: int) -> None:
    numbers: list[int] = []
    with Occurrences() as occurrences:
        for start in range(0, len(keys), page):
            numbers += occurrences.number(keys[start:start + page])
    assert numbers == _by_dict(keys)


def test_a_long_stream_is_numbered_in_pages_and_the_database_is_left_behind_nowhere() -> None:
    keys = [f"SN{i % 2500}" for i in range(6000)]  # 2,500 identities, each repeated across page boundaries
    numbered_keys = list(numbered(keys))
    assert [key for key, _ in numbered_keys] == keys
    assert [number for _, number in numbered_keys] == _by_dict(keys)
    assert list(islice(numbered(iter(keys)), 3)) == [("SN0", 1), ("SN1", 1), ("SN2", 1)]  # an unfinished pass
