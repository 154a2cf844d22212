"""The console's button that starts `auren validate --quick` against the running deployment:
its phases stream onto the page while it runs, and its report is listed and opens. Slow: a
real validation of a real deployment (a few minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.services.console_kit import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    OPERATOR,
    OPERATOR_PASSWORD,
    Screens,
    console_env,
    deployment,
    needs,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_the_validate_button_streams_phases_and_lists_the_report(tmp_path: Path) -> None:
    needs(CHROMIUM, "scripts/install-system installs chromium")
    from playwright.sync_api import sync_playwright

    reports = tmp_path / "reports"
    with deployment(tmp_path / "data", console_env(reports)) as services, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(services.urls["gateway"] + "/")
            page.fill("#login-user", OPERATOR)
            page.fill("#login-password", OPERATOR_PASSWORD)
            page.click("#login-submit")
            page.wait_for_selector("#app-view:not([hidden])")
            page.click("#validate-start")
            # Streamed while it runs: the first phase shows long before the run ends.
            wait_until(lambda: "health sweep" in page.inner_text("#validate-phases"), 30)
            assert "Running" in page.inner_text("#validate-note")
            assert page.is_disabled("#validate-start")
            screens = Screens(tmp_path / "screens", "console")
            screens.take(page, "validate-running")
            wait_until(lambda: page.query_selector("#reports tr[data-report]") is not None,
                       800, 1.0)
            (directory,) = [p for p in reports.iterdir() if p.is_dir()]
            run = json.loads((directory / "report.json").read_text())
            note = page.inner_text("#validate-note")
            assert run["verdict"] in note
            assert run["verdict"] != "NOT RECONCILED"  # it read the deployment's store
            assert run["comparison"]["ratios"]["throughput"] is not None
            shown = page.inner_text("#validate-phases")
            assert all(p["name"] in shown for p in run["phases"])
            link = page.get_attribute("#reports tr[data-report] a", "href")
            assert link == f"/console/reports/{directory.name}/report.html"
            report = browser.new_page()
            report.context.add_cookies(page.context.cookies())
            opened = report.goto(services.urls["gateway"] + link)
            assert opened is not None and opened.status == 200
            assert "AUREN System Validation Report" in report.inner_text("h1")
            assert "100x" in report.inner_text("#claim")
            screens.take(page, "validate-done")
            assert errors == []
        finally:
            browser.close()
