"""A stand-in for Entra ID token endpoints and the App Service identity endpoint (tests and benchmarks)."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import BaseAdapter
from urllib3.response import HTTPResponse


class FakeEntra(BaseAdapter):
    """Answers OpenID discovery, /oauth2/v2.0/token and a managed identity endpoint; issues numbered tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.token_requests: list[dict[str, list[str]]] = []
        self.identity_requests: list[dict[str, list[str]]] = []
        self.issued = 0
        # Answers to give before issuing tokens again, one per request to the token or identity endpoint:
        # "500", "503", "429", "network" (the connection fails), or "<status>:<error>:<description>" for an
        # OAuth error body such as "401:invalid_client:AADSTS7000215: Invalid client secret provided."
        self.faults: list[str] = []

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        url = urlsplit(request.url or "")
        if url.path.endswith("/.well-known/openid-configuration"):
            tenant = url.path.split("/")[1]
            return _json(request, 200, {
                "token_endpoint": f"https://{url.netloc}/{tenant}/oauth2/v2.0/token",
                "authorization_endpoint": f"https://{url.netloc}/{tenant}/oauth2/v2.0/authorize",
                "issuer": f"https://{url.netloc}/{tenant}/v2.0",
                "device_authorization_endpoint": f"https://{url.netloc}/{tenant}/oauth2/v2.0/devicecode",
            })
        if url.path.endswith("/discovery/instance"):  # MSAL asks this after an error answer
            return _json(request, 200, {
                "tenant_discovery_endpoint":
                    f"https://{url.netloc}/common/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": url.netloc, "preferred_cache": url.netloc,
                              "aliases": [url.netloc]}],
            })
        if url.path.endswith("/oauth2/v2.0/token") or url.netloc == "managed-identity.local":
            fault = self._next_fault()
            if fault == "network":
                raise requests.ConnectionError("connection refused (fake Entra fault)")
            if fault:
                status, _, rest = fault.partition(":")
                error, _, description = rest.partition(":")
                document = {"error": error or "server_error", "error_description": description or "fault"}
                return _json(request, int(status), document)
        if url.path.endswith("/oauth2/v2.0/token"):
            body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
            with self.lock:
                self.token_requests.append(parse_qs(body))
                self.issued += 1
                token = f"entra-token-{self.issued}"
            return _json(request, 200, {"access_token": token, "expires_in": 3600, "ext_expires_in": 3600,
                                        "token_type": "Bearer"})
        if url.netloc == "managed-identity.local":
            with self.lock:
                self.identity_requests.append(parse_qs(url.query))
            return _json(request, 200, {"access_token": "managed-identity-assertion", "token_type": "Bearer",
                                        "expires_on": int(time.time()) + 3600,
                                        "resource": parse_qs(url.query).get("resource", [""])[0]})
        return _json(request, 404, {"error": "not_found"})

    def _next_fault(self) -> str | None:
        with self.lock:
            return self.faults.pop(0) if self.faults else None

    def close(self) -> None:
        pass

    def transport(self) -> RequestsTransport:
        session = requests.Session()
        session.mount("https://", self)
        session.mount("http://", self)
        return RequestsTransport(session=session, session_owner=False)


def _json(request: requests.PreparedRequest, status: int, document: Any) -> requests.Response:
    content = json.dumps(document).encode()
    response = requests.Response()
    response.status_code = status
    response.raw = HTTPResponse(body=io.BytesIO(content), status=status, preload_content=False,
                                headers={"Content-Type": "application/json"})
    response._content = content
    response.headers["Content-Type"] = "application/json"
    response.url = request.url or ""
    response.request = request
    return response
