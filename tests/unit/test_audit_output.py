"""The audit's CSV cells: what a spreadsheet would run as a formula is written as text; JSON stays verbatim."""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import UTC, datetime

import pytest

from shared.audit.output import DEVICE_COLUMNS, spreadsheet_safe, write_rows


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"])
def test_text_that_starts_like_a_formula_gets_an_apostrophe(cell: str) -> None:
    assert spreadsheet_safe(cell) == "'" + cell


def test_other_text_numbers_and_times_are_written_as_they_are() -> None:
    when = datetime(2026, 11, 24, tzinfo=UTC)
    assert [spreadsheet_safe(value) for value in ("SN-1", "a=b", -5, 1.5, True, when, None)] == [
        "SN-1", "a=b", "-5", "1.5", "True", when.isoformat(), ""]


def test_a_csv_export_neutralises_cells_and_a_json_export_keeps_them() -> None:
    row = {"serialNumber": "=cmd|' /C calc'!A0", "errorDescription": "-1 devices", "failed": True}
    out = io.StringIO()
    write_rows([row], DEVICE_COLUMNS, "csv", out)
    [_, cells] = list(csv.reader(io.StringIO(out.getvalue())))
    exported = dict(zip(DEVICE_COLUMNS, cells, strict=True))
    assert exported["serialNumber"] == "'=cmd|' /C calc'!A0" and exported["errorDescription"] == "'-1 devices"
    assert exported["failed"] == "True"
    out = io.StringIO()
    write_rows([row], DEVICE_COLUMNS, "json", out)
    assert json.loads(out.getvalue())["serialNumber"] == "=cmd|' /C calc'!A0"


def _token(claims: dict[str, str]) -> str:
    def part(document: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"


def test_the_operator_is_the_name_given_else_the_signed_in_identity_else_the_local_account() -> None:
    """Entra cannot run here: a credential that hands out a token with known claims stands in for it."""
    from azure.core.credentials import AccessToken

    from shared.audit.operator_log import identity_from_token, who
    from shared.config import StorageSettings
    from shared.storage import StorageClients

    class Credential:
        def __init__(self, claims: dict[str, str]) -> None:
            self.claims = claims

        def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
            assert scopes == ("https://storage.azure.com/.default",)
            return AccessToken(_token(self.claims), 2_000_000_000)

    identity_based = StorageClients(StorageSettings(queue_service_uri="https://a.queue.core.windows.net",
                                                    table_service_uri="https://a.table.core.windows.net"))
    identity_based._credential = Credential({"upn": "alice@contoso.com", "oid": "1"})  # type: ignore[assignment]
    assert who("bob", identity_based) == "bob"
    assert who(None, identity_based) == "alice@contoso.com (Entra ID)"
    identity_based._credential = Credential({"appid": "11111111-2222", "oid": "1"})  # type: ignore[assignment]
    assert who(None, identity_based) == "app 11111111-2222 (Entra ID)"
    with_key = StorageClients(StorageSettings(connection_string="UseDevelopmentStorage=true"))
    assert who(None, with_key).endswith("(local account)")
    assert identity_from_token("not a token") is None and identity_from_token(_token({})) is None
