"""The Original Bridge (v1) against the Enhanced Bridge (v2): the "100x" claim, measured.

    python bench/bridge_compare.py [--runs 3] [--connections 100] [--duration 10]
                                   [--ramp 25,50,100,200,400,800] [--stack embedded|full]
                                   [--engine auto|builtin|wrk] [--json out.json]

Starts a private deployment (``embedded``: SQLite in a temporary directory; ``full``: Kafka,
PostgreSQL and Redis of a private ``auren infra`` stack on free ports, with the sink), then runs
``auren.ops.compare`` — the library behind ``auren loadtest --compare legacy,bridge`` — for
``--runs`` rounds: in each, both bridges get the same unique signed webhooks over the same
number of connections (wrk from 100 connections when installed), one after the other (the order
alternating from round to round), a steady step and a ramp to the highest concurrency that still
meets the webhook SLA (p95 < 500 ms, errors < 1 %). Every webhook is reconciled by identity
against the store. Prints the medians, the ratios and the verdict on the claim, and writes the
whole comparison as JSON (``bench/results/`` by default, ignored by git).

The machine is whatever runs it: on a shared machine the figures move between runs, which is
why the ratio is the median of rounds taken back to back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from auren.ops import compare, sla
from auren.ops.target import Target, resolve

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def deployment(stack: str) -> Iterator[Target]:
    """The services on free loopback ports. Full: a private ``auren infra`` stack, the
    services and the sink talking to it directly (no fault proxy in the measured path)."""
    if stack == "embedded":
        with resolve(overrides={}, deployed=False,
                     data_dir=Path(tempfile.mkdtemp(prefix="auren-compare-"))) as target:
            yield target
        return
    from auren import infra
    from auren.infra import InfraConfig
    from auren.ops import placement
    from auren.ops.procs import SERVICES, ServiceSet, generated_secrets
    from auren.ops.target import settings_from_env

    root = Path(tempfile.mkdtemp(prefix="auren-compare-stack-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data dir
    ports = placement.free_ports(4)
    cfg = InfraConfig(data_dir=root / "stack", kafka_port=ports[0],
                      kafka_controller_port=ports[1], postgres_port=ports[2],
                      redis_port=ports[3])
    try:
        print(f"bringing a private full stack up in {root} ...")
        infra.up(cfg, timeout=600, write_env=False)
        base = {k: v for k, v in os.environ.items() if not k.endswith(("_URL", "_SERVERS"))}
        env = {**base, **generated_secrets(base), "LOG_LEVEL": "INFO",
               **infra.connection_env(cfg)}
        service_ports = dict(zip(SERVICES, placement.free_ports(len(SERVICES)), strict=True))
        with ServiceSet(root / "services", env, service_ports) as services:
            yield Target(services.urls, settings_from_env(services.env), root / "services",
                         services.pids, services.log_paths, started_here=True)
    finally:
        try:
            infra.down(cfg, timeout=60)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--ramp", default=",".join(f"{v:g}" for v in compare.DEFAULT_LEVELS))
    parser.add_argument("--stack", choices=("embedded", "full"), default="embedded")
    parser.add_argument("--engine", choices=("auto", "builtin", "wrk"), default="auto")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    levels = tuple(float(v) for v in args.ramp.split(","))
    plan = compare.Plan(args.connections, args.duration, levels, min(args.duration, 5.0),
                        args.runs, args.engine)
    with deployment(args.stack) as target:
        result = compare.run(target, plan, sla.webhook_row(sla.load(None)), log=print)
    summary = result.as_dict()
    for metric, base, new, ratio in compare.table_rows(summary):
        print(f"{metric:42} {base:>16} {new:>16} {ratio:>8}")
    print(summary["verdict"])
    for text in summary["differences"]:
        print(f"  - {text}")
    recon = summary["reconciliation"]
    print(f"reconciliation: {recon['status'].upper()} {recon['detail']}")
    out = args.json or (ROOT / "bench" / "results" /
                        f"compare-{args.stack}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**summary, "steps": [s.as_dict() for s in result.steps]},
                              indent=2, default=str) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
