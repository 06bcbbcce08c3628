"""The RedMist simulator (IdP + hub host + race engine). Installed with the `sim` extra:
its server side runs on aiohttp and signs tokens with pyjwt, neither of which the daemon needs."""

from __future__ import annotations

import importlib.util

from consumer.errors import ConfigError

__all__ = ["INSTALL_HINT", "require_extra"]

#: The exact command that installs what the simulator needs.
INSTALL_HINT = "pip install 'event-consumer[sim]'"
_MODULES = ("aiohttp", "jwt")  # jwt: pyjwt[crypto]


def require_extra(command: str) -> None:
    """Raise ConfigError (exit 78) naming the install command when the `sim` extra is missing."""
    missing = [name for name in _MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"`event-consumer {command}` needs the simulator extra (missing: {', '.join(missing)}); "
            f"install it with: {INSTALL_HINT}"
        )
