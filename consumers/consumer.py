"""`Consumer`: a named set of handlers, each bound to event names or topic patterns."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from consumers.errors import RegistrationError
from consumers.event import Event
from consumers.patterns import matches, normalize_pattern

Handler = Callable[[Event], Awaitable[Any]]
H = TypeVar("H", bound=Handler)
S = TypeVar("S", bound=Callable[[], Awaitable[None]])

DEFAULT_RETRY_DELAYS = (5.0, 30.0, 120.0, 600.0, 1800.0)
DEFAULT_CONCURRENCY = 16
Dedupe = bool | Literal["optional"]
# The receiver's own queues live beside the consumers' under the same prefix.
RESERVED_NAMES = frozenset({"events", "unrouted", "invalid"})
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# RabbitMQ caps a queue's message TTL at 2^32 - 1 milliseconds.
MAX_DELAY_SECONDS = (2**32 - 1) / 1000


@dataclass(frozen=True, slots=True)
class Route:
    """One handler, the normalized patterns it is bound to, and the tenants it takes."""

    patterns: tuple[str, ...]
    handler: Handler
    tenants: frozenset[int] | None = None  # None: every tenant

    @property
    def name(self) -> str:
        """The handler's dotted name: what dedupe records once it has succeeded."""
        handler = self.handler
        module = getattr(handler, "__module__", None) or type(handler).__module__
        qualname = getattr(handler, "__qualname__", None) or type(handler).__qualname__
        return f"{module}.{qualname}"

    def takes(self, tenant_id: int | None) -> bool:
        """Whether an event of `tenant_id` (None: no tenant) runs this handler."""
        return self.tenants is None or tenant_id in self.tenants


def _is_async(handler: object) -> bool:
    call = getattr(handler, "__call__", None)  # noqa: B004 - an async __call__ counts too
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


class Consumer:
    """A consumer owns the queue `{prefix}.{name}`; every process running it competes on it."""

    def __init__(
        self,
        name: str,
        *,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        concurrency: int = DEFAULT_CONCURRENCY,
        dedupe: Dedupe = False,
    ) -> None:
        """`dedupe=True` runs handlers once per message id across replicas (PostgreSQL at
        DEDUPE_DATABASE_URL, required); `dedupe="optional"` does so when it is set."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise RegistrationError(
                f"consumer name {name!r} must be 1-63 lower-case letters, digits, '-' or '_'"
            )
        if name in RESERVED_NAMES:
            raise RegistrationError(f"consumer name {name!r} is reserved for the receiver's queues")
        delays = tuple(retry_delays)
        if not all(
            isinstance(d, int | float) and 0 < d <= MAX_DELAY_SECONDS and d * 1000 >= 1
            for d in delays
        ):
            raise RegistrationError(
                f"consumer {name!r}: retry_delays must be seconds from 0.001 to "
                f"{MAX_DELAY_SECONDS:.0f}, got {retry_delays!r}"
            )
        if not isinstance(concurrency, int) or concurrency < 1:
            raise RegistrationError(f"consumer {name!r}: concurrency must be at least 1")
        if dedupe not in (True, False, "optional"):
            raise RegistrationError(
                f"consumer {name!r}: dedupe must be True, False or 'optional', got {dedupe!r}"
            )
        self.name = name
        # The module that made it, so that a module importing another's consumer
        # does not run it a second time (`loader.consumers_in`).
        caller = inspect.currentframe()
        self.module: str | None = (
            caller.f_back.f_globals.get("__name__") if caller and caller.f_back else None
        )
        self.retry_delays: tuple[float, ...] = delays
        self.concurrency = concurrency
        self.dedupe: Dedupe = dedupe
        self.routes: list[Route] = []
        self._routes_by_key: dict[str, tuple[Route, ...]] = {}
        self.starting: list[Callable[[], Awaitable[None]]] = []

    def __repr__(self) -> str:
        return f"Consumer({self.name!r}, patterns={list(self.patterns)!r})"

    @property
    def patterns(self) -> tuple[str, ...]:
        """Every pattern the consumer's queue is bound to, sorted and without repeats."""
        return tuple(sorted({p for route in self.routes for p in route.patterns}))

    def on(self, *patterns: str, tenants: Iterable[int] | None = None) -> Callable[[H], H]:
        """Register an async handler for Avionté event names or topic patterns.

        With `tenants`, it runs only for events of those tenants; others (and events
        without a tenant) are acked without it, counted as `filtered`.
        """
        if not patterns:
            raise RegistrationError(f"consumer {self.name!r}: on() needs an event name or pattern")
        normalized = tuple(dict.fromkeys(normalize_pattern(p) for p in patterns))
        chosen = None if tenants is None else _tenant_set(self.name, tenants)

        def register(handler: H) -> H:
            if not _is_async(handler):
                raise RegistrationError(
                    f"consumer {self.name!r}: handler {handler!r} must be an `async def` function"
                )
            self.routes.append(Route(normalized, handler, chosen))
            self._routes_by_key.clear()
            return handler

        return register

    def on_start(self, hook: S) -> S:
        """Register an async function the worker awaits before it consumes anything.

        It makes what the handlers need (a connection pool, a table). A `SettingsError`
        or `ConsumerError` it raises stops the worker with that one line and exit code 2.
        """
        if not _is_async(hook):
            raise RegistrationError(
                f"consumer {self.name!r}: on_start hook {hook!r} must be an `async def` function"
            )
        self.starting.append(hook)
        return hook

    def routes_for(self, routing_key: str) -> tuple[Route, ...]:
        """The routes whose patterns match `routing_key`, in registration order."""
        found = self._routes_by_key.get(routing_key)
        if found is None:
            found = tuple(
                route
                for route in self.routes
                if any(matches(pattern, routing_key) for pattern in route.patterns)
            )
            if len(self._routes_by_key) < 1024:
                self._routes_by_key[routing_key] = found
        return found

    def handlers_for(self, routing_key: str) -> tuple[Handler, ...]:
        """The handlers whose patterns match `routing_key`, in registration order."""
        return tuple(route.handler for route in self.routes_for(routing_key))


def _tenant_set(name: str, tenants: Iterable[int]) -> frozenset[int]:
    if isinstance(tenants, str | bytes):
        raise RegistrationError(f"consumer {name!r}: tenants must be integers, got {tenants!r}")
    chosen = tuple(tenants)
    if not chosen or not all(isinstance(t, int) and not isinstance(t, bool) for t in chosen):
        raise RegistrationError(
            f"consumer {name!r}: tenants must name at least one integer tenant id, got {chosen!r}"
        )
    return frozenset(chosen)


def check_unique(consumers: Sequence[Consumer]) -> None:
    """Fail on two consumers with one name, or a consumer without handlers."""
    seen: set[str] = set()
    for consumer in consumers:
        if consumer.name in seen:
            raise RegistrationError(f"two consumers are named {consumer.name!r}")
        if not consumer.routes:
            raise RegistrationError(f"consumer {consumer.name!r} has no handlers")
        seen.add(consumer.name)
