"""The console on the full stack (Kafka, PostgreSQL, Redis, the sink): its dependencies and
breakers, the spool and the consumer lag on the page, traffic, a chat with evidence read from
PostgreSQL; and the page in chromium, with a screenshot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from auren.ops.procs import ServiceSet, free_port
from tests.services.console_kit import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    OPERATOR,
    OPERATOR_PASSWORD,
    Screens,
    console_env,
    deployment,
    needs,
    post_webhooks,
    sign_in,
    wait_until,
)
from tests.stack import FullStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def stack(full_stack: FullStack, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ServiceSet]:
    tmp = tmp_path_factory.mktemp("console-full")
    sink_port = free_port()
    env = {**full_stack.isolated(SINK_METRICS_PORT=sink_port),
           **console_env(tmp / "reports", AUREN_SINK_URL=f"http://127.0.0.1:{sink_port}")}
    with deployment(tmp / "data", env) as services:
        yield services


def test_the_full_stack_on_the_console(stack: ServiceSet, tmp_path: Path) -> None:
    session = sign_in(stack.urls["gateway"])
    try:
        def now() -> dict[str, object]:
            return session.client.get("/console/api/now").json()  # type: ignore[no-any-return]

        seen: list[dict[str, object]] = []

        def settled() -> bool:
            seen.append(now())
            return seen[-1]["consumer_lag"] is not None and seen[-1]["overall"] == "pass"

        try:
            wait_until(settled, 60, 1.0)
        except AssertionError:
            raise AssertionError(seen[-1]) from None
        current = now()
        bridge = next(s for s in current["services"] if s["name"] == "bridge")  # type: ignore
        assert bridge["mode"] == "full"
        deps = {(d["service"], d["name"]) for d in current["dependencies"]}  # type: ignore
        assert {("bridge", "kafka"), ("bridge", "redis"), ("bridge", "store")} <= deps
        breakers = {(b["service"], b["name"], b["state"])
                    for b in current["breakers"]}  # type: ignore
        assert {("bridge", "kafka", "closed"), ("bridge", "redis", "closed"),
                ("bridge", "postgres", "closed")} <= breakers
        assert current["spool"]["records"] == 0  # type: ignore[index]
        assert post_webhooks(stack.urls["bridge"], "full-user", 6, prefix="full") == 6

        def stored_and_counted() -> bool:
            series = session.client.get("/console/api/traffic").json()["webhooks"]
            events = session.client.get("/console/api/people/full-user").json()["events"]
            return bool(any(series.get("bridge/auren/2xx") or [])) and events["count"] == 6

        wait_until(stored_and_counted, 60, 1.0)  # the sink moved them into PostgreSQL
        answer = session.post("/console/api/chat", {"user_id": "full-user",
                                                    "message": "What is my HRV?"})
        assert answer.status_code == 200, answer.text
        assert any(e["metric"] == "hrv_rmssd" and e["value"] is not None
                   for e in answer.json()["evidence"])
    finally:
        session.client.close()

    needs(CHROMIUM, "scripts/install-system installs chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(stack.urls["gateway"] + "/")
            page.fill("#login-user", OPERATOR)
            page.fill("#login-password", OPERATOR_PASSWORD)
            page.click("#login-submit")
            wait_until(lambda: "kafka" in page.inner_text("#breakers tbody")
                       and "records" in page.inner_text("#tile-lag"), 15)
            assert "closed" in page.inner_text("#breakers")
            assert page.inner_text("#tile-spool") == "0 records"
            Screens(tmp_path / "screens", "console").take(page, "full-stack")
            assert errors == []
        finally:
            browser.close()
