import json
from datetime import UTC, datetime

from shared.failure_chunks import MESSAGE_BUDGET_BYTES, encoded_size
from shared.poison import poison_envelopes

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def test_small_original_fits_one_envelope() -> None:
    [envelope] = poison_envelopes("not json", "message is not JSON", NOW)
    assert json.loads(envelope) == {"reason": "message is not JSON", "rejectedAt": NOW.isoformat(),
                                    "original": "not json"}


def test_large_original_is_split_and_nothing_is_lost() -> None:
    original = '{"source": "' + ("<\u0001é" * 21_000) + '"}'
    texts = poison_envelopes(original, "source is too long", NOW)
    envelopes = [json.loads(text) for text in texts]
    assert len(envelopes) > 1
    assert all(encoded_size(text) <= MESSAGE_BUDGET_BYTES for text in texts)
    assert {e["rejectionId"] for e in envelopes} == {envelopes[0]["rejectionId"]}
    assert [e["part"] for e in envelopes] == list(range(1, len(envelopes) + 1))
    assert "".join(e["original"] for e in envelopes) == original
