"""Settings from app settings (environment variables); every problem names the setting."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from .alert_routes import AlertRoute, RouteTableError, parse_routes
from .digest import EMPTY_DAY_CHOICES, DigestSettings
from .policy import PollingPolicy

AUTH_MODES = ("client_secret", "certificate", "managed_identity_federation", "default", "simulator")
ALERT_FORMATS = ("teams", "slack", "generic")
# Sane maxima: a delay past a day only hides a stuck batch, and a deadline past 30 days keeps polling a
# batch Partner Center has long forgotten. Every delay also stays far below the queue's 7-day visibility limit.
MAX_DELAY_SECONDS = 24 * 3600
MAX_DEADLINE_SECONDS = 30 * 24 * 3600
# App Service leaves a Key Vault reference it could not resolve in the setting, as it is.
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("
AZURITE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}")  # used with fullmatch
_QUEUE_NAME = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,54}[a-z0-9]")  # leaves room for "-poison"


class ConfigError(ValueError):
    """A missing or invalid setting."""


@dataclass(frozen=True)
class StorageSettings:
    connection_string: str | None = None
    queue_service_uri: str | None = None
    table_service_uri: str | None = None
    client_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class PartnerCenterSettings:
    auth: str
    base_url: str = "https://api.partnercenter.microsoft.com"
    scope: str = "https://api.partnercenter.microsoft.com/.default"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    certificate_path: str | None = None
    certificate_data: str | None = None
    certificate_password: str | None = None
    managed_identity_client_id: str | None = None
    locale: str = "en-US"
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    call_deadline: float = 120.0  # one status call in all: connect, headers and body
    max_response_bytes: int = 64 * 1024 * 1024  # on the wire
    max_decompressed_bytes: int = 128 * 1024 * 1024  # once gzip or deflate is undone

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        return f"PartnerCenterSettings(base_url={self.base_url!r}, auth={self.auth!r}, scope={self.scope!r})"


@dataclass(frozen=True)
class StorageNames:
    """Where everything lives: the storage account and the queue and table names."""

    storage: StorageSettings
    status_queue: str = "batch-status-requests"
    failure_queue: str = "device-failures"
    batch_table: str = "BatchUploadStatus"
    device_table: str = "DeviceUploadStatus"
    history_table: str = "DeviceUploadHistory"
    alert_table: str = "AlertLog"
    operator_log_table: str = "OperatorLog"  # written by the audit CLI's poison replay and resubmit


@dataclass(frozen=True, kw_only=True)
class PollingSettings(StorageNames):
    """What check_batch_status needs: a broken alert setting never stops polling."""

    partner_center: PartnerCenterSettings
    policy: PollingPolicy
    chain_stale_grace: float = 900.0
    finalize_step_seconds: float = 120.0  # how long one invocation writes a final result before it hands on
    fleet_throttle: bool = True  # a 429 holds every poll of the partner in every instance (shared/throttle.py)
    max_calls_per_minute: int = 0  # the fleet's Partner Center call budget; 0: none
    poll_schedule: str = "learned"  # POLL_SCHEDULE: learned from past batches (shared/learned_schedules.py), or elapsed
    learn_min_batches: int = 100  # batches a customer (else every customer) needs before its schedule is learned

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_queue={self.status_queue!r}, partner_center={self.partner_center!r})"


@dataclass(frozen=True, kw_only=True)
class AlertSettings(StorageNames):
    """What notify_failures needs: a broken Partner Center setting never stops alerts."""

    alert_webhook_url: str | None = None
    alert_webhook_format: str = "generic"
    alert_max_attempts: int = 10
    alert_retry_initial_delay: float = 30.0
    alert_retry_max_delay: float = 3600.0
    alert_routes: tuple[AlertRoute, ...] = ()  # ALERT_ROUTES, in order
    route_wait: float = 300.0  # how long an alert whose route is broken waits before it is tried again

    def __repr__(self) -> str:  # the webhook URL is a secret
        return f"{type(self).__name__}(failure_queue={self.failure_queue!r}, format={self.alert_webhook_format!r})"


@dataclass(frozen=True, kw_only=True)
class Settings(PollingSettings, AlertSettings):
    """Every setting: for the tools and tests that use both functions' parts."""

    __repr__ = PollingSettings.__repr__


@dataclass(frozen=True)
class Number:
    """A numeric app setting for one dataclass field; its default is that field's default, written once there."""

    setting: str
    minimum: float
    maximum: float = math.inf


# Which app setting fills which field, and its bounds. The defaults are on the dataclass fields above.
POLICY_NUMBERS = {
    "initial_delay": Number("POLL_INITIAL_DELAY_SECONDS", 0, MAX_DELAY_SECONDS),
    "max_delay": Number("POLL_MAX_DELAY_SECONDS", 0, MAX_DELAY_SECONDS),
    "deadline": Number("POLL_DEADLINE_SECONDS", 1, MAX_DEADLINE_SECONDS),
    "not_found_grace": Number("NOT_FOUND_GRACE_SECONDS", 0, MAX_DEADLINE_SECONDS),
    "backoff_factor": Number("POLL_BACKOFF_FACTOR", 0, 10),
}
POLLING_NUMBERS = {
    "chain_stale_grace": Number("CHAIN_STALE_GRACE_SECONDS", 1, MAX_DELAY_SECONDS),
    "max_calls_per_minute": Number("PARTNER_CENTER_MAX_CALLS_PER_MINUTE", 0, 1_000_000),
    # A step plus a page of writes and a poll stays well inside functionTimeout (10 minutes).
    "finalize_step_seconds": Number("FINALIZE_STEP_SECONDS", 1, 300),
    "learn_min_batches": Number("POLL_LEARN_MIN_BATCHES", 1, 1_000_000),
}
POLLING_FLAGS = {"fleet_throttle": "PARTNER_CENTER_FLEET_THROTTLE"}
POLL_SCHEDULES = ("learned", "elapsed")
ALERT_NUMBERS = {
    "alert_max_attempts": Number("ALERT_MAX_ATTEMPTS", 1, 100),
    "alert_retry_initial_delay": Number("ALERT_RETRY_INITIAL_DELAY_SECONDS", 1, 3600),
    "alert_retry_max_delay": Number("ALERT_RETRY_MAX_DELAY_SECONDS", 1, MAX_DELAY_SECONDS),
}
PARTNER_CENTER_NUMBERS = {
    "connect_timeout": Number("PARTNER_CENTER_CONNECT_TIMEOUT_SECONDS", 0.1, 120),
    "read_timeout": Number("PARTNER_CENTER_READ_TIMEOUT_SECONDS", 0.1, 300),
    # A poll makes at most POLL_BUDGET_CALLS calls' worth of requests: 3 x 180 s stays inside functionTimeout.
    "call_deadline": Number("PARTNER_CENTER_CALL_DEADLINE_SECONDS", 1, 180),
    "max_response_bytes": Number("PARTNER_CENTER_MAX_RESPONSE_BYTES", 1024, 1024**3),
    "max_decompressed_bytes": Number("PARTNER_CENTER_MAX_DECOMPRESSED_BYTES", 1024, 1024**3),
}
PARTNER_CENTER_TEXTS = {
    "base_url": "PARTNER_CENTER_BASE_URL",
    "scope": "PARTNER_CENTER_SCOPE",
    "locale": "PARTNER_CENTER_LOCALE",
}
QUEUE_NAMES = {"status_queue": "STATUS_QUEUE_NAME", "failure_queue": "FAILURE_QUEUE_NAME"}
TABLE_NAMES = {
    "batch_table": "BATCH_TABLE_NAME",
    "device_table": "DEVICE_TABLE_NAME",
    "history_table": "DEVICE_HISTORY_TABLE_NAME",
    "alert_table": "ALERT_TABLE_NAME",
    "operator_log_table": "OPERATOR_LOG_TABLE_NAME",
}


def default_of(owner: type, name: str) -> Any:
    """The default written on a dataclass field."""
    found = next(f for f in fields(owner) if f.name == name)
    if found.default is MISSING:
        raise TypeError(f"{owner.__name__}.{name} has no default")
    return found.default


def load_settings(env: Mapping[str, str]) -> Settings:
    """Every setting; ConfigError names the first that is missing or invalid."""
    every_name = vars(load_storage_names(env))
    return Settings(**{**vars(load_polling_settings(env)), **every_name, **_alert_fields(_Reader(env))})


def load_polling_settings(env: Mapping[str, str]) -> PollingSettings:
    reader = _Reader(env)
    policy = PollingPolicy(**reader.numbers(PollingPolicy, POLICY_NUMBERS))
    if policy.max_delay < policy.initial_delay:
        raise ConfigError("POLL_MAX_DELAY_SECONDS must not be smaller than POLL_INITIAL_DELAY_SECONDS")
    poll_schedule = reader.choice("POLL_SCHEDULE", default_of(PollingSettings, "poll_schedule"), POLL_SCHEDULES)
    return PollingSettings(**vars(load_storage_names(env, POLLING_NAMES)), partner_center=_partner_center(reader),
                           policy=policy, poll_schedule=poll_schedule,
                           **reader.numbers(PollingSettings, POLLING_NUMBERS),
                           **reader.flags(PollingSettings, POLLING_FLAGS))


def load_alert_settings(env: Mapping[str, str]) -> AlertSettings:
    return AlertSettings(**vars(load_storage_names(env, ALERT_NAMES)), **_alert_fields(_Reader(env)))


def _alert_fields(reader: _Reader) -> dict[str, Any]:
    webhook_format = reader.choice("ALERT_WEBHOOK_FORMAT", default_of(AlertSettings, "alert_webhook_format"),
                                   ALERT_FORMATS)
    webhook_url = reader.optional("ALERT_WEBHOOK_URL")
    problem = webhook_url and webhook_url_problem(webhook_url)
    if problem:
        raise ConfigError(f"ALERT_WEBHOOK_URL {problem}")
    try:
        routes = parse_routes(reader.optional("ALERT_ROUTES"), ALERT_FORMATS, webhook_format, reader.route_url)
    except RouteTableError as exc:
        raise ConfigError(f"ALERT_ROUTES {exc}") from exc
    return {"alert_webhook_url": webhook_url, "alert_webhook_format": webhook_format, "alert_routes": routes,
            "route_wait": settings_retry_seconds(reader.env), **reader.numbers(AlertSettings, ALERT_NUMBERS)}


def webhook_url_problem(url: str) -> str | None:
    """Why a webhook URL cannot be used, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an http(s) URL"
    if parts.scheme == "http" and not is_loopback_url(url):
        return "must use https unless it points at a loopback address"
    return None


DEFAULT_SETTINGS_RETRY_SECONDS = 300.0


def settings_retry_seconds(env: Mapping[str, str]) -> float:
    """SETTINGS_RETRY_SECONDS, read on its own so that it works when other settings do not."""
    try:
        value = float(env.get("SETTINGS_RETRY_SECONDS", DEFAULT_SETTINGS_RETRY_SECONDS))
    except ValueError:
        return DEFAULT_SETTINGS_RETRY_SECONDS
    return min(max(value, 1.0), 3600.0) if value == value else DEFAULT_SETTINGS_RETRY_SECONDS


def load_digest_settings(env: Mapping[str, str]) -> DigestSettings:
    reader = _Reader(env)
    empty_day = reader.choice("DIGEST_EMPTY_DAY", DigestSettings.empty_day, EMPTY_DAY_CHOICES)
    hours = reader.seconds("DIGEST_PENDING_HOURS", DigestSettings.pending_hours, 1, 24 * 30)
    return DigestSettings(pending_hours=hours, empty_day=empty_day)


def load_storage_settings(env: Mapping[str, str]) -> StorageSettings:
    return _storage(_Reader(env))


# The queues and tables each part uses: a wrong name of another part's table never stops this one.
POLLING_NAMES = frozenset({"status_queue", "failure_queue", "batch_table", "device_table", "history_table"})
ALERT_NAMES = frozenset({"failure_queue", "alert_table"})
QUEUES_ONLY = frozenset(QUEUE_NAMES)


def load_storage_names(env: Mapping[str, str], used: frozenset[str] | None = None) -> StorageNames:
    """The storage settings alone: enough for the audit and operator commands. With used, only those names are
    read and checked; the others keep their defaults, which that caller never touches."""
    reader = _Reader(env)
    names = {**QUEUE_NAMES, **TABLE_NAMES}
    values = {}
    for name, setting in names.items():
        if used is not None and name not in used:
            continue
        read = reader.queue if name in QUEUE_NAMES else reader.table
        values[name] = read(setting, default_of(StorageNames, name))
    return StorageNames(storage=_storage(reader), **values)


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _storage(reader: _Reader) -> StorageSettings:
    connection = reader.optional("AzureWebJobsStorage")
    if connection:
        if connection.strip().rstrip(";").lower() == "usedevelopmentstorage=true":
            connection = AZURITE_CONNECTION_STRING
        return StorageSettings(connection_string=connection)
    account = reader.optional("AzureWebJobsStorage__accountName")
    queue_uri = reader.optional("AzureWebJobsStorage__queueServiceUri")
    table_uri = reader.optional("AzureWebJobsStorage__tableServiceUri")
    if account:
        queue_uri = queue_uri or f"https://{account}.queue.core.windows.net"
        table_uri = table_uri or f"https://{account}.table.core.windows.net"
    if not (queue_uri and table_uri):
        raise ConfigError(
            "AzureWebJobsStorage is not set: give a connection string, or the identity-based "
            "AzureWebJobsStorage__queueServiceUri and AzureWebJobsStorage__tableServiceUri "
            "(or AzureWebJobsStorage__accountName)"
        )
    return StorageSettings(
        queue_service_uri=queue_uri,
        table_service_uri=table_uri,
        client_id=reader.optional("AzureWebJobsStorage__clientId"),
    )


def _partner_center(reader: _Reader) -> PartnerCenterSettings:
    texts = {name: reader.text(setting, default_of(PartnerCenterSettings, name))
             for name, setting in PARTNER_CENTER_TEXTS.items()}
    base_url = texts.pop("base_url").rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"PARTNER_CENTER_BASE_URL must be an absolute https URL, got {base_url!r}")
    loopback = is_loopback_url(base_url)
    if parts.scheme == "http" and not loopback:
        raise ConfigError("PARTNER_CENTER_BASE_URL must use https unless it points at a loopback address")
    auth = _auth_mode(reader, base_url, loopback)
    return PartnerCenterSettings(
        base_url=base_url,
        auth=auth,
        tenant_id=reader.optional("PARTNER_CENTER_TENANT_ID"),
        client_id=reader.optional("PARTNER_CENTER_CLIENT_ID"),
        client_secret=reader.optional("PARTNER_CENTER_CLIENT_SECRET"),
        certificate_path=reader.optional("PARTNER_CENTER_CERTIFICATE_PATH"),
        certificate_data=reader.optional("PARTNER_CENTER_CERTIFICATE"),
        certificate_password=reader.optional("PARTNER_CENTER_CERTIFICATE_PASSWORD"),
        managed_identity_client_id=reader.optional("PARTNER_CENTER_MANAGED_IDENTITY_CLIENT_ID"),
        scope=texts["scope"],
        locale=texts["locale"],
        **reader.numbers(PartnerCenterSettings, PARTNER_CENTER_NUMBERS),
    )


def _auth_mode(reader: _Reader, base_url: str, loopback: bool) -> str:
    """PARTNER_CENTER_AUTH, checked along with the settings that mode needs."""
    if not reader.optional("PARTNER_CENTER_AUTH"):
        raise ConfigError(f"PARTNER_CENTER_AUTH is not set; choose one of {', '.join(AUTH_MODES)}")
    auth = reader.choice("PARTNER_CENTER_AUTH", "", AUTH_MODES)
    if auth == "simulator" and not loopback:
        raise ConfigError(
            "PARTNER_CENTER_AUTH=simulator sends a fixed development token and is refused unless "
            f"PARTNER_CENTER_BASE_URL is a loopback address (it is {base_url!r})"
        )
    required = {
        "client_secret": ("PARTNER_CENTER_TENANT_ID", "PARTNER_CENTER_CLIENT_ID", "PARTNER_CENTER_CLIENT_SECRET"),
        "certificate": ("PARTNER_CENTER_TENANT_ID", "PARTNER_CENTER_CLIENT_ID"),
        "managed_identity_federation": (
            "PARTNER_CENTER_TENANT_ID",
            "PARTNER_CENTER_CLIENT_ID",
            "PARTNER_CENTER_MANAGED_IDENTITY_CLIENT_ID",
        ),
    }.get(auth, ())
    for name in required:
        if not reader.optional(name):
            raise ConfigError(f"{name} is required when PARTNER_CENTER_AUTH={auth}")
    if auth == "certificate" and not (
        reader.optional("PARTNER_CENTER_CERTIFICATE_PATH") or reader.optional("PARTNER_CENTER_CERTIFICATE")
    ):
        raise ConfigError(
            "PARTNER_CENTER_CERTIFICATE (base64 PKCS#12 or PEM text, e.g. a Key Vault reference) or "
            "PARTNER_CENTER_CERTIFICATE_PATH is required when PARTNER_CENTER_AUTH=certificate"
        )
    return auth


def _plain(number: float) -> str:
    return str(int(number)) if number == int(number) else f"{number:g}"


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    @property
    def env(self) -> Mapping[str, str]:
        return self._env

    def route_url(self, name: str) -> tuple[str | None, str | None]:
        """An alert route's webhook URL setting: (url, None), or (None, why it cannot be used)."""
        try:
            url = self.optional(name)
        except ConfigError as exc:
            return None, str(exc)
        if url is None:
            return None, f"{name} is not set"
        problem = webhook_url_problem(url)
        return (None, f"{name} {problem}") if problem else (url, None)

    def optional(self, name: str) -> str | None:
        value = self._env.get(name)
        if value and value.strip().startswith(KEY_VAULT_REFERENCE):
            raise ConfigError(
                f"{name} is a Key Vault reference that did not resolve: give the app's identity the Key Vault "
                "Secrets User role on the vault, check that the secret exists, and see the setting's status "
                "under Environment variables in the portal"
            )
        return value.strip() if value and value.strip() else None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        """The setting, in lower case, which must be one of choices; the default when it is not set."""
        value = self.text(name, default).lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def seconds(self, name: str, default: float, minimum: float, maximum: float = math.inf) -> float:
        raw = self.optional(name)
        if raw is None:
            return float(default)
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not math.isfinite(value) or not minimum <= value <= maximum:
            bound = (f"between {_plain(minimum)} and {_plain(maximum)}" if math.isfinite(maximum)
                     else f"at least {_plain(minimum)}")
            raise ConfigError(f"{name} must be {bound}, got {raw!r}")
        return value

    def numbers(self, owner: type, numbers: Mapping[str, Number]) -> dict[str, Any]:
        """Each field's value from its setting, or the field's default; a field whose default is an int stays one."""
        values: dict[str, Any] = {}
        for name, number in numbers.items():
            default = default_of(owner, name)
            value = self.seconds(number.setting, default, number.minimum, number.maximum)
            values[name] = int(value) if isinstance(default, int) else value
        return values

    def flags(self, owner: type, flags: Mapping[str, str]) -> dict[str, Any]:
        """Each field's value from its true/false setting, or the field's default."""
        values: dict[str, Any] = {}
        for name, setting in flags.items():
            raw = self.optional(setting)
            if raw is None:
                values[name] = bool(default_of(owner, name))
            elif raw.lower() in ("true", "1", "yes", "false", "0", "no"):
                values[name] = raw.lower() in ("true", "1", "yes")
            else:
                raise ConfigError(f"{setting} must be true or false, got {raw!r}")
        return values

    def queue(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not _QUEUE_NAME.fullmatch(value):
            raise ConfigError(
                f"{name} must be a queue name of 3-56 lowercase letters, digits and single hyphens, got {value!r}"
            )
        return value

    def table(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not _TABLE_NAME.fullmatch(value) or value.lower() == "tables":
            raise ConfigError(f"{name} must be a table name of 3-63 letters and digits, got {value!r}")
        return value
