"""The garbage collector's settings once a server has started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from service.shared import heap


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored")
def test_settling_freezes_what_exists_and_makes_young_collections_rarer() -> None:
    _, middle, old = gc.get_threshold()
    kept = [[n] for n in range(100)]
    heap.settle()
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, middle, old)
    # Cyclic garbage made after settling is still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
