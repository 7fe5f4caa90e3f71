"""Log lines: context fields and quoted values can neither forge a line nor break the format."""

import logging

import pytest

from shared.log import context_logger, loggable


def test_control_and_line_breaking_characters_are_escaped_and_long_values_cut() -> None:
    assert loggable("a\nb\x1b[31mc\u2028d\u202e") == "a\\x0ab\\x1b[31mc\\u2028d\\u202e"
    assert loggable("x" * 2000).endswith("...(2000 characters)") and len(loggable("x" * 2000)) < 1100
    assert loggable(3) == 3 and loggable(None) is None


def test_a_percent_sign_in_a_log_field_is_logged_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    context_logger("batchwatch.test", alertId="%s%s%s", batchTrackingId="%(x)s\nforged").info("sent %d", 3)
    [record] = caplog.records
    assert record.getMessage() == "sent 3 [alertId=%s%s%s batchTrackingId=%(x)s\\x0aforged]"
