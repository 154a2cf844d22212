"""The JSON log lines, written by a process of its own (stderr is real)."""

from __future__ import annotations

import signal
import subprocess
import sys

import orjson

SCRIPT = """
import logging, sys, time
from auren.observability import configure_logging
configure_logging("INFO")
log = logging.getLogger("auren.test")
log.info("first", extra={"count": 1, "secret": "dropped"})
log.info("second")
sys.stdout.write("emitted\\n"); sys.stdout.flush()
time.sleep(float(sys.argv[1]))
log.warning("third")
for i in range(int(sys.argv[2])):
    log.info("burst", extra={"count": i})
"""


def test_lines_keep_their_order_and_only_allowed_fields() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, "0", "2000"],
                         capture_output=True, timeout=30, check=True)
    lines = [orjson.loads(x) for x in out.stderr.splitlines()]
    assert [line["msg"] for line in lines[:3]] == ["first", "second", "third"]
    assert [line["count"] for line in lines[3:]] == list(range(2_000))
    assert lines[0]["count"] == 1 and "secret" not in lines[0]
    assert lines[2]["level"] == "WARNING" and lines[0]["logger"] == "auren.test"


def test_every_line_is_out_when_it_is_emitted() -> None:
    """Nothing waits in a buffer: a service ended by a signal (uvicorn re-raises SIGTERM after
    its graceful shutdown, no exit handler runs) has written every line it logged."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "5.0", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"emitted\n"
        proc.terminate()  # during the pause: killed by the signal, no atexit
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGTERM
        assert [orjson.loads(line)["msg"] for line in err.splitlines()] == ["first", "second"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_the_fast_info_line_is_the_line_logging_writes_and_other_handlers_still_get_it(
        caplog) -> None:
    import io
    import logging

    from auren.observability import (
        REQUEST_ID,
        JsonFormatter,
        JsonStreamHandler,
        log_info_fast,
    )

    root, stream = logging.getLogger(), io.StringIO()
    handler = JsonStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    saved = root.handlers[:], root.level
    fields = {"service": "bridge", "method": "POST", "path": "/webhooks/x", "status": 202,
              "duration_ms": 1.5, "user_id": "never logged"}
    logger = logging.getLogger("auren.access.test")
    token = REQUEST_ID.set("f" * 32)
    try:
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        logger.info("request", extra=fields)
        log_info_fast(logger, "request", fields)
        handler.flush()
        slow, fast = (orjson.loads(line) for line in stream.getvalue().splitlines())
        assert slow.pop("ts")[:19] == fast.pop("ts")[:19]
        assert slow == fast == {"level": "INFO", "logger": "auren.access.test",
                                "msg": "request", "request_id": "f" * 32,
                                **{k: v for k, v in fields.items() if k != "user_id"}}
        # Another handler on the way (pytest's here): the line goes through logging, to both.
        root.addHandler(caplog.handler)
        log_info_fast(logger, "request", fields)
        handler.flush()
        assert len(stream.getvalue().splitlines()) == 3
        assert [r.getMessage() for r in caplog.records] == ["request"]
        root.setLevel(logging.WARNING)
        log_info_fast(logger, "request", fields)  # below the level: nowhere
        handler.flush()
        assert len(stream.getvalue().splitlines()) == 3
    finally:
        REQUEST_ID.reset(token)
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


class _CountingStream:
    """A stream that records each write (to see how many system calls a service would make)."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def lines(self) -> list[dict[str, object]]:
        return [orjson.loads(line) for line in "".join(self.writes).splitlines()]


def test_access_lines_on_a_loop_go_out_together_at_its_next_turn_and_before_any_record(
        ) -> None:
    import asyncio
    import logging

    from auren.observability import JsonFormatter, JsonStreamHandler, log_info_fast

    root, stream = logging.getLogger(), _CountingStream()
    handler = JsonStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    saved = root.handlers[:], root.level
    access, other = logging.getLogger("auren.access.turns"), logging.getLogger("auren.turns")

    async def serve() -> None:
        for n in range(3):
            log_info_fast(access, "request", {"status": 200 + n})
        assert stream.writes == []  # gathered, not yet written
        await asyncio.sleep(0)  # the loop's next turn
        assert len(stream.writes) == 1
        assert [line["status"] for line in stream.lines()] == [200, 201, 202]
        log_info_fast(access, "request", {"status": 203})
        other.warning("a record")  # the gathered line goes first, without waiting a turn
        assert [line["msg"] for line in stream.lines()][-2:] == ["request", "a record"]
        log_info_fast(access, "request", {"status": 204})

    try:
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        asyncio.run(serve())
        # The loop is gone before its next turn: the line still goes out, at the latest on a
        # flush (logging's own at exit), or at once off a loop.
        handler.flush()
        assert [line.get("status") for line in stream.lines()][-1] == 204
        log_info_fast(access, "request", {"status": 205})
        assert [line.get("status") for line in stream.lines()][-1] == 205
        assert [line.get("status") for line in stream.lines()] == [200, 201, 202, 203, None,
                                                                     204, 205]
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
