"""The real thing: `streamlit run` on a free localhost port, driven by headless Chromium.

Queues a one-epoch basic_nn run on mnist_sample from the Train page, waits until the
Runs page shows it done (trained by the worker the router spawned), opens Compare, and
visits every registered page, failing on any Streamlit exception. Screenshots go to
$LENSBOARD_SCREENSHOTS when it is set. Skipped when Chromium or Playwright is missing,
unless LENSBOARD_REQUIRE_BROWSER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.servers import CHROMIUM, CHROMIUM_ARGS, ROOT, start_dashboard, stop

WAIT_MS = 120_000


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements-dev.txt)"
    return None


def _require_browser() -> None:
    reason = _missing()
    if reason is None:
        return
    if os.environ.get("LENSBOARD_REQUIRE_BROWSER") == "1":
        pytest.fail(f"LENSBOARD_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def app(tmp_path):
    """A running dashboard on a fresh results root; the server and its worker are stopped afterwards."""
    _require_browser()
    results = tmp_path / "results"
    env = dict(os.environ, LENSBOARD_RESULTS=str(results), PYTHONPATH=str(ROOT))
    env.pop("LENSBOARD_NO_WORKER", None)
    log = open(tmp_path / "streamlit.log", "wb")
    try:
        server, url = start_dashboard(env, log)
        try:
            yield url, results
        finally:
            stop(server)
    finally:
        log.close()
        pid_file = results / "worker.pid"  # the worker the router spawned runs in its own session
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)


def _check_no_exception(page, where: str) -> None:
    page.wait_for_timeout(500)
    errors = page.locator("[data-testid='stException']")
    assert errors.count() == 0, f"{where}: Streamlit exception: {errors.first.inner_text()[:2000]}"
    assert "Traceback (most recent call last)" not in page.content(), f"{where}: a traceback is on the page"


def _shot(page, name: str) -> None:
    folder = os.environ.get("LENSBOARD_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def _open(page, url: str, title: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name=title, level=1).wait_for(timeout=WAIT_MS)


def _number(page, label: str, value: str) -> None:
    box = page.get_by_role("spinbutton", name=label, exact=True)
    box.fill(value)
    box.press("Enter")
    page.wait_for_timeout(700)


def test_a_new_user_queues_a_run_watches_it_finish_and_compares_it_in_a_real_browser(app):
    from playwright.sync_api import sync_playwright

    from dashboard.state import PAGES, available_pages

    url, results = app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.set_default_timeout(WAIT_MS)
            _open(page, url, "Train")
            assert page.url.rstrip("/").endswith("/train")
            _check_no_exception(page, "Train")

            page.get_by_role("combobox", name="Architecture").click()
            page.get_by_role("option", name="basic_nn", exact=True).click()
            page.get_by_text("MLP: flatten").wait_for()
            _number(page, "Epochs", "1")
            page.get_by_text("Validation, seed, data size, device and precision").click()
            _number(page, "Train limit (0 = all)", "200")
            _check_no_exception(page, "Train form")

            page.get_by_role("button", name="Queue run").click()
            page.get_by_role("heading", name="What you launched").wait_for()
            page.locator("[data-testid='stProgress']").first.wait_for()
            _check_no_exception(page, "Train after queueing")
            _shot(page, "train")

            _open(page, f"{url}/runs", "Runs")
            page.get_by_text("done: 1", exact=False).wait_for(timeout=180_000)  # the worker trained it
            _check_no_exception(page, "Runs")
            _shot(page, "runs")

            _open(page, f"{url}/compare", "Compare")
            page.locator("[data-testid='stPlotlyChart']").first.wait_for()
            page.get_by_text("What the curves say").wait_for()
            _check_no_exception(page, "Compare")
            _shot(page, "compare")

            for name in available_pages():  # the pages of the other parts of the app, as they exist
                title, _, path = PAGES[name]
                if path in ("train", "runs", "compare"):
                    continue  # seen above
                _open(page, f"{url}/{path}", title)
                page.wait_for_timeout(1000)
                _check_no_exception(page, title)
                _shot(page, path)
        finally:
            browser.close()
