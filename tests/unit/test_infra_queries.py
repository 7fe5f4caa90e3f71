"""The alert rules and the workbook in infra/ query only what the code emits: metric names, their attributes,
log record attributes and log lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUERIES = sorted((ROOT / "infra" / "queries").glob("*.kql"))
ALERTING = (ROOT / "infra" / "modules" / "alerting.bicep").read_text()
CODE = "\n".join(path.read_text() for path in sorted((ROOT / "shared").rglob("*.py")))


def _metric_names() -> set[str]:
    return set(re.findall(r'create_(?:counter|histogram)\(\s*"([^"]+)"', CODE))


def _attributes() -> set[str]:
    """Metric attribute keys, logger fields and the extra= keys of log calls."""
    metric_keys = set(re.findall(r'\.(?:add|record)\([^)]*?\{"(\w+)"', CODE))
    logger_fields = {key for call in re.findall(r"context_logger\(([^)]*)\)", CODE)
                     for key in re.findall(r"(\w+)=", call)}
    extra_keys = {key for block in re.findall(r"extra=\{(.*?)\}\)", CODE, re.DOTALL)
                  for key in re.findall(r'"(\w+)":', block)}
    return metric_keys | logger_fields | extra_keys


def test_every_query_file_is_used_and_every_used_file_exists() -> None:
    used = set(re.findall(r"loadTextContent\('\.\./queries/([^']+)'\)", ALERTING))
    assert used == {path.name for path in QUERIES}


@pytest.mark.parametrize("path", QUERIES, ids=[path.stem for path in QUERIES])
def test_a_query_uses_only_metrics_attributes_and_log_lines_the_code_emits(path: Path) -> None:
    query = path.read_text()
    for metric in re.findall(r'name == "([^"]+)"', query):
        assert metric in _metric_names(), f"{path.name}: no metric {metric}"
    for attribute in re.findall(r'customDimensions(?:\.(\w+)|\["(\w+)"\])', query):
        name = attribute[0] or attribute[1]
        assert name in _attributes(), f"{path.name}: nothing emits the attribute {name}"
    for prefix in re.findall(r'message startswith "([^"]+)"', query):
        assert re.search(r'f?"' + re.escape(prefix), CODE), f"{path.name}: no log line starts with {prefix!r}"
    assert re.search(r"batchwatch\.|^requests|message startswith", query, re.MULTILINE), "the query reads nothing known"


def test_the_attributes_the_queries_rely_on_are_found_at_all() -> None:
    assert {"outcome", "error_code", "class", "queue", "customerId", "batchTrackingId", "failedDeviceCount"} \
        <= _attributes()
    assert len(_metric_names()) == 7


def test_no_loop_sits_inside_a_function_call_where_bicep_refuses_it() -> None:
    """BCP138: a for-expression may not be an argument of a function such as string(); build it in a var."""
    for path in (ROOT / "infra").rglob("*.bicep"):
        text = path.read_text()
        for call in re.finditer(r"\b(string|concat|union|json)\(", text):
            depth, index = 0, call.end() - 1
            for index in range(call.end() - 1, len(text)):
                depth += {"(": 1, ")": -1}.get(text[index], 0)
                if depth == 0:
                    break
            assert "[for " not in text[call.end():index], f"{path.name}: a loop inside {call.group(1)}()"


def test_the_pending_rule_looks_back_further_than_its_threshold() -> None:
    """A scheduled query sees only its window unless overrideQueryTimeRange says otherwise."""
    assert "overrideQueryTimeRange: rule.name == 'pending-too-long' ? 'P2D'" in ALERTING
    assert "@maxValue(47)" in ALERTING.split("param pendingThresholdHours")[0].rsplit("\n\n", 1)[-1]
