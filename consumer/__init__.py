"""event-consumer: relay a SignalR hub's live events, on behalf of a service account, to sinks."""

__version__ = "0.1.0"

__all__ = ["__version__"]
