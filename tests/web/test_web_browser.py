"""The dashboard in headless Chromium: what it shows, its range selector, its requests.

The screenshot is kept under pytest's basetemp and copied to
``$VERGER_ARTIFACTS/dashboard.png`` (default ``tests/artifacts/``, ignored by git).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_support import TOKEN, Served, live_release, seed, write_project

from verger.monitor.build import open_metrics
from verger.state import open_store

DRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(
    os.environ.get("VERGER_ARTIFACTS", Path(__file__).parent.parent / "artifacts")
)


def _need_browser() -> Any:
    """Selenium's webdriver, or a skip (outside CI) when Chromium is not installed."""
    missing = [
        what
        for what, there in (
            ("chromium", shutil.which("chromium") is not None),
            ("chromium-driver", DRIVER.exists()),
        )
        if not there
    ]
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("the selenium package")
        webdriver = None
    if missing:
        reason = (
            f"no {' and no '.join(missing)}: the browser test needs them "
            "(scripts/setup.sh installs chromium, chromium-driver and selenium)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return webdriver


@pytest.fixture
def browser() -> Iterator[Any]:
    webdriver = _need_browser()
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--window-size=1400,1100",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    loaded = write_project(tmp_path)
    metrics = open_metrics(loaded.config, loaded.root)
    seed(metrics, time.time())
    metrics.close()
    state = open_store(loaded.config.state, loaded.root)
    live_release(state, "staging", "v1.5.0", time.time() - 300)
    live_release(state, "production", "v1.4.2", time.time() - 7200)
    incident = state.add_incident(
        "g", "Brief API spike", "critical", {}, time.time() - 900, time.time() - 880, 1
    )
    state.update_incident(incident, status="resolved", resolved_at=time.time() - 600)
    state.close()
    server = Served(tmp_path)
    yield server
    server.close()


def _wait(check: Any, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _api(served: Served, path: str) -> Any:
    request = urllib.request.Request(
        served.origin + path, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def _chart(browser: Any, metric: str) -> dict[str, str]:
    script = "return Object.assign({}, arguments[0].dataset);"
    element = browser.find_element("css selector", f'svg[data-chart="{metric}"]')
    found: dict[str, str] = browser.execute_script(script, element)
    return found


def test_dashboard_shows_the_api_numbers_and_loads_nothing_from_elsewhere(
    browser: Any, served: Served, tmp_path: Path
) -> None:
    """With its token the page shows the API's tiles, refreshes, follows the range, stays local."""
    browser.get(f"{served.origin}/?token={TOKEN}")
    assert browser.current_url == f"{served.origin}/"
    assert _wait(
        lambda: browser.execute_script("return document.body.dataset.refreshes")
    )
    assert not browser.find_element("id", "monitoring-off").is_displayed()

    summary = _api(served, "/api/v1/summary")
    for name, tile in summary["tiles"].items():
        shown = browser.find_element(
            "css selector", f'[data-tile="{name}"] [data-value]'
        )
        assert shown.text == tile["text"], name
    assert summary["tiles"]["p95"]["text"] == "250 ms"
    assert browser.find_element("id", "alerts-value").text == "0"
    assert browser.find_element("id", "backup-text").text == "no verified backup"
    production = browser.find_element(
        "css selector", 'tr[data-environment="production"]'
    )
    live = _api(served, "/api/v1/releases")["releases"][1]
    assert production.text.split() == [
        "production",
        "v1.4.2",
        "blue",
        *live["since_text"].split(),
    ]
    assert "Brief API spike (resolved)" in browser.find_element("id", "incidents").text

    # A rule that starts firing shows up without a reload.
    state = open_store(".verger/state.db", tmp_path)
    state.save_alert_states([_firing("cpu_high", "high")], [])
    state.close()
    assert _wait(lambda: browser.find_element("id", "alerts-value").text == "1")
    assert browser.find_element("id", "alerts-note").text == "1 high"
    cpu = browser.find_element("css selector", '[data-tile="cpu"]')
    assert "status-high" in str(cpu.get_attribute("class"))

    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "dashboard.png")
    assert shot.stat().st_size > 10_000

    hour = _chart(browser, "p95")
    assert hour["range"] == "1h" and hour["step"] == "30"
    assert int(hour["points"]) >= 100
    browser.find_element("css selector", '#ranges button[data-range="24h"]').click()
    assert _wait(lambda: _chart(browser, "p95")["range"] == "24h")
    day = _chart(browser, "p95")
    assert day["step"] == "720"
    assert float(day["first"]) < float(hour["first"]) - 20 * 3600
    assert int(day["points"]) < int(hour["points"])

    entries = browser.execute_script(
        "return performance.getEntriesByType('navigation')"
        ".concat(performance.getEntriesByType('resource')).map(e => e.name);"
    )
    assert any("/api/v1/series" in name for name in entries)
    assert all(name.startswith(served.origin + "/") for name in entries), entries
    problems = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not problems, problems


def test_dashboard_without_its_token_shows_how_to_get_the_url(
    browser: Any, served: Served
) -> None:
    """Opened with a wrong token, the page says to run 'verger dashboard'."""
    browser.get(f"{served.origin}/?token=wrong")
    assert "verger dashboard" in browser.find_element("tag name", "body").text
    assert browser.get_cookies() == []


def _firing(rule: str, severity: str) -> dict[str, Any]:
    labels = {"alertname": rule, "severity": severity}
    return {
        "fingerprint": f"fp-{rule}",
        "rule": rule,
        "labels": json.dumps(labels),
        "annotations": "{}",
        "state": "firing",
        "active_at": 1.0,
        "fired_at": 2.0,
        "resolved_at": None,
        "keep_firing_since": None,
        "value": 0.93,
    }


def test_without_monitoring_the_page_says_so_and_greys_the_tiles(
    browser: Any, tmp_path: Path
) -> None:
    """Without a metric store a banner says monitoring is off; no tile is green; ?range= holds."""
    write_project(tmp_path)
    server = Served(tmp_path, monitoring=False)
    try:
        browser.get(f"{server.origin}/?token={TOKEN}&range=6h")
        assert browser.current_url == f"{server.origin}/?range=6h"
        assert _wait(
            lambda: browser.execute_script("return document.body.dataset.refreshes")
        )
        banner = browser.find_element("id", "monitoring-off")
        assert banner.is_displayed()
        assert banner.text.startswith("monitoring is off: add a monitor: section")
        assert browser.find_element("id", "alerts-value").text == "no data"
        for tile in browser.find_elements("css selector", ".tile"):
            assert "status-ok" not in str(tile.get_attribute("class"))
        assert browser.execute_script("return document.body.dataset.range") == "6h"
    finally:
        server.close()
