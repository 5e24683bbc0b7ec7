"""The naive receiver on uvloop, as ours runs: how much of the difference is the loop."""

import os

import uvloop
from aiohttp import web

from tests.bench.subjects.naive import main

if __name__ == "__main__":
    web.run_app(
        main(),
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        access_log=None,
        loop=uvloop.new_event_loop(),
    )
