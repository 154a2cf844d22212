"""The simulator: deterministic physiology, unique and correctly signed deliveries, and a
delivery engine checked against a real bridge process.

Signatures are checked with the real provider classes (``verify`` then ``parse``), never with
the simulator's own code; the native fast path is also compared with an HMAC computed here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from auren.cli import app
from auren.events import METRICS
from auren.providers import PROVIDER_CLASSES
from auren.providers.base import WebhookRequest
from auren.providers.native import NativeProvider
from auren.settings import Settings
from auren.sim.load import render_unique_native
from auren.sim.render import PROVIDERS, WebhookDelivery, render_deliveries, resolve_providers
from auren.sim.send import deliver
from auren.sim.wearers import DayRecord, generate_users
from tests.helpers import NATIVE_KEY, NATIVE_SECRET, ServerProcess, free_port, run_server

END = date(2026, 3, 31)

# A secret (or switch) for every provider, as the bridge would read them from the environment.
ALL_SECRETS = {
    "standard_webhook_secret": f"{NATIVE_SECRET},whsec_{base64.b64encode(b'o' * 32).decode()}",
    "terra_signing_secret": "terra-secret",
    "garmin_client_id": "garmin-consumer-key",
    "hae_api_keys": "hae-key",
    "oura_client_secret": "oura-secret",
    "whoop_client_secret": "whoop-secret",
    "fitbit_client_secret": "fitbit-secret",
    "polar_signature_secret": "polar-secret",
    "withings_enabled": "true",
}


def _settings(**values: str) -> Settings:
    # Built from explicit values only, so the developer's environment cannot leak in.
    return Settings.model_validate(values)


def _request(delivery: WebhookDelivery) -> WebhookRequest:
    headers = {k.lower(): v for k, v in delivery.headers.items()}
    return WebhookRequest("POST", headers, {}, delivery.body, "127.0.0.1")


# --- generation ---------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_histories_and_another_seed_does_not() -> None:
    first = generate_users(4, 60, seed=11, end_date=END)
    again = generate_users(4, 60, seed=11, end_date=END)
    other = generate_users(4, 60, seed=12, end_date=END)
    assert first == again
    assert [d.hrv_rmssd_ms for d in first[0].days] != [d.hrv_rmssd_ms for d in other[0].days]
    # Each user has its own stream: user 2 does not depend on how many users were generated.
    assert generate_users(9, 60, seed=11, end_date=END)[2] == first[2]
    assert first[0].days[-1].day == END and len(first[0].days) == 60
    assert len({h.user_id for h in first}) == 4


def _pearson(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return cov / math.sqrt(sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))


def test_generated_days_are_physiologically_plausible() -> None:
    histories = generate_users(25, 150, seed=3, end_date=END)
    days: list[DayRecord] = [d for h in histories for d in h.days]
    for d in days:
        assert 4.5 * 3600 <= d.sleep_duration_s <= 9.5 * 3600
        assert d.deep_s + d.light_s + d.rem_s == d.sleep_duration_s
        assert min(d.deep_s, d.light_s, d.rem_s, d.awake_s) > 0
        assert d.light_s > d.deep_s  # light sleep is the largest stage in adults
        assert (d.sleep_end - d.sleep_start).total_seconds() == d.time_in_bed_s
        assert abs(d.sleep_duration_s / d.time_in_bed_s * 100 - d.sleep_efficiency_pct) < 0.2
        assert 75 <= d.sleep_efficiency_pct <= 97.5
        assert 12 <= d.hrv_rmssd_ms <= 180
        assert 45 <= d.resting_hr_bpm <= 70
        assert 94 <= d.spo2_pct <= 99
        assert 12 <= d.respiratory_rate <= 18
        assert 2000 <= d.steps <= 18000
        assert 60 <= d.active_energy_kcal <= 1400
        assert -0.5 <= d.temperature_deviation_c <= (2.0 if d.fever else 0.5)
        assert d.sleep_end <= d.day_start + (d.day_end - d.day_start) / 2  # woke before noon
    assert all(30 <= h.profile.hrv_baseline_ms <= 90 for h in histories)
    hours = [d.sleep_duration_s / 3600 for d in days]
    deciles = statistics.quantiles(hours, n=10)
    assert deciles[0] >= 6.0 and deciles[-1] <= 8.6

    # Free nights (ending Saturday or Sunday morning) are longer than work nights.
    weekend = [d.sleep_duration_s for d in days if d.day.weekday() >= 5]
    weekday = [d.sleep_duration_s for d in days if d.day.weekday() < 5]
    assert statistics.fmean(weekend) - statistics.fmean(weekday) > 0.4 * 3600

    # Within a person, resting HR moves against HRV.
    correlations = [_pearson([d.hrv_rmssd_ms for d in h.days],
                             [float(d.resting_hr_bpm) for d in h.days]) for h in histories]
    assert statistics.fmean(correlations) < -0.3

    # HRV dips after a short night and during a fever, relative to the person's usual nights.
    def relative_ln_hrv(pick: str) -> float:
        values = []
        for h in histories:
            base = math.log(h.profile.hrv_baseline_ms)
            need = h.profile.sleep_need_h * 3600
            for d in h.days:
                short = d.sleep_duration_s < need - 1.5 * 3600
                if (pick == "short" and short and not d.fever) or (pick == "fever" and d.fever) \
                        or (pick == "normal" and not short and not d.fever):
                    values.append(math.log(d.hrv_rmssd_ms) - base)
        return statistics.fmean(values)

    normal = relative_ln_hrv("normal")
    assert relative_ln_hrv("short") < normal - 0.05
    assert relative_ln_hrv("fever") < normal - 0.1
    fevers = [d for d in days if d.fever]
    assert 0.005 < len(fevers) / len(days) < 0.1
    assert statistics.fmean(d.temperature_deviation_c for d in fevers) > 0.4


def test_histories_vary_from_day_to_day_and_between_people() -> None:
    histories = generate_users(10, 90, seed=8, end_date=END)
    baselines = [h.profile.hrv_baseline_ms for h in histories]
    assert max(baselines) - min(baselines) > 15
    for h in histories:
        hrv = [d.hrv_rmssd_ms for d in h.days]
        assert statistics.stdev(hrv) / statistics.fmean(hrv) > 0.05
        assert len({d.steps for d in h.days}) > 80


# --- rendering ----------------------------------------------------------------------------------


def test_native_deliveries_verify_with_the_real_provider_and_parse_into_every_event() -> None:
    settings = _settings(standard_webhook_secret=NATIVE_SECRET)
    targets, skipped = resolve_providers(settings, ["auren"])
    assert not skipped
    histories = generate_users(3, 5, seed=1, end_date=END)
    deliveries = list(render_deliveries(histories, targets, run_id="run-a"))
    assert len(deliveries) == 15
    provider = NativeProvider.from_settings(settings)
    assert provider is not None
    for delivery in deliveries:
        request = _request(delivery)
        provider.verify(request, time.time())
        parsed = provider.parse(request, datetime.now(UTC))
        assert len(parsed.events) == delivery.items == 14
        assert {e.user_id for e in parsed.events} == {delivery.user_id}
        for event in parsed.events:
            assert event.unit == METRICS[event.metric].unit
        body = orjson.loads(delivery.body)
        assert all(e["unit"] == METRICS[e["metric"]].unit for e in body["events"])


def test_the_first_secret_of_a_rotation_list_signs() -> None:
    settings = _settings(standard_webhook_secret=ALL_SECRETS["standard_webhook_secret"])
    (target,), _ = resolve_providers(settings, ["auren"])
    assert target.secret == NATIVE_SECRET
    delivery = target.render(generate_users(1, 1, end_date=END)[0].days[0], run_id="r",
                             now=time.time())[0]
    # Only the first key verifies it: the new secret is configured beside the old one.
    NativeProvider((NATIVE_SECRET,)).verify(_request(delivery), time.time())
    with pytest.raises(Exception, match="signature"):
        other = ALL_SECRETS["standard_webhook_secret"].split(",")[1]
        NativeProvider((other,)).verify(_request(delivery), time.time())


def test_the_simulator_speaks_every_provider_the_bridge_knows() -> None:
    # The simulator signs with each provider module's own signer, found through its class.
    assert set(PROVIDERS) == set(PROVIDER_CLASSES)


@pytest.mark.parametrize("name", [p for p in PROVIDERS if p != "auren"])
def test_every_other_provider_renders_what_its_real_provider_class_accepts(name: str) -> None:
    settings = _settings(**ALL_SECRETS)
    targets, skipped = resolve_providers(settings, [name])
    assert not skipped, skipped
    (target,) = targets
    provider = PROVIDER_CLASSES[target.name].from_settings(settings)
    assert provider is not None
    histories = generate_users(2, 3, seed=4, end_date=END)
    deliveries = list(render_deliveries(histories, targets, run_id="run-b"))
    assert deliveries
    for delivery in deliveries:
        request = _request(delivery)
        assert provider.handshake(request) is None
        provider.verify(request, time.time())
        parsed = provider.parse(request, datetime.now(UTC))
        # Full payloads become events, thin notifications fetch jobs: one per item rendered.
        assert len(parsed.events) + len(parsed.fetch_jobs) == delivery.items, delivery.body
        assert parsed.ignored == 0


def test_every_delivery_is_unique_across_providers_users_and_days() -> None:
    targets, skipped = resolve_providers(_settings(**ALL_SECRETS), list(PROVIDERS))
    assert {t.name for t in targets} == set(PROVIDERS) and not skipped
    histories = generate_users(8, 12, seed=2, end_date=END)
    deliveries = list(render_deliveries(histories, targets, run_id="run-c"))
    assert len(deliveries) > 8 * 12 * len(targets)
    assert len({d.delivery_id for d in deliveries}) == len(deliveries)
    # Providers without a delivery id are deduplicated on the body's digest.
    assert len({(d.provider, d.body) for d in deliveries}) == len(deliveries)
    for header in ("webhook-id", "x-terra-trace-id"):
        values = [d.headers[header] for d in deliveries if header in d.headers]
        assert len(values) == len(set(values))
    native_ids = [e["id"] for d in deliveries if d.provider == "auren"
                  for e in orjson.loads(d.body)["events"]]
    assert native_ids and len(native_ids) == len(set(native_ids))
    # A new run sends new deliveries of the same records (same source record ids).
    again = list(render_deliveries(histories[:1], targets[:1], run_id="run-d"))
    first = [d for d in deliveries if d.provider == targets[0].name
             and d.user_id == histories[0].user_id]
    assert {d.delivery_id for d in again}.isdisjoint({d.delivery_id for d in first})


def test_redelivery_repeats_a_delivery_with_a_fresh_signature_only_when_asked() -> None:
    settings = _settings(standard_webhook_secret=NATIVE_SECRET)
    targets, _ = resolve_providers(settings, ["auren"])
    histories = generate_users(2, 4, seed=5, end_date=END)
    clock = iter(range(1_800_000_000, 1_800_001_000))
    deliveries = list(render_deliveries(histories, targets, run_id="r", redeliver=1.0,
                                        clock=lambda: float(next(clock))))
    assert len(deliveries) == 16
    for original, retry in zip(deliveries[::2], deliveries[1::2], strict=True):
        assert not original.redelivery and retry.redelivery
        assert retry.delivery_id == original.delivery_id and retry.body == original.body
        assert retry.headers["webhook-timestamp"] != original.headers["webhook-timestamp"]
        NativeProvider((NATIVE_SECRET,)).verify(_request(retry),
                                                float(retry.headers["webhook-timestamp"]))


def test_providers_without_a_secret_are_skipped_with_the_setting_to_set() -> None:
    targets, skipped = resolve_providers(_settings(), list(PROVIDERS))
    assert targets == []
    assert skipped["auren"] == "STANDARD_WEBHOOK_SECRET is not set"
    assert "TERRA_SIGNING_SECRET" in skipped["terra"]
    assert "WITHINGS_ENABLED" in skipped["withings"]
    with pytest.raises(ValueError, match="unknown provider"):
        resolve_providers(_settings(), ["myspace"])


def test_many_unique_native_webhooks_are_fast_unique_and_correctly_signed() -> None:
    started = time.perf_counter()
    deliveries = render_unique_native(100_000, NATIVE_SECRET, events_per_webhook=5)
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"{elapsed:.1f} s for 100k"  # ~1.5 s on a 2-core machine
    assert len({d.headers["webhook-id"] for d in deliveries}) == 100_000
    provider = NativeProvider((NATIVE_SECRET,))
    event_ids: set[str] = set()
    for delivery in deliveries[:: 100]:
        headers = delivery.headers
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode()
        digest = hmac.new(NATIVE_KEY, signed + delivery.body, hashlib.sha256).digest()
        assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()
        request = _request(delivery)
        provider.verify(request, time.time())
        parsed = provider.parse(request, datetime.now(UTC))
        assert len(parsed.events) == 5
        event_ids.update(e.event_id for e in parsed.events)
    assert len(event_ids) == 5 * 1000
    # Two calls never collide.
    more = render_unique_native(10, NATIVE_SECRET)
    assert {d.delivery_id for d in more}.isdisjoint({d.delivery_id for d in deliveries})


# --- delivery against a real bridge ---------------------------------------------------------


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server("bridge", tmp_path_factory.mktemp("sim-bridge")) as server:
        yield server


def _stored(base_url: str, user: str) -> int:
    with httpx.Client(base_url=base_url, timeout=10, trust_env=False) as client:
        response = client.get(f"/api/v1/users/{user}/events", params={"limit": 1000})
        assert response.status_code == 200
        return len(response.json()["events"])


@pytest.mark.slow
def test_delivered_days_are_all_stored_and_a_second_run_is_deduplicated(
        bridge: ServerProcess) -> None:
    settings = _settings(standard_webhook_secret=NATIVE_SECRET)
    targets, _ = resolve_providers(settings, ["auren"])
    histories = generate_users(2, 3, seed=21)
    summary = asyncio.run(deliver(bridge.base_url, render_deliveries(histories, targets),
                                  concurrency=4, timeout_s=10, max_duration_s=30))
    assert summary.all_ok, summary.as_dict()
    assert summary.results is not None and len(summary.results) == 6
    assert summary.by_status == Counter({202: 6})
    per_user = Counter[str]()
    for result in summary.results:
        assert result.ok and result.accepted == result.delivery.items == 14
        per_user[result.delivery.user_id] += result.accepted
    for history in histories:
        assert _stored(bridge.base_url, history.user_id) == per_user[history.user_id] == 42

    # The same seed again, paced at a constant rate: new deliveries of the same records are
    # answered 200 duplicate and nothing is stored twice.
    again = asyncio.run(deliver(bridge.base_url, render_deliveries(histories, targets),
                                concurrency=2, rate=40, timeout_s=10, max_duration_s=30))
    assert again.all_ok and again.by_status == Counter({200: 6}), again.as_dict()
    assert again.accepted == 0 and again.duplicates == 6 * 14
    assert again.elapsed_s >= 5 / 40  # the sixth was due 125 ms after the first
    for history in histories:
        assert _stored(bridge.base_url, history.user_id) == 42


def test_delivery_errors_are_counted_and_bounded_in_time() -> None:
    deliveries = render_unique_native(3, NATIVE_SECRET)
    # Nothing listens on a freshly released port: every request fails fast, none hangs.
    summary = asyncio.run(deliver(f"http://127.0.0.1:{free_port()}", deliveries,
                                  concurrency=2, timeout_s=2, max_duration_s=10))
    assert summary.sent == 3 and summary.succeeded == 0 and not summary.all_ok
    assert sum(summary.errors.values()) == 3 and "ConnectError" in summary.errors


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_simulate_exits_2_for_a_provider_without_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OURA_CLIENT_SECRET", raising=False)
    result = CliRunner().invoke(app, ["simulate", "--provider", "oura", "--to",
                                      "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "OURA_CLIENT_SECRET is not set" in result.output
    bad = CliRunner().invoke(app, ["simulate", "--to", "ftp://example"])
    assert bad.exit_code == 2


@pytest.mark.slow
def test_cli_simulate_prints_a_summary_and_exits_0_when_all_were_accepted(
        bridge: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDARD_WEBHOOK_SECRET", NATIVE_SECRET)
    result = CliRunner().invoke(app, ["simulate", "--to", bridge.base_url, "--users", "2",
                                      "--days", "2", "--seed", "99", "--concurrency", "2"])
    assert result.exit_code == 0, result.output
    assert "auren" in result.output and "202: 4" in result.output
