"""The console's validation runner with real child processes: one run at a time, the phases and
lines as they come, the JSON summary at the end, and a run past its time limit stopped with its
whole process group."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from auren.errors import Conflict
from auren.services.console.runner import ValidateRunner, validate_command

# Prints what `auren validate --quick --json` prints, in the same order and streams.
PHASES = textwrap.dedent("""
    import json, sys, time
    for name, status in (("health sweep", "PASS"), ("end-to-end chain", "FAIL")):
        print(f"phase: {name} ...", file=sys.stderr, flush=True)
        time.sleep(0.2)
        print(f"phase: {name}: {status}", file=sys.stderr, flush=True)
    print(json.dumps({"verdict": "FAIL", "verdict_note": "",
                      "report": {"html": "/reports/20260101T000000Z/report.html"}}))
    sys.exit(1)
""")
# A child that starts a grandchild and outlives its time limit.
HANGS = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"grandchild {child.pid}", file=sys.stderr, flush=True)
    time.sleep(600)
""")


def _runner(script: str, timeout_s: float = 30.0) -> ValidateRunner:
    return ValidateRunner([sys.executable, "-c", script], dict(os.environ), timeout_s)


async def _finish(runner: ValidateRunner, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    seen = -1
    while runner.running:
        assert time.monotonic() < deadline, runner.as_dict()
        seen = await runner.wait_change(seen, 1.0)


async def test_one_run_at_a_time_with_phases_lines_and_verdict() -> None:
    runner = _runner(PHASES)
    runner.start("ops")
    with pytest.raises(Conflict):
        runner.start("someone else")
    await _finish(runner, 20)
    state = runner.as_dict()
    assert state["state"] == "finished" and state["exit_code"] == 1
    assert state["phases"] == [{"name": "health sweep", "status": "pass"},
                               {"name": "end-to-end chain", "status": "fail"}]
    assert state["lines"][0] == "phase: health sweep ..." and len(state["lines"]) == 4
    assert state["verdict"] == "FAIL" and state["report"] == "20260101T000000Z"
    assert state["started_by"] == "ops"
    # Only what came after a given point, for a stream that already has the rest.
    assert runner.as_dict(after=state["seq"])["lines"] == []
    runner.start("ops")  # a finished run does not block the next
    await _finish(runner, 20)


async def test_a_run_past_its_limit_is_stopped_with_its_process_group() -> None:
    runner = _runner(HANGS, timeout_s=1.5)
    runner.start("ops")
    await _finish(runner, 30)
    state = runner.as_dict()
    assert state["state"] == "timed out"
    grandchild = int(next(line for line in state["lines"]
                          if line.startswith("grandchild")).split()[1])
    await asyncio.sleep(0.2)
    assert not psutil.pid_exists(grandchild) or \
        psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


async def test_closing_stops_a_run_in_progress() -> None:
    runner = _runner(HANGS)
    runner.start("ops")
    await asyncio.sleep(0.5)
    await runner.close()
    assert runner.state == "stopped" and not runner.running


def test_the_command_is_validate_quick_against_this_deployment(tmp_path: Path) -> None:
    command = validate_command(tmp_path / "reports", tmp_path / "data")
    assert command[1:] == ["-m", "auren", "validate", "--quick", "--deployed", "--reports",
                           str(tmp_path / "reports"), "--data-dir", str(tmp_path / "data"),
                           "--json"]
