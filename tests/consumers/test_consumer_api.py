"""The consumer API without a broker: registration, matching, events, loading and `list`."""

from __future__ import annotations

from typing import Any

import pytest

from consumers import Consumer, Event
from consumers.cli import main
from consumers.consumer import check_unique
from consumers.errors import LoadError, RegistrationError
from consumers.event import parse_resource
from consumers.loader import bundled, load
from consumers.patterns import matches, normalize_pattern
from consumers.topology import ConsumerQueues


async def noop(event: Event) -> None:
    return None


def test_on_returns_the_handler_unchanged_and_normalizes_patterns() -> None:
    consumer = Consumer("sync")
    assert consumer.on("placement_updated", "Placement.Extension.#", "#.created")(noop) is noop
    [route] = consumer.routes
    assert route.patterns == ("placement.updated", "placement.extension.#", "#.created")
    assert consumer.patterns == ("#.created", "placement.extension.#", "placement.updated")


def test_an_async_callable_object_is_a_handler() -> None:
    class Handler:
        async def __call__(self, event: Event) -> None:
            return None

    consumer = Consumer("sync")
    handler = Handler()
    assert consumer.on("#")(handler) is handler


def test_a_plain_function_is_refused() -> None:
    def sync_handler(event: Event) -> None:
        return None

    with pytest.raises(RegistrationError, match="must be an `async def` function"):
        Consumer("sync").on("placement_updated")(sync_handler)  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ((), "needs an event name or pattern"),
        (("",), "non-empty string"),
        (("   ",), "non-empty string"),
        (("place*",), "wildcard must be a whole word"),
        (("placement.#x",), "wildcard must be a whole word"),
        (("a..b",), "holds no letter or digit"),
        (("!!!",), "holds no letter or digit"),
        ((None,), "non-empty string"),
    ],
)
def test_bad_patterns_fail_at_registration(patterns: tuple[Any, ...], message: str) -> None:
    with pytest.raises(RegistrationError, match=message):
        Consumer("sync").on(*patterns)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "must be 1-63"),
        ({"name": "Has Space"}, "must be 1-63"),
        ({"name": "dotted.name"}, "must be 1-63"),
        ({"name": "invalid"}, "reserved"),
        ({"name": "events"}, "reserved"),
        ({"name": "ok", "retry_delays": (5, -1)}, "retry_delays"),
        ({"name": "ok", "retry_delays": (5, "soon")}, "retry_delays"),
        ({"name": "ok", "retry_delays": (5_000_000,)}, "retry_delays"),
        ({"name": "ok", "concurrency": 0}, "concurrency"),
    ],
)
def test_bad_consumer_definitions(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistrationError, match=message):
        Consumer(**kwargs)


def test_retry_queue_names_are_unique_per_delay() -> None:
    queues = ConsumerQueues("p", "c")
    assert queues.retry(5) == "p.c.retry.5s"
    assert queues.retry(0.2) == "p.c.retry.200ms"
    assert queues.retry(1_000_000) != queues.retry(1_000_001)


def test_duplicate_names_and_empty_consumers_fail_before_running() -> None:
    first, second = Consumer("sync"), Consumer("sync")
    first.on("#")(noop)
    second.on("#")(noop)
    with pytest.raises(RegistrationError, match="two consumers are named 'sync'"):
        check_unique([first, second])
    with pytest.raises(RegistrationError, match="has no handlers"):
        check_unique([Consumer("empty")])
    # One module named twice still runs its consumer once.
    assert len(load(["tests.workers.recorder", "tests.workers.recorder"])) == 1


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        (normalize_pattern("placement_updated"), "placement.updated", True),
        (normalize_pattern("placement_updated"), "placement.updated.late", False),
        (normalize_pattern("VMS_job_created"), "vms.job.created", True),
        ("placement.*", "placement.updated", True),
        ("placement.*", "placement.extension.deleted", False),
        ("placement.#", "placement", True),
        ("placement.#", "placement.extension.deleted", True),
        ("#.created", "talent.login.created", True),
        ("#.created", "created", True),
        ("#.created", "talent.created.late", False),
        ("*.created", "talent.login.created", False),
        ("#", "anything.at.all", True),
        ("*", "one", True),
        ("*", "one.two", False),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.*.z", "a.z", False),
    ],
)
def test_matching(pattern: str, key: str, expected: bool) -> None:
    assert matches(pattern, key) is expected


def test_handlers_for_runs_every_matching_handler_in_order() -> None:
    consumer = Consumer("sync")

    async def first(event: Event) -> None:
        return None

    async def second(event: Event) -> None:
        return None

    consumer.on("placement.#")(first)
    consumer.on("#.updated")(second)
    assert consumer.handlers_for("placement.updated") == (first, second)
    assert consumer.handlers_for("placement.started") == (first,)
    assert consumer.handlers_for("talent.created") == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"PlacementId": 86635}', {"PlacementId": 86635}),
        ({"PlacementId": 1}, {"PlacementId": 1}),
        ("not json", None),
        ("[1, 2]", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_resource_is_a_dict_or_none(value: object, expected: dict[str, Any] | None) -> None:
    assert parse_resource(value) == expected


def test_loading_by_short_name_and_dotted_path() -> None:
    [(module, consumer)] = load(["audit_log"])
    assert (module, consumer.name) == ("consumers.audit_log", "audit-log")
    [(module, consumer)] = load(["tests.workers.recorder"])
    assert (module, consumer.name) == ("tests.workers.recorder", "recorder")
    assert bundled() == ["audit_log", "placement_sync"]


def test_loading_errors_are_clear() -> None:
    with pytest.raises(LoadError, match="no module named 'nowhere'"):
        load(["nowhere"])
    with pytest.raises(LoadError, match="defines no Consumer"):
        load(["consumers.patterns"])


@pytest.fixture
def cli_keeps_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("consumers.cli.configure_logging", lambda *a, **k: None)


@pytest.mark.usefixtures("cli_keeps_test_logging")
def test_list_prints_each_consumer_with_its_bindings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    monkeypatch.setenv("BUS_PREFIX", prefix)  # it also asks the broker, under the test's prefix
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert f"audit-log  (consumers.audit_log)  queue {prefix}.audit-log" in out
    assert "retries 5s 30s 2m 10m 30m" in out
    assert "placement.started, placement.updated, placement.extension.#  ->  PlacementSync" in out


@pytest.mark.usefixtures("cli_keeps_test_logging")
def test_cli_refuses_unknown_modules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nowhere"]) == 2
    assert "error: no module named 'nowhere'" in capsys.readouterr().err
