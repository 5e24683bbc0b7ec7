"""The tracer's resource, used only while tracing is on (`service.observability.tracing`)."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource


class SettledResource(Resource):
    """A resource whose hash is computed once.

    The OTLP encoder groups every exported span by its resource, and the SDK's hash
    serializes the attributes to JSON each time: about a tenth of the export's CPU.
    A resource never changes once made, so neither does its hash.
    """

    _hash: int | None = None

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = super().__hash__()
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or super().__eq__(other)
