"""The loopback stack's processes: start, watch and stop real Kafka, PostgreSQL and Redis.

For development and CI. Each server runs as a plain process whose files live under
``<AUREN_DATA_DIR>/infra/<name>/``; this module records the pid (``<name>.pid``) and the
process's start time (``state.json``) and acts on a pid only while both still match, so that
``down`` and the fault helpers can never signal a process this module did not start, even after
the kernel has reused the pid.

Public API (re-exported by :mod:`auren.infra`; also what the fault tests use)::

    up(cfg)                      start what is not running, wait until each answers
    status(cfg)                  per server: pid, state, round trip, version
    down(cfg)                    graceful stop, SIGKILL after a timeout
    kill_server(cfg, name)       kill -9 (or another signal) the recorded pid
    pause_server / resume_server SIGSTOP / SIGCONT
    restart_server(cfg, name)    stop, start, wait until it answers

Every wait is bounded; every timeout is a parameter with a finite default.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import errno
import json
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from auren.infra.base import HOST, InfraConfig, InfraError, Probe, SpawnSpec, tail_file, user_kwargs
from auren.infra.servers import SERVER_TYPES, PostgresServer, Server

# Start order: the slowest first, so the JVM warms up while the others start.
SERVER_NAMES: tuple[str, ...] = ("kafka", "postgres", "redis")

DEFAULT_START_TIMEOUT_S = 180.0
DEFAULT_STOP_TIMEOUT_S = 30.0
DEFAULT_PROBE_TIMEOUT_S = 5.0
# Polling interval of every wait loop: short next to start-up times, cheap on 2 cores.
_POLL_S = 0.1

# Popen objects of the servers this process started: kept so that a server that dies is reaped
# (no zombie keeps its pid "alive") and so that Python never warns about a dropped child.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@atexit.register
def _leave_servers_running() -> None:
    """Servers outlive the command (or test session) that started them, by design: ``down``
    stops them later, by their recorded pid. Once this process is gone they are re-parented
    and reaped by init, so their Popen objects are released here without Python's
    "subprocess is still running" warning, which exists to catch children forgotten by
    mistake."""
    for pid, child in list(_CHILDREN.items()):
        if child.poll() is None:
            child.returncode = 0  # not an exit status: tells Popen it need not wait
        del _CHILDREN[pid]


@dataclass(frozen=True)
class ProcessRecord:
    """What ``up`` wrote down about a server it started."""

    pid: int
    # Clock ticks after boot at which the process started (/proc/<pid>/stat field 22): with the
    # pid it identifies the process, because a reused pid has a different start time.
    starttime: int
    ports: dict[str, int]
    version: str
    started_at: str


@dataclass
class ServerStatus:
    name: str
    # "running", "paused" (SIGSTOP), "not running"
    state: str
    pid: int | None = None
    answering: bool = False
    rtt_ms: float | None = None
    version: str = ""
    detail: str = ""
    # What this call did: up: started/already running/resumed; down: stopped/killed/...
    action: str = ""
    ports: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        pid = f"pid {self.pid}" if self.pid else "-"
        if self.answering and self.rtt_ms is not None:
            answer = f"answering in {self.rtt_ms:.1f} ms"
        else:
            answer = "not answering" if self.state != "not running" else ""
        parts = [f"{self.name:<9}", f"{self.state:<11}", f"{pid:<10}", f"{answer:<24}",
                 self.version]
        if self.detail:
            parts.append(f"({self.detail})")
        if self.action:
            parts.append(f"[{self.action}]")
        return " ".join(p for p in parts if p).rstrip()


# --- /proc ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stat:
    state: str
    pgrp: int
    starttime: int


def _stat(pid: int) -> _Stat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after the
    # last one. Fields after it start at field 3 (state); pgrp is 5, starttime 22.
    fields = raw[raw.rfind(")") + 2:].split()
    try:
        return _Stat(state=fields[0], pgrp=int(fields[2]), starttime=int(fields[19]))
    except (IndexError, ValueError):
        return None


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def _live(record: ProcessRecord | None) -> _Stat | None:
    """The process's stat when the recorded process is still the one running under its pid."""
    if record is None:
        return None
    _reap(record.pid)
    stat = _stat(record.pid)
    if stat is None or stat.starttime != record.starttime or stat.state in ("Z", "X"):
        return None
    return stat


def _gone(record: ProcessRecord) -> bool:
    """The recorded process has fully exited: not only its main thread (a zombie leader may
    wait for its other threads, which still hold its sockets, to finish dying)."""
    _reap(record.pid)
    stat = _stat(record.pid)
    if stat is None or stat.starttime != record.starttime:
        return True
    if stat.state not in ("Z", "X"):
        return False
    try:
        return len(list(Path(f"/proc/{record.pid}/task").iterdir())) <= 1
    except OSError:
        return True


def _leftovers(server: Server, record: ProcessRecord) -> list[int]:
    """Processes a server started that are still there besides (or after) its main process:

    * its process group (the session ``_spawn`` made), and
    * for PostgreSQL, whose children call setsid() and so leave that group, the processes
      named ``postgres`` working in its data dir that started no earlier than the postmaster.
      A backend outlives a killed postmaster for a moment, holding the shared memory that a new
      postmaster then refuses to share.

    Empty when the recorded pid was recycled: the kernel never hands out a pid that is still a
    live group's id, so a different process under that pid means our group is gone."""
    leader = _stat(record.pid)
    if leader is not None and leader.starttime != record.starttime:
        return []
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == record.pid:
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat.state in ("Z", "X"):
            continue
        if stat.pgrp == record.pid or (
                stat.starttime >= record.starttime and server.is_helper(entry)):
            members.append(int(entry.name))
    return members


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)


# --- records -------------------------------------------------------------------------------------


def _pid_file(cfg: InfraConfig, name: str) -> Path:
    return cfg.server_dir(name) / f"{name}.pid"


def _state_file(cfg: InfraConfig, name: str) -> Path:
    return cfg.server_dir(name) / "state.json"


def read_record(cfg: InfraConfig, name: str) -> ProcessRecord | None:
    try:
        data = json.loads(_state_file(cfg, name).read_text())
        return ProcessRecord(pid=int(data["pid"]), starttime=int(data["starttime"]),
                             ports={k: int(v) for k, v in data["ports"].items()},
                             version=str(data.get("version", "")),
                             started_at=str(data.get("started_at", "")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_record(cfg: InfraConfig, name: str, record: ProcessRecord) -> None:
    state = _state_file(cfg, name)
    tmp = state.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
    tmp.replace(state)
    _pid_file(cfg, name).write_text(f"{record.pid}\n")


def _forget(cfg: InfraConfig, name: str) -> None:
    _state_file(cfg, name).unlink(missing_ok=True)
    _pid_file(cfg, name).unlink(missing_ok=True)


def running_pid(cfg: InfraConfig, name: str) -> int | None:
    """The pid of the server ``up`` started, while that process is alive (paused counts)."""
    record = read_record(cfg, _check_name(name))
    return record.pid if record is not None and _live(record) else None


def _check_name(name: str) -> str:
    if name not in SERVER_TYPES:
        raise InfraError(f"unknown server {name!r}; one of {', '.join(SERVER_NAMES)}")
    return name


def _names(servers: Iterable[str] | None) -> list[str]:
    wanted = set(SERVER_NAMES if servers is None else [_check_name(s) for s in servers])
    return [n for n in SERVER_NAMES if n in wanted]


# --- start ---------------------------------------------------------------------------------------


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers bind: a port held only by TIME_WAIT connections counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _spawn(spec: SpawnSpec) -> int:
    with spec.log.open("ab") as out:
        out.write(f"\n--- started by auren infra at {_now()} ---\n".encode())
        out.flush()
        try:
            child = subprocess.Popen(  # noqa: S603 - argv is built by auren.infra.servers
                list(spec.argv), cwd=spec.cwd,
                env=dict(spec.env) if spec.env is not None else None,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                # Its own session: not killed with our terminal or our process group, and its
                # process group is what `down` cleans up after it.
                start_new_session=True, **user_kwargs(spec.user))
        except OSError as exc:
            raise InfraError(f"cannot run {spec.argv[0]}: {exc}") from exc
    _CHILDREN[child.pid] = child
    return child.pid


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _clear_leftovers(server: Server, record: ProcessRecord | None,
                     timeout: float = 10.0) -> None:
    """Once the main process is gone: wait (bounded) for what it left behind to exit, SIGKILL
    the rest, forget the record. A PostgreSQL whose old backends still hold its shared memory
    would refuse to start again."""
    if record is not None and not _wait(lambda: not _leftovers(server, record), timeout):
        for pid in _leftovers(server, record):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait(lambda: not _leftovers(server, record), timeout)
    _forget(server.cfg, server.name)


def _start(server: Server) -> tuple[ProcessRecord, str]:
    """Start ``server`` unless the process it recorded is alive. Returns the record and what was
    done; does not wait for the server to answer."""
    cfg, name = server.cfg, server.name
    record = read_record(cfg, name)
    stat = _live(record)
    if record is not None and stat is not None:
        if record.ports != server.ports():
            raise InfraError(f"{name} (pid {record.pid}) is running on {record.ports}, not "
                             f"{server.ports()}: `auren infra down` first to change ports")
        if stat.state == "T":
            os.kill(record.pid, signal.SIGCONT)
            return record, "resumed"
        return record, "already running"
    _clear_leftovers(server, record)

    def busy_ports() -> list[int]:
        return [p for p in server.ports().values() if _port_in_use(p)]

    # A server we just killed may hold its listening sockets a moment longer (a JVM's threads
    # exit one by one after SIGKILL); anybody else's port is reported at once.
    busy = busy_ports()
    if busy and record is not None and _wait(lambda: not busy_ports(), 15.0):
        busy = []
    if busy:
        raise InfraError(f"{name}: port {busy[0]} on {HOST} is in use by a process that "
                         "auren infra did not start; stop it or choose another port")
    try:
        spec, version = server.prepare()
        pid = _spawn(spec)
    except InfraError as exc:
        raise InfraError(f"{name}: {exc}") from exc
    stat = _stat(pid)
    if stat is None:
        raise InfraError(f"{name} exited at once:\n{_log_tails(server)}")
    record = ProcessRecord(pid=pid, starttime=stat.starttime, ports=server.ports(),
                           version=version, started_at=_now())
    _write_record(cfg, name, record)
    return record, "started"


def _log_tails(server: Server) -> str:
    tails = []
    for path in server.log_files():
        text = tail_file(path)
        if text:
            tails.append(f"--- {path} ---\n{text}")
    return "\n".join(tails) or "(no log output)"


def _wait_ready(server: Server, record: ProcessRecord, deadline: float) -> Probe:
    """Until ``deadline``: bootstrap (once) and probe. Fails fast when the process dies."""
    bootstrapped = False
    last: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if _live(record) is None:
            raise InfraError(f"{server.name} (pid {record.pid}) exited while starting; "
                             f"its log ends:\n{_log_tails(server)}")
        if remaining <= 0:
            raise InfraError(f"{server.name} (pid {record.pid}) did not answer in time"
                             f" (last error: {last}); its log ends:\n{_log_tails(server)}")
        attempt = min(DEFAULT_PROBE_TIMEOUT_S, max(remaining, 0.5))
        try:
            if not bootstrapped:
                server.bootstrap(attempt)
                bootstrapped = True
            return server.probe(attempt)
        except InfraError as exc:
            last = exc
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))


def up(cfg: InfraConfig, servers: Iterable[str] | None = None, *,
       timeout: float = DEFAULT_START_TIMEOUT_S, write_env: bool = True) -> list[ServerStatus]:
    """Start every server (or those named) that is not running, then wait until each answers a
    real request, within ``timeout`` seconds in all once started. Idempotent: a running server
    is left as it is (a paused one is resumed). Raises InfraError naming every server that
    failed; the others are left running."""
    cfg.infra_dir.mkdir(parents=True, exist_ok=True)
    names = _names(servers)
    started: list[tuple[Server, ProcessRecord, str]] = []
    failures: list[str] = []
    for name in names:
        server = SERVER_TYPES[name](cfg)
        try:
            record, action = _start(server)
        except InfraError as exc:
            failures.append(str(exc))
            continue
        started.append((server, record, action))
    # Counted from here: installing packages and the first Maven fetch (above) are bounded on
    # their own and must not eat the servers' start-up time.
    deadline = time.monotonic() + timeout
    results = []
    for server, record, action in started:
        try:
            probe = _wait_ready(server, record, deadline)
        except InfraError as exc:
            failures.append(str(exc))
            continue
        results.append(_status_of(server, record, probe, action))
    if write_env:
        write_env_file(cfg)
    if failures:
        raise InfraError("\n".join(failures))
    return results


def _status_of(server: Server, record: ProcessRecord, probe: Probe | None, action: str = "",
               error: str = "") -> ServerStatus:
    stat = _live(record)
    return ServerStatus(
        name=server.name,
        state="paused" if stat is not None and stat.state == "T" else "running",
        pid=record.pid, answering=probe is not None,
        rtt_ms=round(probe.rtt_ms, 3) if probe else None,
        version=(probe.version if probe and probe.version else record.version),
        detail=probe.detail if probe else error, action=action, ports=record.ports)


# --- status --------------------------------------------------------------------------------------


def status(cfg: InfraConfig, servers: Iterable[str] | None = None, *,
           timeout: float = DEFAULT_PROBE_TIMEOUT_S) -> list[ServerStatus]:
    """Per server: whether the process ``up`` started is alive, and whether it answers one real
    request within ``timeout`` seconds (and how fast). Changes nothing."""
    results = []
    for name in _names(servers):
        server = SERVER_TYPES[name](cfg)
        record = read_record(cfg, name)
        stat = _live(record)
        if record is None or stat is None:
            results.append(ServerStatus(name=name, state="not running", ports=server.ports()))
            continue
        if stat.state == "T":
            # A stopped process cannot answer; asking would only burn the timeout.
            results.append(_status_of(server, record, None, error="paused (SIGSTOP)"))
            continue
        try:
            probe = server.probe(timeout)
        except InfraError as exc:
            results.append(_status_of(server, record, None, error=str(exc)))
            continue
        results.append(_status_of(server, record, probe))
    return results


# --- stop, signals -------------------------------------------------------------------------------


def stop_server(cfg: InfraConfig, name: str, *, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> str:
    """Stop one server gracefully, SIGKILL its process group after ``timeout`` seconds. Only the
    recorded process (pid and start time matching) and its group are signalled. Returns what was
    done: "stopped", "killed" or "not running"."""
    server = SERVER_TYPES[_check_name(name)](cfg)
    record = read_record(cfg, name)
    if record is None:
        return "not running"
    if _live(record) is None:
        _clear_leftovers(server, record)
        return "not running"
    os.kill(record.pid, server.graceful_signal)
    # A paused process acts on the signal only once it runs again.
    os.kill(record.pid, signal.SIGCONT)
    action = "stopped"
    if not _wait(lambda: _gone(record) and not _leftovers(server, record), timeout):
        action = "killed"
        for pid in [record.pid, *_leftovers(server, record)]:
            # The leader's pid is still verified (_live) or its group id cannot be recycled.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait(lambda: _gone(record), 10.0)
    _clear_leftovers(server, record)
    return action


def down(cfg: InfraConfig, servers: Iterable[str] | None = None, *,
         timeout: float = DEFAULT_STOP_TIMEOUT_S) -> list[ServerStatus]:
    """Stop every server (or those named) that ``up`` started; leaves anything else alone."""
    results = []
    for name in reversed(_names(servers)):
        server = SERVER_TYPES[name](cfg)
        results.append(ServerStatus(name=name, state="not running", ports=server.ports(),
                                    action=stop_server(cfg, name, timeout=timeout)))
    return list(reversed(results))


def signal_server(cfg: InfraConfig, name: str, sig: int) -> int:
    """Send ``sig`` to the recorded server process; returns its pid. Raises InfraError when
    that process is not running (never signals a pid it cannot prove it started)."""
    record = read_record(cfg, _check_name(name))
    if _live(record) is None or record is None:
        raise InfraError(f"{name} is not running (no live process started by auren infra)")
    os.kill(record.pid, sig)
    return record.pid


def kill_server(cfg: InfraConfig, name: str, sig: int = signal.SIGKILL, *,
                timeout: float = 10.0) -> int:
    """``kill -<sig>`` the server (default: kill -9, a crash). With SIGKILL, waits up to
    ``timeout`` seconds until the process is gone. The records are kept, so ``up`` (or
    ``restart_server``) restarts it on the same data."""
    record = read_record(cfg, _check_name(name))
    pid = signal_server(cfg, name, sig)
    if sig == signal.SIGKILL and record is not None and not _wait(lambda: _gone(record),
                                                                   timeout):
        raise InfraError(f"{name} (pid {pid}) still exists {timeout:.0f} s after SIGKILL")
    return pid


def pause_server(cfg: InfraConfig, name: str, *, timeout: float = 10.0) -> int:
    """SIGSTOP the server (a hung broker/database: connections stay open, nothing answers)."""
    record = read_record(cfg, _check_name(name))
    pid = signal_server(cfg, name, signal.SIGSTOP)
    if not _wait(lambda: (s := _live(record)) is not None and s.state == "T", timeout):
        raise InfraError(f"{name} (pid {pid}) did not stop within {timeout:.0f} s")
    return pid


def resume_server(cfg: InfraConfig, name: str, *, timeout: float = 10.0) -> int:
    """SIGCONT a paused server."""
    record = read_record(cfg, _check_name(name))
    pid = signal_server(cfg, name, signal.SIGCONT)
    if not _wait(lambda: (s := _live(record)) is None or s.state != "T", timeout):
        raise InfraError(f"{name} (pid {pid}) did not resume within {timeout:.0f} s")
    return pid


def restart_server(cfg: InfraConfig, name: str, *, timeout: float = DEFAULT_START_TIMEOUT_S,
                   stop_timeout: float = DEFAULT_STOP_TIMEOUT_S) -> ServerStatus:
    """Stop (gracefully, SIGKILL after ``stop_timeout``), start, and wait until it answers."""
    stop_server(cfg, name, timeout=stop_timeout)
    return up(cfg, [name], timeout=timeout, write_env=False)[0]


# --- connection URLs -----------------------------------------------------------------------------


def connection_env(cfg: InfraConfig) -> dict[str, str]:
    """The variables that point AUREN's services at this stack."""
    return dict(SERVER_TYPES[n](cfg).export() for n in ("postgres", "redis", "kafka"))


def export_lines(cfg: InfraConfig) -> list[str]:
    return [f"export {k}={shlex.quote(v)}" for k, v in connection_env(cfg).items()]


def write_env_file(cfg: InfraConfig) -> Path:
    """``<data>/infra/env``: the export lines, for ``. <data>/infra/env``. Mode 0600 because it
    holds the PostgreSQL password."""
    cfg.infra_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.env_file
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# Written by `auren infra up`: source it to use the stack.\n")
        fh.write("\n".join(export_lines(cfg)) + "\n")
    tmp.replace(path)
    return path


def postgres_admin_socket(cfg: InfraConfig) -> Path:
    """The superuser's socket directory (trust auth, reachable by root and the server's user):
    for tests and tools that must do what the app role may not."""
    return PostgresServer(cfg).run_dir
