"""The dashboard in a real browser: Debian's chromium, headless, driven by Selenium through chromium-driver,
against a live `orchestry serve` with Docker and nginx. Screenshots of the main pages go to
tmp/artifacts/dashboard/ (not committed) to be looked at.

A missing chromium or chromedriver fails these tests (never skips): `.ci/run` installs both.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from orchestry.models.base import utcnow
from orchestry.models.db import make_engine

from conftest import ROOT, LiveServer, hello

# Not beside tests/test_swarm.py, whose hosts change this machine's addresses (ERR_NETWORK_CHANGED here).
pytestmark = pytest.mark.xdist_group("host_network")

LIVE_FIXTURES = ("browser",)
ARTIFACTS = ROOT / "tmp" / "artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LAPTOP = (1366, 1600)
PHONE = (390, 1700)
# quick checks and drains: the restart from the page replaces both replicas one at a time
FAST = "healthCheck: {path: /health, periodSeconds: 1}\ntermination: {drainSeconds: 1, gracePeriodSeconds: 1}\n"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(
            f"the dashboard's browser tests need Debian's chromium and chromium-driver (missing: {', '.join(missing)});"
            " apt-get install chromium chromium-driver",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--lang=en-GB"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={LAPTOP[0]},{LAPTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str, size: tuple[int, int] = LAPTOP, dark: bool = False) -> Path:
    """A screenshot of the page at `size`, light or dark (the system setting, emulated)."""
    driver.set_window_size(*size)
    feature = [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": feature})
    time.sleep(0.3)  # one frame for the layout at the new size
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    driver.set_window_size(*LAPTOP)
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": ""}]})
    return path


def wait(driver: Any, predicate: Any, timeout: float = 60, what: str = "") -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        # a live region's elements are replaced every few seconds: one read may find a replaced one
        waiting = WebDriverWait(driver, timeout, 0.2, ignored_exceptions=(StaleElementReferenceException,))
        return waiting.until(lambda d: predicate(d))
    except Exception as exc:
        shot(driver, "failed-" + (what or "wait").replace(" ", "-"))
        raise AssertionError(f"not seen within {timeout} s: {what} (page {driver.current_url})") from exc


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def log_in(driver: Any, live: LiveServer, token: str) -> None:
    driver.get(live.url + "/ui/")
    wait(driver, lambda d: "/ui/login" in d.current_url, 20, "redirect to login")
    field = css(driver, "#token")[0]
    field.clear()
    field.send_keys(token)
    css(driver, "#login-submit")[0].click()
    wait(driver, lambda d: d.current_url.rstrip("/").endswith("/ui"), 20, "logged in")
    # the address changes before the page has loaded: wait for the table the tests read next
    wait(driver, lambda d: css(d, "#apps-table tbody"), 20, "the apps table")


def token(live: LiveServer, name: str, role: str) -> str:
    out = live.cli("token", "create", name, "--role", role)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def browser_post(driver: Any, path: str, body: str) -> int:
    """A same-origin POST from the page's own context, with the session cookie and without a CSRF token."""
    status: int = driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch(arguments[0], {method: 'POST', credentials: 'same-origin',
          headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: arguments[1]})
          .then(r => done(r.status), e => done(-1));""",
        path,
        body,
    )
    return status


def add_decision(live: LiveServer, app: str, reason: str) -> None:
    """One autoscaler change 2 minutes ago, stored as the autoscaler stores it (the chart marks it)."""
    engine = make_engine(live.db_url)
    try:
        with engine.begin() as conn:
            app_id = conn.execute(text("SELECT id FROM apps WHERE name = :n"), {"n": app}).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO scaling_decisions (app_id, created_at, current, target, recommended, direction,"
                    " changed, burst, governing, reason, ratios, metrics) VALUES (:a, :t, 1, 2, 2, 'out', :yes,"
                    " :no, 'rps', :r, '{}', '{}')"
                ),
                {"a": app_id, "t": utcnow() - timedelta(minutes=2), "yes": True, "no": False, "r": reason},
            )
    finally:
        engine.dispose()


def test_operator_and_viewer_in_a_browser(live: LiveServer, browser: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    driver = browser
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    operator = token(live, "olivia", "operator")
    viewer = token(live, "victor", "viewer")
    api = httpx.Client(base_url=live.url, timeout=10, headers={"Authorization": f"Bearer {operator}"})

    # Log in; the apps page is empty, then shows an app registered meanwhile, without a reload.
    driver.get(live.url + "/ui/")
    wait(driver, lambda d: "/ui/login" in d.current_url, 20, "redirect to login")
    shot(driver, "login")
    log_in(driver, live, operator)
    assert "No app is registered yet" in css(driver, "#apps-table tbody")[0].text
    marker = driver.execute_script("document.body.dataset.marker = 'same-page'; return 1")
    assert marker == 1
    resp = api.post("/api/v1/apps", content=hello("web", extra=FAST), headers={"Content-Type": "application/yaml"})
    assert resp.status_code == 201, resp.text
    wait(driver, lambda d: css(d, 'tr[data-name="web"]'), 20, "the registered app in the table")
    assert driver.execute_script("return document.body.dataset.marker") == "same-page"  # no reload
    row = css(driver, 'tr[data-name="web"]')[0].text
    assert "registered" in row and "0 / 0" in row

    # The filter box hides what does not match.
    resp = api.post("/api/v1/apps", content=hello("api-gateway"), headers={"Content-Type": "application/yaml"})
    assert resp.status_code == 201
    wait(driver, lambda d: css(d, 'tr[data-name="api-gateway"]'), 20, "the second app")
    css(driver, "#filter")[0].send_keys("gate")
    assert not css(driver, 'tr[data-name="api-gateway"]')[0].get_attribute("hidden")
    assert css(driver, 'tr[data-name="web"]')[0].get_attribute("hidden")
    css(driver, "#filter")[0].clear()
    css(driver, "#filter")[0].send_keys(" ")
    wait(driver, lambda d: not css(d, 'tr[data-name="web"]')[0].get_attribute("hidden"), 5, "filter cleared")

    # Scale from the page: the job's steps and the replica count change as it runs.
    css(driver, 'tr[data-name="web"] a')[0].click()
    wait(driver, lambda d: css(d, "#scale-form"), 20, "the app page")
    replicas = css(driver, "#replicas")[0]
    replicas.clear()
    replicas.send_keys("2")
    css(driver, "#scale-button")[0].click()
    wait(driver, lambda d: "job=" in d.current_url, 20, "the job's page")
    seen_steps: list[int] = []
    seen_status: list[str] = []

    def converged(d: Any) -> bool:
        status, steps, ready = d.execute_script(
            """const q = (s) => document.querySelector(s);
            return [q('#job-status') && q('#job-status').textContent,
                    document.querySelectorAll('#job-steps li[class^=st-]').length,
                    q('#app-replicas') && q('#app-replicas').dataset.ready];"""
        )
        seen_status.append(status or "")
        seen_steps.append(steps)
        return bool(ready == "2" and status == "succeeded")

    wait(driver, converged, 120, "2 ready replicas and the job succeeded")
    assert seen_steps[0] < seen_steps[-1] and any(s in ("queued", "running") for s in seen_status), (
        seen_steps,
        seen_status,
    )
    steps = css(driver, "#job-steps")[0].text
    assert "start" in steps, steps
    assert len(css(driver, "#replicas tbody tr[data-replica]")) == 2

    # A decision of the autoscaler is marked on the charts; hovering it shows its reason.
    add_decision(live, "web", "rps 120.0/replica > 80% of 50 → 1 → 2")
    driver.get(live.url + "/ui/apps/web")
    wait(driver, lambda d: css(d, "g.mark"), 30, "a decision marker on the charts")
    ActionChains(driver).move_to_element(css(driver, "g.mark path")[0]).perform()
    wait(driver, lambda d: "rps 120.0/replica" in css(d, "#chart-tip")[0].text, 10, "the decision's reason")
    wait(driver, lambda d: d.execute_script("return document.querySelector('[data-charts]').dataset.loaded"), 10)
    shot(driver, "app-laptop-light")
    shot(driver, "app-laptop-dark", dark=True)
    shot(driver, "app-phone", PHONE)

    # The logs: the tail, then each new line as it comes (a stream of server-sent events); the revisions' diff.
    css(driver, "#logs-link")[0].click()
    wait(driver, lambda d: css(d, "#logs")[0].text not in ("", "loading…"), 20, "the replicas' logs")
    wait(driver, lambda d: "following" in css(d, "[data-live-status]")[0].text, 20, "the log stream open")
    shown = css(driver, "#logs")[0].text.count("\n")
    address = next(r["address"] for r in api.get("/api/v1/apps/web").json()["replicas"] if r["address"])
    for _ in range(3):  # the test app logs each request it serves
        assert httpx.get(f"http://{address}/", timeout=5).status_code == 200
    wait(driver, lambda d: css(d, "#logs")[0].text.count("\n") >= shown + 3, 20, "the new lines, streamed")
    driver.back()
    wait(driver, lambda d: css(d, "#scale-form"), 10, "back on the app")

    # A POST without the CSRF token is refused, even from the page itself with its cookie.
    assert browser_post(driver, "/ui/apps/web/scale", "replicas=1") == 403
    assert api.get("/api/v1/apps/web").json()["desired_replicas"] == 2

    # A destructive action asks first.
    css(driver, "#down-button")[0].click()
    wait(driver, lambda d: css(d, "#confirm-button"), 10, "the confirmation")
    shot(driver, "confirm-down")
    css(driver, "#cancel-button")[0].click()
    wait(driver, lambda d: css(d, "#scale-form"), 10, "back on the app")
    assert api.get("/api/v1/apps/web").json()["desired_replicas"] == 2

    # Restart asks first, then replaces both replicas one at a time: the page follows the job to its end.
    assert [r["host"] for r in api.get("/api/v1/apps/web").json()["replicas"]] == [None, None]  # docker: local
    assert [c.text for c in css(driver, "#replicas td.host")] == ["local", "local"]
    before = {r["container_id"] for r in api.get("/api/v1/apps/web").json()["replicas"]}
    css(driver, "#restart-button")[0].click()
    wait(driver, lambda d: css(d, "#confirm-button"), 10, "the restart's confirmation")
    assert "Restart web?" in css(driver, "[role=alertdialog]")[0].text
    shot(driver, "confirm-restart-phone", PHONE)
    css(driver, "#confirm-button")[0].click()
    wait(driver, lambda d: "job=" in d.current_url, 20, "the restart's job on the app page")

    def restarted(d: Any) -> bool:
        kind, status, ready = d.execute_script(
            """const q = (s) => document.querySelector(s);
            return [q('.job .jobhead strong') && q('.job .jobhead strong').textContent,
                    q('#job-status') && q('#job-status').textContent,
                    q('#app-replicas') && q('#app-replicas').dataset.ready];"""
        )
        return bool(kind and kind.endswith("restart") and status == "succeeded" and ready == "2")

    wait(driver, restarted, 180, "the restart job succeeded with 2 ready replicas")
    after = {r["container_id"] for r in api.get("/api/v1/apps/web").json()["replicas"]}
    assert len(after) == 2 and not before & after  # every replica replaced
    assert [s for s in css(driver, "#job-steps")[0].text.split() if s in ("start", "stop")].count("start") == 2

    # A second revision: the page offers a rollback to the first, asking first (cancelled here).
    revised = hello("web", extra=FAST).replace("  ports:", "  environment: [{name: COLOR, value: green}]\n  ports:")
    resp = api.post("/api/v1/apps", content=revised, headers={"Content-Type": "application/yaml"})
    assert resp.status_code == 200, resp.text
    deploy = resp.json()["results"][0]["job"]
    settled = ("succeeded", "failed", "cancelled")
    wait(driver, lambda d: api.get(f"/api/v1/jobs/{deploy}").json()["status"] in settled, 180, "revision 2 rolled out")
    assert api.get(f"/api/v1/jobs/{deploy}").json()["status"] == "succeeded"
    driver.get(live.url + "/ui/apps/web")
    wait(driver, lambda d: css(d, "#rollback-form"), 10, "the rollback form")
    options = [o.get_attribute("value") for o in css(driver, "#rollback-to option")]
    assert options == ["", "1"], options
    shot(driver, "app-actions-laptop")
    shot(driver, "app-actions-phone", PHONE)
    css(driver, "#rollback-button")[0].click()
    wait(driver, lambda d: css(d, "#confirm-button"), 10, "the rollback's confirmation")
    assert "Roll web back to revision 1?" in css(driver, "[role=alertdialog]")[0].text
    css(driver, "#cancel-button")[0].click()
    wait(driver, lambda d: css(d, "#scale-form"), 10, "back on the app")
    assert api.get("/api/v1/apps/web").json()["revision"] == 2

    driver.get(live.url + "/ui/")
    wait(driver, lambda d: "2 / 2" in css(d, 'tr[data-name="web"]')[0].text, 30, "2 / 2 in the table")
    shot(driver, "apps-laptop-light")
    shot(driver, "apps-phone-dark", PHONE, dark=True)
    driver.get(live.url + "/ui/jobs")
    wait(driver, lambda d: css(d, "#jobs-table tbody tr"), 10, "the jobs")
    assert "scale" in css(driver, "#jobs-table")[0].text
    shot(driver, "jobs-laptop")

    # The kind filter: only restarts, in the page and in its live refresh (a scale enqueued meanwhile stays out).
    from selenium.webdriver.support.ui import Select

    Select(css(driver, "#f-kind")[0]).select_by_value("restart")
    css(driver, "#jobs-filter button")[0].click()
    wait(driver, lambda d: "kind=restart" in d.current_url, 10, "the filtered jobs")
    kinds = lambda d: [r.text for r in css(d, "#jobs-table tbody tr td:nth-child(2)")]  # noqa: E731
    assert kinds(driver) == ["restart"], kinds(driver)
    assert api.post("/api/v1/apps/web/scale", json={"replicas": 2}).status_code in (200, 202)
    stamp = css(driver, "[data-live-status]")[0].text
    wait(driver, lambda d: css(d, "[data-live-status]")[0].text != stamp, 15, "a live refresh")
    stamp = css(driver, "[data-live-status]")[0].text
    wait(driver, lambda d: css(d, "[data-live-status]")[0].text != stamp, 15, "another live refresh")
    assert kinds(driver) == ["restart"], kinds(driver)
    shot(driver, "jobs-kind-phone", PHONE)
    driver.get(live.url + "/ui/jobs?kind=nonsense")
    wait(driver, lambda d: css(d, "#filter-error"), 10, "the bad filter's message")
    assert "kind: must be one of" in css(driver, "#filter-error")[0].text
    driver.get(live.url + "/ui/cluster")
    wait(driver, lambda d: css(d, "#leader"), 10, "the cluster")
    assert css(driver, "#leader")[0].text == live.env["ORCHESTRY_NODE_ID"]
    shot(driver, "cluster-laptop")

    # A viewer sees the same pages without a single action, and cannot post one.
    css(driver, "form[action='/ui/logout'] button")[0].click()
    wait(driver, lambda d: "/ui/login" in d.current_url, 10, "logged out")
    log_in(driver, live, viewer)
    driver.get(live.url + "/ui/apps/web")
    wait(driver, lambda d: css(d, "#app-replicas"), 10, "the app as a viewer")
    assert css(driver, "#actions, #scale-form, #down-button, #mode-button, form[action$='/scale']") == []
    assert css(driver, "#restart-button, #rollback-form, form[action$='/restart'], form[action$='/rollback']") == []
    assert browser_post(driver, "/ui/apps/web/scale", "replicas=1") == 403
    shot(driver, "app-viewer-phone", PHONE)
    expected = ("status of 403", "/ui/jobs?kind=nonsense")  # the two refused POSTs, the bad filter's 400
    logged = driver.get_log("browser")
    errors = [e for e in logged if e["level"] == "SEVERE" and not any(x in e["message"] for x in expected)]
    assert errors == [], errors  # no CSP violation, no script error
    api.close()
