"""Log lines that carry the correlation id and the batch they are about."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

MAX_LOGGED_CHARS = 1000
# C0 and C1 controls, DEL, and the characters that end or reorder a line in a log viewer.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def loggable(value: Any, limit: int = MAX_LOGGED_CHARS) -> Any:
    """A value safe to put in a log line: text from Partner Center or from a message can hold a newline that
    forges a second line, or terminal escapes; these are written as \\xNN / \\uNNNN and the text is capped."""
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if len(text) > limit:
        text = f"{text[:limit]}...({len(text)} characters)"
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class ContextLogger(logging.LoggerAdapter):  # type: ignore[type-arg,unused-ignore]
    """Appends [key=value ...] to every message, where the Functions host keeps it in the text, and sets the
    same fields as attributes of the record (custom dimensions once OpenTelemetry exports it).

    Every argument and field is passed through loggable(), so no log line can be forged or flooded.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        present = {key: loggable(value, 200) for key, value in (self.extra or {}).items() if value}
        kwargs["extra"] = {**present, **kwargs.get("extra", {})}
        # The fields become part of the format string: a % in a value must not be read as a placeholder.
        fields = " ".join(f"{key}={value}".replace("%", "%%") for key, value in present.items())
        return (f"{msg} [{fields}]" if fields else msg), kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        super().log(level, msg, *(loggable(arg) for arg in args), **kwargs)


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
