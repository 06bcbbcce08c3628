"""SignalR: sans-I/O protocol core (protocol.py), asyncio client (connection.py), hub host (server.py)."""

from consumer.signalr.connection import HubConnection, HubConnectionError, HubError
from consumer.signalr.retry import DaemonRetryPolicy, RetryPolicy, retry_policy

__all__ = [
    "DaemonRetryPolicy",
    "HubConnection",
    "HubConnectionError",
    "HubError",
    "RetryPolicy",
    "retry_policy",
]
