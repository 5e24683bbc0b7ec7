"""A traced delivery leaves nothing for the garbage collector: it is freed when answered.

Each request's span bookkeeping once referred to the request that held it. That cycle
made every traced request garbage for the collector to find: in 12 s at a benchmark's
load, collections took 1.8 s of the receiver's CPU against 0.6 s with tracing off.
Here deliveries go through the receiver in-process with the collector paused and its
finds kept, and no request may be among them.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from service.http.app import WEBHOOK_PATH, create_app
from service.observability.sampling import ChosenIds
from tests.support import BusView, auth_headers, fixture_bodies, receiver_settings

pytestmark = pytest.mark.rabbit

DELIVERIES = 40


@pytest.fixture
def kept_garbage() -> Iterator[Callable[[], list[Any]]]:
    """`watch`: frees what is garbage so far, then keeps what the collector finds instead.

    Kept garbage cleared from the list is not freed: its cycles hold it, and the next
    collection would find it again, an earlier test's requests among it.
    """
    gc.disable()

    def watch() -> list[Any]:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        return gc.garbage

    try:
        yield watch
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("continue_sender", [False, True])
async def test_a_traced_delivery_is_freed_when_answered(
    receiver_client: Any,
    bus: BusView,
    kept_garbage: Callable[[], list[Any]],
    continue_sender: bool,
) -> None:
    exported = InMemorySpanExporter()
    # Half sampled: both the span's way and the dropped delivery's way are taken.
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.5)), id_generator=ChosenIds())
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracer = provider.get_tracer("test")
    extra = {"trace_sender_context": "authenticated"} if continue_sender else {}
    settings = receiver_settings(bus.names.prefix, **extra)
    client = await receiver_client(create_app(settings, tracer=tracer))
    async with asyncio.timeout(10):
        while (await client.get("/readyz")).status != 200:
            await asyncio.sleep(0.05)
    body = fixture_bodies()["placement_updated"]
    found = kept_garbage()
    for _ in range(DELIVERIES):
        response = await client.post(WEBHOOK_PATH, data=body, headers=auth_headers("api_key", body))
        assert response.status == 200
    gc.collect()
    requests = [item for item in found if isinstance(item, web.BaseRequest)]
    assert requests == []
    # Both ways were taken: some deliveries sampled, some not.
    assert 0 < len(exported.get_finished_spans()) < DELIVERIES  # one span a sampled delivery
