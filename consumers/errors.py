"""Exceptions of the consumer runtime.

ConsumerError
├── RegistrationError    a consumer or handler is defined wrongly; raised at import time
├── LoadError            a consumer module named on the command line cannot be used
└── UnknownConsumer      a consumer named on the command line has no queue on the bus
Reject                   raised by a handler: send the message to `.dead` at once
RetryLater               raised by a handler: retry, but not sooner than `after` seconds
"""

from __future__ import annotations


class ConsumerError(Exception):
    """Base of the runtime's own errors."""


class RegistrationError(ConsumerError, ValueError):
    """A consumer or handler is defined wrongly."""


class LoadError(ConsumerError):
    """A consumer module cannot be imported or defines no usable consumer."""


class UnknownConsumer(ConsumerError):
    """A command names a consumer whose queue the bus does not have."""


class Reject(Exception):
    """Raise from a handler when retrying cannot help: the message goes to `.dead` at once."""


class RetryLater(Exception):
    """Raise from a handler to retry no sooner than `after` seconds (a Retry-After, say).

    The retry takes the first of the consumer's retry delays that is at least `after`
    (the longest one if none is); the attempt counts like any other.
    """

    def __init__(self, message: str = "", *, after: float = 0.0) -> None:
        super().__init__(message)
        self.after = after
