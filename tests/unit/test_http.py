"""The session that reads the environment once per host answers exactly as requests does."""

from __future__ import annotations

import pytest
import requests
import requests.sessions

from shared.http import pooled_session

URLS = [
    "https://api.partnercenter.microsoft.com/v1/customers/c/batchJobStatus/t",
    "https://api.partnercenter.microsoft.com/v1/customers/other/batchJobStatus/u",
    "https://account.queue.core.windows.net/status/messages",
    "http://127.0.0.1:10001/devstoreaccount1/status/messages",
    "https://bypassed.example.org/alerts",
]


@pytest.mark.parametrize("for_azure_core", [False, True])
def test_settings_match_requests_for_every_host(monkeypatch: pytest.MonkeyPatch, for_azure_core: bool) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "bypassed.example.org,127.0.0.1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/corp-ca.pem")
    ours, plain = pooled_session(for_azure_core=for_azure_core), requests.Session()
    for url in URLS * 2:
        for proxies, verify in ((None, None), ({"https": "http://explicit:8080"}, True), ({}, False)):
            assert ours.merge_environment_settings(url, proxies, None, verify, None) == (
                plain.merge_environment_settings(url, proxies, None, verify, None)
            ), (url, proxies, verify)


def test_the_environment_is_read_once_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    real = requests.sessions.get_environ_proxies

    def counting(url: str, no_proxy: str | None = None) -> dict[str, str]:
        reads.append(url)
        return real(url, no_proxy)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counting)
    session = pooled_session()
    for url in URLS * 3:
        settings = session.merge_environment_settings(url, {}, None, None, None)
        settings["proxies"]["https"] = "changed by a caller"  # a caller's change does not leak into the next
    assert len(reads) == 4  # four hosts
    assert session.merge_environment_settings(URLS[0], {}, None, None, None)["proxies"].get("https") != (
        "changed by a caller"
    )

