"""The Partner Center client over real HTTP to the simulator, with azure-identity on a fake Entra."""

from __future__ import annotations

import base64
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import replace
from functools import partial

import pytest
import requests

from local.fake_entra import FakeEntra
from local.simulator import Simulator, SimulatorConfig, SimulatorServer, start_in_thread
from shared.auth import SIMULATOR_TOKEN, TokenSource, build_credential
from shared.config import PartnerCenterSettings
from shared.partner_center import PartnerCenterClient, parse_retry_after
from shared.policy import Denied, NotFound, StatusReceived, Throttled, TooLarge, Transient

CUSTOMER = "47021739-3426-40bf-9601-61b4b6d7c793"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    server = start_in_thread(Simulator(SimulatorConfig(queued_seconds=0, processing_seconds=0)))
    yield server
    server.shutdown()
    server.server_close()


def _settings(sim: SimulatorServer, auth: str = "simulator", **extra: str) -> PartnerCenterSettings:
    return PartnerCenterSettings(base_url=sim.url, scope="https://api.partnercenter.microsoft.com/.default",
                                 auth=auth, read_timeout=1.0, connect_timeout=1.0, **extra)  # type: ignore[arg-type]


def _upload(sim: SimulatorServer, devices: list[dict[str, str]] | None = None) -> str:
    response = requests.post(f"{sim.url}/v1/customers/{CUSTOMER}/deviceBatches",
                             json={"batchId": "b", "devices": devices or [{"serialNumber": "SN1"}]},
                             headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"}, timeout=5)
    return response.headers["Location"].rsplit("/", 1)[1]


def _client(sim: SimulatorServer, sleeps: list[float] | None = None, tokens: TokenSource | None = None
            ) -> PartnerCenterClient:
    settings = _settings(sim)
    return PartnerCenterClient(settings, tokens or TokenSource(lambda: build_credential(settings), settings.scope),
                               sleep=(sleeps.append if sleeps is not None else lambda _: None))


def _script(sim: SimulatorServer, tracking: str, *responses: str) -> None:
    requests.post(f"{sim.url}/_sim/script", json={"trackingId": tracking, "responses": list(responses)}, timeout=5)


def test_headers_sent_with_every_poll(sim: SimulatorServer) -> None:
    tracking = _upload(sim)
    client = _client(sim)
    correlation = str(uuid.uuid4())
    for _ in range(2):
        assert isinstance(client.get_batch_status(CUSTOMER, tracking, correlation), StatusReceived)
    gets = [r for r in sim.simulator.requests if r["method"] == "GET"]
    assert [r["headers"]["MS-CorrelationId"] for r in gets] == [correlation, correlation]
    assert len({r["headers"]["MS-RequestId"] for r in gets}) == 2
    assert all(r["headers"]["Accept"] == "application/json" and r["headers"]["X-Locale"] == "en-US" for r in gets)
    assert gets[0]["path"] == f"/v1/customers/{CUSTOMER}/batchJobStatus/{tracking}"


@pytest.mark.parametrize(("fault", "expected"), [
    ("404", NotFound()),
    ("403", Denied(403)),
    ("429:7", Throttled(7.0)),
])
def test_status_codes_become_typed_results(sim: SimulatorServer, fault: str, expected: object) -> None:
    tracking = _upload(sim)
    _script(sim, tracking, fault)
    assert _client(sim).get_batch_status(CUSTOMER, tracking, "c") == expected


@pytest.mark.parametrize("fault", ["500", "503", "html", "malformed", "truncated", "timeout:3"])
def test_transient_faults_are_retried_in_process_then_reported(sim: SimulatorServer, fault: str) -> None:
    tracking = _upload(sim)
    _script(sim, tracking, fault, fault, fault)
    sleeps: list[float] = []
    result = _client(sim, sleeps).get_batch_status(CUSTOMER, tracking, "c")
    assert isinstance(result, Transient)
    assert sleeps == [0.5, 1.5]


def test_a_transient_fault_then_success_returns_the_status(sim: SimulatorServer) -> None:
    tracking = _upload(sim)
    _script(sim, tracking, "503")
    sleeps: list[float] = []
    assert isinstance(_client(sim, sleeps).get_batch_status(CUSTOMER, tracking, "c"), StatusReceived)
    assert sleeps == [0.5]


def test_unknown_tracking_id_is_not_found(sim: SimulatorServer) -> None:
    assert _client(sim).get_batch_status(CUSTOMER, str(uuid.uuid4()), "c") == NotFound()


def test_connection_refused_is_transient(sim: SimulatorServer) -> None:
    settings = PartnerCenterSettings(base_url="http://127.0.0.1:9", scope="s", auth="simulator")
    client = PartnerCenterClient(settings, TokenSource(lambda: build_credential(settings), "s"), sleep=lambda _: None)
    result = client.get_batch_status(CUSTOMER, str(uuid.uuid4()), "c")
    assert isinstance(result, Transient) and "connection" in result.reason


def test_ids_are_validated_before_they_enter_the_url(sim: SimulatorServer) -> None:
    with pytest.raises(ValueError, match="not a GUID"):
        _client(sim).get_batch_status(CUSTOMER, "../../customers", "c")


def test_client_secret_token_is_fetched_once_for_many_polls(sim: SimulatorServer) -> None:
    entra = FakeEntra()
    settings = PartnerCenterSettings(base_url=sim.url, scope="https://api.partnercenter.microsoft.com/.default",
                                     auth="client_secret", tenant_id="contoso.onmicrosoft.com", client_id="app-id",
                                     client_secret="secret-value-123")
    tokens = TokenSource(lambda: build_credential(settings, transport=entra.transport()), settings.scope)
    tracking = _upload(sim)
    sim.simulator.tokens = {"entra-token-1"}
    client = PartnerCenterClient(settings, tokens)
    results = [client.get_batch_status(CUSTOMER, tracking, "c") for _ in range(50)]
    assert all(isinstance(result, StatusReceived) for result in results)
    assert len(entra.token_requests) == 1
    assert entra.token_requests[0]["scope"] == ["https://api.partnercenter.microsoft.com/.default"]
    assert entra.token_requests[0]["client_secret"] == ["secret-value-123"]


def test_a_401_fetches_a_new_token_once(sim: SimulatorServer) -> None:
    entra = FakeEntra()
    settings = PartnerCenterSettings(base_url=sim.url, scope="scope/.default", auth="client_secret",
                                     tenant_id="contoso.onmicrosoft.com", client_id="app", client_secret="s")
    tokens = TokenSource(lambda: build_credential(settings, transport=entra.transport()), settings.scope)
    tracking = _upload(sim)
    sim.simulator.tokens = {"entra-token-2"}  # the first token is refused, as after a revocation
    client = PartnerCenterClient(settings, tokens)
    assert isinstance(client.get_batch_status(CUSTOMER, tracking, "c"), StatusReceived)
    assert len(entra.token_requests) == 2
    sim.simulator.tokens = set()  # now every token is refused: one refresh, then Denied
    assert client.get_batch_status(CUSTOMER, tracking, "c") == Denied(401)
    assert len(entra.token_requests) == 3


def test_managed_identity_federation_uses_the_identity_token_as_client_assertion(
    sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://managed-identity.local/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "header-value")
    entra = FakeEntra()
    settings = PartnerCenterSettings(base_url=sim.url, scope="https://api.partnercenter.microsoft.com/.default",
                                     auth="managed_identity_federation", tenant_id="contoso.onmicrosoft.com",
                                     client_id="partner-center-app", managed_identity_client_id="mi-client-id")
    credential = build_credential(settings, transport=entra.transport())
    assert credential.get_token(settings.scope).token == "entra-token-1"
    assert credential.get_token(settings.scope).token == "entra-token-1"
    [identity_request] = entra.identity_requests
    assert identity_request["resource"] == ["api://AzureADTokenExchange"]
    assert identity_request["client_id"] == ["mi-client-id"]
    [token_request] = entra.token_requests
    assert token_request["client_assertion"] == ["managed-identity-assertion"]
    assert token_request["client_id"] == ["partner-center-app"]


@pytest.mark.parametrize(("value", "seconds"), [("57", 57.0), ("0", 0.0), ("soon", None), (None, None),
                                                ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after_forms(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


@pytest.mark.parametrize("source", ["path", "pem-text", "pkcs12-base64"])
def test_certificate_credential_signs_a_client_assertion(sim: SimulatorServer, tmp_path, source: str) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "batchwatch-test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
                   .sign(key, hashes.SHA256()))
    pem = tmp_path / "partner-center.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
                    + certificate.public_bytes(serialization.Encoding.PEM))
    from cryptography.hazmat.primitives.serialization import pkcs12

    pfx = pkcs12.serialize_key_and_certificates(b"bw", key, certificate, None, serialization.NoEncryption())
    location = {"path": {"certificate_path": str(pem)}, "pem-text": {"certificate_data": pem.read_text()},
                "pkcs12-base64": {"certificate_data": base64.b64encode(pfx).decode()}}[source]
    entra = FakeEntra()
    settings = PartnerCenterSettings(base_url=sim.url, scope="scope/.default", auth="certificate",
                                     tenant_id="contoso.onmicrosoft.com", client_id="app", **location)
    credential = build_credential(settings, transport=entra.transport())
    assert credential.get_token(settings.scope).token == "entra-token-1"
    [request] = entra.token_requests
    assert request["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
    assert request["client_assertion"][0].count(".") == 2  # a signed JWT


def test_devices_appended_to_an_existing_batch_get_their_own_tracking_id(sim: SimulatorServer) -> None:
    response = requests.post(f"{sim.url}/v1/customers/{CUSTOMER}/deviceBatches/existing-batch/devices",
                             json=[{"SerialNumber": "APPENDED-1"}],
                             headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"}, timeout=5)
    assert response.status_code == 202
    tracking = response.headers["Location"].rsplit("/", 1)[1]
    result = _client(sim).get_batch_status(CUSTOMER, tracking, "c")
    assert isinstance(result, StatusReceived)
    assert [device.serial_number for device in result.batch.devices] == ["APPENDED-1"]
    unauthorised = requests.post(f"{sim.url}/v1/customers/{CUSTOMER}/deviceBatches", json={"devices": []},
                                 timeout=5)
    assert unauthorised.status_code == 401


def _limited_client(sim: SimulatorServer, **limits: float) -> PartnerCenterClient:
    settings = replace(_settings(sim), **limits)
    return PartnerCenterClient(settings, TokenSource(lambda: build_credential(settings), settings.scope),
                               sleep=lambda _: None)


@pytest.mark.parametrize(("fault", "reason"), [
    ("big:300000", "body of 300000 bytes is over the cap of 100000 bytes"),
    ("gzipbomb:20000000", "decompressed to over 1000000 bytes"),
])
def test_an_answer_over_a_size_cap_is_too_large_not_a_crash(sim: SimulatorServer, fault: str, reason: str) -> None:
    tracking = _upload(sim)
    _script(sim, tracking, fault)
    client = _limited_client(sim, max_response_bytes=100_000, max_decompressed_bytes=1_000_000)
    result = client.get_batch_status(CUSTOMER, tracking, "c")
    assert isinstance(result, TooLarge) and reason in result.reason
    assert isinstance(client.get_batch_status(CUSTOMER, tracking, "c"), StatusReceived)  # the next poll is normal


def test_a_slow_drip_ends_at_the_call_deadline_without_an_in_process_retry(sim: SimulatorServer) -> None:
    tracking = _upload(sim)
    _script(sim, tracking, "drip:20", "drip:20")
    client = _limited_client(sim, call_deadline=1.0, read_timeout=5.0)
    started = time.monotonic()
    result = client.get_batch_status(CUSTOMER, tracking, "c")
    assert isinstance(result, Transient) and "PARTNER_CENTER_CALL_DEADLINE_SECONDS (1 s)" in result.reason
    assert time.monotonic() - started < 10  # the drip lasts 20 s and never trips the 5 s read timeout
    assert client.request_count == 1


def _secret_client(sim: SimulatorServer, entra: FakeEntra) -> PartnerCenterClient:
    settings = PartnerCenterSettings(base_url=sim.url, scope="https://api.partnercenter.microsoft.com/.default",
                                     auth="client_secret", tenant_id="contoso.onmicrosoft.com", client_id="app-id",
                                     client_secret="secret-value-123")
    sim.simulator.tokens = {f"entra-token-{n}" for n in range(1, 10)}
    # retry_total=0: azure-core's own retries (about 5 s of backoff) are not what these tests are about
    credential = partial(build_credential, settings, transport=entra.transport(), retry_total=0)
    return PartnerCenterClient(settings, TokenSource(credential, settings.scope), sleep=lambda _: None)


@pytest.mark.parametrize("fault", ["500", "503", "429", "network"])
def test_an_entra_outage_is_transient_not_a_denial(sim: SimulatorServer, fault: str) -> None:
    tracking = _upload(sim)
    entra = FakeEntra()
    entra.faults = [fault] * 20  # more than azure-identity's own retries
    client = _secret_client(sim, entra)
    result = client.get_batch_status(CUSTOMER, tracking, "c")
    assert isinstance(result, Transient) and result.reason.startswith("token request failed")
    assert not result.retry_now  # no in-process retry: the chain requeues and asks again later


@pytest.mark.parametrize(("fault", "named"), [
    ("401:invalid_client:AADSTS7000215: Invalid client secret provided.", "invalid client secret"),
    ("400:invalid_request:AADSTS90002: Tenant 'contoso' not found.", "tenant was not found"),
    ("400:invalid_grant:AADSTS65001: The user or administrator has not consented.", "consent is missing"),
])
def test_entra_refusing_the_credential_counts_toward_access_denied(sim: SimulatorServer, fault: str,
                                                                   named: str) -> None:
    tracking = _upload(sim)
    entra = FakeEntra()
    entra.faults = [fault] * 3
    result = _secret_client(sim, entra).get_batch_status(CUSTOMER, tracking, "c")
    assert isinstance(result, Denied) and named in result.reason


@pytest.mark.parametrize("fault", ["network", "500"])  # 500: azure-identity says CredentialUnavailableError
def test_an_unreachable_managed_identity_endpoint_is_transient(sim: SimulatorServer, fault: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://managed-identity.local/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "header-value")
    entra = FakeEntra()
    entra.faults = [fault] * 6
    settings = PartnerCenterSettings(base_url=sim.url, scope="https://api.partnercenter.microsoft.com/.default",
                                     auth="managed_identity_federation", tenant_id="contoso.onmicrosoft.com",
                                     client_id="partner-center-app", managed_identity_client_id="mi-client-id")
    tokens = TokenSource(partial(build_credential, settings, transport=entra.transport(), retry_total=0),
                         settings.scope)
    tracking = _upload(sim)
    sim.simulator.tokens = {"entra-token-1"}
    client = PartnerCenterClient(settings, tokens, sleep=lambda _: None)
    result = client.get_batch_status(CUSTOMER, tracking, "c")
    assert isinstance(result, Transient) and "unavailable" in result.reason
    entra.faults.clear()
    assert isinstance(client.get_batch_status(CUSTOMER, tracking, "c"), StatusReceived)


def test_a_poll_stops_retrying_when_its_time_budget_is_spent(sim: SimulatorServer) -> None:
    """Retries and a token refresh together stay within 3 call deadlines, so a poll fits the function's timeout."""
    tracking = _upload(sim)
    _script(sim, tracking, "503", "503", "503")
    clock = iter(float(step) for step in range(0, 100, 2))  # each look at the clock finds 2 s more gone
    settings = replace(_settings(sim), call_deadline=2.0)
    client = PartnerCenterClient(settings, TokenSource(lambda: build_credential(settings), settings.scope),
                                 sleep=lambda _: None, monotonic=lambda: next(clock))
    result = client.get_batch_status(CUSTOMER, tracking, "c")
    assert isinstance(result, Transient) and client.request_count == 1  # the second try would not fit in 6 s


def test_the_simulators_rate_limits_answer_429_until_the_window_ends(sim: SimulatorServer) -> None:
    """The limiter that fleet tests, make chaos and make bench throttle against: per partner and per customer."""
    other_customer = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
    tracking = _upload(sim)
    requests.post(f"{sim.url}/_sim/config", json={"rateLimitPartner": 4, "rateLimitCustomer": 2,
                                                  "rateWindowSeconds": 2}, timeout=5)
    client = _client(sim)
    time.sleep(2 - time.time() % 2)  # the start of a window, so that all the calls below fall in it
    results = [client.get_batch_status(CUSTOMER, tracking, "c") for _ in range(3)]
    assert [type(result).__name__ for result in results] == ["StatusReceived", "StatusReceived", "Throttled"]
    throttled = results[2]
    assert isinstance(throttled, Throttled) and throttled.retry_after is not None and 1 <= throttled.retry_after <= 2
    other = requests.post(f"{sim.url}/v1/customers/{other_customer}/deviceBatches",
                          json={"devices": [{"serialNumber": "X"}]},
                          headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"}, timeout=5)
    other_tracking = other.headers["Location"].rsplit("/", 1)[1]
    answers = [client.get_batch_status(other_customer, other_tracking, "c") for _ in range(2)]
    assert type(answers[0]).__name__ == "StatusReceived"  # its own customer's budget: 4th call for the partner
    assert isinstance(answers[1], Throttled)  # the 5th for the partner: over the partner's limit
    time.sleep(2.1)  # the next window
    assert type(client.get_batch_status(CUSTOMER, tracking, "c")).__name__ == "StatusReceived"


def test_a_large_answer_is_parsed_from_its_temporary_file_not_held_in_memory(sim: SimulatorServer) -> None:
    tracking = _upload(sim, [{"serialNumber": f"SN-{i:06}", "productKey": f"PK-{i:06}"} for i in range(20_000)])
    client = _client(sim)
    assert isinstance(client.get_batch_status(CUSTOMER, tracking, "c"), StatusReceived)  # the simulator settles
    tracemalloc.start()
    try:
        result = client.get_batch_status(CUSTOMER, tracking, "c")
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result, StatusReceived) and len(result.batch.devices) == 20_000
    assert retained < 2 * 1024 * 1024  # the answer is about 3 MB; only its first MiB may stay in memory
    assert sum(1 for device in result.batch.devices if device.serial_number) == 20_000
