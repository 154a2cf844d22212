"""``auren validate --quick`` against the running deployment, started from the console.

Single-flight: one run at a time per gateway process (a second start is 409 while one runs).
Bounded: the child is its own process group, stopped (SIGTERM, then SIGKILL after
``_GRACE_S``) when it outlives ``GATEWAY_VALIDATE_TIMEOUT_S`` or the gateway shuts down; its
output is kept as the last ``MAX_LINES`` lines of at most ``MAX_LINE_CHARS`` each, and its JSON
summary read from at most ``MAX_STDOUT_BYTES``. The console streams the lines and the phases
(``phase: <name> ...`` when one begins, ``phase: <name>: <STATUS>`` when it ends) as they come,
then the verdict and the report's directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from auren.errors import Conflict

MAX_LINES = 400
MAX_LINE_CHARS = 500
MAX_STDOUT_BYTES = 1_048_576
_GRACE_S = 10.0
_PHASE = re.compile(r"^phase: (?P<name>.+?)(?: \.\.\.|: (?P<status>[A-Z /]+))$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def validate_command(reports: Path, data_dir: Path) -> list[str]:
    """``auren validate --quick`` against the deployment the gateway fronts (``--deployed``:
    the ``AUREN_*_URL`` settings), reading its store for the reconciliation."""
    return [sys.executable, "-m", "auren", "validate", "--quick", "--deployed",
            "--reports", str(reports), "--data-dir", str(data_dir), "--json"]


class ValidateRunner:
    """One validation at a time: its state, its output so far, and who waits for more."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], timeout_s: float) -> None:
        self._command = list(command)
        self._env = dict(env)
        self._timeout_s = timeout_s
        self.state = "idle"  # idle | running | finished | failed | timed out | stopped
        self.lines: deque[tuple[int, str]] = deque(maxlen=MAX_LINES)
        self.phases: list[dict[str, str]] = []
        self.seq = 0
        self.started_by = ""
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.exit_code: int | None = None
        self.summary: dict[str, Any] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    @property
    def running(self) -> bool:
        return self.state == "running"

    def as_dict(self, after: int = -1) -> dict[str, Any]:
        summary = self.summary or {}
        report = (summary.get("report") or {}).get("html")
        return {
            "state": self.state, "seq": self.seq, "started_by": self.started_by,
            "started_at": self.started_at, "ended_at": self.ended_at,
            "exit_code": self.exit_code, "phases": self.phases,
            "lines": [text for seq, text in self.lines if seq > after],
            "verdict": summary.get("verdict"), "verdict_note": summary.get("verdict_note"),
            "report": Path(report).parent.name if report else None,
        }

    def start(self, who: str) -> None:
        """Start a run now.

        Raises:
            Conflict: one is already running (single-flight).
        """
        if self.running:
            raise Conflict("a validation is already running; watch it or wait for it to end")
        self.state, self.started_by = "running", who
        self.started_at, self.ended_at = time.time(), None
        self.exit_code, self.summary = None, None
        self.lines.clear()
        self.phases = []
        self._task = asyncio.create_task(self._run(), name="auren-console-validate")

    async def wait_change(self, seen: int, timeout_s: float) -> int:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self.seq > seen),
                                       timeout_s)
        return self.seq

    async def _note(self, text: str | None = None) -> None:
        async with self._changed:
            self.seq += 1
            if text is not None:
                self.lines.append((self.seq, text))
            self._changed.notify_all()

    async def _run(self) -> None:
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._command, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=self._env, start_new_session=True)
        except OSError as exc:
            self.state = "failed"
            await self._note(f"could not start: {exc}")
            return
        process = self._process
        assert process.stdout is not None and process.stderr is not None  # noqa: S101
        stdout = asyncio.create_task(process.stdout.read(MAX_STDOUT_BYTES))
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._follow(process.stderr)
                self.exit_code = await process.wait()
            self.state = "finished" if self.exit_code in (0, 1, 3) else "failed"
        except TimeoutError:
            self.state = "timed out"
            await self._note(f"stopped: still running after {self._timeout_s:g} s")
            await self._stop(process)
        except asyncio.CancelledError:
            self.state = "stopped"
            await self._stop(process)
            raise
        finally:
            self.ended_at = time.time()
            with contextlib.suppress(Exception):
                self.summary = _summary(await asyncio.wait_for(stdout, 5.0))
            if not stdout.done():
                stdout.cancel()
            await self._note()

    async def _follow(self, stream: asyncio.StreamReader) -> None:
        while True:
            raw = await stream.readline()
            if not raw:
                return
            text = _ANSI.sub("", raw.decode(errors="replace")).rstrip()[:MAX_LINE_CHARS]
            if not text:
                continue
            match = _PHASE.match(text)
            if match:
                name, status = match["name"], match["status"]
                if status is None:
                    self.phases.append({"name": name, "status": "running"})
                else:
                    for phase in reversed(self.phases):
                        if phase["name"] == name:
                            phase["status"] = status.lower()
                            break
            await self._note(text)

    @staticmethod
    async def _stop(process: asyncio.subprocess.Process) -> None:
        """SIGTERM to the child's process group (it started it: wrk, its engines), then
        SIGKILL after the grace time."""
        for sig, wait_s in ((signal.SIGTERM, _GRACE_S), (signal.SIGKILL, 5.0)):
            if process.returncode is not None:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), wait_s)

    async def close(self) -> None:
        """Stop a run in progress (the gateway is shutting down)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _summary(stdout: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(stdout)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
