"""A person's view in a real Chromium: review a rejected order, fix it, resubmit, see it counted.

Chromium is Debian's package (installed by the session fixture when missing and we are root);
Playwright drives it through ``executable_path`` and never downloads a browser.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orders.consumer import Consumer
from orders.models import RejectedOrder, RejectionRecord
from orders.sqs import OrderQueue
from orders.validation import Rejection, validate_message
from stats.store import AggregateStore

playwright_api = pytest.importorskip("playwright.sync_api")
Browser = playwright_api.Browser
Dialog = playwright_api.Dialog
Page = playwright_api.Page
expect = playwright_api.expect
sync_playwright = playwright_api.sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def _install_chromium() -> str | None:
    """Install Debian's chromium; returns why it could not be installed, or None."""
    if os.geteuid() != 0:
        return "not root, cannot apt-get install chromium"
    if shutil.which("apt-get") is None:
        return "apt-get not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
    ):
        try:
            result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return f"{' '.join(cmd)} timed out"
        if result.returncode != 0:
            return f"{' '.join(cmd)} failed: {result.stderr.strip()[-500:]}"
    return None if CHROMIUM.exists() else "chromium installed but /usr/bin/chromium is missing"


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        problem = _install_chromium()
        if problem:
            pytest.skip(f"Debian chromium is required for the browser test: {problem}")
    return CHROMIUM


@pytest.fixture
def browser(chromium_path: Path, live_server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    """A Chromium for one test, started after the database and the live server are up.

    Playwright's sync API keeps an asyncio loop in this thread, and Django's ORM refuses to
    run under a loop unless told it is safe, which it is here: nothing in the test is async.
    """
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, live_server) -> Iterator[Page]:
    """A fresh browser context per test; JavaScript dialogs are recorded and dismissed."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.dialogs = []  # type: ignore[attr-defined]

    def on_dialog(dialog: Dialog) -> None:
        page.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield page
    context.close()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def shown_json(page: Page) -> dict:
    """The JSON document DRF's browsable API shows in its response block."""
    text = page.locator(".response-info pre").inner_text()
    return json.loads(text[text.index("{") :])


XSS = "<script>alert(1)</script>"


def record(message_id: str, body: str, queue_name: str) -> None:
    outcome = validate_message(body, received_at=datetime.now(UTC))
    assert isinstance(outcome, Rejection), body
    RejectedOrder.objects.record_many(
        [
            RejectionRecord(
                message_id=message_id,
                body=body,
                rejection=outcome,
                queue_name=queue_name,  # where a resubmit sends it: the test's own queue
                receive_count=1,
                received_at=datetime.now(UTC),
            )
        ]
    )


@pytest.fixture
def rejected_orders(transactional_db, sqs_queue: OrderQueue) -> str:
    """Three rejects: the one to fix (value_mismatch, HTML in its address), one whose order id
    is a script tag (missing_field), one that is not JSON. Returns today's date."""
    today = datetime.now(UTC).date().isoformat()
    record(
        "msg-fix",
        json.dumps(
            {
                "order_id": "ORD-FIX",
                "user_id": "U-BROWSER",
                "order_timestamp": f"{today}T10:15:00Z",
                "order_value": 100.00,
                "items": [
                    {"product_id": "P001", "quantity": 2, "price_per_unit": 19.99},
                    {"product_id": "P042", "quantity": 1, "price_per_unit": 69.99},
                ],
                "shipping_address": f"{XSS} 123 Main St",
            }
        ),
        sqs_queue.name,
    )
    record("msg-xss", json.dumps({"order_id": XSS, "order_value": 1, "items": []}), sqs_queue.name)
    record("msg-bad", "{not json", sqs_queue.name)
    return today


# Generous only for a first run that installs chromium; the test itself takes ~10 s.
@pytest.mark.timeout(900)
def test_staff_fix_and_resubmit_a_rejected_order_and_see_it_counted(
    page: Page,
    live_server,
    admin_user,
    rejected_orders: str,
    sqs_queue: OrderQueue,
    store: AggregateStore,
) -> None:
    today = rejected_orders

    # Log in to the admin as staff.
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    shot(page, "01-login")
    page.click("input[type=submit]")
    expect(page.locator("#dashboard-link")).to_contain_text("Dashboard")

    # The rejected orders list: a script tag in an order id is text, not markup.
    page.goto("/admin/orders/rejectedorder/")
    expect(page.locator("#result_list tbody tr")).to_have_count(3)
    expect(page.locator("#result_list").get_by_text(XSS)).to_be_visible()
    shot(page, "02-rejected-list")

    # Filter by reason code.
    page.locator("#changelist-filter a", has_text="value_mismatch").click()
    expect(page).to_have_url(re.compile(r"reason=value_mismatch"))
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    shot(page, "03-filtered-value-mismatch")

    # Open it: the raw payload (with its HTML) shows as text.
    page.locator("#result_list tbody tr", has_text="ORD-FIX").locator("th a").click()
    expect(page.locator(".field-payload_display pre")).to_contain_text(f"{XSS} 123 Main St")
    expect(page.locator(".field-reasons_display")).to_contain_text("value_mismatch")

    # Fix the payload (109.97 is what the items add up to) and save.
    fixed = {
        "order_id": "ORD-FIX",
        "user_id": "U-BROWSER",
        "order_timestamp": f"{today}T10:15:00Z",
        "order_value": 109.97,
        "items": [
            {"product_id": "P001", "quantity": 2, "price_per_unit": 19.99},
            {"product_id": "P042", "quantity": 1, "price_per_unit": 69.99},
        ],
        "shipping_address": f"{XSS} 123 Main St",
    }
    page.fill("#id_corrected_payload", json.dumps(fixed, indent=2))
    page.fill("#id_staff_note", "order_value corrected to the items' total")
    shot(page, "04-change-form-fixed")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")

    # Resubmit it with the admin action.
    row = page.locator("#result_list tbody tr", has_text="ORD-FIX")
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "resubmit_corrected")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text(
        "1 corrected order(s) sent to the orders queue."
    )
    expect(page.locator("#result_list tbody tr", has_text="ORD-FIX")).to_contain_text("Resubmitted")
    shot(page, "05-resubmitted")

    # The consumer takes it from the queue into Redis.
    Consumer(sqs_queue, store, wait_time=1, until_empty=True).run_worker()

    # Counted: the browsable API pages show it.
    page.goto("/stats/global")
    expect(page.locator(".response-info")).to_contain_text("total_orders")
    got = shown_json(page)
    assert (got["total_orders"], got["total_revenue"]) == (1, 109.97)
    shot(page, "06-stats-global")

    page.goto("/users/U-BROWSER/stats")
    got = shown_json(page)
    assert (got["user_id"], got["order_count"], got["total_spend"]) == ("U-BROWSER", 1, 109.97)
    shot(page, "07-user-stats")

    page.goto(f"/stats/by-date?start_date={today}&end_date={today}")
    got = shown_json(page)
    assert got["days"] == [
        {
            "date": today,
            "total_orders": 1,
            "total_revenue": 109.97,
            "gross_revenue": 109.97,
            "refunded": 0,
        }
    ]
    shot(page, "08-by-date")

    # The dashboard: totals, the chart (server-rendered SVG), rejects by reason.
    page.goto("/admin/dashboard/")
    expect(page.locator("#total-orders")).to_have_text("1")
    expect(page.locator("#total-revenue")).to_have_text("109.97")
    expect(page.locator("svg.dashboard-chart rect.bar")).to_have_count(30)
    bar = page.locator(f"svg.dashboard-chart rect.bar[data-date='{today}']")
    expect(bar).to_have_attribute("data-gross", "109.97")
    expect(bar).to_have_attribute("data-net", "109.97")
    expect(page.locator("#reasons")).to_contain_text("value_mismatch")
    shot(page, "09-dashboard")
    page.locator("a.reason-link[data-code=missing_field]").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list").get_by_text(XSS)).to_be_visible()

    # No script from any payload ever ran.
    assert page.dialogs == []  # type: ignore[attr-defined]
