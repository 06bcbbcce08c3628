"""RedMist (race timing): the hub profile the daemon runs — everything that knows RedMist's payloads.

Public API:
- `contract` (consumer.redmist.contract, + contract.json): MessagePack arrays <-> RedMist JSON names,
  nothing dropped (slots beyond the contract as `key<n>`, unexpected forms as received;
  `contract.STATS`); the simulator imports it from here
- `PAYLOADS` / `RedMistPayloads` (consumer.redmist.payloads): the relay's hub profile (event ids,
  MessagePack names through `fastpack`, `[redmist] patches = "compact"` through `compact`);
  `peek_json_event_id`, `event_id_of`
- `RedMistProfile(cfg.redmist, relay, http, hub_url=)` (consumer.redmist.profile): subscriptions,
  snapshots over REST, resyncs, "not live" holds
- `LiveState(path)` (consumer.redmist.state): the board kept right (new sessionId = reset, entered
  cars only); read API `events()`, `event_state(id)`, `epoch(id)`, `event_status(id)`,
  `last_message_at(id)`, `wait_changed(version)`
- `human_line`, `flag_name` (consumer.redmist.view): the stdout sink's pretty view, flag names;
  `TerminalBoard`, `render` (consumer.redmist.board_view, imported on use): the demo's terminal board
"""

from consumer.redmist import contract
from consumer.redmist.payloads import PAYLOADS, RedMistPayloads, event_id_of, peek_json_event_id
from consumer.redmist.profile import RedMistProfile
from consumer.redmist.state import LiveState
from consumer.redmist.view import flag_name, human_line

__all__ = [
    "PAYLOADS",
    "LiveState",
    "RedMistPayloads",
    "RedMistProfile",
    "contract",
    "event_id_of",
    "flag_name",
    "human_line",
    "peek_json_event_id",
]
