"""deploy/nginx/auren.conf in a real nginx, in front of a real bridge and gateway, over HTTPS with
a certificate generated here: a signed webhook goes through and is stored, HSTS is sent, only
the webhook paths are open on the webhook host, plain HTTP is refused (webhooks) or redirected
(the API), and /metrics is not public.

The test copy differs from the shipped file only in what a test must change: the upstreams'
addresses, the listening ports and the certificate's path. nginx runs in the foreground as one
process with its files in a temporary directory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.deploy.tools import DEPLOY, system_tool
from tests.helpers import free_port, hrv_event, native_body, native_headers, run_server

pytestmark = pytest.mark.slow

CONFIG = DEPLOY / "nginx" / "auren.conf"
HOOKS, API = "hooks.auren.example", "api.auren.example"


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for both public names (P-256, valid for a day)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOOKS)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOOKS), x509.DNSName(API)]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "auren.crt", directory / "auren.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _test_copy(text: str, *, bridge: str, gateway: str, https: int, http: int,
               cert: Path, key: Path) -> str:
    replacements = [
        (r"server bridge:8889;", f"server {bridge};"),
        (r"server gateway:9000;", f"server {gateway};"),
        (r"listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;"),
        (r"listen 80 default_server;", f"listen 127.0.0.1:{http} default_server;"),
        (r"listen 80;", f"listen 127.0.0.1:{http};"),
        (r"/etc/nginx/tls/auren\.crt", str(cert)),
        (r"/etc/nginx/tls/auren\.key", str(key)),
    ]
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text)
        assert count, pattern  # the shipped file still has what the test replaces
    return text


@dataclass
class Proxy:
    https: int
    http: int
    cert: Path
    bridge_data: Path

    def client(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.cert))
        return httpx.Client(verify=context, timeout=10, trust_env=False)

    def url(self, path: str, *, tls: bool = True) -> str:
        return (f"https://127.0.0.1:{self.https}{path}" if tls
                else f"http://127.0.0.1:{self.http}{path}")


def _send(client: httpx.Client, method: str, url: str, host: str, *,
          content: bytes | None = None, headers: dict[str, str] | None = None
          ) -> httpx.Response:
    """A request to the proxy's address for ``host``: its Host header and its TLS name."""
    return client.request(method, url, content=content, headers={**(headers or {}), "host": host},
                          extensions={"sni_hostname": host})


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    nginx = system_tool("nginx")
    tmp = tmp_path_factory.mktemp("nginx")
    cert, key = _certificate(tmp)
    with run_server("bridge", tmp) as bridge, run_server(
            "gateway", tmp, {"AUREN_BRIDGE_URL": bridge.base_url}) as gateway:
        https, http = free_port(), free_port()
        site = _test_copy(CONFIG.read_text(), bridge=bridge.base_url.removeprefix("http://"),
                          gateway=gateway.base_url.removeprefix("http://"), https=https,
                          http=http, cert=cert, key=key)
        (tmp / "auren.conf").write_text(site)
        # The main context a distribution's nginx.conf provides, reduced to one foreground
        # process writing only below the temporary directory.
        (tmp / "nginx.conf").write_text(f"""
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/auren.conf;
}}
""")
        argv = [nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c",
                str(tmp / "nginx.conf")]
        checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30,
                                 check=False)
        assert checked.returncode == 0, checked.stderr
        log = (tmp / "nginx.out").open("wb")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            result = Proxy(https, http, cert, bridge.data_dir)
            deadline = time.monotonic() + 15
            while True:
                assert process.poll() is None, (tmp / "error.log").read_text()
                with contextlib.suppress(httpx.HTTPError), result.client() as client:
                    _send(client, "GET", result.url("/"), HOOKS)
                    break
                assert time.monotonic() < deadline, (tmp / "error.log").read_text()
                time.sleep(0.1)
            yield result
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            log.close()


def test_a_signed_webhook_through_https_is_stored(proxy: Proxy):
    body = native_body("tls-user", [hrv_event(7, 61.5, record="through-the-proxy")])
    with proxy.client() as client:
        answer = _send(client, "POST", proxy.url("/webhooks/auren"), HOOKS, content=body,
                       headers=native_headers(body))
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": 1, "duplicates": 0}
    assert answer.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
    with sqlite3.connect(proxy.bridge_data / "auren.sqlite3") as db:
        rows = db.execute("SELECT user_id, value FROM biometric_events WHERE "
                          "source_record_id = 'through-the-proxy'").fetchall()
    assert rows == [("tls-user", 61.5)]


def test_a_tampered_webhook_is_rejected_by_the_bridge_behind_the_proxy(proxy: Proxy):
    body = native_body("tls-user", [hrv_event(8, 60.0, record="tampered")])
    headers = native_headers(body)
    with proxy.client() as client:
        answer = _send(client, "POST", proxy.url("/api/v1/webhooks/auren"), HOOKS,
                       content=body.replace(b"60.0", b"99.0"), headers=headers)
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"


def test_only_webhook_paths_are_open_on_the_webhook_host(proxy: Proxy):
    with proxy.client() as client:
        for path in ("/health", "/metrics", "/api/v1/users/tls-user/events", "/docs",
                     "/webhooks/auren/extra"):
            answer = _send(client, "GET", proxy.url(path), HOOKS)
            assert answer.status_code == 404, path
            assert "strict-transport-security" in answer.headers, path
        # A handshake (GET) reaches the bridge: an unconfigured provider is its 404 problem.
        handshake = _send(client, "GET", proxy.url("/webhooks/oura"), HOOKS)
        assert handshake.status_code == 404
        assert handshake.headers["content-type"] == "application/problem+json"
        assert _send(client, "DELETE", proxy.url("/webhooks/auren"), HOOKS).status_code == 403


def test_the_api_host_proxies_the_gateway_but_not_its_metrics(proxy: Proxy):
    with proxy.client() as client:
        health = _send(client, "GET", proxy.url("/api/bridge/health"), API)
        assert health.status_code == 200
        assert health.json()["serviceId"] == "auren-bridge"
        assert health.headers["strict-transport-security"]
        assert _send(client, "GET", proxy.url("/metrics"), API).status_code == 404


def test_plain_http_refuses_webhooks_and_redirects_the_api(proxy: Proxy):
    with httpx.Client(timeout=10, trust_env=False) as client:
        hook = client.post(proxy.url("/webhooks/auren", tls=False), content=b"{}",
                           headers={"host": HOOKS})
        assert hook.status_code == 403 and "location" not in hook.headers
        api = client.get(proxy.url("/api/bridge/health", tls=False), headers={"host": API})
        assert api.status_code == 308
        assert api.headers["location"] == f"https://{API}/api/bridge/health"
