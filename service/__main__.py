"""`python -m service`: start the receiver, configured by the environment."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import structlog
import uvloop

from service.http.server import serve
from service.observability.logs import configure_logging
from service.settings import Settings
from service.shared.errors import ListenFailed, SettingsError
from service.shared.samples import KNOWN_EVENTS
from service.simulate import Credential, simulate
from service.spool import command as parked_command
from service.spool.segments import SpoolUnusable


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description=(
            "Avionté webhook receiver. Configured by environment variables;"
            " see the manual's reference of settings (docs/reference/settings.md)."
        ),
    )
    commands = parser.add_subparsers(dest="command")
    sim = commands.add_parser("simulate", help="send Avionté-shaped deliveries to a receiver")
    sim.add_argument("url", help="e.g. http://localhost:8080/webhooks/avionte")
    sim.add_argument("--count", type=int, default=100, help="deliveries to send (100)")
    sim.add_argument("--rate", type=float, default=20.0, help="deliveries per second (20)")
    sim.add_argument(
        "--events",
        nargs="+",
        metavar="NAME",
        help="generate these event types ('all' for every known one) instead of the fixtures",
    )
    sim.add_argument(
        "--fixtures", type=Path, default=Path("tests/fixtures/avionte"), help="sample deliveries"
    )
    sim.add_argument("--api-key", help="send X-api-key (default: first of WEBHOOK_API_KEYS)")
    sim.add_argument("--secret", help="send the shared secret in X-Payload-Signature")
    sim.add_argument("--hmac", action="store_true", help="sign with HMAC-SHA256 of the secret")
    sim.add_argument(
        "--minute", type=float, default=60.0, help="seconds in the retry schedule's minute (60)"
    )
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")
    parked = commands.add_parser(
        "parked", help="list the spool's parked records (SPOOL_DIR), or publish them again"
    )
    parked.add_argument("--replay", action="store_true", help="publish them again, with confirms")
    parked.add_argument("--limit", type=int, help="replay at most this many")
    return parser


def _simulate(args: argparse.Namespace) -> int:
    api_key = args.api_key
    secret = args.secret or (os.environ.get("WEBHOOK_SHARED_SECRETS", "").split(",")[0] or None)
    if api_key is None and args.secret is None:
        api_key = os.environ.get("WEBHOOK_API_KEYS", "").split(",")[0] or None
    if api_key is None and secret is None:
        print("error: pass --api-key or --secret (or set WEBHOOK_API_KEYS)", file=sys.stderr)
        return 2
    if args.count < 1 or args.rate <= 0 or args.minute < 0:
        print("error: --count and --rate must be positive", file=sys.stderr)
        return 2
    events = KNOWN_EVENTS if args.events == ["all"] else args.events
    if not events and not args.fixtures.is_dir():
        print(f"error: --fixtures: no directory {args.fixtures}; or pass --events", file=sys.stderr)
        return 2
    credential = Credential(api_key=api_key, secret=secret, sign=args.hmac)
    summary = uvloop.run(
        simulate(
            args.url,
            credential,
            count=args.count,
            rate=args.rate,
            events=events,
            fixtures=args.fixtures,
            minute=args.minute,
            progress=not args.no_progress,
        )
    )
    print(summary.report())
    return 1 if summary.given_up else 0


def main(argv: list[str] | None = None) -> int:
    """Run the receiver (exit 2 on a bad setting, 1 if it cannot listen), or the simulator."""
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "parked":
        if args.limit is not None and args.limit < 1:
            print("error: --limit must be at least 1", file=sys.stderr)
            return 2
        return parked_command.run(os.environ, replay=args.replay, limit=args.limit)
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
    except ListenFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception:
        structlog.get_logger("service").exception("receiver failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
