"""The console's History page in a real browser, on the real broker and a real PostgreSQL.

Events reach the history either through the real history worker (`consumers run
history`) or, where a test needs events of other days, straight through
`HistoryStore.write`. Replays go to consumers enrolled in the registry as a starting
worker enrols them, with no worker to take what arrives, so their queues can be counted.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import aio_pika
import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from consumers import Event, history
from consumers.consumer import Consumer
from consumers.event import ROUTING_KEY
from consumers.history.query import Filter, count
from consumers.history.replay import REPLAYED_FROM
from consumers.history.store import Entry, HistoryStore, open_pool
from consumers.operations.registry import enrol
from consumers.settings import WorkerSettings
from consumers.topology import ConsumerQueues
from service.shared.envelope import routing_key
from service.shared.environment import Secret
from tests.consoles import (
    PASSWORD,
    USER,
    Console,
    browser,
    console_env,
    operator_page,
    start_console,
)
from tests.consumers.console.test_console import basic, depth
from tests.databases import PASSWORD as DATABASE_PASSWORD
from tests.databases import own_database
from tests.support import AMQP_URL, BusView, consumer_queue_names
from tests.tools.nodes import free_port
from tests.worker_processes import SpawnWorker

pytestmark = [pytest.mark.rabbit, pytest.mark.timeout(120)]

PAGE_SIZE = 3
FILTERS = ("since", "until", "event", "tenant", "id", "where")
# Newest first: how old each event is, its name, its tenant and the placement it names.
SAMPLES = (
    (timedelta(minutes=5), "placement_updated", 6, 100),
    (timedelta(hours=1), "talent_created", 6, None),
    (timedelta(hours=3), "placement_created", 7, 101),
    (timedelta(days=1), "placement_updated", 6, 102),
    (timedelta(days=2), "company_updated", 7, None),
    (timedelta(days=4), "placement_updated", 7, 100),
    (timedelta(days=6), "talent_created", 6, None),
)
IDS = [f"event-{n}" for n in range(len(SAMPLES))]


@pytest.fixture(scope="module")
def history_url() -> Iterator[str]:
    """A database of this module's own; each test keeps to its prefix's scope in it."""
    with own_database() as url:
        yield url


@pytest.fixture
async def store(history_url: str, prefix: str) -> AsyncIterator[HistoryStore]:
    """The history of this test's prefix, as the console and the history worker see it."""
    scope = WorkerSettings(amqp_url=Secret(AMQP_URL), bus_prefix=prefix).scope
    opened = HistoryStore(await open_pool(history_url, "the test's database"), scope)
    await opened.create()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def samples(store: HistoryStore) -> list[Entry]:
    """SAMPLES in the history, over the last week."""
    now = datetime.now(UTC)
    entries = [
        _entry(n, now - age, name, tenant, placement)
        for n, (age, name, tenant, placement) in enumerate(SAMPLES)
    ]
    assert await store.write(entries) == len(entries)
    return entries


@asynccontextmanager
async def serving(bus: BusView, tmp_path: Path, **env: str) -> AsyncIterator[Console]:
    """A console on the test's prefix with `env`, stopped cleanly at the end."""
    running = await start_console(tmp_path / "console.log", console_env(bus.names.prefix, **env))
    try:
        yield running
    finally:
        assert await running.stop() == 0


@pytest.fixture
async def console(bus: BusView, history_url: str, tmp_path: Path) -> AsyncIterator[Console]:
    """A console that reads the test's history, PAGE_SIZE events a page."""
    env = {"HISTORY_DATABASE_URL": history_url, "CONSOLE_PAGE_SIZE": str(PAGE_SIZE)}
    async with serving(bus, tmp_path, **env) as running:
        yield running


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with browser() as launched:
        yield launched


@pytest.fixture
async def bound(bus: BusView) -> dict[str, ConsumerQueues]:
    """Consumers `placements` (placement.#) and `talent` (talent.#), enrolled with no worker."""
    enrolled = {}
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        for name, pattern in (("placements", "placement.#"), ("talent", "talent.#")):
            consumer = Consumer(name)
            consumer.on(pattern)(_ignore)
            bus.forget_later(*consumer_queue_names(bus.names.prefix, consumer))
            await enrol(connection, channel, bus.names, consumer)
            enrolled[name] = ConsumerQueues(bus.names.prefix, name)
    return enrolled


async def test_the_history_worker_fills_the_page_and_each_event_shows_escaped(
    bus: BusView,
    store: HistoryStore,
    history_url: str,
    spawn_worker: SpawnWorker,
    console: Console,
    chromium: Browser,
) -> None:
    await spawn_worker("history", history.consumer, HISTORY_DATABASE_URL=history_url)
    sent = []
    for n in range(4):
        note = "<script>document.title='owned'</script><b>bold</b>" if n == 1 else f"n{n}"
        sent.append(await bus.publish_event("talent_created", Note=note, CorrelationId=f"c{n}"))
        await asyncio.sleep(0.01)  # distinct receipt times: newest first is testable
    async with asyncio.timeout(20):
        while await count(store, Filter()) < len(sent):
            await asyncio.sleep(0.1)
    async with operator_page(chromium, console) as (page, _):
        await page.goto(console.url + "/")
        await page.get_by_role("link", name="History", exact=True).click()
        await expect(page.locator(".count")).to_contain_text("4 event(s) match")
        assert await _ids(page) == list(reversed(sent))[:PAGE_SIZE]
        await page.locator(f'#events tr[data-id="{sent[1]}"] a').click()

        await expect(page.locator("h1")).to_contain_text(sent[1])
        facts = page.locator("dl.facts")
        await expect(facts).to_contain_text("talent.created")
        await expect(facts).to_contain_text("api_key")
        headers = page.locator("#headers")
        for name in ("x-received-at", "x-delivery-id", "x-auth", "x-event-name", "x-tenant-id"):
            await expect(headers).to_contain_text(name)
        payload = page.locator("#payload")
        await expect(payload).to_contain_text("<script>document.title='owned'</script><b>bold</b>")
        await expect(payload.locator("b")).to_have_count(0)
        await expect(page.locator("main script")).to_have_count(0)
        assert await page.title() != "owned"
        assert DATABASE_PASSWORD not in await page.content()
    assert DATABASE_PASSWORD not in console.text()


async def test_newest_first_paged_and_each_filter_narrows_it(
    samples: list[Entry], console: Console, chromium: Browser
) -> None:
    now = datetime.now(UTC)
    async with operator_page(chromium, console) as (page, _):
        await page.goto(console.url + "/history")
        await expect(page.locator(".count")).to_have_text(
            "7 event(s) match; newest first, page 1 of 3."
        )
        assert await _ids(page) == IDS[0:3]
        assert await _turn(page, "older") == IDS[3:6]
        assert await _turn(page, "older") == IDS[6:]
        await expect(page.get_by_role("link", name="older")).to_have_count(0)
        assert await _turn(page, "newer") == IDS[3:6]

        # Typed into the form: a topic pattern, and the pages of what it matches keep it.
        assert await _filtered(page, event="placement.#") == _of(0, 2, 3)
        await expect(page.locator(".count")).to_contain_text("4 event(s) match")
        assert await _turn(page, "older") == _of(5)
        await expect(page.locator('form.filters [name="event"]')).to_have_value("placement.#")
        assert await _filtered(page, event="placement.#", tenant="6") == _of(0, 3)
        # The form's own GET, asked for directly.
        url = console.url + "/history"
        assert await _asked(page, url, event="placement_updated") == _of(0, 3, 5)
        assert await _asked(page, url, tenant="7") == _of(2, 4, 5)
        assert await _asked(page, url, since="2h") == _of(0, 1)
        assert await _asked(page, url, until="36h") == _of(4, 5, 6)
        window = {"since": _iso(now - timedelta(hours=60)), "until": _iso(now - timedelta(hours=2))}
        assert await _asked(page, url, **window) == _of(2, 3, 4)
        assert await _asked(page, url, id=IDS[4]) == _of(4)
        where = '{"Resource": {"PlacementId": 100}}'
        assert await _asked(page, url, where=where) == _of(0, 5)
        # Avionté's own form: `Resource` as a string holding the object.
        where = json.dumps({"Resource": json.dumps({"PlacementId": 102})})
        assert await _asked(page, url, where=where) == _of(3)
        assert await _asked(page, url, tenant="8") == []
        await expect(page.locator("#events")).to_contain_text("No events match the filter.")

        for bad, said in (
            ({"since": "yesterday"}, "since: must be ISO 8601"),
            ({"where": "{not json"}, "where: is not JSON"),
            ({"tenant": "six"}, "tenant: must be a whole number"),
            ({"event": "a..b"}, "event: pattern 'a..b'"),
            ({"until": "99999999999d"}, "until: is out of range"),
        ):
            response = await page.goto(f"{console.url}/history?{urlencode(bad)}")
            assert response is not None
            assert response.status == 400, bad
            await expect(page.locator("#filter-error")).to_contain_text(said)
            await expect(page.locator("#events")).to_have_count(0)


async def test_replay_to_sends_the_filtered_bound_events_to_that_consumer_only(
    bus: BusView,
    samples: list[Entry],
    bound: dict[str, ConsumerQueues],
    console: Console,
    chromium: Browser,
) -> None:
    async with operator_page(chromium, console) as (page, _):
        await page.goto(console.url + "/history")
        # Tenant 6: placements 0 and 3 are bound to `placements`; talent 1 and 6 are not.
        assert await _filtered(page, tenant="6") == _of(0, 1, 3)
        await page.select_option('select[name="consumer"]', "placements")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Replay to").click()
        await expect(page.locator(".notice")).to_have_text(
            "Replayed 2 event(s) to placements, 2 skipped (not bound)."
        )
        await expect(page.locator('form.filters [name="tenant"]')).to_have_value("6")
        await expect(page.locator(".count")).to_contain_text("4 event(s) match")
    assert await depth(bus, bound["talent"].main) == 0
    replayed = await bus.drain(await bus.queue(bound["placements"].main))
    assert [m.message_id for m in replayed] == _of(3, 0)  # oldest first
    for message, original in zip(replayed, (samples[3], samples[0]), strict=True):
        headers = message.headers or {}
        assert headers[REPLAYED_FROM] == "history"
        assert headers[ROUTING_KEY] == "placement.updated"
        assert message.body == original.body
    assert "replayed from the history" in console.text()


async def test_a_replay_without_the_right_token_or_consumer_sends_nothing(
    bus: BusView, samples: list[Entry], bound: dict[str, ConsumerQueues], console: Console
) -> None:
    replay = f"{console.url}/history/replay"
    right = basic(USER, PASSWORD)
    form = {"consumer": "placements", "tenant": "6"}
    async with aiohttp.ClientSession(headers=right) as session:
        async with session.post(replay, data=form) as response:
            assert response.status == 403  # no token
        async with session.post(replay, data={**form, "csrf": "0" * 64}) as response:
            assert response.status == 403  # a wrong one
        async with session.get(console.url + "/history") as response:
            token = re.search(r'name="csrf" value="([0-9a-f]+)"', await response.text())
        assert token is not None
        elsewhere = {"Origin": "http://evil.example"}
        signed = {**form, "csrf": token.group(1)}
        async with session.post(replay, data=signed, headers=elsewhere) as response:
            assert response.status == 403  # the right token, from another origin
        async with session.post(replay, data={**signed, "consumer": "nobody"}) as response:
            assert response.status == 400
            said = await response.text()
        assert "no consumer 'nobody'" in said
        assert "known consumers: placements, talent" in said
        async with session.post(replay, data={**signed, "since": "soon"}) as response:
            assert response.status == 400
            assert "since: must be ISO 8601" in await response.text()
    for queues in bound.values():
        assert await depth(bus, queues.main) == 0
    assert len(console.events("console POST refused: bad CSRF token or origin")) == 3


async def test_without_history_database_url_the_page_says_so(
    bus: BusView, chromium: Browser, tmp_path: Path
) -> None:
    async with serving(bus, tmp_path) as running, operator_page(chromium, running) as (page, _):
        overview = await page.goto(running.url + "/")
        assert overview is not None
        assert overview.status == 200
        async with page.expect_response(running.url + "/history") as answer:
            await page.get_by_role("link", name="History", exact=True).click()
        assert (await answer.value).status == 200
        await expect(page.locator(".problem")).to_contain_text(
            "The event history is not configured: set HISTORY_DATABASE_URL"
        )
        await expect(page.locator("form.filters")).to_have_count(0)


async def test_a_history_database_out_of_reach_is_a_page_that_says_so(
    bus: BusView, tmp_path: Path
) -> None:
    closed = f"postgresql://relay:{DATABASE_PASSWORD}@127.0.0.1:{free_port()}/relay"
    async with (
        serving(bus, tmp_path, HISTORY_DATABASE_URL=closed) as running,
        aiohttp.ClientSession(headers=basic(USER, PASSWORD)) as session,
    ):
        async with session.get(running.url + "/history?since=1d") as response:
            assert response.status == 503
            text = await response.text()
        assert "cannot connect to postgresql://relay:***@127.0.0.1" in text
        assert 'name="since" value="1d"' in text  # the filters stay, to try again
        assert DATABASE_PASSWORD not in text
        assert running.events("console: the history database failed")
        assert DATABASE_PASSWORD not in running.text()


def _entry(n: int, received_at: datetime, name: str, tenant: int, placement: int | None) -> Entry:
    payload: dict[str, object] = {"EventName": name, "FrontOfficeTenantId": tenant}
    if placement is not None:
        payload["Resource"] = json.dumps({"PlacementId": placement})
    headers = {
        "x-event-name": name,
        "x-tenant-id": tenant,
        "x-received-at": received_at.isoformat(),
        "x-delivery-id": f"delivery-{n}",
        "x-auth": "api_key",
    }
    kept = {**payload, "Resource": {"PlacementId": placement}} if placement else payload
    return Entry(
        message_id=IDS[n],
        received_at=received_at,
        event=name,
        routing_key=routing_key(name),
        tenant_id=tenant,
        delivery_id=f"delivery-{n}",
        auth="api_key",
        headers=headers,
        body=json.dumps(payload).encode(),
        payload=kept,
    )


def _of(*numbers: int) -> list[str]:
    return [IDS[n] for n in numbers]


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


async def _ids(page: Page) -> list[str]:
    """The message ids the page lists, top to bottom."""
    rows = page.locator("#events tbody tr[data-id]")
    ids: list[str] = await rows.evaluate_all("rows => rows.map(row => row.dataset.id)")
    return ids


async def _turn(page: Page, which: str) -> list[str]:
    async with page.expect_navigation():
        await page.get_by_role("link", name=which, exact=True).click()
    return await _ids(page)


async def _asked(page: Page, url: str, **values: str) -> list[str]:
    """Open the page with these filters; the list, which fits one page, and its count."""
    response = await page.goto(f"{url}?{urlencode(values)}")
    assert response is not None
    assert response.status == 200, await response.text()
    ids = await _ids(page)
    await expect(page.locator(".count")).to_have_text(re.compile(rf"^{len(ids)} event\(s\) match;"))
    return ids


async def _filtered(page: Page, **values: str) -> list[str]:
    """Type `values` into the filters (the others emptied), submit, and read the list."""
    for name in FILTERS:
        await page.fill(f'form.filters [name="{name}"]', values.get(name, ""))
    async with page.expect_navigation():
        await page.get_by_role("button", name="Filter").click()
    return await _ids(page)


async def _ignore(event: Event) -> None:
    """A handler for consumers that only need their queues and bindings."""
