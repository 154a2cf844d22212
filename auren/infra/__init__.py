"""The loopback stack for development and CI: real Kafka, PostgreSQL and Redis, without Docker.

This room is tooling, not part of a deployment: ``auren infra up | status | down`` and the
full-stack tests use it. ``stack`` starts, watches and stops the server processes (pid files,
signals, bounded waits), ``servers`` knows how each server is installed, configured and asked a
real question, ``base`` holds the configuration and bounded subprocess helpers, and
``kafka/pom.xml`` (package data) is the Maven project that names the Kafka version.

The public API is re-exported here::

    from auren.infra import InfraConfig, connection_env, down, status, up
"""

from auren.infra.base import InfraConfig, InfraError
from auren.infra.stack import (
    DEFAULT_PROBE_TIMEOUT_S,
    DEFAULT_START_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    SERVER_NAMES,
    ProcessRecord,
    ServerStatus,
    connection_env,
    down,
    export_lines,
    kill_server,
    pause_server,
    postgres_admin_socket,
    read_record,
    restart_server,
    resume_server,
    running_pid,
    signal_server,
    status,
    stop_server,
    up,
    write_env_file,
)

__all__ = [
    "DEFAULT_PROBE_TIMEOUT_S",
    "DEFAULT_START_TIMEOUT_S",
    "DEFAULT_STOP_TIMEOUT_S",
    "SERVER_NAMES",
    "InfraConfig",
    "InfraError",
    "ProcessRecord",
    "ServerStatus",
    "connection_env",
    "down",
    "export_lines",
    "kill_server",
    "pause_server",
    "postgres_admin_socket",
    "read_record",
    "restart_server",
    "resume_server",
    "running_pid",
    "signal_server",
    "status",
    "stop_server",
    "up",
    "write_env_file",
]
