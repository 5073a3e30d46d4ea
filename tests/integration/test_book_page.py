"""The live book page (``/book/<SYMBOL>`` on the side port) in a real headless Chromium driven by
Selenium: load it against a real ``hftgw serve`` process, send orders over TCP, see the BBO,
the trades and the depth ladder change.

Needs Debian's ``chromium`` and ``chromium-driver`` (never a downloaded browser); without them
the test is skipped, unless HFTGW_REQUIRE_BROWSER=1 (set by .ci/run) makes that a failure.
"""
from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.gateway_harness import limit, login, scrape, serve_process

from matching.records import Side
from protocol.messages import CancelOrder, NewOrder

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    if os.environ.get("HFTGW_REQUIRE_BROWSER"):
        raise RuntimeError(f"{CHROMIUM} and {CHROMEDRIVER} are required: "
                           "apt-get install -y chromium chromium-driver")
    pytest.skip("Debian chromium / chromium-driver not installed", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def amzn(cl: int, side: int, price: int, qty: int) -> NewOrder:
    return limit(cl, side, price, qty, symbol="AMZN")


async def trade(cfg: Any, steps: list[tuple[str, Any]]) -> None:
    """Each (account, request) in order, waiting for the request's first answer."""
    clients: dict[str, Any] = {}
    for account, req in steps:
        c = clients.get(account) or await login(cfg, account)
        clients[account] = c
        c.send(req)
        await c.recv_until(lambda m, req=req: getattr(m, "cl_ord_id", None) == req.cl_ord_id)
    for c in clients.values():
        await c.logout()


def text(driver: Any, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def ladder(driver: Any) -> list[tuple[str, int, int]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#ladder tbody tr")
    return [(r.get_attribute("data-side"), int(r.get_attribute("data-price")),
             int(r.get_attribute("data-size"))) for r in rows]


def test_book_page_follows_the_market_in_a_real_browser(tmp_path: Path, browser: Any) -> None:
    with serve_process(tmp_path) as (cfg, _proc):
        assert scrape(cfg, "/book/NOPE")[0] == 404
        status, html = scrape(cfg, "/book/AMZN")
        assert status == 200 and '"symbol": "AMZN"' in html
        # a book before the page opens: the page starts from the snapshot
        asyncio.run(trade(cfg, [("alice", amzn(1, Side.SIDE_SELL, 1_500_500, 50))]))
        browser.get(f"http://{cfg.metrics_listen}/book/AMZN")
        wait = WebDriverWait(browser, 20, poll_frequency=0.05)
        wait.until(lambda d: text(d, "status") == "connected" and ladder(d) == [("ask", 1_500_500, 50)])
        assert text(browser, "symbol") == "AMZN" and text(browser, "ask-px") == "150.05"
        asyncio.run(trade(cfg, [
            ("alice", amzn(2, Side.SIDE_SELL, 1_500_000, 100)),
            ("bob", amzn(1, Side.SIDE_BUY, 1_500_100, 40)),     # trades 40 at 150.00
            ("carol", amzn(1, Side.SIDE_BUY, 1_499_000, 30)),
        ]))
        wait.until(lambda d: ladder(d) == [("ask", 1_500_500, 50), ("ask", 1_500_000, 60),
                                           ("bid", 1_499_000, 30)])
        wait.until(lambda d: (text(d, "bid-px"), text(d, "bid-qty"), text(d, "ask-px"), text(d, "ask-qty"))
                   == ("149.90", "30", "150.00", "60"))
        trades = browser.find_elements(By.CSS_SELECTOR, "#trades tbody tr")
        assert len(trades) == 1 and text(browser, "trade-count") == "1"
        cells = [td.text for td in trades[0].find_elements(By.TAG_NAME, "td")]
        assert cells[2:] == ["150.00", "40", "buy"]
        # a cancel and a sweep: the ladder, the BBO and the trades follow
        asyncio.run(trade(cfg, [
            ("carol", CancelOrder(cl_ord_id=2, orig_cl_ord_id=1, symbol="AMZN")),
            ("dave", amzn(1, Side.SIDE_BUY, 1_500_500, 70)),   # 60 at 150.00, 10 at 150.05
        ]))
        wait.until(lambda d: ladder(d) == [("ask", 1_500_500, 40)])
        wait.until(lambda d: text(d, "trade-count") == "3" and text(d, "bid-px") == "-")
        assert text(browser, "ask-px") == "150.05" and text(browser, "ask-qty") == "40"
        seq = int(text(browser, "seq"))
        assert seq >= 4
        logs = browser.get_log("browser") if hasattr(browser, "get_log") else []
        assert not [e for e in logs if e.get("level") == "SEVERE"], logs
