"""The operator console in a real browser (Chromium, driven by Playwright), on the real broker.

Dead letters are made by a real worker (`tests.workers.failures.failing`), which then stops,
so that what a replay sends back stays in its queue to be counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from playwright.async_api import Browser, expect

from consumers import Event
from consumers.consumer import Consumer
from consumers.topology import ConsumerQueues, declare_consumer_topology
from service.shared.bus import AuthMethod, Receipt, invalid_message
from tests.consoles import (
    PASSWORD,
    USER,
    Console,
    browser,
    console_env,
    operator_page,
    start_console,
)
from tests.support import AMQP_URL, BusView
from tests.tools.nodes import free_port
from tests.tools.tcp_proxy import TcpProxy
from tests.worker_processes import SpawnWorker, run_cli, start_consumers
from tests.workers.failures import failing

pytestmark = [pytest.mark.rabbit, pytest.mark.timeout(120)]

LETTERS = 6
# The page refreshes its counts every 5 s.
STALE_MS = 8_000


async def depth(bus: BusView, queue: str) -> int:
    declared = await bus.channel.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count or 0)


async def until_depth(bus: BusView, queue: str, wanted: int, within: float = 20) -> None:
    async with asyncio.timeout(within):
        while await depth(bus, queue) != wanted:
            await asyncio.sleep(0.1)


@pytest.fixture
async def dead_letters(bus: BusView, spawn_worker: SpawnWorker, tmp_path: Path) -> list[str]:
    """LETTERS dead letters of `failing`, made by a real worker that has stopped since."""
    worker = await spawn_worker(
        "tests.workers.failures.failing",
        failing.consumer,
        RECORD_FILE=str(tmp_path / "records.jsonl"),
    )
    ids = []
    for n in range(LETTERS):
        event = "placement_updated" if n % 2 else "talent_created"
        resource = json.dumps({"PlacementId": 1000 + n, "CorrelationId": f"corr-{n}"})
        reason = "no such placement" if n % 2 else "talent is archived"
        ids.append(await bus.publish_event(event, Reject=reason, Resource=resource))
        await asyncio.sleep(0.05)  # distinct failure times, so newest-first is testable
    await until_depth(bus, ConsumerQueues(bus.names.prefix, "failing").dead, LETTERS)
    assert await worker.stop() == 0
    return ids


@pytest.fixture
async def console(bus: BusView, tmp_path: Path) -> AsyncIterator[Console]:
    running = await start_console(tmp_path / "console.log", console_env(bus.names.prefix))
    try:
        yield running
    finally:
        assert await running.stop() == 0


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with browser() as launched:
        yield launched


def only_console(requested: list[str], console: Console) -> None:
    strays = [url for url in requested if not url.startswith(console.url + "/")]
    assert not strays, f"requests to other hosts: {strays}"


async def test_the_overview_shows_every_consumer_queue_and_its_counts_follow(
    bus: BusView, dead_letters: list[str], console: Console, chromium: Browser, tmp_path: Path
) -> None:
    # A consumer whose module is nowhere near the console: only its queues exist.
    billing = Consumer("billing-sync")
    billing.on("company.#")(_ignore)
    await declare_consumer_topology(bus.channel, bus.names, billing)
    bus.forget_later(*_queues(bus, billing))
    async with operator_page(chromium, console) as (page, requested):
        await page.goto(console.url + "/")
        rows = page.locator("#consumers tbody tr[data-consumer]")
        await expect(rows).to_have_count(2)
        failing_row = page.locator('tr[data-consumer="failing"]')
        dead_cell = failing_row.locator('[data-field="ready"]').nth(1)
        await expect(dead_cell).to_have_text(str(LETTERS))
        await expect(page.locator('tr[data-consumer="billing-sync"]')).to_be_visible()
        await expect(page.locator('[data-queue$=".unrouted"]')).to_have_text("0")

        # A new dead letter, and the count follows without a reload.
        await bus.channel.default_exchange.publish(
            _held_copy(), routing_key=ConsumerQueues(bus.names.prefix, "failing").dead
        )
        await expect(dead_cell).to_have_text(str(LETTERS + 1), timeout=STALE_MS)
        only_console(requested, console)


async def test_dead_letters_newest_first_filtered_with_the_payload_decoded(
    bus: BusView, dead_letters: list[str], console: Console, chromium: Browser, tmp_path: Path
) -> None:
    async with operator_page(chromium, console) as (page, requested):
        await page.goto(console.url + "/")
        await page.get_by_role("link", name="failing").click()
        rows = page.locator("#letters tbody tr[data-key]")
        await expect(rows).to_have_count(LETTERS)
        await expect(page.locator(".count")).to_contain_text(f"{LETTERS} in")
        shown = [await rows.nth(n).locator("code").inner_text() for n in range(LETTERS)]
        assert shown == list(reversed(dead_letters))  # newest first
        first = rows.nth(0)
        await expect(first).to_contain_text("Reject: no such placement")
        await expect(first).to_contain_text("placement_updated")
        await page.screenshot(
            path=str(_shots(tmp_path) / "console-dead-letters.png"), full_page=True
        )

        await page.select_option('select[name="event"]', "talent_created")
        await page.get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(LETTERS // 2)
        await expect(page.locator("#letters")).not_to_contain_text("placement_updated")

        await rows.nth(0).locator("a").first.click()
        payload = page.locator("#payload")
        # The Resource string is shown as the object it holds.
        await expect(payload).to_contain_text('"PlacementId": 1004')
        await expect(page.locator("#headers")).to_contain_text("x-error-type")
        only_console(requested, console)
    assert await depth(bus, f"{bus.names.prefix}.failing.dead") == LETTERS  # looking took none


async def test_replay_one_then_all_and_the_broker_counts_follow(
    bus: BusView, dead_letters: list[str], console: Console, chromium: Browser
) -> None:
    queues = ConsumerQueues(bus.names.prefix, "failing")
    async with operator_page(chromium, console) as (page, _):
        await page.goto(f"{console.url}/consumers/failing")
        rows = page.locator("#letters tbody tr[data-key]")
        await rows.nth(0).get_by_role("button", name="Replay").click()
        await expect(page.locator(".notice")).to_have_text(
            "1 letter(s) sent back to the consumer's queue."
        )
        await expect(rows).to_have_count(LETTERS - 1)
        assert await depth(bus, queues.main) == 1
        [replayed] = await bus.drain(await bus.queue(queues.main))
        assert replayed.message_id == dead_letters[-1]
        assert "x-error-type" not in (replayed.headers or {})  # attempts start over

        await page.get_by_role("button", name="Replay all").click()
        await expect(page.locator(".notice")).to_contain_text(f"{LETTERS - 1} letter(s)")
        await expect(rows).to_have_count(0)
    assert await depth(bus, queues.dead) == 0
    assert await depth(bus, queues.main) == LETTERS - 1


async def test_replay_what_the_filter_shows(
    bus: BusView, dead_letters: list[str], console: Console, chromium: Browser
) -> None:
    queues = ConsumerQueues(bus.names.prefix, "failing")
    async with operator_page(chromium, console) as (page, _):
        await page.goto(f"{console.url}/consumers/failing?event=placement_updated")
        await page.locator("#replay-filtered").click()
        await expect(page.locator(".notice")).to_contain_text(f"{LETTERS // 2} letter(s)")
    moved = await bus.drain(await bus.queue(queues.main))
    assert sorted(m.message_id or "" for m in moved) == sorted(dead_letters[1::2])
    assert await depth(bus, queues.dead) == LETTERS // 2


async def test_discard_asks_first_and_removes_one_letter(
    bus: BusView, dead_letters: list[str], console: Console, chromium: Browser
) -> None:
    queues = ConsumerQueues(bus.names.prefix, "failing")
    async with operator_page(chromium, console) as (page, _):
        await page.goto(f"{console.url}/consumers/failing")
        rows = page.locator("#letters tbody tr[data-key]")
        await rows.nth(0).get_by_role("link", name="Discard").click()
        await expect(page.locator("h1")).to_have_text("Discard this dead letter?")
        await page.get_by_role("link", name="Keep it").click()
        assert await depth(bus, queues.dead) == LETTERS

        await page.go_back()
        await page.get_by_role("button", name="Discard for good").click()
        await expect(page.locator(".notice")).to_have_text("1 letter(s) discarded.")
        await expect(rows).to_have_count(LETTERS - 1)
        remaining = [await rows.nth(n).locator("code").inner_text() for n in range(LETTERS - 1)]
        assert dead_letters[-1] not in remaining
    assert await depth(bus, queues.dead) == LETTERS - 1
    assert await depth(bus, queues.main) == 0


async def test_unrouted_events_are_listed_and_rerouted(
    bus: BusView, console: Console, chromium: Browser
) -> None:
    await bus.declare()
    sent = [await bus.publish_event("contact_updated") for _ in range(3)]
    await until_depth(bus, bus.names.unrouted, 3)
    crm = Consumer("crm-contacts")
    crm.on("contact.#")(_ignore)
    await declare_consumer_topology(bus.channel, bus.names, crm)
    bus.forget_later(*_queues(bus, crm))
    async with operator_page(chromium, console) as (page, requested):
        await page.goto(console.url + "/")
        await page.get_by_role("link", name=bus.names.unrouted).click()
        await expect(page.locator("#letters tbody tr[data-key]")).to_have_count(3)
        await expect(page.locator("#letters")).to_contain_text("contact.updated")
        await page.get_by_role("button", name="Reroute").click()
        await expect(page.locator(".notice")).to_contain_text("3 event(s)")
        await expect(page.locator("#letters tbody tr[data-key]")).to_have_count(0)
        only_console(requested, console)
    assert await depth(bus, bus.names.unrouted) == 0
    moved = await bus.drain(await bus.queue(f"{bus.names.prefix}.crm-contacts"))
    assert sorted(m.message_id or "" for m in moved) == sorted(sent)


async def test_invalid_deliveries_show_their_reason_and_raw_body(
    bus: BusView, console: Console, chromium: Browser
) -> None:
    await bus.declare()
    receipt = Receipt("d-1", AuthMethod.API_KEY, datetime.now(UTC))
    for body, reason in (
        (b"not json at all", "parse_error"),
        (b"\xff\xfe\x00binary", "parse_error"),
    ):
        message = invalid_message(bus.names, body, reason, receipt)
        underlay = await bus.channel.get_underlay_channel()
        await underlay.basic_publish(
            message.body,
            exchange="",
            routing_key=message.routing_key,
            properties=message.properties,
        )
    await until_depth(bus, bus.names.invalid, 2)
    async with operator_page(chromium, console) as (page, _):
        await page.goto(console.url + "/invalid")
        rows = page.locator("#letters tbody tr[data-key]")
        await expect(rows).to_have_count(2)
        await expect(page.locator("#letters")).to_contain_text("parse_error")
        await expect(page.get_by_role("button", name=re.compile("Replay"))).to_have_count(0)
        await rows.nth(1).locator("a").first.click()  # the older one: text
        await expect(page.locator("#payload")).to_have_text("not json at all")
        async with page.expect_download() as waiting:
            await page.locator("#download").click()
        download = await waiting.value
        saved = Path(await download.path())
        assert await asyncio.to_thread(saved.read_bytes) == b"not json at all"
        await page.goto(console.url + "/invalid")
        await rows.nth(0).locator("a").first.click()  # binary
        await expect(page.locator("#payload")).to_contain_text("Not text")
    assert await depth(bus, bus.names.invalid) == 2


async def test_without_credentials_or_a_csrf_token_nothing_happens(
    bus: BusView, dead_letters: list[str], console: Console, chromium: Browser
) -> None:
    queues = ConsumerQueues(bus.names.prefix, "failing")
    async with aiohttp.ClientSession() as session:
        async with session.get(console.url + "/") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Basic ")
        wrong = basic(USER, "not-the-password")
        async with session.get(console.url + "/", headers=wrong) as response:
            assert response.status == 401
        right = basic(USER, PASSWORD)
        replay = f"{console.url}/consumers/failing/replay"
        async with session.post(replay, data={"scope": "all"}, headers=right) as response:
            assert response.status == 403  # no token
        async with session.get(f"{console.url}/consumers/failing", headers=right) as response:
            html = await response.text()
            assert PASSWORD not in html
            token = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
            assert token is not None
            csp = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp
            assert "script-src 'self'" in csp
        form = {"scope": "all", "csrf": "0" * 64}
        async with session.post(replay, data=form, headers=right) as response:
            assert response.status == 403  # a wrong token
        form = {"scope": "all", "csrf": token.group(1)}
        elsewhere = {"Origin": "http://evil.example"}
        async with session.post(replay, data=form, headers={**right, **elsewhere}) as response:
            assert response.status == 403  # the right token from another origin
        async with session.get(replay, headers=right) as response:
            assert response.status == 405
    assert await depth(bus, queues.dead) == LETTERS
    assert await depth(bus, queues.main) == 0
    # A browser page's own form does work (its origin is the console's).
    async with operator_page(chromium, console) as (page, _):
        await page.goto(f"{console.url}/consumers/failing")
        await page.get_by_role("button", name="Replay all").click()
        await expect(page.locator(".notice")).to_contain_text(f"{LETTERS} letter(s)")
    async with operator_page(chromium, console, password="wrong") as (page, _):
        refused = await page.goto(console.url + "/")
        assert refused is not None
        assert refused.status == 401
    logged = console.log.read_text()
    assert PASSWORD not in logged
    assert "console authentication failed" in logged


async def test_the_console_says_when_the_management_api_is_out_of_reach(
    bus: BusView, dead_letters: list[str], chromium: Browser, tmp_path: Path
) -> None:
    env = console_env(bus.names.prefix, RABBITMQ_MANAGEMENT_URL="http://guest:guest@127.0.0.1:9/")
    running = await start_console(tmp_path / "console.log", env)
    try:
        async with operator_page(chromium, running) as (page, _):
            await page.goto(running.url + "/")
            await expect(page.locator(".problem")).to_contain_text(
                "cannot reach RabbitMQ's management API at http://127.0.0.1:9/"
            )
            await expect(page.locator(".problem")).not_to_contain_text("guest")
            # The registry still names the consumer, and AMQP gives its dead count.
            row = page.locator('tr[data-consumer="failing"]')
            await expect(row.locator('[data-field="ready"]').nth(1)).to_have_text(str(LETTERS))
    finally:
        assert await running.stop() == 0


async def test_it_will_not_start_without_a_password(bus: BusView) -> None:
    env = {"BUS_PREFIX": bus.names.prefix}
    code, _, err = await run_cli(env, "console")
    assert code == 2
    assert "CONSOLE_PASSWORD" in err


@pytest.mark.default_ports(8090)
async def test_by_default_it_listens_on_127_0_0_1_port_8090(bus: BusView, tmp_path: Path) -> None:
    # As the manual runs it: only the password (and the test's own prefix).
    env = {"BUS_PREFIX": bus.names.prefix, "CONSOLE_PASSWORD": PASSWORD, "LOG_FORMAT": "json"}
    running = await start_console(tmp_path / "console.log", env)
    try:
        assert running.url == "http://127.0.0.1:8090"
        async with (
            aiohttp.ClientSession() as session,
            session.get(running.url + "/", headers=basic(USER, PASSWORD)) as r,
        ):
            assert r.status == 200
            assert "Overview" in await r.text()
    finally:
        assert await running.stop() == 0


async def _ignore(event: Event) -> None:
    """A handler for consumers that only need their queues to exist."""


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


def _queues(bus: BusView, consumer: Consumer) -> list[str]:
    own = ConsumerQueues(bus.names.prefix, consumer.name)
    return [own.main, own.dead, own.bindings, *(own.retry(d) for d in consumer.retry_delays)]


def _held_copy() -> aio_pika.Message:
    return aio_pika.Message(
        b'{"EventName": "talent_created"}',
        message_id="late-letter",
        headers={"x-error-type": "Reject", "x-event-name": "talent_created"},
    )


def _shots(tmp_path: Path) -> Path:
    """Where screenshots go: CONSOLE_SCREENSHOTS (for the manual's), else the test's own."""
    where = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


async def test_a_broker_out_of_reach_is_a_page_that_says_so(bus: BusView, tmp_path: Path) -> None:
    closed = f"amqp://guest:broker-pw-31337@127.0.0.1:{free_port()}/"
    env = console_env(bus.names.prefix, AMQP_URL=closed)
    running = await start_console(tmp_path / "console.log", env)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(running.url + "/", headers=basic(USER, PASSWORD)) as response,
        ):
            assert response.status == 503
            text = await response.text()
        assert "The broker cannot be reached at amqp://" in text
        assert "broker-pw-31337" not in text
        assert "broker-pw-31337" not in running.log.read_text()
    finally:
        assert await running.stop() == 0


async def test_a_console_whose_broker_link_froze_still_stops(
    bus: BusView, proxy: TcpProxy, tmp_path: Path
) -> None:
    env = console_env(bus.names.prefix, AMQP_URL=proxy.url_for(AMQP_URL))
    running = await start_console(tmp_path / "console.log", env)
    try:
        async with aiohttp.ClientSession(headers=basic(USER, PASSWORD)) as session:
            # Following the workers' reports: a channel open and consuming through the link.
            async with asyncio.timeout(20):
                while True:
                    async with session.get(running.url + "/") as response:
                        assert response.status == 200
                        if "no worker reports read yet" not in await response.text():
                            break
                    await asyncio.sleep(0.2)
        proxy.stall()  # every close now waits for an answer that never comes
        assert await running.stop() == 0
        assert running.events("console stopping")
        assert not running.events("console: could not stop in time; exiting anyway")
    finally:
        proxy.resume()
        await running.stop()


async def test_a_console_whose_clean_up_hangs_exits_anyway_and_says_where(
    bus: BusView, tmp_path: Path
) -> None:
    running = Console(
        await start_consumers(
            ["console"],
            tmp_path / "console.log",
            console_env(bus.names.prefix),
            "console listening",
            "console",
            module="tests.consumers.console.stubborn",
        )
    )
    assert await running.stop() == 1
    [forced] = running.events("console: could not stop in time; exiting anyway")
    assert forced["within"] == 2.0
    # Where it waits: in a step of the application's clean-up.
    assert any("_on_cleanup" in where for where in forced["waiting"].values()), forced
