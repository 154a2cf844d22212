"""Real PostgreSQL and Redis servers that speak TLS only, for the clients' TLS tests.

Each runs on a free loopback port in a temporary directory with a certificate of
``tests.tls``; PostgreSQL's ``pg_hba.conf`` accepts TLS connections only (``hostssl``; plain TCP
is rejected), Redis listens on its TLS port only. Both are stopped by their pid.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from auren.infra.base import is_root, run_bounded, user_exists, user_kwargs
from tests.helpers import free_port
from tests.tls import Pki


def _tool(name: str, candidates: list[Path]) -> Path:
    found = shutil.which(name)
    for path in candidates + ([Path(found)] if found else []):
        if path.is_file():
            return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} is missing (auren infra installs it)")
    pytest.skip(f"{name} is not installed")


def _pg_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    return _tool("initdb", found[-1:]).resolve().parent


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 30
               ) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port}:\n{log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes], how: signal.Signals = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(how)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def tls_postgres(pki: Pki) -> Iterator[str]:
    """A PostgreSQL cluster with ``ssl = on`` and TLS-only host access; yields the
    superuser's URL without TLS parameters (the tests add ``sslmode`` and ``sslrootcert``).
    It lives in a directory of its own under the system's temp dir, which the server's user
    can reach (pytest's are closed to other users), removed afterwards."""
    bindir = _pg_bindir()
    user = "postgres" if is_root() and user_exists("postgres") else None
    if is_root() and user is None:
        pytest.skip("PostgreSQL refuses root and there is no postgres user")
    directory = Path(tempfile.mkdtemp(prefix="auren-tls-pg-"))
    directory.chmod(0o755)
    try:
        yield from _run_postgres(directory, bindir, user, pki)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _run_postgres(directory: Path, bindir: Path, user: str | None, pki: Pki) -> Iterator[str]:
    data, run = directory / "data", directory / "run"
    password = secrets.token_urlsafe(12)
    pwfile = directory / "pw"
    pwfile.write_text(password + "\n")
    for path in (pki.cert, pki.key):
        shutil.copy(path, directory / path.name)
    key = directory / pki.key.name
    key.chmod(0o600)
    run.mkdir(mode=0o700)
    if user is not None:
        for path in (directory, run, pwfile, key, directory / pki.cert.name):
            shutil.chown(path, user, user)
    run_bounded([str(bindir / "initdb"), "-D", str(data), "--username=postgres",
                 f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                 "--encoding=UTF8", "--no-locale"], timeout=180, what="initdb", user=user,
                cwd=directory, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                    "LANG": "C.UTF-8"})
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        "host all all 127.0.0.1/32 reject\n")
    port = free_port()
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
                   f"unix_socket_directories = '{run}'\nssl = on\n"
                   f"ssl_cert_file = '{directory / pki.cert.name}'\n"
                   f"ssl_key_file = '{key}'\nssl_min_protocol_version = 'TLSv1.2'\n"
                   "shared_buffers = '16MB'\nmax_connections = 30\nfsync = off\n")
    log = directory / "postgres.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data)], stdout=out, stderr=subprocess.STDOUT,
            cwd=directory, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                "LANG": "C.UTF-8"}, **user_kwargs(user))
    try:
        _wait_port(port, process, log)
        deadline = time.monotonic() + 30
        # Listening is not accepting: wait until the server is out of its start-up.
        while subprocess.run([str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                              str(port)], timeout=10, check=False).returncode != 0:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"PostgreSQL did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:{port}/postgres"
    finally:
        # SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for every client).
        _stop(process, signal.SIGINT)


@contextlib.contextmanager
def tls_redis(directory: Path, pki: Pki) -> Iterator[int]:
    """redis-server on a TLS port only (no client certificates asked for); yields the port."""
    redis_server = _tool("redis-server", [Path("/usr/bin/redis-server")])
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = directory / "redis.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(redis_server), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(pki.cert), "--tls-key-file", str(pki.key),
             "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "no",
             "--save", "", "--appendonly", "no", "--dir", str(directory)],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, process, log)
        yield port
    finally:
        _stop(process)
