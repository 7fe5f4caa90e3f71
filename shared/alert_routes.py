"""ALERT_ROUTES: which webhook gets an alert, by the batch's customer or its message's source.

The route table is JSON, a list tried in order; the first route that matches an alert takes it:

    [{"customer": "<customer id>", "webhook": "ALERT_WEBHOOK_URL_CONTOSO", "format": "teams"},
     {"source": "nightly-upload", "webhook": "ALERT_WEBHOOK_URL_NIGHTLY"}]

A route names the app setting that holds its webhook URL (a Key Vault reference on Azure), never the URL:
the table can be read, reviewed and logged without a secret in it. A route with both customer and source
matches alerts that have both. Unmatched alerts go to ALERT_WEBHOOK_URL in ALERT_WEBHOOK_FORMAT.

A table that cannot be read is a wrong setting (the function's messages wait until it is fixed). A route
whose URL setting is missing, unresolved or not a usable URL is kept with its problem: it is reported when
the function starts, and the alerts it matches wait for it, while every other alert goes out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .ids import InvalidIdError, normalize_guid

SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")  # used with fullmatch
MAX_ROUTES = 200
MAX_SOURCE_CHARS = 256


class RouteTableError(ValueError):
    """ALERT_ROUTES cannot be read; the message says where."""


@dataclass(frozen=True)
class AlertRoute:
    webhook_setting: str  # the app setting holding the URL
    alert_format: str
    customer: str | None = None  # a lowercase GUID
    source: str | None = None
    url: str | None = field(default=None, repr=False)  # a secret
    problem: str | None = None  # why url is not usable; the route's alerts wait

    def matches(self, customer_id: str, source: str | None) -> bool:
        return ((self.customer is None or self.customer == customer_id)
                and (self.source is None or self.source == source))

    def describe(self) -> str:
        what = " and ".join(part for part in (self.customer and f"customer {self.customer}",
                                              self.source is not None and f"source {self.source!r}") if part)
        return f"the route for {what} ({self.webhook_setting}, {self.alert_format})"


def parse_routes(text: str | None, formats: tuple[str, ...], default_format: str,
                 resolve_url: Callable[[str], tuple[str | None, str | None]]) -> tuple[AlertRoute, ...]:
    """The routes in ALERT_ROUTES; resolve_url(setting) gives (url, problem) for a route's URL setting."""
    if not text:
        return ()
    try:
        table = json.loads(text)
    except ValueError as exc:
        raise RouteTableError(f"is not JSON: {exc}") from exc
    if not isinstance(table, list):
        raise RouteTableError("must be a JSON list of routes")
    if len(table) > MAX_ROUTES:
        raise RouteTableError(f"holds {len(table)} routes; at most {MAX_ROUTES}")
    return tuple(_route(entry, index, formats, default_format, resolve_url) for index, entry in enumerate(table))


def _route(entry: Any, index: int, formats: tuple[str, ...], default_format: str,
           resolve_url: Callable[[str], tuple[str | None, str | None]]) -> AlertRoute:
    where = f"route {index + 1}"
    if not isinstance(entry, Mapping):
        raise RouteTableError(f"{where} is not an object")
    unknown = set(entry) - {"customer", "source", "webhook", "format"}
    if unknown:
        raise RouteTableError(f"{where} has unknown fields: {', '.join(sorted(map(str, unknown)))}")
    customer, source = entry.get("customer"), entry.get("source")
    if customer is None and source is None:
        raise RouteTableError(f"{where} matches nothing: give a customer, a source, or both")
    if customer is not None:
        try:
            customer = normalize_guid(customer, "customer")
        except InvalidIdError as exc:
            raise RouteTableError(f"{where}: customer must be a customer id (a GUID)") from exc
    if source is not None and (not isinstance(source, str) or len(source) > MAX_SOURCE_CHARS):
        raise RouteTableError(f"{where}: source must be a string of at most {MAX_SOURCE_CHARS} characters")
    webhook = entry.get("webhook")
    if not isinstance(webhook, str) or not SETTING_NAME.fullmatch(webhook):
        looks_like_url = isinstance(webhook, str) and "://" in webhook
        raise RouteTableError(f"{where}: webhook must name the app setting that holds the URL"
                              + (", never the URL itself" if looks_like_url else ""))
    alert_format = entry.get("format", default_format)
    if not isinstance(alert_format, str) or alert_format.lower() not in formats:
        raise RouteTableError(f"{where}: format must be one of {', '.join(formats)}")
    url, problem = resolve_url(webhook)
    return AlertRoute(webhook, alert_format.lower(), customer, source, url, problem)


def route_for(routes: tuple[AlertRoute, ...], customer_id: str, source: str | None) -> AlertRoute | None:
    """The first route that matches, or None for the default webhook."""
    return next((route for route in routes if route.matches(customer_id, source)), None)
