"""The console in a real browser: Debian's chromium driven by Playwright (the system
executable, never a downloaded build) against a real deployment of the four services.

The page loads without console errors (a policy violation is one); a healthy deployment shows
green; stopping the bridge turns its row red within 5 s and starting it turns it green again;
signed webhooks move the traffic chart; a chat round trip shows an answer and its evidence;
axe-core finds no serious violation. Screenshots: the test's tmp dir and
``reports/console-screenshots/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from auren.ops.procs import ServiceSet
from tests.services.console_kit import (
    AXE,
    CHROMIUM,
    CHROMIUM_FLAGS,
    OPERATOR,
    OPERATOR_PASSWORD,
    VIEWER,
    VIEWER_PASSWORD,
    Screens,
    console_env,
    deployment,
    needs,
    post_webhooks,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceSet]:
    needs(CHROMIUM, "scripts/install-system installs chromium")
    tmp = tmp_path_factory.mktemp("console")
    with deployment(tmp / "data", console_env(tmp / "reports")) as services:
        yield services


@pytest.fixture(scope="module")
def browser(stack: ServiceSet) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


class Console:
    """A signed-in page and everything the browser reported as an error."""

    def __init__(self, browser: Any, base_url: str, user: str, password: str,
                 **context: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, **context)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                     else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(base_url + "/")
        self.page.fill("#login-user", user)
        self.page.fill("#login-password", password)
        self.page.click("#login-submit")
        self.page.wait_for_selector("#app-view:not([hidden])")

    def status(self, service: str) -> str | None:
        row = self.page.query_selector(f'#services tr[data-service="{service}"]')
        return None if row is None else row.get_attribute("data-status")

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def console(browser: Any, stack: ServiceSet) -> Iterator[Console]:
    page = Console(browser, stack.urls["gateway"], OPERATOR, OPERATOR_PASSWORD)
    yield page
    page.close()


@pytest.fixture
def screens(tmp_path: Path, request: pytest.FixtureRequest) -> Screens:
    return Screens(tmp_path / "screens", "console")


def test_page_loads_without_errors_and_a_healthy_stack_is_green(
        console: Console, screens: Screens) -> None:
    page = console.page
    wait_until(lambda: all(console.status(s) == "pass" for s in ("bridge", "legacy", "neuros")),
               10)
    assert page.inner_text("#overall") == "PASS"
    for service in ("bridge", "legacy", "neuros"):
        row = page.query_selector(f'#services tr[data-service="{service}"]')
        assert row is not None and "PASS" in row.inner_text()
        # Green: the row's background is the pass colour, not only a word.
        colour = row.eval_on_selector(".badge", "e => getComputedStyle(e).backgroundColor")
        assert colour == "rgb(17, 99, 41)", colour
    # The live figures of the embedded bridge: admission in flight out of its limit.
    assert "/ 50" in page.inner_text("#tile-in-flight")
    assert page.inner_text("#tile-spool") == "n/a"
    # The page's own assets only, its policy intact: no error of any kind was reported.
    assert console.errors == []
    # Installable: a manifest with icons, and a service worker controls the page.
    manifest = httpx.get(page.url.rstrip("/") + "/console/static/manifest.webmanifest").json()
    assert manifest["start_url"] == "/" and {i["sizes"] for i in manifest["icons"]} >= {
        "192x192", "512x512"}
    # (Polled from here: the page's policy forbids the eval a string predicate needs.)
    assert page.evaluate("async () => (await navigator.serviceWorker.ready).active !== null")
    screens.take(page, "healthy")


def test_stopping_the_bridge_turns_its_row_red_within_5_s_and_green_again(
        console: Console, stack: ServiceSet, screens: Screens) -> None:
    wait_until(lambda: console.status("bridge") == "pass", 10)
    stack.stop_service("bridge")
    try:
        red_after = wait_until(lambda: console.status("bridge") == "fail", 5.0)
        assert console.page.inner_text("#overall") == "FAIL"
        screens.take(console.page, "bridge-stopped")
    finally:
        stack.start_service("bridge")
    green_after = wait_until(lambda: console.status("bridge") == "pass", 5.0)
    screens.take(console.page, "bridge-started")
    print(f"bridge row red {red_after:.2f} s after the stop, green {green_after:.2f} s after "
          "it answered again")
    assert console.errors == []


def test_signed_webhooks_move_the_traffic_chart(console: Console, stack: ServiceSet,
                                                screens: Screens) -> None:
    page = console.page
    chart = page.locator("#chart-webhooks")
    chart.scroll_into_view_if_needed()
    wait_until(lambda: int(chart.get_attribute("data-points") or 0) > 2, 10)
    before_sum = float(chart.get_attribute("data-sum") or 0)
    before = chart.screenshot()
    assert post_webhooks(stack.urls["bridge"], "chart-user", 60) == 60
    wait_until(lambda: float(chart.get_attribute("data-sum") or 0) >= before_sum + 30, 10)
    page.wait_for_timeout(1500)  # one more round drawn
    assert chart.screenshot() != before, "the chart's pixels did not change"
    legend = page.inner_text("#chart-webhooks")
    assert "bridge/auren/2xx" in legend
    screens.take(page, "traffic")
    assert console.errors == []


def test_a_chat_round_trip_shows_an_answer_with_evidence(console: Console, stack: ServiceSet,
                                                         screens: Screens) -> None:
    assert post_webhooks(stack.urls["bridge"], "chat-user", 28, prefix="chat") == 28
    page = console.page
    page.fill("#chat-user", "chat-user")
    page.fill("#chat-message", "What is my HRV?")
    page.click("#chat-send")
    page.wait_for_selector("#chat-log .chat-turn.answer", timeout=15_000)
    answer = page.inner_text("#chat-log .chat-turn.answer")
    assert "NEUROS:" in answer
    rows = page.query_selector_all("#chat-log tr.evidence")
    assert rows, answer
    # The answer used the person's own HRV: its evidence row carries a measured value.
    hrv = [row for row in rows if "hrv_rmssd" in row.inner_text()]
    assert hrv and hrv[0].eval_on_selector("td.num", "e => e.textContent") != "–", answer
    screens.take(page, "chat")
    assert console.errors == []


def test_people_search_shows_events_and_no_connections_yet(console: Console, stack: ServiceSet,
                                                           screens: Screens) -> None:
    assert post_webhooks(stack.urls["bridge"], "person-user", 3, prefix="person") == 3
    page = console.page
    # The bridge's connection figures, as it exports them: no account yet, no dead fetch job.
    page.wait_for_function(
        "document.querySelector('#people-overview').innerText.includes('fetch_jobs_dead')")
    overview = page.inner_text("#people-overview")
    assert "all\t0" in overview and "No connections yet" not in overview
    page.fill("#person-id", "person-user")
    page.click("#person-form button")
    page.wait_for_selector("#person .person-title")
    text = page.inner_text("#person")
    assert "No connections yet." in text and "No coverage yet." in text
    assert text.count("hrv_rmssd") == 3
    screens.take(page, "people")


def test_the_installed_page_opens_offline_and_says_so(browser: Any, stack: ServiceSet,
                                                     screens: Screens) -> None:
    viewer = Console(browser, stack.urls["gateway"], VIEWER, VIEWER_PASSWORD)
    try:
        page = viewer.page
        assert page.evaluate("async () => (await navigator.serviceWorker.ready).active !== null")
        page.reload()  # now under the worker's control: it has cached the page and assets
        page.wait_for_selector("#app-view:not([hidden])")
        viewer.context.set_offline(True)
        page.reload()
        # The page, its script and styles come from the worker's cache; the data cannot.
        page.wait_for_selector("#banner:not([hidden])")
        assert "unreachable" in page.inner_text("#banner")
        assert page.inner_text("h1") == "AUREN operations"
        assert page.evaluate("() => typeof uPlot") == "function"
        screens.take(page, "offline")
        # Back online, it signs itself in again with the session it has (no reload).
        viewer.context.set_offline(False)
        page.wait_for_selector("#app-view:not([hidden])", timeout=15_000)
        assert page.is_hidden("#banner")
    finally:
        viewer.context.set_offline(False)
        viewer.close()


def test_a_viewer_reads_but_cannot_act(browser: Any, stack: ServiceSet) -> None:
    viewer = Console(browser, stack.urls["gateway"], VIEWER, VIEWER_PASSWORD)
    try:
        page = viewer.page
        assert page.is_disabled("#validate-start") and page.is_disabled("#chat-send")
        assert "Read-only" in page.inner_text("#validate-note")
        assert viewer.errors == []
    finally:
        viewer.close()


def _serious(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now."""
    page.add_script_tag(path=str(AXE))
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
            for v in results["violations"] if v["impact"] in ("serious", "critical")]


def test_no_serious_accessibility_violations(browser: Any, stack: ServiceSet,
                                             screens: Screens) -> None:
    needs(AXE, "./scripts/web-assets installs axe-core from package-lock.json")
    # The sign-in view first (a context of its own, with the page's policy bypassed so that
    # axe's script may be injected).
    context = browser.new_context(bypass_csp=True)
    try:
        login = context.new_page()
        login.goto(stack.urls["gateway"] + "/")
        login.wait_for_selector("#login-view:not([hidden])")
        assert _serious(login) == []
    finally:
        context.close()
    # axe is injected as a script the page's policy would refuse: this context alone
    # bypasses it (the other tests run under the policy).
    audit = Console(browser, stack.urls["gateway"], OPERATOR, OPERATOR_PASSWORD,
                    bypass_csp=True)
    try:
        page = audit.page
        wait_until(lambda: audit.status("bridge") == "pass", 10)
        wait_until(lambda: int(page.get_attribute("#chart-webhooks", "data-points") or 0) > 1,
                   10)
        assert _serious(page) == []
        screens.take(page, "accessibility-audited")
    finally:
        audit.close()
