"""The receiver's listening sockets: every accepted socket counts, and the TLS handshake is bounded.

aiohttp only learns of a TLS connection once its handshake is done, so a cap on
aiohttp's connections lets any number of half-open handshakes through. Here each
socket counts from the moment it is accepted until it closes: one over
MAX_CONNECTIONS is closed at once, and a handshake that does not finish within its
timeout (KEEPALIVE_TIMEOUT) is cut.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
import ssl
from collections.abc import Callable

import structlog

from service.shared.supervise import keep_running

log = structlog.get_logger("service.listener")

BACKLOG = 128
# Accepting fails while the process is out of file descriptors; try again after this.
ACCEPT_RETRY_SECONDS = 0.1


class _Admission:
    """One accepted socket's place under the cap, given back exactly once."""

    __slots__ = ("_held", "_listener")

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._held = True
        listener.open += 1

    def release(self) -> None:
        if self._held:
            self._held = False
            self._listener.open -= 1


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, which gives its place back when it closes."""

    def __init__(self, inner: asyncio.Protocol, admission: _Admission) -> None:
        self._inner = inner
        self._admission = admission
        # The transport looks these up on the instance: no extra call per read.
        self.data_received = inner.data_received  # type: ignore[method-assign]
        self.eof_received = inner.eof_received  # type: ignore[method-assign]
        self.pause_writing = inner.pause_writing  # type: ignore[method-assign]
        self.resume_writing = inner.resume_writing  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._admission.release()
        self._inner.connection_lost(exc)


class Listener:
    """Accepts connections for `protocol`, at most `limit` open at once."""

    def __init__(
        self,
        protocol: Callable[[], asyncio.Protocol],
        *,
        limit: int,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float = 15.0,
    ) -> None:
        self._protocol = protocol
        self.limit = limit
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self.open = 0
        self.sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._admitting: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        """Bind every address `host` names and start accepting; raises OSError if it cannot."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(BACKLOG)
                sock.setblocking(False)
        except OSError:
            self._close_sockets()
            raise
        self._accepting = [
            keep_running("listener", functools.partial(self._accept, sock)) for sock in self.sockets
        ]

    async def close(self) -> None:
        """Stop accepting and cut connections still in their handshake."""
        tasks = [*self._accepting, *self._admitting]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        starved = False
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue  # the client gave up while queued
                # Out of descriptors, or worse: say so once, and keep trying.
                if not starved:
                    log.error("cannot accept connections", error=exc.strerror)
                starved = True
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            starved = False
            if self.open >= self.limit:
                conn.close()
                # asyncio's sock_accept returns at once while the backlog is full: let others run.
                await asyncio.sleep(0)
                continue
            task = asyncio.create_task(self._admit(conn, _Admission(self)))
            self._admitting.add(task)
            task.add_done_callback(self._admitting.discard)

    async def _admit(self, conn: socket.socket, admission: _Admission) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                lambda: _Counted(self._protocol(), admission),
                conn,
                ssl=self._tls,
                ssl_handshake_timeout=self._handshake_timeout if self._tls else None,
            )
        except BaseException as exc:
            # A failed or cut handshake: the socket is closed, and its place is free again.
            admission.release()
            conn.close()
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, OSError | TimeoutError):
                log.error("connection not admitted", exc_info=exc)
