"""Partner Center tokens: one credential per process (azure-identity caches tokens inside it)."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import ServiceRequestError, ServiceResponseError

from .config import PartnerCenterSettings

SIMULATOR_TOKEN = "batchwatch-simulator-token"
FEDERATION_AUDIENCE = "api://AzureADTokenExchange/.default"


class SimulatorCredential:
    """The fixed development token the local simulator accepts (loopback base URLs only)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(SIMULATOR_TOKEN, int(time.time()) + 3600)


def build_credential(settings: PartnerCenterSettings, **identity_options: Any) -> TokenCredential:
    """The credential for PARTNER_CENTER_AUTH; identity_options go to azure-identity (e.g. transport)."""
    if settings.auth == "simulator":
        return SimulatorCredential()
    import azure.identity as identity  # imported here: only the modes that need it pay for it

    if settings.auth == "client_secret":
        assert settings.tenant_id and settings.client_id and settings.client_secret
        return identity.ClientSecretCredential(
            settings.tenant_id, settings.client_id, settings.client_secret, **identity_options
        )
    if settings.auth == "certificate":
        assert settings.tenant_id and settings.client_id
        if settings.certificate_data:
            return identity.CertificateCredential(
                settings.tenant_id,
                settings.client_id,
                certificate_data=certificate_bytes(settings.certificate_data),
                password=settings.certificate_password,
                **identity_options,
            )
        return identity.CertificateCredential(
            settings.tenant_id,
            settings.client_id,
            certificate_path=settings.certificate_path,
            password=settings.certificate_password,
            **identity_options,
        )
    if settings.auth == "managed_identity_federation":
        assert settings.tenant_id and settings.client_id
        managed_identity = identity.ManagedIdentityCredential(
            client_id=settings.managed_identity_client_id, **identity_options
        )

        def assertion() -> str:
            # Called by azure-identity only when it needs a new Partner Center token.
            return managed_identity.get_token(FEDERATION_AUDIENCE).token

        return identity.ClientAssertionCredential(
            settings.tenant_id, settings.client_id, assertion, **identity_options
        )
    return identity.DefaultAzureCredential(**identity_options)


def certificate_bytes(text: str) -> bytes:
    """PEM text as it is, or base64 PKCS#12 (what a Key Vault reference to a certificate yields)."""
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode("ascii")
    return base64.b64decode(text, validate=False)


class TokenSource:
    """Bearer tokens for one scope. refresh() builds a new credential, so its token is fresh."""

    def __init__(self, credential_factory: Callable[[], TokenCredential], scope: str) -> None:
        self._factory = credential_factory
        self._scope = scope
        self._lock = threading.Lock()
        self._credential: TokenCredential | None = None

    def token(self) -> str:
        return self._current().get_token(self._scope).token

    def refresh(self) -> str:
        with self._lock:
            self._credential = self._factory()
        return self.token()

    def discard(self) -> None:
        """Forget the credential after a failed token request: the next token() builds a new one.

        azure-identity's ManagedIdentityCredential marks itself unavailable for good after one failed
        request to the identity endpoint, so a credential that failed once would fail every later poll.
        """
        with self._lock:
            self._credential = None

    def _current(self) -> TokenCredential:
        with self._lock:
            if self._credential is None:
                self._credential = self._factory()
            return self._credential


# Entra answers that no retry will change: the app, its secret or certificate, the tenant, the federation
# trust or the consent is wrong. Anything else (a network failure, a server error, throttling, the managed
# identity endpoint being unreachable) is an outage, not a denial.
PERMANENT_ENTRA_ERRORS = {
    "invalid_client": "the client (app id, secret or certificate) is not accepted",
    "unauthorized_client": "the app is not authorised in this tenant",
    "consent_required": "admin consent is missing",
    "AADSTS7000215": "invalid client secret",
    "AADSTS7000222": "the client secret has expired",
    "AADSTS700016": "the application was not found in the tenant",
    "AADSTS700027": "the certificate or client assertion signature is not valid",
    "AADSTS700213": "no matching federated identity credential",
    "AADSTS70021": "no matching federated identity record",
    "AADSTS7000112": "the application is disabled",
    "AADSTS90002": "the tenant was not found",
    "AADSTS65001": "admin consent is missing",
    "AADSTS500011": "the Partner Center resource principal was not found in the tenant",
    "AADSTS53003": "blocked by Conditional Access",
}


@dataclass(frozen=True)
class TokenFailure:
    permanent: bool
    reason: str


def classify_token_failure(exc: BaseException) -> TokenFailure:
    """Whether a failed token request is Entra refusing the credential for good, or an outage to ride out."""
    chain = _exception_chain(exc)
    outage = (OSError, requests.RequestException, ServiceRequestError, ServiceResponseError)
    if any(isinstance(item, outage) or type(item).__name__ == "CredentialUnavailableError" for item in chain):
        return TokenFailure(False, f"token endpoint unavailable ({' <- '.join(type(item).__name__ for item in chain)})")
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and (status >= 500 or status in (408, 429)):
        return TokenFailure(False, f"token endpoint answered {status}")
    text = str(exc)
    for marker, meaning in PERMANENT_ENTRA_ERRORS.items():
        if marker in text:
            return TokenFailure(True, f"Entra refused the token request ({marker}: {meaning})")
    return TokenFailure(False, f"token request failed ({type(exc).__name__}: {text[:200]})")


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain
