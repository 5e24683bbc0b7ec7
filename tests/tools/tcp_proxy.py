"""A TCP proxy for fault tests: put it between a client and RabbitMQ, then stall or cut the link."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType

from yarl import URL


class TcpProxy:
    """Forwards 127.0.0.1:<port> to an upstream address, under the test's control.

    - `stall()` stops moving bytes in both directions but keeps the sockets open;
      `resume()` lets the held bytes through.
    - `cut()` closes every open link; `refuse(True)` closes new links at once.
    - `answer(respond)` has `respond` speak to new links instead of the upstream (a
      server that is starting up, say); `answer(None)` forwards them again.
    """

    Respond = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusing = False
        self._respond: TcpProxy.Respond | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    def url_for(self, url: str) -> str:
        """`url` with its host and port replaced by this proxy's."""
        return str(URL(url).with_host("127.0.0.1").with_port(self.port))

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.cut()

    @property
    def links(self) -> int:
        """How many client links are open now."""
        return len(self._links)

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def refuse(self, refusing: bool) -> None:
        self._refusing = refusing

    def answer(self, respond: TcpProxy.Respond | None) -> None:
        self._respond = respond

    async def cut(self) -> None:
        links = list(self._links)
        for link in links:
            link.cancel()
        await asyncio.gather(*links, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        ends = [writer]
        self._links.add(task)
        try:
            if self._refusing:
                return
            if self._respond is not None:
                await self._respond(reader, writer)
                return
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            ends.append(up_writer)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._links.discard(task)
            for end in ends:
                end.close()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await end.wait_closed()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while chunk := await source.read(65536):
            await self._flowing.wait()
            sink.write(chunk)
            await sink.drain()
        sink.close()


@contextlib.asynccontextmanager
async def proxy_to(url: str) -> AsyncIterator[tuple[TcpProxy, str]]:
    """A proxy in front of the server in `url` (RabbitMQ by default), and `url` through it."""
    parsed = URL(url)
    async with TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5672) as proxy:
        yield proxy, proxy.url_for(url)
