"""host.json: every invocation and exception reaches Application Insights, as Microsoft's monitoring guidance
has it for production (Host.Results at Information, requests and exceptions never sampled)."""

import json
from pathlib import Path

HOST = json.loads((Path(__file__).resolve().parents[2] / "host.json").read_text())


def test_invocations_and_exceptions_are_logged_and_never_sampled() -> None:
    levels = HOST["logging"]["logLevel"]
    assert levels["Host.Results"] == "Information" and levels["Function"] == "Information"
    assert levels["Host.Aggregator"] in ("Information", "Trace")
    sampling = HOST["logging"]["applicationInsights"]["samplingSettings"]
    assert sampling["isEnabled"] is True
    assert {"Request", "Exception"} <= set(sampling["excludedTypes"].split(";"))
