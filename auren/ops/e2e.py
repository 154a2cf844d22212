"""The functional chain, end to end, against real services.

1. NEUROS answers "confirm you are operational" (200 and a reply).
2. NEUROS is asked about a fresh user's HRV: nothing yet.
3. Every configured provider: a tampered delivery is rejected (4xx), then correctly signed
   deliveries in the provider's own wire format are accepted (2xx).
4. The store grew by exactly what the bridge said it accepted (waiting a bounded time for the
   full stack's sink, which writes asynchronously from Kafka).
5. Full stack: the Kafka topic exists and its offsets grew.
6. NEUROS's next answer about the same user reflects the data just ingested.

Each step is a row: pass, fail or n/a with the reason.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from auren.ops import deps
from auren.ops.health import FAIL, NA, PASS
from auren.ops.target import Target
from auren.sim.render import (
    PROVIDERS,
    ProviderTarget,
    WebhookDelivery,
    render_deliveries,
    resolve_providers,
)
from auren.sim.wearers import UserHistory, generate_users

# How each provider's delivery is tampered with: its signature covers the body ("body"), or it
# authenticates with a header value only ("header": that value is altered).
TAMPER_HEADER = {"garmin": "garmin-client-id", "apple": "api-key"}
UNSIGNED = {"withings": "Withings signs nothing (IP allow-list only): no tamper to detect"}
OPERATIONAL = "Confirm you are operational"
QUESTION = "What is my HRV?"
DAYS = 3
SINK_WAIT_S = 30.0


@dataclass
class Step:
    name: str
    status: str
    detail: str = ""
    ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ms"] = None if self.ms is None else round(self.ms, 1)
        return data


@dataclass
class E2EResult:
    steps: list[Step] = field(default_factory=list)
    accepted: int = 0

    @property
    def ok(self) -> bool:
        return not any(s.status == FAIL for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "accepted": self.accepted,
                "steps": [s.as_dict() for s in self.steps]}


def tampered(delivery: WebhookDelivery) -> WebhookDelivery | None:
    """The same delivery with its authentication broken, or None when nothing authenticates it.
    """
    if delivery.provider in UNSIGNED:
        return None
    headers = dict(delivery.headers)
    header = TAMPER_HEADER.get(delivery.provider)
    if header is not None:
        headers[header] = "tampered-" + headers.get(header, "")
        body = delivery.body
    else:
        body = delivery.body + b" "  # one byte more: every body signature breaks
    return WebhookDelivery(delivery.provider, delivery.path, headers, body,
                                     delivery.delivery_id, delivery.user_id, delivery.items)


def _items(response: httpx.Response, delivery: WebhookDelivery) -> int:
    """Items the bridge newly made durable: its ``accepted``, or for Fitbit's empty 204 each
    notification (one fetch job each; the run's data is fresh, so none is a duplicate)."""
    if response.status_code == 204:
        return delivery.items
    try:
        body = response.json()
    except ValueError:
        return 0
    accepted = body.get("accepted", 0) if isinstance(body, dict) else 0
    return accepted if isinstance(accepted, int) else 0


def _auth_headers(target: Target) -> dict[str, str]:
    keys = target.settings.auren_api_keys
    return {"authorization": f"Bearer {keys[0].get_secret_value()}"} if keys else {}


async def _chat(client: httpx.AsyncClient, target: Target, user: str, message: str
                ) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await client.post(target.urls["neuros"] + "/chat",
                                 json={"message": message, "user_id": user},
                                 headers=_auth_headers(target))
    return response, (time.perf_counter() - started) * 1000


def _hrv_days(answer: dict[str, Any]) -> int:
    return max((e.get("n_days", 0) for e in answer.get("evidence", [])
                if e.get("metric") == "hrv_rmssd" and e.get("value") is not None), default=0)


async def run_e2e(target: Target, *, timeout_s: float = 10.0, seed: int | None = None
                  ) -> E2EResult:
    result = E2EResult()
    steps = result.steps
    bridge = target.urls["bridge"]
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), trust_env=False) as client:
        # 1. NEUROS is up and answers.
        user_probe = f"e2e-{uuid.uuid4().hex[:10]}"
        try:
            response, ms = await _chat(client, target, user_probe, OPERATIONAL)
            ok = response.status_code == 200 and bool(response.json().get("reply"))
            steps.append(Step("NEUROS answers \"confirm you are operational\"",
                              PASS if ok else FAIL, f"HTTP {response.status_code}", ms))
        except (httpx.HTTPError, ValueError) as exc:
            steps.append(Step("NEUROS answers \"confirm you are operational\"", FAIL,
                              f"no answer: {type(exc).__name__}"))

        # 2. Baselines: the store, Kafka, and what NEUROS knows about the fresh user.
        histories = generate_users(1, DAYS, seed if seed is not None
                                             else int(time.time()))
        user = histories[0].user_id
        before_answer: dict[str, Any] | None = None
        try:
            response, _ = await _chat(client, target, user, QUESTION)
            before_answer = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            before_answer = None
        store_before = await _count(target)
        offsets_before = await _offsets(target)

        # 3. Every provider: tampered rejected, genuine accepted.
        names = list(PROVIDERS)
        providers, skipped = resolve_providers(target.settings, names)
        for name, why in skipped.items():
            steps.append(Step(f"{name}: signed webhook accepted, tampered rejected", NA,
                              f"not configured here: {why}"))
        accepted = 0
        for provider in providers:
            step, items = await _provider_step(client, bridge, provider, histories)
            steps.append(step)
            accepted += items
        result.accepted = accepted

        # 4. The store grew by exactly what was accepted.
        steps.append(await _store_step(target, store_before, accepted))
        # 5. Kafka (full stack only).
        steps.append(await _kafka_step(target, offsets_before))
        # 6. NEUROS reflects the new data.
        steps.append(await _reflects_step(client, target, user, before_answer))
    return result


async def _provider_step(client: httpx.AsyncClient, bridge: str,
                         provider: ProviderTarget,
                         histories: list[UserHistory]) -> tuple[Step, int]:
    name = f"{provider.name}: signed webhook accepted, tampered rejected"
    deliveries = list(render_deliveries(histories, [provider]))
    if not deliveries:
        return Step(name, NA, "the simulator renders nothing for this provider"), 0
    problems: list[str] = []
    started = time.perf_counter()
    bad = tampered(deliveries[0])
    if bad is None:
        tamper_note = UNSIGNED.get(provider.name, "no tamper possible")
    else:
        try:
            response = await client.post(bridge + bad.path, content=bad.body, headers=bad.headers)
            tamper_note = f"tampered → {response.status_code}"
            if not 400 <= response.status_code < 500:
                problems.append(f"tampered delivery answered {response.status_code}, not 4xx")
        except httpx.HTTPError as exc:
            problems.append(f"tampered delivery: {type(exc).__name__}")
            tamper_note = "tampered → no answer"
    items = 0
    statuses: list[int] = []
    for delivery in deliveries:
        try:
            response = await client.post(bridge + delivery.path, content=delivery.body,
                                         headers=delivery.headers)
        except httpx.HTTPError as exc:
            problems.append(f"signed delivery: {type(exc).__name__}")
            continue
        statuses.append(response.status_code)
        if 200 <= response.status_code < 300:
            items += _items(response, delivery)
        else:
            problems.append(f"signed delivery answered {response.status_code}: "
                            f"{response.text[:120]}")
    ms = (time.perf_counter() - started) * 1000
    detail = (f"{len(deliveries)} signed → {sorted(set(statuses))}, {items} items accepted; "
              f"{tamper_note}")
    if problems:
        return Step(name, FAIL, "; ".join(problems[:3]) + f" ({detail})", ms), items
    return Step(name, PASS, detail, ms), items


async def _count(target: Target) -> deps.StoreCount | str:
    try:
        return await target.count_store()
    except deps.ProbeFailed as exc:
        return str(exc)


async def _offsets(target: Target) -> int | str | None:
    bootstrap = target.settings.kafka_bootstrap_servers
    if not bootstrap:
        return None
    try:
        return await deps.kafka_offsets(target.settings)
    except deps.ProbeFailed as exc:
        return str(exc)


async def _store_step(target: Target, before: deps.StoreCount | str, accepted: int) -> Step:
    name = f"store ({target.store_name}) grew by exactly what was accepted"
    if isinstance(before, str):
        return Step(name, NA, f"cannot read the store: {before}")
    # The embedded bridge answers after its commit; the full stack's sink writes from Kafka
    # shortly after: wait for it, boundedly, and stop early on an exact match.
    deadline = time.monotonic() + (SINK_WAIT_S if not target.embedded else 2.0)
    while True:
        after = await _count(target)
        if isinstance(after, str):
            return Step(name, FAIL, f"cannot read the store afterwards: {after}")
        grew = after.items - before.items
        if grew == accepted or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    detail = (f"accepted {accepted}, store grew by {grew} ({after.events - before.events} "
              f"events, {after.fetch_jobs - before.fetch_jobs} fetch jobs)")
    if grew < accepted:
        return Step(name, FAIL, f"LOST {accepted - grew}: {detail}")
    if grew > accepted:
        # Other writers (a concurrent load) can add rows; an exact chain needs a quiet system.
        return Step(name, FAIL, f"{grew - accepted} more rows than accepted: {detail}")
    return Step(name, PASS, detail)


async def _kafka_step(target: Target, before: int | str | None) -> Step:
    name = "Kafka topic exists and its offsets grew"
    bootstrap = target.settings.kafka_bootstrap_servers
    if before is None or not bootstrap:
        return Step(name, NA, "embedded mode: no Kafka in this deployment")
    if isinstance(before, str):
        return Step(name, FAIL, before)
    try:
        after = await deps.kafka_offsets(target.settings)
    except deps.ProbeFailed as exc:
        return Step(name, FAIL, str(exc))
    if after <= before:
        return Step(name, FAIL, f"offsets did not grow ({before} → {after})")
    topics = " + ".join(deps.deployment_topics(target.settings))
    return Step(name, PASS, f"{topics}: {before} → {after}")


async def _reflects_step(client: httpx.AsyncClient, target: Target, user: str,
                         before: dict[str, Any] | None) -> Step:
    name = "NEUROS's next answer reflects the ingested data"
    try:
        response, ms = await _chat(client, target, user, QUESTION)
        after = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        return Step(name, FAIL, f"no answer: {type(exc).__name__}")
    if after is None:
        return Step(name, FAIL, f"HTTP {response.status_code}")
    days_before = _hrv_days(before or {})
    days_after = _hrv_days(after)
    detail = f"HRV nights in the evidence: {days_before} → {days_after}; “{after['reply'][:90]}”"
    if days_after <= days_before:
        return Step(name, FAIL, detail, ms)
    return Step(name, PASS, detail, ms)
