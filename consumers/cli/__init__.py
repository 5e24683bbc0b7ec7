"""`python -m consumers`: one small module per command, each adding its own arguments.

Every command reads the worker settings (AMQP_URL, BUS_PREFIX, ...) once and returns
its exit code: 0 on success, 2 on a bad setting, consumer definition or consumer
name, 1 on a broker error or a refusal.
"""

from __future__ import annotations

import argparse
import os
import sys

import aio_pika

from consumers.cli import console, dead, history, listing, prune, reroute, run, tail
from consumers.errors import ConsumerError
from consumers.settings import WorkerSettings
from service.observability.logs import configure_logging
from service.shared.errors import SettingsError

COMMANDS = (run, listing, dead, prune, reroute, tail, console, history)


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser(
        prog="python -m consumers",
        description="Consumer workers for Avionté events. AMQP_URL and BUS_PREFIX select the bus.",
    )
    commands = made.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add(commands)
    return made


def main(argv: list[str] | None = None) -> int:
    """Run one command; see the module docstring for the exit codes."""
    args = parser().parse_args(argv)
    try:
        settings = WorkerSettings.from_env(os.environ)
        for option in ("concurrency", "sample", "limit"):
            value = getattr(args, option, None)
            if value is not None and value < 1:
                raise SettingsError(f"--{option}", "must be at least 1")
        configure_logging(settings.log_level, settings.log_format, redact=settings.secret_values())
        code: int = args.func(args, settings)
    except (SettingsError, ConsumerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        print(f"error: broker: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return code
