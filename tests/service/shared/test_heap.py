"""The garbage collector's settings once a server has started."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from service.shared import heap


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    """A container that can refer to itself."""

    def __init__(self) -> None:
        self.to: Node | None = None


@pytest.mark.usefixtures("restored")
def test_settling_freezes_what_exists_and_makes_young_collections_rarer() -> None:
    _, middle, old = gc.get_threshold()
    kept = [[n] for n in range(100)]
    scanned = {id(o) for o in gc.get_objects()}
    assert all(id(item) in scanned for item in kept)
    heap.settle()
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, middle, old)
    # Frozen: in the permanent generation, which no collection scans.
    scanned = {id(o) for o in gc.get_objects()}
    assert not any(id(item) in scanned for item in kept)


@pytest.mark.usefixtures("restored")
def test_cycles_made_after_settling_are_still_collected_on_their_own() -> None:
    assert gc.isenabled()
    heap.settle()
    node = Node()
    node.to = node
    gone = weakref.ref(node)
    del node
    # Enough allocations for young collections and a middle one, none asked for.
    ballast: list[list[int]] = [[] for _ in range(12 * heap.YOUNG_THRESHOLD)]
    assert gone() is None
    assert len(ballast) == 12 * heap.YOUNG_THRESHOLD
