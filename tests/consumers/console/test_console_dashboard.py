"""The console as a dashboard, in a real browser on the real broker.

What a real worker handled and failed in the last five minutes, dead letters that
stand out with their age, retry queues by delay, receivers' readiness with a banner on
every page, a dead letter's traceback and replay count, the filters that stay after a
Replay, every page at 400 px wide with no failed request, and what the log says of a
first visit without credentials.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Page, Request, Response, ViewportSize, expect

from consumers.consumer import Consumer
from consumers.history.store import HistoryStore, open_pool
from consumers.settings import WorkerSettings
from consumers.topology import ConsumerQueues, declare_consumer_topology
from service.shared.bus import AuthMethod, Receipt, invalid_message
from service.shared.environment import Secret
from tests.consoles import PASSWORD, USER, Console, browser, console_env, start_console
from tests.consumers.console.test_console import _ignore, _shots, basic, until_depth
from tests.consumers.console.test_console_history import SAMPLES, _entry
from tests.databases import own_database_async
from tests.receivers import SpawnReceiver
from tests.support import AMQP_URL, BusView, consumer_queue_names
from tests.tools.tcp_proxy import proxy_to
from tests.worker_processes import SpawnWorker
from tests.workers.failures import failing

pytestmark = [pytest.mark.rabbit, pytest.mark.timeout(150)]

NARROW: ViewportSize = {"width": 400, "height": 800}
DELAYS = (1800.0, 5.0, 600.0, 30.0, 120.0)  # declared out of order on purpose
# Workers report every 5 s, the page refreshes every 5 s.
REPORTED_MS = 20_000


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with browser() as launched:
        yield launched


async def watched_page(
    launched: Browser, viewport: ViewportSize | None = None
) -> tuple[Page, list[str]]:
    """A logged-in page, and every request it made that failed or was answered >= 400."""
    context = await launched.new_context(
        http_credentials={"username": USER, "password": PASSWORD},
        viewport=viewport or {"width": 1280, "height": 800},
    )
    failed: list[str] = []

    def broke(request: Request) -> None:
        # A request the browser itself dropped as the page moved on (the icon, mostly)
        # did not fail: anything else did.
        if request.failure != "net::ERR_ABORTED":
            failed.append(f"failed {request.url}: {request.failure}")

    context.on("requestfailed", broke)

    def answered(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    context.on("response", answered)
    return await context.new_page(), failed


async def serving(bus: BusView, tmp_path: Path, **env: str) -> Console:
    return await start_console(tmp_path / "console.log", console_env(bus.names.prefix, **env))


async def test_the_overview_says_what_each_consumer_handled_and_failed_lately(
    bus: BusView, spawn_worker: SpawnWorker, chromium: Browser, tmp_path: Path
) -> None:
    slow = Consumer("slow", retry_delays=DELAYS)
    slow.on("never_sent")(_ignore)
    bus.forget_later(*consumer_queue_names(bus.names.prefix, slow))
    await declare_consumer_topology(bus.channel, bus.names, slow)
    worker = await spawn_worker(
        "tests.workers.failures.failing",
        failing.consumer,
        RECORD_FILE=str(tmp_path / "records.jsonl"),
    )
    for n in range(7):
        fields = {"Reject": "no such placement"} if n < 3 else {}
        await bus.publish_event("placement_updated", **fields)
    await until_depth(bus, ConsumerQueues(bus.names.prefix, "failing").dead, 3)
    console = await serving(bus, tmp_path)
    try:
        page, failed = await watched_page(chromium)
        await page.goto(console.url + "/")
        row = page.locator('tr[data-consumer="failing"]')
        await expect(row.locator('[data-consumer-field="handled"]')).to_have_text(
            "4", timeout=REPORTED_MS
        )
        await expect(row.locator('[data-consumer-field="failed"]')).to_have_text("3")
        await expect(row).to_have_class(re.compile("has-dead"))
        await expect(row.locator(".badge")).to_have_text("dead letters")
        await expect(row.locator('[data-consumer-field="oldest_dead"]')).to_have_text(
            re.compile(r"^\d+ s ago$")
        )
        # A consumer without dead letters does not stand out, and nothing of it ran.
        other = page.locator('tr[data-consumer="slow"]')
        await expect(other).not_to_have_class(re.compile("has-dead"))
        await expect(other.locator('[data-consumer-field="handled"]')).to_have_text("—")
        delays = await other.locator(".retry").all_inner_texts()
        assert [d.split(":")[0] for d in delays] == ["5s", "30s", "120s", "600s", "1800s"]
        # More events: the counts follow without a reload.
        for _ in range(2):
            await bus.publish_event("placement_updated")
        await expect(row.locator('[data-consumer-field="handled"]')).to_have_text(
            "6", timeout=REPORTED_MS
        )
        await page.screenshot(path=str(_shots(tmp_path) / "console-overview.png"), full_page=True)
        assert not failed, failed
    finally:
        assert await console.stop() == 0
        assert await worker.stop() == 0


async def test_a_receiver_that_goes_away_is_named_at_the_top_of_every_page(
    bus: BusView, spawn_receiver: SpawnReceiver, chromium: Browser, tmp_path: Path
) -> None:
    receiver = await spawn_receiver()
    console = await serving(bus, tmp_path, CONSOLE_RECEIVERS=f" {receiver.url} ")
    try:
        page, failed = await watched_page(chromium)
        await page.goto(console.url + "/")
        table = page.locator("#receivers")
        await expect(table.locator("tbody tr")).to_have_count(1)
        await expect(table).to_contain_text("ready")
        await expect(table).to_contain_text("connected")
        await expect(page.locator("#receivers-banner")).to_have_count(0)
        assert await receiver.stop() == 0
        # The overview reloads itself when a receiver's state changes.
        banner = page.locator("#receivers-banner")
        await expect(banner).to_contain_text(receiver.url, timeout=REPORTED_MS)
        await expect(banner).to_contain_text("no answer")
        missing = await page.goto(console.url + "/consumers/nobody")
        assert missing is not None
        assert missing.status == 404
        assert "no consumer nobody under prefix" in await missing.text()
        failed.clear()
        for path in ("/unrouted", "/invalid", "/history"):
            await page.goto(console.url + path, wait_until="networkidle")
            await expect(page.locator("#receivers-banner")).to_contain_text(receiver.url)
        assert not failed, failed
    finally:
        assert await console.stop() == 0
    logged = [json.loads(line) for line in console.log.read_text().splitlines()]
    changes = [line for line in logged if line.get("event") == "console: receiver readiness"]
    assert [line["level"] for line in changes] == ["info", "warning"]


async def test_a_bad_receivers_setting_is_refused_with_its_name(bus: BusView) -> None:
    from tests.worker_processes import run_cli

    env = {**console_env(bus.names.prefix), "CONSOLE_RECEIVERS": "http://ok:8080,ftp://x"}
    code, _, err = await run_cli(env, "console")
    assert code == 2
    assert "CONSOLE_RECEIVERS" in err
    assert "ftp://x" in err


async def test_a_dead_letter_shows_its_times_traceback_and_replays_and_filters_stay(
    bus: BusView, spawn_worker: SpawnWorker, chromium: Browser, tmp_path: Path
) -> None:
    worker = await spawn_worker(
        "tests.workers.failures.failing",
        failing.consumer,
        RECORD_FILE=str(tmp_path / "records.jsonl"),
    )
    dead = ConsumerQueues(bus.names.prefix, "failing").dead
    ids = [
        await bus.publish_event("placement_updated", Fail="the placement is locked"),
        await bus.publish_event("talent_created", Reject="archived", FrontOfficeTenantId=7),
    ]
    await until_depth(bus, dead, 2)
    console = await serving(bus, tmp_path)
    try:
        page, failed = await watched_page(chromium)
        await page.goto(f"{console.url}/consumers/failing")
        rows = page.locator("#letters tbody tr[data-key]")
        await expect(rows).to_have_count(2)
        now = datetime.now(UTC)
        first = rows.filter(has_text=ids[0])
        stamp = await first.locator("td.time").first.inner_text()
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", stamp)
        taken = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
        assert abs((now - taken).total_seconds()) < 60
        await expect(first.locator("td.time").nth(1)).to_have_text(re.compile(r"^\d+ s$"))
        # Filter by tenant, then by a part of the message id.
        await page.select_option("select[name=tenant]", "7")
        await page.get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text(ids[1])
        await page.goto(f"{console.url}/consumers/failing")
        await page.fill("form.filters input[name=id]", ids[0][4:20])
        await page.get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(1)
        # Replay it: the worker fails it again; the page comes back with the filter on.
        await rows.first.get_by_role("button", name="Replay").click()
        await expect(page.locator(".notice")).to_contain_text("1 letter(s)")
        assert f"id={ids[0][4:20]}" in page.url
        await expect(page.locator("form.filters input[name=id]")).to_have_value(ids[0][4:20])
        await until_depth(bus, dead, 2)
        await page.reload()
        await expect(rows).to_have_count(1)
        await expect(rows.first.locator(".replays")).to_have_text("1\N{MULTIPLICATION SIGN}")
        await rows.first.locator("td.id a").click()
        await expect(page.locator("#replays")).to_contain_text("replayed 1 time(s)")
        await expect(page.locator("#failed-at")).to_contain_text(" UTC (")
        traceback = page.locator("#traceback")
        await expect(traceback).to_contain_text("Traceback (most recent call last)")
        await expect(traceback).to_contain_text("in handle")
        await expect(traceback).to_contain_text("RuntimeError: the placement is locked")
        await page.screenshot(path=str(_shots(tmp_path) / "console-letter.png"), full_page=True)
        assert not failed, failed
    finally:
        assert await console.stop() == 0
        assert await worker.stop() == 0


async def test_every_page_fits_400_px_and_no_request_fails(
    bus: BusView, spawn_worker: SpawnWorker, chromium: Browser, tmp_path: Path
) -> None:
    worker = await spawn_worker(
        "tests.workers.failures.failing",
        failing.consumer,
        RECORD_FILE=str(tmp_path / "records.jsonl"),
    )
    long = "a-very-long-reason-" * 12
    await bus.publish_event("placement_updated", Reject=long)
    await until_depth(bus, ConsumerQueues(bus.names.prefix, "failing").dead, 1)
    assert await worker.stop() == 0
    await bus.declare()
    await bus.publish_event("company_updated")  # bound to nothing: unrouted
    receipt = Receipt("d-1", AuthMethod.API_KEY, datetime.now(UTC))
    quarantined = invalid_message(bus.names, b"{not json" * 40, "not JSON", receipt)
    underlay = await bus.channel.get_underlay_channel()
    await underlay.basic_publish(
        quarantined.body, routing_key=bus.names.invalid, properties=quarantined.properties
    )
    async with own_database_async() as history_url:
        scope = WorkerSettings(amqp_url=Secret(AMQP_URL), bus_prefix=bus.names.prefix).scope
        store = HistoryStore(await open_pool(history_url, "the test's database"), scope)
        await store.create()
        now = datetime.now(UTC)
        await store.write([_entry(0, now, *SAMPLES[0][1:])])
        await store.close()
        console = await serving(
            bus, tmp_path, HISTORY_DATABASE_URL=history_url, CONSOLE_RECEIVERS="http://127.0.0.1:9"
        )
        try:
            page, failed = await watched_page(chromium, NARROW)
            await page.goto(console.url + "/consumers/failing")
            letter = await page.locator("td.id a").first.get_attribute("href")
            await page.goto(console.url + "/invalid")
            held = await page.locator("#letters td a").first.get_attribute("href")
            paths = [
                "/",
                "/consumers/failing",
                f"{letter}",
                f"{letter}/discard",
                "/unrouted",
                "/invalid",
                f"{held}",
                "/history",
                "/history/event-0",
            ]
            widths = {}
            for path in paths:
                answer = await page.goto(console.url + path, wait_until="networkidle")
                assert answer is not None, path
                assert answer.status == 200, path
                await expect(page.locator("#receivers-banner")).to_be_visible()
                widths[path] = await page.evaluate("document.documentElement.scrollWidth")
            assert {p: w for p, w in widths.items() if w > NARROW["width"]} == {}
            await page.goto(console.url + "/")
            await page.screenshot(path=str(_shots(tmp_path) / "console-narrow.png"), full_page=True)
            # The wide table scrolls in its own box instead.
            box = page.locator("#consumers").locator("xpath=..")
            assert await box.evaluate("b => b.scrollWidth > b.clientWidth")
            icon = await page.request.get(console.url + "/favicon.ico")
            assert icon.status == 200
            assert icon.headers["content-type"].startswith("image/svg+xml")
            assert not failed, failed
        finally:
            assert await console.stop() == 0


async def test_a_first_visit_without_credentials_is_info_and_a_wrong_password_a_warning(
    bus: BusView, tmp_path: Path
) -> None:
    console = await serving(bus, tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(console.url + "/") as response:
                assert response.status == 401
            async with session.get(console.url + "/", headers=basic(USER, "wrong")) as response:
                assert response.status == 401
            async with session.get(console.url + "/", headers=basic(USER, PASSWORD)) as response:
                assert response.status == 200
    finally:
        assert await console.stop() == 0
    logged = [json.loads(line) for line in console.log.read_text().splitlines()]
    asked = [line for line in logged if line.get("event") == "console asked for credentials"]
    refused = [line for line in logged if line.get("event") == "console authentication failed"]
    assert [line["level"] for line in asked] == ["info"]
    assert [line["level"] for line in refused] == ["warning"]
    assert "wrong" not in console.log.read_text()
    await asyncio.sleep(0)


async def test_after_the_broker_link_breaks_the_next_pages_work_again(
    bus: BusView, tmp_path: Path
) -> None:
    async with proxy_to(AMQP_URL) as (proxy, url):
        console = await serving(bus, tmp_path, AMQP_URL=url)
        try:
            async with aiohttp.ClientSession(headers=basic(USER, PASSWORD)) as session:
                async with session.get(console.url + "/unrouted") as response:
                    assert response.status == 200
                await proxy.cut()
                statuses: list[int] = []
                async with asyncio.timeout(20):
                    while not statuses or statuses[-1] != 200:
                        await asyncio.sleep(0.2)
                        async with session.get(console.url + "/unrouted") as response:
                            statuses.append(response.status)
                # At most the request that met the broken link failed.
                assert statuses.count(503) <= 1, statuses
                async with session.get(console.url + "/") as response:
                    assert response.status == 200
        finally:
            assert await console.stop() == 0
