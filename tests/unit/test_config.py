import pytest

from shared.config import (
    ALERT_NUMBERS,
    AZURITE_CONNECTION_STRING,
    PARTNER_CENTER_NUMBERS,
    POLICY_NUMBERS,
    POLLING_NUMBERS,
    ConfigError,
    PartnerCenterSettings,
    Settings,
    default_of,
    load_settings,
)
from shared.policy import PollingPolicy

BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "PARTNER_CENTER_AUTH": "default"}


def test_defaults_follow_the_contract() -> None:
    settings = load_settings(BASE)
    assert settings.status_queue == "batch-status-requests" and settings.failure_queue == "device-failures"
    assert (settings.batch_table, settings.device_table, settings.history_table, settings.alert_table) == (
        "BatchUploadStatus", "DeviceUploadStatus", "DeviceUploadHistory", "AlertLog")
    policy = settings.policy
    assert (policy.initial_delay, policy.max_delay, policy.deadline, policy.not_found_grace) == (30, 600, 172800, 900)
    assert settings.partner_center.base_url == "https://api.partnercenter.microsoft.com"
    assert settings.partner_center.scope == "https://api.partnercenter.microsoft.com/.default"
    assert settings.storage.connection_string == AZURITE_CONNECTION_STRING


@pytest.mark.parametrize(("changes", "named"), [
    ({"PARTNER_CENTER_AUTH": ""}, "PARTNER_CENTER_AUTH"),
    ({"PARTNER_CENTER_AUTH": "password"}, "PARTNER_CENTER_AUTH"),
    ({"PARTNER_CENTER_AUTH": "simulator"}, "loopback"),
    ({"PARTNER_CENTER_AUTH": "simulator", "PARTNER_CENTER_BASE_URL": "http://10.0.0.5:8790"}, "loopback"),
    ({"PARTNER_CENTER_BASE_URL": "http://api.partnercenter.microsoft.com"}, "PARTNER_CENTER_BASE_URL"),
    ({"PARTNER_CENTER_BASE_URL": "api.partnercenter.microsoft.com"}, "PARTNER_CENTER_BASE_URL"),
    ({"PARTNER_CENTER_AUTH": "client_secret"}, "PARTNER_CENTER_TENANT_ID"),
    ({"PARTNER_CENTER_AUTH": "managed_identity_federation", "PARTNER_CENTER_TENANT_ID": "t",
      "PARTNER_CENTER_CLIENT_ID": "c"}, "PARTNER_CENTER_MANAGED_IDENTITY_CLIENT_ID"),
    ({"POLL_INITIAL_DELAY_SECONDS": "soon"}, "POLL_INITIAL_DELAY_SECONDS"),
    ({"POLL_MAX_DELAY_SECONDS": "700000"}, "POLL_MAX_DELAY_SECONDS"),
    ({"POLL_INITIAL_DELAY_SECONDS": "60", "POLL_MAX_DELAY_SECONDS": "30"}, "POLL_MAX_DELAY_SECONDS"),
    ({"POLL_DEADLINE_SECONDS": "nan"}, "POLL_DEADLINE_SECONDS"),
    ({"STATUS_QUEUE_NAME": "Bad_Queue"}, "STATUS_QUEUE_NAME"),
    ({"BATCH_TABLE_NAME": "bad-table"}, "BATCH_TABLE_NAME"),
    ({"ALERT_WEBHOOK_FORMAT": "email"}, "ALERT_WEBHOOK_FORMAT"),
    ({"ALERT_WEBHOOK_URL": "http://hooks.example.com/x"}, "ALERT_WEBHOOK_URL"),
    ({"AzureWebJobsStorage": ""}, "AzureWebJobsStorage"),
    ({"POLL_MAX_DELAY_SECONDS": "172800"}, "POLL_MAX_DELAY_SECONDS must be between 0 and 86400"),
    ({"POLL_INITIAL_DELAY_SECONDS": "90000"}, "POLL_INITIAL_DELAY_SECONDS must be between 0 and 86400"),
    ({"POLL_DEADLINE_SECONDS": "31536000"}, "POLL_DEADLINE_SECONDS must be between 1 and 2592000"),
    ({"NOT_FOUND_GRACE_SECONDS": "31536000"}, "NOT_FOUND_GRACE_SECONDS"),
    ({"CHAIN_STALE_GRACE_SECONDS": "604800"}, "CHAIN_STALE_GRACE_SECONDS"),
    ({"ALERT_RETRY_MAX_DELAY_SECONDS": "604800"}, "ALERT_RETRY_MAX_DELAY_SECONDS"),
    ({"PARTNER_CENTER_CALL_DEADLINE_SECONDS": "0"}, "PARTNER_CENTER_CALL_DEADLINE_SECONDS"),
    ({"PARTNER_CENTER_MAX_RESPONSE_BYTES": "10"}, "PARTNER_CENTER_MAX_RESPONSE_BYTES"),
    ({"POLL_SCHEDULE": "fast"}, "POLL_SCHEDULE must be one of learned, elapsed, got 'fast'"),
    ({"POLL_LEARN_MIN_BATCHES": "0"}, "POLL_LEARN_MIN_BATCHES must be between 1 and 1000000"),
])
def test_a_bad_setting_is_named(changes: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings({**BASE, **changes})


def test_simulator_auth_is_accepted_on_loopback() -> None:
    for url in ("http://127.0.0.1:8790", "http://localhost:1", "http://[::1]:80"):
        assert load_settings({**BASE, "PARTNER_CENTER_AUTH": "simulator", "PARTNER_CENTER_BASE_URL": url})


def test_identity_based_storage_settings() -> None:
    settings = load_settings({"PARTNER_CENTER_AUTH": "default", "AzureWebJobsStorage__accountName": "acct",
                              "AzureWebJobsStorage__clientId": "mi-client"})
    assert settings.storage.queue_service_uri == "https://acct.queue.core.windows.net"
    assert settings.storage.table_service_uri == "https://acct.table.core.windows.net"
    assert settings.storage.client_id == "mi-client"


def test_secrets_stay_out_of_the_settings_repr() -> None:
    settings = load_settings({**BASE, "PARTNER_CENTER_AUTH": "client_secret", "PARTNER_CENTER_TENANT_ID": "t",
                              "PARTNER_CENTER_CLIENT_ID": "c", "PARTNER_CENTER_CLIENT_SECRET": "s3cr3t-value",
                              "ALERT_WEBHOOK_URL": "https://hooks.example.com/secret-path"})
    assert "s3cr3t-value" not in repr(settings) and "secret-path" not in repr(settings)


def test_each_setting_read_unset_is_its_fields_one_default_and_set_reaches_that_field() -> None:
    tables = [(PollingPolicy, POLICY_NUMBERS, "policy"), (Settings, POLLING_NUMBERS, None),
              (Settings, ALERT_NUMBERS, None),
              (PartnerCenterSettings, PARTNER_CENTER_NUMBERS, "partner_center")]
    unset = load_settings(BASE)
    for owner, numbers, part in tables:
        for name, number in numbers.items():
            default = default_of(owner, name)
            assert getattr(getattr(unset, part) if part else unset, name) == default, number.setting
            chosen = min(number.maximum, default * 2 + 1)  # inside the bounds, and not the default
            changed = load_settings({**BASE, number.setting: str(chosen)})
            assert getattr(getattr(changed, part) if part else changed, name) == chosen, number.setting


def test_each_function_checks_only_its_own_queue_and_table_names() -> None:
    from shared.config import load_alert_settings, load_polling_settings

    bad_alert_table = {**BASE, "ALERT_TABLE_NAME": "no_underscores"}
    bad_batch_table = {**BASE, "BATCH_TABLE_NAME": "x"}
    assert load_polling_settings(bad_alert_table).batch_table == "BatchUploadStatus"
    assert load_alert_settings(bad_batch_table).alert_table == "AlertLog"
    with pytest.raises(ConfigError, match="BATCH_TABLE_NAME"):
        load_polling_settings(bad_batch_table)
    with pytest.raises(ConfigError, match="ALERT_TABLE_NAME"):
        load_alert_settings(bad_alert_table)
    for env in (bad_alert_table, bad_batch_table):  # the tools that read everything still refuse both
        with pytest.raises(ConfigError):
            load_settings(env)


def test_fleet_throttling_is_on_unless_set_false_and_anything_else_is_named() -> None:
    assert load_settings(BASE).fleet_throttle is True
    assert load_settings({**BASE, "PARTNER_CENTER_FLEET_THROTTLE": "False"}).fleet_throttle is False
    with pytest.raises(ConfigError, match="PARTNER_CENTER_FLEET_THROTTLE must be true or false"):
        load_settings({**BASE, "PARTNER_CENTER_FLEET_THROTTLE": "sometimes"})


def test_the_poll_schedule_is_learned_by_default_from_100_batches_and_read_in_any_case() -> None:
    assert load_settings(BASE).poll_schedule == "learned" and load_settings(BASE).learn_min_batches == 100
    assert load_settings({**BASE, "POLL_SCHEDULE": " Elapsed "}).poll_schedule == "elapsed"
    assert load_settings({**BASE, "POLL_LEARN_MIN_BATCHES": "200"}).learn_min_batches == 200
