"""`python -m service`: start the receiver, configured by the environment."""

from __future__ import annotations

import argparse
import os
import sys

import uvloop

from service.errors import SettingsError
from service.logs import configure_logging
from service.server import serve
from service.settings import Settings
from service.spool import SpoolUnusable


def main(argv: list[str] | None = None) -> int:
    """Run the receiver; exit 2 on a bad setting, 1 if it cannot listen."""
    argparse.ArgumentParser(
        prog="python -m service",
        description="Avionté webhook receiver. Configured by environment variables; see README.",
    ).parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, redact=settings.secret_values())
    try:
        uvloop.run(serve(settings))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SpoolUnusable as exc:
        print(f"error: SPOOL_DIR: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
