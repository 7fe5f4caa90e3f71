"""The docs cannot drift from the code: settings and their defaults, make targets, audit commands and options,
and the settings in local.settings.example.json and infra/."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import config, telemetry
from shared.audit.cli import build_parser
from shared.config import (
    ALERT_NUMBERS,
    PARTNER_CENTER_NUMBERS,
    PARTNER_CENTER_TEXTS,
    POLICY_NUMBERS,
    POLLING_NUMBERS,
    QUEUE_NAMES,
    TABLE_NAMES,
    AlertSettings,
    PartnerCenterSettings,
    PollingSettings,
    StorageNames,
    default_of,
    load_digest_settings,
    load_settings,
)
from shared.policy import PollingPolicy
from shared.remediation import _CATALOGUE

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ALL_DOCS = "\n".join(path.read_text(encoding="utf-8") for path in DOCS)
SETTINGS_PAGE = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
ROW = re.compile(r"^\| `([A-Za-z_]+)` \| ([^|]*) \|", re.MULTILINE)


class _Recording(dict[str, str]):
    """An environment that remembers every name the code looks up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)


def _environments() -> Iterator[_Recording]:
    """Settings that walk every branch of the loader: each auth mode, each way to name storage."""
    auth = {"client_secret": {"PARTNER_CENTER_CLIENT_SECRET": "s"},
            "certificate": {"PARTNER_CENTER_CERTIFICATE": "pem"},
            "managed_identity_federation": {"PARTNER_CENTER_MANAGED_IDENTITY_CLIENT_ID": "id"},
            "default": {}, "simulator": {"PARTNER_CENTER_BASE_URL": "http://127.0.0.1:1"}}
    storage = [{"AzureWebJobsStorage": "UseDevelopmentStorage=true"}, {"AzureWebJobsStorage__accountName": "acct"},
               {"AzureWebJobsStorage__queueServiceUri": "https://q", "AzureWebJobsStorage__tableServiceUri": "https://t"}]
    for mode, extra in auth.items():
        for where in storage:
            yield _Recording({**where, "PARTNER_CENTER_AUTH": mode, "PARTNER_CENTER_TENANT_ID": "t",
                              "PARTNER_CENTER_CLIENT_ID": "c", **extra})


def _settings_read_by_the_code() -> set[str]:
    # read on their own: by shared/invocation.py, and by shared/telemetry.py
    names: set[str] = {"SETTINGS_RETRY_SECONDS", telemetry.CONNECTION_STRING_SETTING}
    for env in _environments():
        load_settings(env)
        load_digest_settings(env)
        names |= env.read
    for binding in ROOT.glob("*/function.json"):  # binding expressions: %SETTING%
        names |= set(re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)%", binding.read_text()))
    return names


def _code_defaults() -> dict[str, object]:
    defaults: dict[str, object] = {"SETTINGS_RETRY_SECONDS": config.DEFAULT_SETTINGS_RETRY_SECONDS,
                                   "ALERT_WEBHOOK_FORMAT": default_of(AlertSettings, "alert_webhook_format")}
    for owner, table in [(PollingPolicy, POLICY_NUMBERS), (PollingSettings, POLLING_NUMBERS),
                         (AlertSettings, ALERT_NUMBERS), (PartnerCenterSettings, PARTNER_CENTER_NUMBERS)]:
        defaults |= {number.setting: default_of(owner, name) for name, number in table.items()}
    defaults |= {setting: default_of(PartnerCenterSettings, name) for name, setting in PARTNER_CENTER_TEXTS.items()}
    defaults |= {setting: default_of(StorageNames, name) for name, setting in {**QUEUE_NAMES, **TABLE_NAMES}.items()}
    return defaults


def test_every_setting_the_code_reads_is_in_the_settings_reference_and_nothing_else_is() -> None:
    documented = {name for name, _ in ROW.findall(SETTINGS_PAGE)}
    assert documented == _settings_read_by_the_code()


@pytest.mark.parametrize(("setting", "default"), sorted(_code_defaults().items()))
def test_every_documented_default_is_the_codes(setting: str, default: object) -> None:
    rows = [cell.strip() for name, cell in ROW.findall(ALL_DOCS) if name == setting]
    assert rows, f"{setting} is not in any settings table"
    for cell in rows:  # the settings reference, and any other page's table that gives it
        shown = cell.strip("`").split(" ")[0]
        assert shown == (f"{default:g}" if isinstance(default, float) else str(default)), (setting, cell)


def test_every_make_target_is_documented() -> None:
    targets = re.findall(r"^\.PHONY: (.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)[0].split()
    missing = [target for target in targets if f"make {target}" not in ALL_DOCS]
    assert missing == []


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, list[str]]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix} {name}".strip())
    options = [option for action in parser._actions for option in action.option_strings
               if option.startswith("--") and option != "--help"]
    if prefix:
        yield prefix, options


def test_every_audit_command_and_option_is_in_the_audit_page() -> None:
    page = (ROOT / "docs" / "audit-cli.md").read_text(encoding="utf-8")
    commands = list(_commands(build_parser()))
    assert len(commands) >= 8
    for command, options in commands:
        lines = [line for line in page.splitlines() if f"`{command}" in line or f"audit {command}" in line]
        assert lines, f"`{command}` is not in docs/audit-cli.md"
        for option in options:
            assert any(option in line for line in lines), f"{command} {option} is not in docs/audit-cli.md"


def test_local_settings_example_and_infra_name_only_real_settings() -> None:
    real = _settings_read_by_the_code()
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert set(example) - {"FUNCTIONS_WORKER_RUNTIME"} <= real
    app = (ROOT / "infra" / "modules" / "functionapp.bicep").read_text()
    infra = set(re.findall(r"name: '([A-Za-z_]+(?:__[A-Za-z]+)?)'\s+value:", app))
    platform = {name for name in infra if name.startswith(("APPLICATIONINSIGHTS_", "FUNCTIONS_", "AzureWebJobs"))}
    assert infra - platform, "no app settings found in functionapp.bicep"
    assert infra - platform <= real, infra - platform - real


def test_the_remediation_catalogue_in_the_alerts_page_is_the_codes() -> None:
    page = (ROOT / "docs" / "alerts.md").read_text(encoding="utf-8")
    table = page[page.index("| code | name | what to do |"):].split("\n\n")[0]
    rows = re.findall(r"^\| `([^`]+)` \| [^|]* \| (.*) \|$", table, re.MULTILINE)
    assert rows == [(entry.code, entry.action.replace("|", "/")) for entry in _CATALOGUE]


def test_the_example_settings_name_the_queues_and_tables_the_code_and_infra_use() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    infra = (ROOT / "infra" / "main.bicep").read_text()
    for name, setting in {**QUEUE_NAMES, **TABLE_NAMES}.items():
        default = default_of(StorageNames, name)
        assert example[setting] == default, setting
        assert f"'{default}'" in infra, f"infra/main.bicep does not name {default}"
