"""`python -m consumers console`, with a clean-up step that ignores its cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from consumers.cli import console, main
from consumers.console.pages import build
from consumers.console.settings import ConsoleSettings


def stubborn(settings: ConsoleSettings) -> web.Application:
    app = build(settings)

    async def deaf(_: web.Application) -> AsyncIterator[None]:
        yield
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()

    app.cleanup_ctx.append(deaf)
    return app


if __name__ == "__main__":
    setattr(console, "build", stubborn)  # noqa: B010 - imported there, not exported
    console.STOP_WITHIN = 2.0
    sys.exit(main(["console"]))
