"""A Partner Center stand-in on loopback: device batch upload and batch status, with fault injection.

    python -m local.simulator [--port 8790] [--queued-seconds 2] [--processing-seconds 5] [--rate-429 0.1 ...]

Partner Center endpoints (bearer token required):
    POST /v1/customers/{cid}/deviceBatches                    -> 202, Location: /customers/{cid}/batchJobStatus/{tid}
    POST /v1/customers/{cid}/deviceBatches/{batchId}/devices  -> 202, Location as above
    GET  /v1/customers/{cid}/batchJobStatus/{tid}             -> BatchUploadDetails
Control endpoints for tests and demos (no token): POST /_sim/config, /_sim/script, /_sim/device-errors,
/_sim/registrations, /_sim/tokens; GET /_sim/requests, /_sim/batches.
Scripted answers for one tracking id (POST /_sim/script {"trackingId": ..., "responses": [...]}), used in order
before the normal answer: ok, slow:S, 429:S, 500, 502, 503, 504, 401, 403, 404, html, malformed, truncated,
timeout:S, drip:S (one byte every 0.1 s), big:N (a body of N bytes), gzipbomb:N (gzip inflating to N bytes),
body:<text> (that exact 200 body).
Rate limits (--rate-limit-partner / --rate-limit-customer N per --rate-window-seconds, or /_sim/config
rateLimitPartner, rateLimitCustomer, rateWindowSeconds): past N status GETs in a fixed window, for the partner as
a whole or for one customer, 429 with a Retry-After to the end of the window, as Partner Center throttles.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gzip
import json
import math
import random
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from local.serving import serve_in_thread, serve_until_interrupted
from shared.auth import SIMULATOR_TOKEN

_UPLOAD = re.compile(r"^/v1/customers/([^/]+)/devicebatches/?$", re.IGNORECASE)
_APPEND = re.compile(r"^/v1/customers/([^/]+)/devicebatches/([^/]+)/devices/?$", re.IGNORECASE)
_STATUS = re.compile(r"^/v1/customers/([^/]+)/batchjobstatus/([^/]+)/?$", re.IGNORECASE)

ERROR_NAMES = {
    "801": "InvalidZtdRequestBody",
    "802": "InvalidZtdHardwareHash",
    "803": "MissingZtdSerialNumberAndProductKey",
    "806": "ZtdDeviceAlreadyAssigned",
    "808": "ZtdDeviceAssignedToOtherTenant",
    "812": "ZtdDeviceNotFound",
    "813": "ZtdDeviceIsNotUnique",
    "814": "ZtdDeviceAlreadyAadRegistered",
    "ZtdDeviceDuplicated": "ZtdDeviceDuplicated",
    "StorageError": "StorageError",
}
RANDOM_ERROR_CODES = ("806", "808", "802", "ZtdDeviceDuplicated", "812", "StorageError")


@dataclass
class SimulatorConfig:
    queued_seconds: float = 2.0
    processing_seconds: float = 5.0
    not_found_seconds: float = 0.0  # a fresh tracking id answers 404 this long
    random_failure_rate: float = 0.0  # share of devices given a random error code
    batch_status_with_errors: str = "finished"  # what the batch says when devices failed
    rates: dict[str, float] = field(default_factory=dict)  # fault kind -> probability per status GET
    retry_after: int = 2
    slow_seconds: float = 3.0
    timeout_seconds: float = 60.0  # how long a "timeout" fault keeps the connection without answering
    seed: int = 1
    # Partner Center throttles per partner, and for some APIs per partner + customer: status GETs allowed per
    # window (0: no limit); past it, 429 with a Retry-After to the end of the window.
    rate_limit_partner: int = 0
    rate_limit_customer: int = 0
    rate_window_seconds: float = 60.0

    def update(self, values: dict[str, Any]) -> None:
        names = {
            "queuedSeconds": "queued_seconds",
            "processingSeconds": "processing_seconds",
            "notFoundSeconds": "not_found_seconds",
            "randomFailureRate": "random_failure_rate",
            "batchStatusWithErrors": "batch_status_with_errors",
            "retryAfter": "retry_after",
            "slowSeconds": "slow_seconds",
            "rateLimitPartner": "rate_limit_partner",
            "rateLimitCustomer": "rate_limit_customer",
            "rateWindowSeconds": "rate_window_seconds",
        }
        for key, value in values.items():
            if key == "rates":
                self.rates = {str(kind): float(rate) for kind, rate in dict(value).items()}
            elif key in names:
                setattr(self, names[key], type(getattr(self, names[key]))(value))
            else:
                raise ValueError(f"unknown setting {key}")


@dataclass
class Upload:
    customer_id: str
    tracking_id: str
    batch_id: str
    created: float
    queued_seconds: float
    processing_seconds: float
    not_found_seconds: float
    results: list[dict[str, Any]]
    batch_status_with_errors: str
    script: list[str] = field(default_factory=list)
    gets: int = 0
    final_body: bytes | None = None


class Simulator:
    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.lock = threading.Lock()
        self.rng = random.Random(self.config.seed)
        self.uploads: dict[str, Upload] = {}
        self.registrations: dict[str, str] = {}  # serial or product key -> customer id
        self.forced_errors: dict[str, str] = {}  # serial -> error code
        self.tokens: set[str] = {SIMULATOR_TOKEN}
        self.requests: list[dict[str, Any]] = []
        self.faults_injected: dict[str, int] = {}
        self.windows: dict[tuple[str, int], int] = {}  # (scope, window number) -> status GETs in it

    def throttle(self, customer_id: str, now: float) -> float | None:
        """Count one status GET against the rate limits; the seconds to the end of the window when over one."""
        config = self.config
        if not (config.rate_limit_partner or config.rate_limit_customer) or config.rate_window_seconds <= 0:
            return None
        window = int(now // config.rate_window_seconds)
        with self.lock:
            over = False
            for scope, limit in (("partner", config.rate_limit_partner), (customer_id, config.rate_limit_customer)):
                if limit:
                    count = self.windows.get((scope, window), 0) + 1
                    self.windows[(scope, window)] = count
                    over = over or count > limit
            if not over:
                return None
            self.faults_injected["429-rate-limit"] = self.faults_injected.get("429-rate-limit", 0) + 1
        return (window + 1) * config.rate_window_seconds - now

    # --- Partner Center behaviour --------------------------------------------------------------
    def upload(self, customer_id: str, batch_id: str, devices: list[dict[str, Any]]) -> str:
        tracking_id = str(uuid.uuid4())
        with self.lock:
            results = self._register(customer_id.lower(), devices)
            self.uploads[tracking_id] = Upload(
                customer_id=customer_id.lower(),
                tracking_id=tracking_id,
                batch_id=batch_id,
                created=time.monotonic(),
                queued_seconds=self.config.queued_seconds,
                processing_seconds=self.config.processing_seconds,
                not_found_seconds=self.config.not_found_seconds,
                results=results,
                batch_status_with_errors=self.config.batch_status_with_errors,
            )
        return tracking_id

    def _register(self, customer_id: str, devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = []
        seen_hashes: set[str] = set()
        for raw in devices:
            device = {_camel(key): value for key, value in raw.items()}
            serial = device.get("serialNumber")
            product_key = device.get("productKey")
            hardware_hash = device.get("hardwareHash")
            code = self.forced_errors.get(serial) if serial else None
            identity = serial or product_key
            if code is None:
                if not (serial or product_key or hardware_hash):
                    code = "803"
                elif hardware_hash is not None and not _valid_hash(hardware_hash):
                    code = "802"
                elif hardware_hash and hardware_hash in seen_hashes:
                    code = "ZtdDeviceDuplicated"
                elif identity and identity in self.registrations:
                    code = "806" if self.registrations[identity] == customer_id else "808"
                elif self.config.random_failure_rate and self.rng.random() < self.config.random_failure_rate:
                    code = self.rng.choice(RANDOM_ERROR_CODES)
            if hardware_hash:
                seen_hashes.add(hardware_hash)
            if code is None and identity:
                self.registrations[identity] = customer_id
            result: dict[str, Any] = {
                "serialNumber": serial,
                "productKey": product_key,
                "deviceId": str(uuid.uuid4()) if code is None else None,
                "status": "finished" if code is None else "finished_with_errors",
                "errorCode": code,
                "errorDescription": ERROR_NAMES.get(code, code) if code else None,
                "attributes": {"objectType": "DeviceUploadDetails"},
            }
            results.append({key: value for key, value in result.items() if value is not None})
        return results

    def status_body(self, upload: Upload, now: float) -> bytes:
        age = now - upload.created
        started = datetime.now(UTC) - timedelta(seconds=max(0.0, age - upload.queued_seconds))
        if age < upload.queued_seconds:
            return _json(
                {
                    "batchTrackingId": upload.tracking_id,
                    "status": "queued",
                    "attributes": {"objectType": "BatchUploadDetails"},
                }
            )
        if age < upload.queued_seconds + upload.processing_seconds:
            devices = [{**_identity(result), "status": "processing"} for result in upload.results]
            return _json(
                {
                    "batchTrackingId": upload.tracking_id,
                    "status": "processing",
                    "startedTime": _pc_time(started),
                    "devicesStatus": devices,
                    "attributes": {"objectType": "BatchUploadDetails"},
                }
            )
        if upload.final_body is None:
            failed = any(result.get("errorCode") for result in upload.results)
            # When it finished, not when it was first asked about: the lag to the final row is measured from this.
            completed = datetime.now(UTC) - timedelta(seconds=age - upload.queued_seconds - upload.processing_seconds)
            upload.final_body = _json(
                {
                    "batchTrackingId": upload.tracking_id,
                    "status": upload.batch_status_with_errors if failed else "finished",
                    "startedTime": _pc_time(completed - timedelta(seconds=upload.processing_seconds)),
                    "completedTime": _pc_time(completed),
                    "devicesStatus": upload.results,
                    "attributes": {"objectType": "BatchUploadDetails"},
                }
            )
        return upload.final_body

    def next_fault(self, upload: Upload | None) -> str | None:
        with self.lock:
            if upload is not None and upload.script:
                return upload.script.pop(0)
            for kind, rate in self.config.rates.items():
                if rate and self.rng.random() < rate:
                    return kind
        return None

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)
            del self.requests[:-20_000]

    def count_fault(self, kind: str) -> None:
        with self.lock:
            self.faults_injected[kind] = self.faults_injected.get(kind, 0) + 1


class Handler(BaseHTTPRequestHandler):
    server: SimulatorServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on a kept-alive connection the body then
    # waits for the client's delayed ACK (up to 40 ms on Linux), a latency real servers do not add.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet by default
        if self.server.verbose:
            super().log_message(format, *args)

    @property
    def sim(self) -> Simulator:
        return self.server.simulator

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/_sim/requests":
            with self.sim.lock:
                self._send_json(200, {"requests": list(self.sim.requests), "faults": dict(self.sim.faults_injected)})
            return
        if path == "/_sim/batches":
            with self.sim.lock:
                self._send_json(
                    200,
                    {
                        tid: {"customerId": u.customer_id, "gets": u.gets, "devices": len(u.results),
                              "failed": [r.get("serialNumber") or r.get("productKey") for r in u.results
                                         if r.get("errorCode")]}
                        for tid, u in self.sim.uploads.items()
                    },
                )
            return
        match = _STATUS.match(path)
        if not match:
            self._send_json(404, {"code": "404", "description": "Not found", "source": "simulator"})
            return
        entry = {
            "method": "GET",
            "path": path,
            "time": time.time(),
            "headers": {key: self.headers.get(key)
                        for key in ("MS-RequestId", "MS-CorrelationId", "X-Locale", "Accept")},
        }
        self.sim.record(entry)
        if not self._authorized():
            return
        customer_id, tracking_id = match[1].lower(), match[2].lower()
        upload = self.sim.uploads.get(tracking_id)
        if upload is None or upload.customer_id != customer_id:
            self._send_json(404, {"code": "600039", "description": "Batch job not found", "source": "simulator"})
            return
        with self.sim.lock:
            upload.gets += 1
        wait = self.sim.throttle(customer_id, time.time())
        if wait is not None:
            retry_after = str(max(1, math.ceil(wait)))
            with self.sim.lock:
                entry.update(status=429, retryAfter=int(retry_after))
            self._send_json(429, {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {retry_after} "
                                                                f"seconds."}, {"Retry-After": retry_after})
            return
        fault = self.sim.next_fault(upload)
        if fault and self._inject(fault):
            return
        now = time.monotonic()
        if now - upload.created < upload.not_found_seconds:
            self._send_json(404, {"code": "600039", "description": "Batch job not found", "source": "simulator"})
            return
        self._send_bytes(200, self.sim.status_body(upload, now), "application/json")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self._read_body()
        if path.startswith("/_sim/"):
            self._control(path, body)
            return
        self.sim.record({"method": "POST", "path": path, "time": time.time()})
        if not self._authorized():
            return
        try:
            document = json.loads(body or b"null")
        except ValueError:
            self._send_json(400, {"code": "800002", "description": "Invalid request input", "source": "simulator"})
            return
        upload, append = _UPLOAD.match(path), _APPEND.match(path)
        if upload and isinstance(document, dict):
            document = {_camel(key): value for key, value in document.items()}
            devices, batch_id, customer_id = document.get("devices"), str(document.get("batchId") or ""), upload[1]
        elif append and isinstance(document, list):
            devices, batch_id, customer_id = document, append[2], append[1]
        else:
            self._send_json(400, {"code": "800002", "description": "Invalid request input", "source": "simulator"})
            return
        if not isinstance(devices, list) or not all(isinstance(item, dict) for item in devices):
            self._send_json(400, {"code": "800002", "description": "devices must be a list", "source": "simulator"})
            return
        tracking_id = self.sim.upload(customer_id, batch_id, devices)
        self.send_response(202)
        self.send_header("Location", f"/customers/{customer_id}/batchJobStatus/{tracking_id}")
        self.send_header("MS-RequestId", self.headers.get("MS-RequestId") or str(uuid.uuid4()))
        self.send_header("Content-Length", "0")
        self.end_headers()

    # --- helpers ---------------------------------------------------------------------------------
    def _control(self, path: str, body: bytes) -> None:
        try:
            document = json.loads(body or b"{}")
            if path == "/_sim/config":
                with self.sim.lock:
                    self.sim.config.update(document)
            elif path == "/_sim/script":
                with self.sim.lock:
                    self.sim.uploads[document["trackingId"].lower()].script.extend(document["responses"])
            elif path == "/_sim/device-errors":
                with self.sim.lock:
                    self.sim.forced_errors[document["serialNumber"]] = str(document["errorCode"])
            elif path == "/_sim/registrations":
                with self.sim.lock:
                    self.sim.registrations[document["serialNumber"]] = document["customerId"].lower()
            elif path == "/_sim/tokens":
                with self.sim.lock:
                    self.sim.tokens = set(document["accepted"])
            else:
                self._send_json(404, {"error": "unknown control endpoint"})
                return
        except (ValueError, KeyError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)})
            return
        self._send_json(200, {"ok": True})

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token in self.sim.tokens:
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", "Bearer")
        body = _json({"code": "800001", "description": "Partner Token missing in request context", "source": "sim"})
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return False

    def _inject(self, fault: str) -> bool:
        """Answer with a fault; False when the fault only delays a normal answer."""
        kind, _, argument = fault.partition(":")
        self.sim.count_fault(kind)
        if kind == "ok":
            return False
        if kind == "slow":
            time.sleep(float(argument or self.sim.config.slow_seconds))
            return False
        if kind == "429":
            retry_after = argument or str(self.sim.config.retry_after)
            self._send_json(
                429,
                {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {retry_after} seconds."},
                {"Retry-After": retry_after},
            )
        elif kind in ("500", "502", "503", "504"):
            self._send_json(int(kind), {"code": "800003", "description": "Unexpected service error", "source": "sim"})
        elif kind in ("401", "403", "404"):
            self._send_json(int(kind), {"code": kind, "description": HTTPStatus(int(kind)).phrase, "source": "sim"})
        elif kind == "html":
            self._send_bytes(200, b"<html><body>Service Unavailable</body></html>", "text/html")
        elif kind == "malformed":
            self._send_bytes(200, b'{"batchTrackingId": "x", "status": "fini', "application/json")
        elif kind == "truncated":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(b'{"status": "finished", "devicesStatus": [')
            self.close_connection = True
        elif kind == "timeout":
            time.sleep(float(argument or self.sim.config.timeout_seconds))
            self.close_connection = True
        elif kind == "drip":  # a valid start, then one byte every 0.1 s: no single read ever times out
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.close_connection = True
            try:
                for _ in range(int(float(argument or "30") * 10)):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif kind == "big":  # a status body padded to the given number of bytes
            size = int(argument or "1000000")
            head = b'{"status": "processing", "padding": "'
            self._send_bytes(200, head + b"x" * max(0, size - len(head) - 2) + b'"}', "application/json")
        elif kind == "gzipbomb":  # a small gzip body that inflates to the given number of bytes
            size = int(argument or "100000000")
            body = gzip.compress(b'{"status": "processing", "padding": "' + b"0" * size + b'"}', compresslevel=9)
            self._send_bytes(200, body, "application/json", {"Content-Encoding": "gzip"})
        elif kind == "body":  # the argument is the whole 200 body, e.g. a hand-made BatchUploadDetails
            self._send_bytes(200, argument.encode("utf-8", "surrogatepass"), "application/json")
        else:
            return False
        return True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, status: int, document: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, _json(document), "application/json", headers)

    def _send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("MS-RequestId", self.headers.get("MS-RequestId") or str(uuid.uuid4()))
        self.send_header("MS-CorrelationId", self.headers.get("MS-CorrelationId") or str(uuid.uuid4()))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: Simulator, verbose: bool = False) -> None:
        super().__init__(address, Handler)
        self.simulator = simulator
        self.verbose = verbose

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def start_in_thread(simulator: Simulator | None = None, port: int = 0) -> SimulatorServer:
    return serve_in_thread(SimulatorServer(("127.0.0.1", port), simulator or Simulator()))


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _identity(result: dict[str, Any]) -> dict[str, Any]:
    return {key: result[key] for key in ("serialNumber", "productKey") if key in result}


def _valid_hash(value: Any) -> bool:
    if not isinstance(value, str) or len(value) < 16:
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _pc_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")  # Partner Center sends times without a zone


def _json(document: Any) -> bytes:
    return json.dumps(document).encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--queued-seconds", type=float, default=2.0)
    parser.add_argument("--processing-seconds", type=float, default=5.0)
    parser.add_argument("--not-found-seconds", type=float, default=0.0)
    parser.add_argument("--random-failure-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout-seconds", type=float, default=60.0, help="how long a timeout fault stalls")
    for kind in ("429", "500", "503", "timeout", "slow", "malformed", "truncated", "html"):
        parser.add_argument(f"--rate-{kind}", type=float, default=0.0, help=f"probability of a {kind} answer")
    parser.add_argument("--rate-limit-partner", type=int, default=0, help="status GETs per window for the partner")
    parser.add_argument("--rate-limit-customer", type=int, default=0, help="status GETs per window per customer")
    parser.add_argument("--rate-window-seconds", type=float, default=60.0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    rates = {
        kind: getattr(args, f"rate_{kind}")
        for kind in ("429", "500", "503", "timeout", "slow", "malformed", "truncated", "html")
    }
    config = SimulatorConfig(
        queued_seconds=args.queued_seconds,
        processing_seconds=args.processing_seconds,
        not_found_seconds=args.not_found_seconds,
        random_failure_rate=args.random_failure_rate,
        rates={k: v for k, v in rates.items() if v},
        seed=args.seed,
        timeout_seconds=args.timeout_seconds,
        rate_limit_partner=args.rate_limit_partner,
        rate_limit_customer=args.rate_limit_customer,
        rate_window_seconds=args.rate_window_seconds,
    )
    server = SimulatorServer(("127.0.0.1", args.port), Simulator(config), verbose=args.verbose)
    return serve_until_interrupted(server, f"Partner Center simulator listening on {server.url}")


if __name__ == "__main__":
    sys.exit(main())
