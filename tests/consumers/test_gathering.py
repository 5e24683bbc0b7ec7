"""Questions answered together: who goes in which batch, and what each caller gets."""

from __future__ import annotations

import asyncio

import pytest

from consumers.gathering import Gathering


class Answers:
    """Answers each batch with its questions doubled, once `release` is set."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, questions: list[int]) -> list[int]:
        self.batches.append(list(questions))
        await self.release.wait()
        return [question * 2 for question in questions]


async def test_questions_of_one_moment_go_in_one_batch() -> None:
    answers = Answers()
    gathering = Gathering(answers)
    assert await asyncio.gather(*(gathering.ask(n) for n in range(5))) == [0, 2, 4, 6, 8]
    assert answers.batches == [[0, 1, 2, 3, 4]]


async def test_questions_asked_while_a_batch_is_out_go_next_together() -> None:
    answers = Answers()
    answers.release.clear()
    gathering = Gathering(answers)
    first = asyncio.ensure_future(gathering.ask(1))
    while not answers.batches:
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(gathering.ask(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert answers.batches == [[1]]  # one batch out at a time
    answers.release.set()
    assert await first == 2
    assert await asyncio.gather(*later) == [4, 6, 8]
    assert answers.batches == [[1], [2, 3, 4]]


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_still_runs() -> None:
    calls = 0

    async def answer(questions: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionResetError("gone")
        return questions

    gathering = Gathering(answer)
    with pytest.raises(ConnectionResetError):
        await gathering.ask(1)
    assert await gathering.ask(2) == 2


async def test_a_batch_holds_at_most_the_limit() -> None:
    answers = Answers()
    gathering = Gathering(answers, limit=3)
    assert await asyncio.gather(*(gathering.ask(n) for n in range(7))) == [0, 2, 4, 6, 8, 10, 12]
    assert answers.batches == [[0, 1, 2], [3, 4, 5], [6]]
