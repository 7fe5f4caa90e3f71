"""Queue and table clients for the AzureWebJobsStorage account (connection string or identity)."""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from .config import StorageSettings
from .http import pooled_session

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient
    from azure.storage.queue import QueueClient

T = TypeVar("T")
NEVER_EXPIRES = -1
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600 - 60  # the service allows 7 days, and below the message's time to live


def queue_delay(seconds: float) -> int:
    """A delay as the whole seconds of visibility timeout a queue message accepts."""
    return max(0, min(MAX_VISIBILITY_SECONDS, math.ceil(seconds)))


class RequestCounter:
    """Counts storage requests by operation (each try, as billed), through the clients' raw_request_hook."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def hook(self, service: str) -> Callable[[Any], None]:
        """The raw_request_hook for a client of one service ("queue" or "table")."""

        def count(request: Any) -> None:
            name = operation_name(service, request.http_request.method, request.http_request.url)
            with self._lock:
                self.counts[name] += 1

        return count

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


def operation_name(service: str, method: str, url: str) -> str:
    path = urlsplit(url).path.rstrip("/")
    if service == "queue":
        if path.endswith("/messages"):
            return {"POST": "queue.send", "GET": "queue.receive", "DELETE": "queue.clear"}.get(method, "queue.other")
        if "/messages/" in path:
            return {"DELETE": "queue.delete", "PUT": "queue.update"}.get(method, "queue.other")
        return {"PUT": "queue.create", "DELETE": "queue.delete_queue"}.get(method, "queue.other")
    if path.endswith("/$batch"):
        return "table.transaction"
    if path.endswith("/Tables") or "/Tables(" in path:
        return "table.create_table" if method == "POST" else "table.tables"
    if "(" in path.rsplit("/", 1)[-1]:
        return {"GET": "table.get", "PUT": "table.replace", "PATCH": "table.merge", "MERGE": "table.merge",
                "DELETE": "table.delete"}.get(method, "table.other")
    return {"GET": "table.query", "POST": "table.insert"}.get(method, "table.other")


STORAGE_SCOPE = "https://storage.azure.com/.default"

class StorageClients:
    """One client per queue and per table, shared by every invocation in the process."""

    def __init__(self, settings: StorageSettings, counter: RequestCounter | None = None) -> None:
        self._settings = settings
        self.counter = counter or RequestCounter()
        self._lock = threading.Lock()
        self._queues: dict[str, QueueClient] = {}
        self._tables: dict[str, TableClient] = {}
        self._credential: TokenCredential | None = None
        self._ensured_tables: set[str] = set()
        self._session = pooled_session(for_azure_core=True)

    @property
    def queue_endpoint(self) -> str:
        if self._settings.queue_service_uri:
            return self._settings.queue_service_uri
        return _endpoint_from_connection_string(self._settings.connection_string or "", "QueueEndpoint")

    @property
    def table_endpoint(self) -> str:
        if self._settings.table_service_uri:
            return self._settings.table_service_uri
        return _endpoint_from_connection_string(self._settings.connection_string or "", "TableEndpoint")

    def queue(self, name: str) -> QueueClient:
        with self._lock:
            client = self._queues.get(name)
            if client is None:
                client = self._queues[name] = self._new_queue_client(name)
            return client

    def table(self, name: str) -> TableClient:
        with self._lock:
            client = self._tables.get(name)
            if client is None:
                client = self._tables[name] = self._new_table_client(name)
            return client

    def send(self, queue_name: str, content: str, visibility_timeout: int | None = None,
             time_to_live: int | None = NEVER_EXPIRES) -> Any:
        """Send a message, creating the queue the first time it is missing.

        Every message batchwatch sends never expires: the service's default time-to-live is 7 days, and a
        requeue delayed by days, or a chunk waiting while alerts are misconfigured, must still be read.
        time_to_live=None takes the service's default.
        """
        client = self.queue(queue_name)
        return create_if_missing(
            lambda: client.send_message(content, visibility_timeout=visibility_timeout, time_to_live=time_to_live),
            client.create_queue,
        )

    def with_table(self, table_name: str, operation: Callable[[TableClient], T]) -> T:
        """Run a table operation; the table is created once per process if it does not exist."""
        client = self.table(table_name)
        if table_name not in self._ensured_tables:
            try:
                client.create_table()
            except ResourceExistsError:
                pass
            self._ensured_tables.add(table_name)
        return operation(client)

    def _client_options(self, service: str) -> dict[str, Any]:
        from azure.core.pipeline.transport import RequestsTransport

        return {"raw_request_hook": self.counter.hook(service),
                "transport": RequestsTransport(session=self._session, session_owner=False)}

    def _new_queue_client(self, name: str) -> QueueClient:
        from azure.storage.queue import QueueClient

        if self._settings.connection_string:
            return QueueClient.from_connection_string(
                self._settings.connection_string, name, **self._client_options("queue")
            )
        return QueueClient(self.queue_endpoint, name, credential=self._identity(), **self._client_options("queue"))

    def _new_table_client(self, name: str) -> TableClient:
        from azure.data.tables import TableClient

        if self._settings.connection_string:
            return TableClient.from_connection_string(
                self._settings.connection_string, name, **self._client_options("table")
            )
        return TableClient(self.table_endpoint, name, credential=self._identity(), **self._client_options("table"))

    def storage_token(self) -> str | None:
        """An Entra token for storage, as the clients use it; None with a connection string (no identity)."""
        if self._settings.connection_string:
            return None
        return self._identity().get_token(STORAGE_SCOPE).token

    def _identity(self) -> TokenCredential:
        if self._credential is None:
            import azure.identity as identity

            if self._settings.client_id:
                self._credential = identity.ManagedIdentityCredential(client_id=self._settings.client_id)
            else:
                self._credential = identity.DefaultAzureCredential()
        return self._credential


def create_if_missing(operation: Callable[[], T], create: Callable[[], Any]) -> T:
    try:
        return operation()
    except ResourceNotFoundError as exc:
        if getattr(exc, "error_code", None) not in ("QueueNotFound", "TableNotFound", None):
            raise
        try:
            create()
        except ResourceExistsError:
            pass
        return operation()


def _endpoint_from_connection_string(connection_string: str, key: str) -> str:
    parts = dict(
        item.split("=", 1) for item in connection_string.split(";") if "=" in item
    )
    if key in parts:
        return parts[key]
    account = parts.get("AccountName", "?")
    service = "queue" if key == "QueueEndpoint" else "table"
    suffix = parts.get("EndpointSuffix", "core.windows.net")
    return f"{parts.get('DefaultEndpointsProtocol', 'https')}://{account}.{service}.{suffix}"
