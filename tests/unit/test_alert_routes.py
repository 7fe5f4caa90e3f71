import json

import pytest

from shared.alert_routes import route_for
from shared.config import ConfigError, load_alert_settings

BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
CUSTOMER = "47021739-3426-40bf-9601-61b4b6d7c793"


def _routes(table: object, **env: str) -> tuple:
    return load_alert_settings({**BASE, "ALERT_ROUTES": json.dumps(table), **env}).alert_routes


def test_routes_name_a_setting_whose_url_is_read_and_kept_out_of_their_repr() -> None:
    [route] = _routes([{"customer": CUSTOMER.upper(), "webhook": "HOOK_A", "format": "Teams"}],
                      HOOK_A="https://hooks.example/secret-token")
    assert (route.customer, route.alert_format, route.url, route.problem) == (
        CUSTOMER, "teams", "https://hooks.example/secret-token", None)
    assert "secret-token" not in repr(route)
    [default_format] = _routes([{"source": "job", "webhook": "HOOK_A"}], HOOK_A="https://h.example/x",
                               ALERT_WEBHOOK_FORMAT="slack")
    assert default_format.alert_format == "slack"


@pytest.mark.parametrize(("env", "problem"), [
    ({}, "HOOK_A is not set"),
    ({"HOOK_A": "http://hooks.example/x"}, "HOOK_A must use https unless it points at a loopback address"),
    ({"HOOK_A": "hooks.example/x"}, "HOOK_A must be an http(s) URL"),
    ({"HOOK_A": "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/a)"}, "did not resolve"),
])
def test_a_route_whose_url_setting_cannot_be_used_is_kept_with_its_problem(env: dict[str, str],
                                                                           problem: str) -> None:
    [route] = _routes([{"customer": CUSTOMER, "webhook": "HOOK_A"}], **env)
    assert route.url is None and route.problem is not None and problem in route.problem


@pytest.mark.parametrize(("table", "message"), [
    ("not json", "ALERT_ROUTES is not JSON"),
    ({"customer": CUSTOMER}, "must be a JSON list"),
    ([{"customer": CUSTOMER, "webhook": "https://hooks.example/x"}], "never the URL itself"),
    ([{"webhook": "HOOK_A"}], "route 1 matches nothing"),
    ([{"customer": "contoso", "webhook": "HOOK_A"}], "customer must be a customer id"),
    ([{"source": "job", "webhook": "HOOK_A", "format": "email"}], "format must be one of"),
    ([{"source": "job", "webhook": "HOOK_A", "url": "x"}], "unknown fields: url"),
    (["HOOK_A"], "route 1 is not an object"),
])
def test_a_route_table_that_cannot_be_read_is_a_wrong_setting_named(table: object, message: str) -> None:
    text = table if isinstance(table, str) else json.dumps(table)
    with pytest.raises(ConfigError, match=message):
        load_alert_settings({**BASE, "ALERT_ROUTES": text, "HOOK_A": "https://h.example/x"})


def test_the_first_matching_route_wins_and_both_fields_must_match_when_given() -> None:
    routes = _routes([{"customer": CUSTOMER, "source": "a", "webhook": "H1"}, {"source": "a", "webhook": "H2"},
                      {"customer": CUSTOMER, "webhook": "H3"}],
                     H1="https://1.example/x", H2="https://2.example/x", H3="https://3.example/x")
    assert route_for(routes, CUSTOMER, "a").webhook_setting == "H1"  # type: ignore[union-attr]
    assert route_for(routes, "0" * 8 + "-0000-0000-0000-" + "0" * 12, "a").webhook_setting == "H2"  # type: ignore
    assert route_for(routes, CUSTOMER, None).webhook_setting == "H3"  # type: ignore[union-attr]
    assert route_for(routes, "other", "b") is None
    assert _routes([]) == () and load_alert_settings(BASE).alert_routes == ()
