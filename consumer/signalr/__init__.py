"""SignalR: the codec (protocol.py), the sans-I/O connection core (core.py), the asyncio client
(connection.py with connector.py, receiver.py, supervisor.py, dispatch.py, streams.py, errors.py,
urls.py), retry policies (retry.py); the hub host lives in consumer/sim/hubhost.py."""

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
