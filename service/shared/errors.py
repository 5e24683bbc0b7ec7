"""Exceptions of the relay, in one tree.

RelayError
├── SettingsError        a setting is missing or invalid; start-up exits with code 2
├── ListenFailed         the listening address cannot be had; start-up exits with code 1
├── Unauthorized         no configured credential matches; the answer is 401
├── InvalidEnvelope      authenticated, but cannot be routed; quarantined with a reason
└── PublishFailed        the broker did not confirm; the answer is 503
    ├── BrokerUnavailable    no usable connection right now
    │   └── BrokerBlocked    the broker blocks publishing (a memory or disk alarm)
    ├── PublishTimeout       no confirm within PUBLISH_TIMEOUT
    ├── PublishNacked        the broker refused the message
    └── PublishReturned      the broker could not route the message
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error the relay raises on purpose."""


class SettingsError(RelayError):
    """A setting is missing or invalid. The message names the variable, never a secret."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class ListenFailed(RelayError):
    """The receiver cannot listen on HOST:PORT."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}")


class Unauthorized(RelayError):
    """No configured credential matches. Carries no detail on purpose."""


class InvalidEnvelope(RelayError):
    """The body authenticated but cannot be routed; `reason` goes to `x-invalid-reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PublishFailed(RelayError):
    """The broker did not confirm the message; nothing may be answered as stored."""


class BrokerUnavailable(PublishFailed):
    """There is no usable connection to the broker right now."""


class BrokerBlocked(BrokerUnavailable):
    """The broker has blocked the connection during an alarm; a publish would only wait."""


class PublishTimeout(PublishFailed):
    """No confirm arrived within PUBLISH_TIMEOUT."""


class PublishNacked(PublishFailed):
    """The broker answered with a nack."""


class PublishReturned(PublishFailed):
    """The broker returned the message as unroutable."""
