"""Subscriptions, the RedMist profile, the output envelope and live state.

Public API:
- `Relay(workers, hub=, protocol=)`: `on_raw(target, raw)` (the hot path), `on_invocation(target,
  *args)`, `emit_snapshot(...)`, `emit_connection(state, error)`, `watch(target, callback)`, `stats`
- `EnvelopeEncoder`, `peek_json_event_id` (consumer.relay.envelope); schema in docs/
- `Subscriber(invoke, calls, after_round=...)`, `HubCall` (consumer.relay.subscriptions)
- `RedMistProfile(cfg.redmist, relay, http, hub_url=)` (consumer.relay.redmist)
- `LiveState(path)` (consumer.relay.state): the board kept right (new sessionId = reset, entered
  cars only); read API `events()`, `event_state(id)`, `epoch(id)`, `event_status(id)`,
  `last_message_at(id)`, `wait_changed(version)`; `RelayStats` (consumer.relay.stats)
- `contract`: MessagePack arrays <-> RedMist JSON names, nothing dropped (slots beyond the contract
  as `key<n>`, unexpected forms as received; `contract.STATS`) (`arguments_from_msgpack` -> dicts;
  `encodable_arguments_from_msgpack` -> Structs that msgspec.json encodes to the same bytes, the
  relay's MessagePack hot path)
"""
