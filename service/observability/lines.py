"""A line for every delivery, written in one step.

The receiver logs one line at `info` for each delivery. Through a bound logger that
line pays for a copy of the logger's context, the merge of context variables and a
call to each of six or seven processors. `info_lines` writes the same line (the same
fields in the same order, the span's ids while tracing, the logger's name, the level
and the timestamp) through the same masking renderer to the same stream, at once, and
builds no more than the line. Every other line takes structlog's path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from service.observability import tracing
from service.observability.logs import bound_logger, json_sink
from service.shared.timing import utc_now

# Writes `event` with its fields; the fields' dict is the line's, not to be used again.
LineWriter = Callable[[str, dict[str, Any]], None]


def _skip(event: str, fields: dict[str, Any]) -> None:
    return None


def info_lines(name: str) -> LineWriter:
    """Lines at `info` from the logger `name`, as `bound_logger(name).info` writes them.

    Resolved now, after `configure_logging`: lines are left out below its level, and
    take the bound logger's path unless they are JSON from `configure_logging`. Fields
    are plain values; context variables bound with structlog are not added.
    """
    logger = bound_logger(name)
    if not logger.is_enabled_for(logging.INFO):
        return _skip
    sink = json_sink()
    if sink is None:

        def through_structlog(event: str, fields: dict[str, Any]) -> None:
            logger.info(event, **fields)

        return through_structlog
    chain, render, write = sink.chain, sink.render, sink.write
    ids = None
    if tracing.enabled():
        from service.observability.spans import current_ids

        ids = current_ids

    def line(event: str, fields: dict[str, Any]) -> None:
        if chain[-1] is not render:  # the chain was refilled in place (`capture_logs`)
            logger.info(event, **fields)
            return
        fields["event"] = event
        if ids is not None and (found := ids()) is not None:
            fields.setdefault("trace_id", found[0])
            fields.setdefault("span_id", found[1])
        fields["logger"] = name
        fields["level"] = "info"
        fields["timestamp"] = utc_now()
        write(render(None, "info", fields))

    return line
