"""Every service serves HTTPS when given a certificate and key: real processes, a private CA
generated here, clients that trust only that CA and check the server's name."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, hrv_event, native_body, native_headers, run_server
from tests.tls import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("service", ["bridge", "legacy", "neuros", "gateway"])
def test_each_service_serves_https_from_the_command_line(service: str, pki: Pki,
                                                         tmp_path: Path) -> None:
    context = pki.client_context()
    # The gateway alone has no upstream here: its /health fails (503) while it serves.
    with run_server(service, tmp_path, tls=context, ready_path="/metrics",
                    args=["--ssl-certfile", str(pki.cert), "--ssl-keyfile", str(pki.key)]
                    ) as server:
        response = httpx.get(server.base_url + "/health", verify=context, timeout=10)
        assert response.json()["status"] == ("fail" if service == "gateway" else "pass")
        assert response.headers["x-request-id"]
        metrics = httpx.get(server.base_url + "/metrics", verify=context, timeout=10)
        assert metrics.status_code == 200 and "# TYPE" in metrics.text
        # Plain HTTP on the same port gets no HTTP answer.
        with pytest.raises(httpx.HTTPError):
            httpx.get(server.base_url.replace("https://", "http://") + "/health", timeout=5)
        # A client that does not trust the CA refuses the server.
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.base_url + "/health", timeout=5)


def test_https_from_settings_takes_a_signed_webhook(pki: Pki, tmp_path: Path) -> None:
    context = pki.client_context()
    env = {"AUREN_SSL_CERTFILE": str(pki.cert), "AUREN_SSL_KEYFILE": str(pki.key)}
    with run_server("bridge", tmp_path, env, tls=context) as bridge:
        user = f"tls-{uuid.uuid4().hex[:8]}"
        body = native_body(user, [hrv_event(4, record=f"{user}-1")])
        with httpx.Client(verify=context, timeout=10) as client:
            answer = client.post(bridge.base_url + "/webhooks/auren", content=body,
                                 headers=native_headers(body))
            assert answer.status_code == 202, answer.text
            assert answer.json()["accepted"] == 1
            stored = client.get(f"{bridge.base_url}/api/v1/users/{user}/events").json()
        assert [e["source_record_id"] for e in stored["events"]] == [f"{user}-1"]


def test_tls_1_1_is_refused_and_1_2_and_1_3_are_served(pki: Pki, tmp_path: Path) -> None:
    context = pki.client_context()
    with run_server("legacy", tmp_path, tls=context,
                    args=["--ssl-certfile", str(pki.cert), "--ssl-keyfile", str(pki.key)]
                    ) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            pinned = pki.client_context()
            pinned.minimum_version = pinned.maximum_version = version
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    pinned.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                                         ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(str(pki.ca))
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
        with warnings.catch_warnings():  # deprecated on purpose: it is what is refused
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                pytest.raises(ssl.SSLError) as refused:
            old.wrap_socket(raw, server_hostname="localhost")
        # The server refused what the client offered (an alert, or a close without one):
        # not a client that could not offer TLS 1.1 in the first place.
        reason = str(refused.value).upper()
        assert "NO_PROTOCOLS_AVAILABLE" not in reason, reason
        assert "PROTOCOL_VERSION" in reason or "UNEXPECTED_EOF" in reason, reason


def test_the_connection_guard_holds_over_tls(pki: Pki, tmp_path: Path) -> None:
    """A client that completes the handshake and then sends half a request line is answered
    408 and closed at HTTP_HEADER_TIMEOUT_S, as on plain HTTP."""
    context = pki.client_context()
    with run_server("bridge", tmp_path, {"HTTP_HEADER_TIMEOUT_S": "1"}, tls=context,
                    args=["--ssl-certfile", str(pki.cert), "--ssl-keyfile", str(pki.key)]
                    ) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert time.monotonic() - started < 5


@pytest.mark.parametrize("args", [["--ssl-certfile", "{cert}"],
                                  ["--ssl-certfile", "{cert}", "--ssl-keyfile", "{missing}"]])
def test_a_half_or_missing_tls_pair_is_a_usage_error(args: list[str], pki: Pki,
                                                     tmp_path: Path) -> None:
    filled = [a.format(cert=pki.cert, missing=tmp_path / "nope.key") for a in args]
    done = subprocess.run([sys.executable, "-m", "auren", "serve", "legacy", "--port",
                           str(free_port()), *filled], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "ssl" in done.stderr.lower() or "tls" in done.stderr.lower()
