"""``wrk`` as the closed-model engine for the highest rates, when it is installed.

wrk is C with an event loop per thread and out-runs any Python generator. The toolkit writes
one file of pre-signed, unique raw requests per wrk thread and a Lua script that sends each
request once, counts answers per status and sums the bridge's ``accepted``. If a thread's pool
runs out it starts over and counts ``wrapped``: repeated webhooks are re-deliveries, and the
step is reported invalid rather than silently measuring deduplication. wrk's latencies are
closed-model (no correction).

**Which request got which answer.** wrk's Lua hooks are per thread and carry no connection:
``response()`` cannot say which ``request()`` it answers when a thread drives several
connections. With one connection per thread (``-t`` = ``-c``) the calls strictly alternate on
each Lua state: wrk calls ``request()`` when a connection starts a new request (after the
previous answer, or after a reconnect that abandoned it) and ``response()`` when that answer has
been read. So the script remembers the pool position it handed out last, and ``response()``
appends "position status" to a per-thread answers file; a ``request()`` that follows another
without an answer in between means the first one's answer was never read (a transport error),
and what was handed out last when wrk stopped was in flight. When the workload knows its ids
(webhooks), the toolkit runs wrk that way and fills the step's ledger from those files; each
thread is an OS thread blocked in epoll most of the time, so hundreds of them are cheap.

**Latency by outcome.** wrk's own latencies mix every answer: under overload the 503s that
admission sheds come back at once and would flatter the admitted requests' tail. The script
also writes each answer's latency (from ``request()`` to ``response()``, on the monotonic
clock through LuaJIT's FFI) so that the 2xx answers' percentiles stand apart
(``admitted_ms``); and it counts 503s without ``Retry-After``, which a shed must carry.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from auren.ops.loadgen import RequestFactory, StepResult, exact_summary, new_ledger

# The one wrk script for signed webhooks: the toolkit's wrk engine and bench/ both use it.
LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } auren_timespec;
int clock_gettime(int clock_id, auren_timespec *tp);
]]
local clock = ffi.new("auren_timespec")
local function now_us()
   ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
   return tonumber(clock.tv_sec) * 1000000 + math.floor(tonumber(clock.tv_nsec) / 1000)
end
local threads = {}
local next_id = 0
function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end
function init(args)
   local file = assert(io.open(args[1] .. "." .. id, "rb"))
   pool = {}
   while true do
      local length = file:read("*l")
      if not length then break end
      pool[#pool + 1] = file:read(tonumber(length))
   end
   file:close()
   loaded, cursor, wrapped, accepted, statuses, no_retry = #pool, 0, 0, 0, {}, 0
   -- With one connection per thread: "position status latency_us" of every answer read
   -- (see wrk.py).
   if args[2] then
      answers = assert(io.open(args[2] .. "." .. id, "w"))
      answers:setvbuf("full")
   end
   handed = nil
end
function request()
   cursor = cursor + 1
   if cursor > loaded then cursor = 1; wrapped = wrapped + 1 end
   handed = cursor
   handed_at = now_us()
   return pool[cursor]
end
function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status == 503 and not (headers["retry-after"] or headers["Retry-After"]) then
      no_retry = no_retry + 1
   end
   if status >= 200 and status < 300 and body then
      accepted = accepted + (tonumber(body:match('"accepted":(%d+)')) or 0)
   end
   if answers and handed then
      answers:write(handed, " ", status, " ", now_us() - handed_at, "\n")
      handed = nil
   end
end
function done(summary, latency, requests)
   local totals, w, a, r = {}, 0, 0, 0
   for _, t in ipairs(threads) do
      for s, n in pairs(t:get("statuses")) do totals[s] = (totals[s] or 0) + n end
      w = w + t:get("wrapped")
      a = a + t:get("accepted")
      r = r + t:get("no_retry")
   end
   io.write(string.format("AUREN no_retry_after_503 %d\n", r))
   for s, n in pairs(totals) do io.write(string.format("AUREN status %d %d\n", s, n)) end
   local l = 0
   for _, t in ipairs(threads) do
      l = l + t:get("loaded")
      io.write(string.format("AUREN handed %d %d %d\n", t:get("id"), t:get("cursor"),
                             t:get("wrapped")))
   end
   io.write(string.format("AUREN loaded %d\nAUREN wrapped %d\nAUREN accepted %d\n", l, w, a))
   for _, p in ipairs({50, 90, 95, 99, 99.9}) do
      io.write(string.format("AUREN latency_us p%s %d\n", p, latency:percentile(p)))
   end
   io.write(string.format("AUREN latency_us max %d\nAUREN latency_us mean %d\n",
                          latency.max, latency.mean))
   io.write(string.format("AUREN requests %d\nAUREN duration_us %d\n",
                          summary.requests, summary.duration))
   local e = summary.errors
   io.write(string.format("AUREN errors %d %d %d %d\n", e.connect, e.read, e.write, e.timeout))
end
"""

THREADS = 2


def available() -> bool:
    return shutil.which("wrk") is not None


def parse(output: str, result: StepResult) -> StepResult:
    for match in re.finditer(r"^AUREN (\w+) (\S+)(?: (\S+))?(?: (\S+))?(?: (\S+))?$", output,
                             re.M):
        kind = match[1]
        if kind == "status":
            result.statuses[int(match[2])] = int(match[3])
        elif kind == "wrapped":
            result.wrapped = int(match[2])
        elif kind == "accepted":
            result.accepted_items = int(match[2])
        elif kind == "no_retry_after_503":
            result.no_retry_after_503 = int(match[2])
        elif kind == "latency_us":
            result.latency_ms[match[2]] = round(float(match[3]) / 1000, 3)
        elif kind == "requests":
            result.completed = int(match[2])
        elif kind == "duration_us":
            result.duration_s = int(match[2]) / 1_000_000
        elif kind == "errors":
            for name, value in zip(("connect", "read", "write", "timeout"),
                                   (match[2], match[3], match[4], match[5]), strict=True):
                if int(value):
                    result.errors[name] = int(value)
    # wrk counts a request when its answer arrived; transport errors are on top of that.
    result.sent = result.completed + sum(result.errors.values())
    return result


def run(base_url: str, factory: RequestFactory, *, connections: int, duration_s: float,
        pool_size: int, timeout_s: float = 10.0, label: str = "") -> StepResult:
    """One closed-model step with wrk; ``pool_size`` unique requests are rendered up front.

    When the workload knows its ids, wrk runs one connection per thread and the step's ledger
    says which request got which answer (see the module docstring)."""
    result = StepResult(label, "closed", "wrk", connections, None, statuses=Counter(),
                        ledger=new_ledger(factory))
    ledger = result.ledger
    tracked = ledger.identity is not None
    threads = connections if tracked else min(THREADS, connections)
    with tempfile.TemporaryDirectory(prefix="auren-wrk-") as tmp:
        prefix = Path(tmp) / "requests"
        answers = Path(tmp) / "answers"
        requests = factory(pool_size)
        ledger.rendered(len(requests))
        write_pools(prefix, [raw for raw, _items in requests], threads)
        del requests
        script = Path(tmp) / "auren.lua"
        script.write_text(LUA)
        seconds = max(1, round(duration_s))
        cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
               f"--timeout={max(1, round(timeout_s))}s", "-s", str(script), base_url, "--",
               str(prefix), *([str(answers)] if tracked else [])]
        started = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(cmd, capture_output=True, text=True,  # noqa: S603 - fixed argv
                              timeout=seconds + 60, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[:300]}")
        parse(done.stdout, result)
        if tracked:
            fill_ledger(result, answers, threads, pool_size, done.stdout)
    if not result.duration_s:
        result.duration_s = elapsed
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result.generator_cpu_pct = round(100 * used / elapsed, 1)
    # Threads beyond the cores only wait: the generator is saturated at all cores busy.
    busy = min(threads, os.cpu_count() or 1)
    if result.generator_cpu_pct >= 95.0 * busy:
        result.invalid = True
        result.invalid_reason = (f"wrk used {result.generator_cpu_pct:.0f} % CPU ({busy} "
                                 "cores busy): the generator set the pace")
    if result.wrapped:
        result.invalid = True
        result.invalid_reason = (f"wrk ran out of its {pool_size} pre-signed requests and "
                                 f"repeated {result.wrapped} pools: re-deliveries measured")
    return result


def write_pools(prefix: Path, requests: list[bytes], threads: int) -> None:
    """``<prefix>.<t>`` for each wrk thread ``t``: the raw requests ``t, t + threads, ...``
    (render order), each after a line with its length, as the Lua script reads them. Disjoint,
    so no request is sent twice; :func:`fill_ledger` relies on this layout."""
    for thread in range(threads):
        with open(f"{prefix}.{thread}", "wb") as out:
            for raw in requests[thread::threads]:
                out.write(b"%d\n" % len(raw))
                out.write(raw)


def fill_ledger(result: StepResult, answers: Path, threads: int, pool_size: int,
                output: str) -> None:
    """Each thread's answers file into the ledger: thread ``t``'s pool position ``p``
    (1-based) is request ``t + (p - 1) * threads``. What a thread handed out and has no answer
    for was in flight (or failed); what it never handed out was never sent."""
    ledger = result.ledger

    def seq(thread: int, position: int) -> int:
        return thread + (position - 1) * threads

    handed: dict[int, tuple[int, int]] = {}
    admitted_ms: list[float] = []
    for match in re.finditer(r"^AUREN handed (\d+) (\d+) (\d+)$", output, re.M):
        handed[int(match[1])] = (int(match[2]), int(match[3]))
    if len(handed) != threads:
        raise RuntimeError(f"wrk reported {len(handed)} of {threads} threads: the answers "
                           "cannot be attributed")
    for thread, (cursor, wrapped) in handed.items():
        loaded = len(range(thread, pool_size, threads))
        last = loaded if wrapped else cursor
        for position in range(1, last + 1):
            ledger.sent(seq(thread, position))
        path = Path(f"{answers}.{thread}")
        if not path.exists():
            continue
        with path.open() as lines:
            for line in lines:
                where, status, *latency = line.split()
                ledger.answered(seq(thread, int(where)), int(status))
                if latency and 200 <= int(status) < 300:
                    admitted_ms.append(int(latency[0]) / 1000)
    result.admitted_ms = exact_summary(admitted_ms)
    counts = ledger.counts()
    # wrk stops with a request on most connections: those were cut off by the end of the step,
    # neither answered nor failed (wrk counts its transport errors apart). They stay
    # "unanswered" in the ledger (proving nothing to the reconciliation) but are not failures
    # of the server: counted as such, 100 connections at 500 answers/s over 10 s read as 2 %
    # errors whatever the server did.
    failed = sum(n for kind, n in result.errors.items() if kind != "connect")
    result.cut_off = max(0, counts["unanswered"] - failed)
    result.sent = (counts["acknowledged"] + counts["rejected"] + counts["unanswered"]
                   - result.cut_off)
