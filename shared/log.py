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
