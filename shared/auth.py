"""Partner Center tokens: one credential per process (azure-identity caches tokens inside it)."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential

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

    def _current(self) -> TokenCredential:
        with self._lock:
            if self._credential is None:
                self._credential = self._factory()
            return self._credential
