"""Hot-standby pair: a lease in a NATS KV bucket decides which daemon publishes (issue 14).

Public API: `HaController` (consumer.ha.controller).
"""

from __future__ import annotations

from consumer.ha.controller import HaController

__all__ = ["HaController"]
