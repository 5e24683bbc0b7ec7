"""Delivery ids: random (version 4) UUIDs in their usual text form.

`uuid.uuid4()` asks the system for 16 random bytes each time and builds a `UUID` to
print it. Here the bytes come from the same source (`os.urandom`) 4 KiB at a time and
go straight to text: one system call per 256 deliveries instead of one each.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

BLOCK = 256
_VARIANT = "89ab"  # the RFC 4122 variant: the top two bits of byte 8 are 10


def _drawn() -> Iterator[str]:
    while True:
        block = os.urandom(16 * BLOCK)
        for start in range(0, len(block), 16):
            h = block[start : start + 16].hex()
            yield (
                f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
            )


_ids = _drawn()


def _forget() -> None:
    """A forked child must not hand out the ids its parent drew."""
    global _ids
    _ids = _drawn()


os.register_at_fork(after_in_child=_forget)


def delivery_id() -> str:
    """A new random UUID, as `str(uuid.uuid4())` would print it."""
    return next(_ids)
