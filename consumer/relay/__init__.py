"""The generic relay: hub invocations in, envelope lines out; subscriptions that survive reconnects.

Public API:
- `Relay(workers, hub=, protocol=, profile=)`: `on_raw(target, raw)` (the hot path), `on_invocation(target,
  *args)`, `emit_snapshot(...)`, `emit_connection(state, error)`, `watch(target, callback)`, `stats`
- `HubProfile` (protocol), `PlainProfile` (consumer.relay.profile): what depends on one hub's payloads
  (event ids, MessagePack names, compact form, known targets), injected into the relay
- `EnvelopeEncoder` (consumer.relay.envelope); schema in docs/
- `Subscriber(invoke, calls, after_round=...)`, `HubCall` (consumer.relay.subscriptions)
- `RelayStats` (consumer.relay.stats)

Nothing here knows RedMist: its profile is `consumer.redmist`.
"""

from consumer.relay.envelope import EnvelopeEncoder
from consumer.relay.profile import HubProfile, PlainProfile
from consumer.relay.relay import Relay
from consumer.relay.stats import RelayStats
from consumer.relay.subscriptions import HubCall, Subscriber

__all__ = ["EnvelopeEncoder", "HubCall", "HubProfile", "PlainProfile", "Relay", "RelayStats", "Subscriber"]
