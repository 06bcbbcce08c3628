"""The SignalR client's errors (all `HubConnectionError`, except the protocol's `InvalidTextFrameError`)."""

from __future__ import annotations

from consumer.signalr import protocol as proto

__all__ = [
    "ConnectionLostError",
    "HandshakeError",
    "HubAuthError",
    "HubConnectionError",
    "HubError",
    "InvalidTextFrameError",
    "NegotiateError",
    "ServerClosedError",
    "ServerTimeoutError",
]


class HubConnectionError(Exception):
    """Base class of every error this client raises (besides ConfigError at construction)."""


class HubError(HubConnectionError):
    """The hub completed an invocation with an error; the message is the hub's."""


class ConnectionLostError(HubConnectionError):
    """The connection was lost or stopped while an invocation or stream was pending."""


class NegotiateError(HubConnectionError):
    """The negotiate request failed or its response cannot be used."""


class HandshakeError(HubConnectionError):
    """The hub refused the handshake, answered garbage, or did not answer within the timeout."""


class HubAuthError(HubConnectionError):
    """The bearer was rejected (401/403) twice in a row: once with the cached and once with a fresh token."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ServerClosedError(HubConnectionError):
    """The server sent a Close message with an error."""


class ServerTimeoutError(HubConnectionError):
    """Nothing was received from the server within the server timeout (half-open connection)."""


class InvalidTextFrameError(proto.ProtocolError):
    """A text frame that is not valid UTF-8 (RFC 6455: the connection must be failed with 1007)."""
