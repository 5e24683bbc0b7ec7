"""Ports two processes on one host reach for at the same instant."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from consumers.cli import console
from consumers.runtime import metrics
from service.shared.errors import SettingsError
from tests.receivers import free_port


class BindThenRivalListens(socket.socket):
    """A socket whose bind to `contested` lets a rival, bound there too, listen first."""

    contested = 0
    rival: socket.socket | None = None

    def bind(self, address: object) -> None:
        super().bind(address)  # type: ignore[arg-type]
        rival = type(self).rival
        if rival is not None and isinstance(address, tuple) and address[1] == self.contested:
            type(self).rival = None
            rival.listen(1)


def stage_rival(monkeypatch: pytest.MonkeyPatch, host: str) -> tuple[int, socket.socket]:
    """A free port with a rival bound to it that listens as soon as we bind it too."""
    port = free_port()
    rival = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    rival.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    rival.bind((host, port))
    monkeypatch.setattr(BindThenRivalListens, "contested", port)
    monkeypatch.setattr(BindThenRivalListens, "rival", rival)
    monkeypatch.setattr(socket, "socket", BindThenRivalListens)
    return port, rival


async def healthz(url: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url.replace("/metrics", "/healthz")) as response,
    ):
        return response.status


async def test_a_rival_that_listens_between_bind_and_listen_sends_us_to_a_free_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two replicas can both bind the default port (SO_REUSEADDR); the loser must move
    # on, not die. This is the interleaving that once killed a replica at start-up.
    port, rival = stage_rival(monkeypatch, "0.0.0.0")
    monkeypatch.setattr(metrics, "DEFAULT_PORT", port)
    try:
        server = await metrics.serve_metrics(metrics.WorkerMetrics(), None)
        staged = BindThenRivalListens.rival is None
        monkeypatch.undo()
        assert server is not None
        try:
            assert staged, "the rival never listened"
            assert f":{port}/" not in server.url
            assert await healthz(server.url) == 200
        finally:
            await server.runner.cleanup()
    finally:
        rival.close()


async def test_a_set_port_a_rival_listens_on_first_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, rival = stage_rival(monkeypatch, "0.0.0.0")
    try:
        with pytest.raises(SettingsError, match=f"cannot serve on {port}"):
            await metrics.serve_metrics(metrics.WorkerMetrics(), port)
    finally:
        monkeypatch.undo()
        rival.close()


def test_a_console_port_a_rival_listens_on_first_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, rival = stage_rival(monkeypatch, "127.0.0.1")
    try:
        with pytest.raises(SettingsError, match=f"CONSOLE_PORT.*127.0.0.1:{port}"):
            console._listening("127.0.0.1", port)
    finally:
        monkeypatch.undo()
        rival.close()
