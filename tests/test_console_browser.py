"""The console as a person uses it, in a real headless browser (Debian's chromium and
chromium-driver through Selenium): log in, watch mail arrive live, open an explanation, filter,
try a message, release an IP from the penalty box; HTML from mail stays text and the page
breaks no rule of its Content-Security-Policy.

Screenshots of each page go to the test's temp folder; ``UPDATE_SCREENSHOTS=1`` writes them to
docs/img/ (the README shows them).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from proxy.state.sqlite_store import SqliteStore
from tests.harness.clients import smtp, swaks
from tests.harness.console import ADMIN_PASSWORD, console_config
from tests.harness.proc import ROOT, Spamgate, free_port

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EVIL_HELO = "<script>alert(1)</script>"
EVIL_SUBJECT = "<script>document.title='pwned'</script> hello"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        "--hide-scrollbars",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Spamgate, int]]:
    tmp: Path = tmp_path_factory.mktemp("browser")
    port = free_port()
    db = tmp / "state.db"
    cfg: dict[str, Any] = {
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "store": {"url": f"sqlite:///{db}"},
        "checks": {"reputation": {"penalty_rejects": 5, "exempt_networks": []}},
        **console_config(),
    }
    sg = Spamgate(tmp / "sg", cfg).start()
    sg.wait_log("admin_listening")

    async def seed() -> None:  # a client in the penalty box, in the shared store
        store = SqliteStore(str(db), 2.0)
        await store.set("box|127.0.9.9", "1", 900)
        await store.close()

    asyncio.run(seed())
    yield sg, port
    sg.stop()


def _shots(tmp: Path) -> Path:
    if os.environ.get("UPDATE_SCREENSHOTS"):
        return ROOT / "docs" / "img"
    return tmp


def _wait(driver: WebDriver, cond: Any, timeout: float = 10) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(cond)


def _csp_violations(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


def test_console_in_a_browser(browser: WebDriver, server: tuple[Spamgate, int], tmp_path: Path) -> None:
    sg, port = server
    base = f"http://127.0.0.1:{port}"
    shots = _shots(tmp_path)
    d = browser
    # Log in.
    d.get(base + "/console/")
    assert d.current_url.endswith("/console/login")
    d.save_screenshot(str(shots / "console-login.png"))
    d.find_element(By.ID, "password").send_keys(ADMIN_PASSWORD)
    d.find_element(By.CSS_SELECTOR, "form.login button").click()
    _wait(d, lambda drv: drv.find_elements(By.ID, "history"))
    # Mail arrives while the page is open: the rows appear without a reload.
    for i, ip in enumerate(("127.0.9.1", "127.0.9.2", "127.0.9.3")):
        out = swaks(
            sg.port,
            "--to",
            "bob@example.test",
            "--from",
            f"news{i}@sender.test",
            "--helo",
            f"mail{i}.sender.test",
            "-li",
            ip,
        )
        assert out.returncode == 0, out.stdout + out.stderr
    with smtp(sg.port, source_ip="127.0.9.4") as s:
        s.ehlo(EVIL_HELO)
        s.mail("x@sender.test")
        assert s.rcpt("victim@elsewhere.test")[0] == 554
        s.rset()
    table = d.find_element(By.ID, "history")
    _wait(d, lambda drv: len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) >= 4)
    text = table.text
    assert "news1@sender.test" in text
    assert "RCPT_RELAY_DENIED" in text
    assert EVIL_HELO in text, "HTML in the HELO is shown as text"
    assert len(d.find_elements(By.TAG_NAME, "script")) == 1, "only the console's own script"
    time.sleep(1.3)  # the fresh-row highlight fades
    d.save_screenshot(str(shots / "console-history.png"))
    # Open the explanation of the refused transaction by clicking its row.
    row = next(r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if "127.0.9.4" in r.text)
    row.find_elements(By.TAG_NAME, "td")[3].click()
    _wait(d, lambda drv: "/console/tx/" in drv.current_url)
    body = d.find_element(By.TAG_NAME, "main").text
    assert "RCPT_RELAY_DENIED" in body
    assert "spamgate explain --ref" in body
    assert EVIL_HELO in body
    d.save_screenshot(str(shots / "console-transaction.png"))
    # Filter by symbol.
    d.get(base + "/console/")
    d.find_element(By.NAME, "symbol").send_keys("RCPT_RELAY_DENIED")
    d.find_element(By.CSS_SELECTOR, "#filters button").click()
    _wait(d, lambda drv: "symbol=RCPT_RELAY_DENIED" in drv.current_url)
    rows = d.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    assert len(rows) == 1
    assert "127.0.9.4" in rows[0].text
    # Overview.
    d.get(base + "/console/overview")
    assert len(d.find_elements(By.CSS_SELECTOR, ".card svg")) >= 2
    assert "RCPT_RELAY_DENIED" in d.find_element(By.ID, "symbols").text
    d.save_screenshot(str(shots / "console-overview.png"))
    # Try a message whose subject holds a script.
    d.get(base + "/console/try")
    eml = tmp_path / "evil.eml"
    eml.write_text(f"From: a@example.net\nTo: postmaster@example.test\nSubject: {EVIL_SUBJECT}\n\nhello\n")
    d.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(eml))  # upload: read into the form
    _wait(d, lambda drv: "pwned" in drv.find_element(By.ID, "try-message").get_property("value"))
    helo = d.find_element(By.ID, "try-helo")
    helo.clear()
    helo.send_keys("localhost")
    d.find_element(By.CSS_SELECTOR, "#try button[type=submit]").click()
    result = _wait(d, lambda drv: drv.find_elements(By.ID, "try-result"))[0]
    assert d.find_element(By.ID, "try-subject").text == EVIL_SUBJECT
    assert d.title != "pwned"
    for stage in ("CONNECT", "HELO", "MAIL", "RCPT", "DATA"):
        assert stage in result.text
    assert "HELO_NOT_FQDN" in result.text
    d.execute_script("document.getElementById('try-result').scrollIntoView()")
    d.save_screenshot(str(shots / "console-try.png"))
    # Release an IP from the penalty box, with the confirmation step.
    with pytest.raises(smtplib.SMTPConnectError):
        smtp(sg.port, source_ip="127.0.9.9")
    d.get(base + "/console/state")
    d.find_element(By.ID, "state-ip").send_keys("127.0.9.9")
    d.find_element(By.CSS_SELECTOR, "main form.filters button").click()
    _wait(d, lambda drv: drv.find_elements(By.ID, "op-release"))
    d.save_screenshot(str(shots / "console-state.png"))
    d.find_element(By.ID, "op-release").click()
    _wait(d, lambda drv: drv.find_elements(By.ID, "confirm-yes"))
    assert "Really release 127.0.9.9" in d.find_element(By.ID, "confirm").text
    d.find_element(By.ID, "confirm-yes").click()
    _wait(d, lambda drv: drv.find_elements(By.ID, "state-message"))
    assert "release 127.0.9.9" in d.find_element(By.ID, "state-message").text
    with smtp(sg.port, source_ip="127.0.9.9") as s:
        assert s.ehlo("mail.sender.test")[0] == 250
    assert sg.events("console_audit")[-1]["operation"] == "release"
    assert _csp_violations(d) == []
