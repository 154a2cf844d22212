"""The fault tests' load, sent from a process of its own.

Run by ``tests.test_fullstack_faults.run_load``: ``python -m tests.load_client URL PREFIX COUNT
RATE CONCURRENCY``. It prints ``started`` when the first webhook is scheduled (the test times
its faults from that line), then the ``LoadResult`` as one JSON line. Sent from the pytest
process itself, the latencies also measured that process: at the end of a long suite its heap
and its coverage tracer add pauses of their own to every request in flight, which are not the
bridge's.
"""

from __future__ import annotations

import asyncio
import sys

import orjson

from tests.stack import LoadResult, send_load


def encode(result: LoadResult) -> bytes:
    return orjson.dumps({
        "answers": {str(k): v for k, v in result.answers.items()},
        "records": {str(k): v for k, v in result.records.items()},
        "latencies": result.latencies,
        "timeline": result.timeline,
    })


def decode(line: bytes) -> LoadResult:
    data = orjson.loads(line)
    return LoadResult(
        answers={int(k): v for k, v in data["answers"].items()},
        records={int(k): v for k, v in data["records"].items()},
        latencies=list(data["latencies"]),
        timeline=[(float(a), float(b)) for a, b in data["timeline"]],
    )


def main(argv: list[str]) -> None:
    base_url, prefix, count, rate, concurrency = argv

    def started() -> None:
        sys.stdout.write("started\n")
        sys.stdout.flush()

    result = asyncio.run(send_load(base_url, prefix, int(count), rate=float(rate),
                                   concurrency=int(concurrency), on_start=started))
    sys.stdout.buffer.write(encode(result) + b"\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
