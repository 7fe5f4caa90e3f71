"""Log lines that carry the correlation id and the batch they are about."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class ContextLogger(logging.LoggerAdapter):  # type: ignore[type-arg,unused-ignore]
    """Appends [key=value ...] to every message, where the Functions host keeps it in the text."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        fields = " ".join(f"{key}={value}" for key, value in (self.extra or {}).items() if value)
        return (f"{msg} [{fields}]" if fields else msg), kwargs


def context_logger(name: str, **fields: Any) -> ContextLogger:
    return ContextLogger(logging.getLogger(name), fields)


class _Redactor(logging.Filter):
    """Replaces registered secrets in the records of libraries that log request lines (urllib3 at DEBUG)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(secret in message for secret in self.secrets):
                for secret in sorted(self.secrets, key=len, reverse=True):
                    message = message.replace(secret, "[redacted]")
                record.msg, record.args = message, None
        return True


_REDACTOR = _Redactor()
LIBRARY_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry")


def redact_from_library_logs(*secrets: str) -> None:
    """Keep these strings (a webhook URL and its path: the URL is the credential) out of library log lines."""
    _REDACTOR.secrets.update(secret for secret in secrets if secret and secret != "/")
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)
