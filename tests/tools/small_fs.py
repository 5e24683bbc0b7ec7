"""A small filesystem for one child process: a tmpfs in a mount namespace of its own.

The child sees a tmpfs of the given size at a directory; nothing else on the machine
does, and it disappears with the process. The test fills and frees it through
`/proc/PID/root`. Root mounts it directly; another user gets a user namespace for it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# Mount, then become the command; a failed mount ends the child with the reason on stderr.
_MOUNT_THEN_EXEC = 'mount -t tmpfs -o "$1" relay-test "$2" && shift 2 && exec "$@"'


def in_small_filesystem(
    argv: list[str], directory: Path, *, size: int, inodes: int | None = None
) -> list[str]:
    """`argv`, run with a tmpfs of `size` bytes (and at most `inodes` files) at `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    options = f"size={size}" + (f",nr_inodes={inodes}" if inodes is not None else "")
    return [
        "unshare",
        *user,
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        _MOUNT_THEN_EXEC,
        "sh",
        options,
        str(directory),
        *argv,
    ]


class SmallFilesystem:
    """The tmpfs of a running child, seen from the test through `/proc/PID/root`."""

    def __init__(self, pid: int, directory: Path) -> None:
        self.path = Path(f"/proc/{pid}/root") / directory.resolve().relative_to("/")
        self._filler = self.path / "filler"

    def fill(self) -> None:
        """Take every free byte, so the next write there fails with ENOSPC."""
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (65536, 4096, 1):
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * size):
                        pass
        finally:
            os.close(fd)

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)
