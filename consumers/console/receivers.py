"""The receivers' readiness, as every page of the console shows it.

`CONSOLE_RECEIVERS` names the receivers' base URLs. The console asks each one's
`/readyz` every `EVERY` seconds in the background, so a page never waits on a
receiver; pages show the last answers, and name at the top any receiver that is not
ready or did not answer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from yarl import URL

log = structlog.get_logger("consumers.console")

EVERY = 5.0
TIMEOUT = aiohttp.ClientTimeout(total=2)


@dataclass(frozen=True, slots=True)
class Readiness:
    """One receiver's last answer."""

    url: str  # as shown: no credentials
    ready: bool
    summary: str  # "ready", or what is wrong
    broker: str = ""
    spool_records: int | None = None
    checked: float = 0.0  # Unix seconds


def shown(url: str) -> str:
    return str(URL(url).with_user(None).with_query(None).with_fragment(None)).rstrip("/")


def _summary(status: int, body: Any) -> tuple[bool, str, str, int | None]:
    if not isinstance(body, dict):
        return False, f"answered HTTP {status}, not readiness", "", None
    broker = str(body.get("broker", ""))
    spool = body.get("spool") if isinstance(body.get("spool"), dict) else None
    records = spool.get("records") if spool else None
    records = records if isinstance(records, int) else None
    if status == 200 and body.get("status") == "ready":
        return True, "ready", broker, records
    why = []
    if body.get("shutting_down"):
        why.append("shutting down")
    if broker and broker != "connected":
        why.append(f"broker {broker}")
    if spool and not spool.get("accepting", True):
        why.append("spool not accepting")
    if spool and spool.get("write_error"):
        why.append(f"spool: {spool['write_error']}")
    return False, "not ready: " + (", ".join(why) or f"HTTP {status}"), broker, records


class Receivers:
    """Polls each receiver's `/readyz`; `states` is the last round's answers."""

    def __init__(self, urls: tuple[str, ...]) -> None:
        self._urls = urls
        self.states: tuple[Readiness, ...] = tuple(
            Readiness(shown(u), False, "not asked yet") for u in urls
        )

    @property
    def troubled(self) -> tuple[Readiness, ...]:
        return tuple(state for state in self.states if not state.ready)

    async def poll(self) -> None:
        """Ask every receiver once, all at the same time."""
        if not self._urls:
            return
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            states = await asyncio.gather(*(self._ask(session, url) for url in self._urls))
        for was, now in zip(self.states, states, strict=True):
            if now.ready != was.ready or (not now.ready and now.summary != was.summary):
                say = log.info if now.ready else log.warning
                say("console: receiver readiness", receiver=now.url, summary=now.summary)
        self.states = tuple(states)

    async def poll_forever(self) -> None:
        while True:
            await asyncio.sleep(EVERY)
            await self.poll()

    async def _ask(self, session: aiohttp.ClientSession, url: str) -> Readiness:
        target = URL(url)
        target = target.with_path(target.path.rstrip("/") + "/readyz")
        try:
            async with session.get(target, allow_redirects=False) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                ready, summary, broker, records = _summary(response.status, body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            ready, summary, broker, records = False, _no_answer(exc), "", None
        return Readiness(shown(url), ready, summary, broker, records, time.time())


def _no_answer(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT.total:g} s"
    return f"no answer ({type(exc).__name__})"
