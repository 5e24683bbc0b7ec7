"""The order of a round's contenders: every other round reversed.

Round to round, this machine's speed moves by more than the differences the rounds
measure, and a contender measured always right after the same other one would share
whatever that one leaves behind (a broker still compacting, a warm cache).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

T = TypeVar("T")


def in_turn(contenders: list[T], number: int) -> list[T]:
    """The contenders of round `number`, every other round in reverse order."""
    return contenders if number % 2 == 0 else contenders[::-1]


async def alternated(
    contenders: Mapping[str, Callable[[], Awaitable[T]]], rounds: int
) -> dict[str, list[T]]:
    """Each contender's results over `rounds` rounds, measured in turn (`in_turn`)."""
    results: dict[str, list[T]] = {name: [] for name in contenders}
    for number in range(rounds):
        for name in in_turn(list(contenders), number):
            results[name].append(await contenders[name]())
    return results
