"""Prometheus metrics of the receiver, on their own registry, served at `/metrics`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

# Event names come from the outside: past this many routing keys, the rest count as "other".
MAX_ROUTING_KEYS = 200
OTHER = "other"
NONE = "none"
# Tenant ids come from the outside as well: past this many, the rest share `other`.
MAX_TENANTS = 200
# The tenant label of an accepted event that names no tenant (no x-tenant-id header).
UNKNOWN_TENANT = "unknown"
ACCEPTED = "accepted"


class LabelCap:
    """Keeps a label's distinct values bounded; values past the cap become `other`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return NONE
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


def children(metric: M) -> Callable[..., M]:
    """`metric.labels`, remembered per label set: the lookup costs a lock on every call.

    It holds no more than the metric itself does, so bounded labels keep it bounded.
    """
    cache: dict[tuple[str, ...], M] = {}

    def child(*values: str) -> M:
        found = cache.get(values)
        if found is None:
            found = cache[values] = metric.labels(*values)
        return found

    return child


class LastAccepted:
    """`relay_last_accepted_timestamp_seconds{tenant}`: when each tenant's last event was accepted.

    A delivery costs one dict lookup and one store, with no lock and no label lookup: the
    samples are made when scraped. Tenants past `limit` share the tenant `other`.
    """

    name = "relay_last_accepted_timestamp_seconds"
    documentation = "Unix time of the last accepted delivery, by tenant (x-tenant-id)."

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._times: dict[int | str | None, float] = {}

    def mark(self, tenant: int | None) -> None:
        times = self._times
        times[tenant if tenant in times or len(times) < self.limit else OTHER] = time.time()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=["tenant"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=["tenant"])
        for tenant, when in list(self._times.items()):
            family.add_metric([UNKNOWN_TENANT if tenant is None else str(tenant)], when)
        yield family


class ReceiverMetrics:
    """Every metric the receiver exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.routing_key = LabelCap(MAX_ROUTING_KEYS)
        self.deliveries = Counter(
            "relay_deliveries",
            "Deliveries answered, by outcome and routing key.",
            ["outcome", "routing_key"],
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "relay_store_seconds",
            "Seconds from a delivery's arrival to its broker confirm or spool fsync.",
            ["stored"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self._delivery = children(self.deliveries)
        self.stored = children(self.store_seconds)
        self.in_flight = Gauge(
            "relay_publishes_in_flight",
            "Deliveries waiting for a broker confirm or a spool write.",
            registry=self.registry,
        )
        # Counted with a plain integer and read when scraped: a gauge takes a lock per change.
        self.storing = 0
        self.in_flight.set_function(lambda: self.storing)
        self.broker_connected = Gauge(
            "relay_broker_connected", "1 while the broker connection is up.", registry=self.registry
        )
        self.broker_blocked = Gauge(
            "relay_broker_blocked",
            "1 while the broker blocks publishing (a memory or disk alarm).",
            registry=self.registry,
        )
        self.spool_records = Gauge(
            "relay_spool_records", "Deliveries waiting in the spool.", registry=self.registry
        )
        self.spool_bytes = Gauge(
            "relay_spool_bytes", "Bytes waiting in the spool.", registry=self.registry
        )
        self.spool_drained = Counter(
            "relay_spool_drained_records",
            "Spooled deliveries republished and confirmed.",
            registry=self.registry,
        )
        self.spool_drain_failures = Counter(
            "relay_spool_drain_failures",
            "Drain attempts that failed, by cause: disk, refused (nacked or returned), broker.",
            ["cause"],
            registry=self.registry,
        )
        self.spool_drain_stalled = Gauge(
            "relay_spool_drain_stalled",
            "1 while records wait, the broker is connected, and the drain moves none.",
            registry=self.registry,
        )
        self.spool_parked = Gauge(
            "relay_spool_parked_records",
            "Records in SPOOL_DIR/parked: refused by the broker again and again.",
            registry=self.registry,
        )
        self.restarts = Counter(
            "relay_background_restarts",
            "Background tasks that failed and were started again, by task.",
            ["task"],
            registry=self.registry,
        )
        self.drain_failure = children(self.spool_drain_failures)
        self.restart = children(self.restarts)
        self.last_accepted = LastAccepted(MAX_TENANTS)
        self.registry.register(self.last_accepted)

    def delivery(self, outcome: str, routing_key: str | None, tenant: int | None = None) -> None:
        """Count an answered delivery; an accepted one also marks its tenant's last time."""
        self._delivery(outcome, self.routing_key(routing_key)).inc()
        if outcome == ACCEPTED:
            self.last_accepted.mark(tenant)

    def render(self) -> bytes:
        return generate_latest(self.registry)
