"""Delivery ids are random version 4 UUIDs in canonical text, never handed out twice."""

from __future__ import annotations

import subprocess
import sys
import uuid

from service.http.delivery_ids import BLOCK, delivery_id
from tests.receivers import base_env


def test_ids_are_canonical_version_4_uuids_and_all_distinct() -> None:
    ids = [delivery_id() for _ in range(BLOCK * 40 + 7)]  # across many blocks
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_the_122_random_bits_vary_and_the_other_6_do_not() -> None:
    every = (1 << 128) - 1
    fixed = (0xF << 76) | (0x3 << 62)  # the version nibble and the variant's two bits
    ever_set = ever_clear = 0
    for _ in range(2000):
        value = uuid.UUID(delivery_id()).int
        ever_set |= value
        ever_clear |= every & ~value
    assert ever_set & ever_clear == every & ~fixed
    assert ever_set & fixed == (0x4 << 76) | (0x2 << 62)


# Forked in a fresh interpreter: in the test process, threads and at-fork hooks left by
# other tests (the tracing SDK registers one) can hold a lock the child then waits on.
FORKING = """
import os
from service.http.delivery_ids import delivery_id

delivery_id()  # the parent holds a partly used block
reading, writing = os.pipe()
child = os.fork()
if child == 0:
    os.write(writing, "".join(delivery_id() for _ in range(5)).encode())
    os._exit(0)
os.close(writing)
os.waitpid(child, 0)
print(os.read(reading, 4096).decode())
print("".join(delivery_id() for _ in range(5)))
"""


def test_a_forked_child_draws_its_own_ids() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FORKING],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    from_child, ours = done.stdout.split()
    assert len(from_child) == len(ours) == 5 * 36
    assert from_child != ours
