"""infra/ sets every app setting the code requires and creates every queue and table the code uses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.config import Settings, load_settings

INFRA = Path(__file__).resolve().parents[2] / "infra"
MAIN = (INFRA / "main.bicep").read_text()
APP = (INFRA / "modules" / "functionapp.bicep").read_text()
STORAGE = (INFRA / "modules" / "storage.bicep").read_text()
KEY_VAULT_SECRETS = {"alert-webhook-url": "https://hooks.example.com/workflows/abc",
                     "partner-center-client-secret": "a-secret-value",
                     "partner-center-certificate": "MIIKbase64pkcs12"}
MODE_SETTINGS = {"client_secret": "clientSecretSettings", "certificate": "certificateSettings",
                 "managed_identity_federation": "federationSettings"}


def _block(text: str, opening: str) -> str:
    """The bracketed block that starts at the first occurrence of opening (which ends with [ or {)."""
    start = text.index(opening) + len(opening) - 1
    depth = 0
    for index in range(start, len(text)):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[start + 1 : index]
    raise AssertionError(f"unbalanced block after {opening!r}")


def _settings_list(variable: str) -> dict[str, str]:
    block = _block(APP, f"var {variable} = [")
    return dict(re.findall(r"name: '([^']+)'\s+value: ([^\n]+)", block))


def _main_value(expression: str) -> object:
    """Evaluate a main.bicep expression: a string, a var, a var's field, a param default or a module output."""
    expression = expression.strip()
    if expression.startswith("'"):
        return expression.strip("'")
    if match := re.fullmatch(r"(\w+)\.(\w+)", expression):
        owner, field = match.groups()
        if owner == "tableNames":
            return _main_object("tableNames")[field]
        if owner == "names":
            return f"{field}-name"
        return {"queueEndpoint": "https://acct.queue.core.windows.net/", "tableEndpoint":
                "https://acct.table.core.windows.net/", "blobEndpoint": "https://acct.blob.core.windows.net/",
                "clientId": "11111111-2222-3333-4444-555555555555", "uri": "https://vault.vault.azure.net/"}.get(
                    field, f"{owner}.{field}")
    if found := re.search(rf"^var {expression} = '([^']*)'", MAIN, re.MULTILINE):
        return found.group(1)
    if expression == "tableNames":
        return _main_object("tableNames")
    if found := re.search(rf"^param {expression} \w+ = '([^']*)'", MAIN, re.MULTILINE):
        return found.group(1)
    return f"<{expression}>"


def _main_object(variable: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+): '([^']*)'", _block(MAIN, f"var {variable} = {{")))


def _module_params() -> dict[str, str]:
    block = _block(MAIN, "module app 'modules/functionapp.bicep' = {")
    return dict(re.findall(r"^\s{4}(\w+): ([^\n]+)$", _block(block, "params: {"), re.MULTILINE))


def _app_value(expression: str, auth_mode: str) -> str:
    """Evaluate a setting's value in the function app module, as App Service would see it."""
    expression = expression.strip()
    if vault := re.search(r"@Microsoft\.KeyVault\(SecretUri=\$\{keyVaultUri\}secrets/([\w-]+)/\)", expression):
        return KEY_VAULT_SECRETS[vault.group(1)]  # the secret an administrator put in Key Vault
    if expression.startswith("'"):
        return re.sub(r"\$\{(\w+)\}", lambda m: _app_value(m.group(1), auth_mode), expression.strip("'"))
    if expression == "partnerCenterAuth":
        return auth_mode
    if match := re.fullmatch(r"(\w+)\.(\w+)", expression):
        owner = _main_value(_module_params()[match.group(1)])
        assert isinstance(owner, dict), expression
        return owner[match.group(2)]
    value = _main_value(_module_params()[expression])
    return str(value)


def _template_environment(auth_mode: str) -> dict[str, str]:
    environment: dict[str, str] = {}
    for variable in ("storageSettings", "appSettings", MODE_SETTINGS[auth_mode]):
        for name, expression in _settings_list(variable).items():
            assert name not in environment, f"{name} is set twice"
            environment[name] = _app_value(expression, auth_mode)
    return environment


def _auth_modes() -> list[str]:
    allowed = re.search(r"@allowed\(\[([^\]]*)\]\)\nparam partnerCenterAuth ", MAIN)
    assert allowed, "partnerCenterAuth has no @allowed list"
    return re.findall(r"'(\w+)'", allowed.group(1))


@pytest.mark.parametrize("auth_mode", sorted(MODE_SETTINGS))
def test_the_template_sets_every_setting_the_code_requires(auth_mode: str) -> None:
    environment = _template_environment(auth_mode)
    settings = load_settings(environment)  # raises ConfigError naming any missing or invalid setting
    assert settings.partner_center.auth == auth_mode
    assert settings.storage.connection_string is None  # identity-based, no keys
    assert settings.storage.queue_service_uri and settings.storage.table_service_uri and settings.storage.client_id
    assert settings.alert_webhook_url == KEY_VAULT_SECRETS["alert-webhook-url"]
    bindings = [json.loads(path.read_text()) for path in INFRA.parent.glob("*/function.json")]
    for binding in (b for config in bindings for b in config["bindings"]):
        for setting in re.findall(r"%([^%]+)%", binding.get("queueName", "") + binding.get("schedule", "")):
            assert setting in environment, f"function.json names %{setting}% but the template does not set it"


def test_the_template_offers_exactly_the_modes_it_configures() -> None:
    assert set(_auth_modes()) == set(MODE_SETTINGS)
    for variable in MODE_SETTINGS.values():
        assert f"? {variable}" in APP or f": {variable}" in APP or f"({variable}" in APP, variable


def _settings() -> Settings:
    return load_settings(_template_environment("managed_identity_federation"))


def test_the_template_creates_every_queue_and_table_the_code_uses() -> None:
    settings = _settings()
    storage_call = _block(MAIN, "module storage 'modules/storage.bicep' = {")
    queues = {_main_value(item) if not item.startswith("'$") else
              re.sub(r"\$\{(\w+)\}", lambda m: str(_main_value(m.group(1))), item.strip("'"))
              for item in _block(storage_call, "queueNames: [").split()}
    tables = {_main_value(item) for item in _block(storage_call, "tableNames: [").split()}
    assert queues == {settings.status_queue, settings.status_queue + "-poison",
                      settings.failure_queue, settings.failure_queue + "-poison"}
    assert tables == {settings.batch_table, settings.device_table, settings.history_table, settings.alert_table,
                      settings.operator_log_table}


def test_the_app_identity_gets_exactly_the_three_data_roles_on_storage() -> None:
    roles = set(re.findall(r"'([0-9a-f-]{36})'", _block(STORAGE, "var roles = {")))
    assert roles == {
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88",  # Storage Queue Data Contributor
        "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",  # Storage Table Data Contributor
    }
    assert "scope: account" in STORAGE and "Microsoft.Authorization/roleAssignments" in STORAGE


def test_no_secret_is_written_in_the_template() -> None:
    for path in INFRA.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "AccountKey=" not in text and "listKeys(" not in text, path
            assert not re.search(r"@secure\(\)", text) or path.name != "main.bicep", path
