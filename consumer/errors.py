"""Errors that end the process, each with its exit code (the CLI contract).

Exit codes: 0 ok, 2 usage, 77 credentials rejected (EX_NOPERM), 78 configuration error (EX_CONFIG),
69 service unavailable after giving up (EX_UNAVAILABLE).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69
EXIT_CREDENTIALS = 77
EXIT_CONFIG = 78


class ConsumerError(Exception):
    """Base class; `exit_code` is what the CLI exits with when this ends the process."""

    exit_code: int = 1


class ConfigError(ConsumerError):
    """A configuration mistake. The message names the file and the key; never a secret value."""

    exit_code = EXIT_CONFIG

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class CredentialsRejected(ConsumerError):
    """The identity provider permanently rejected our credentials (exit 77)."""

    exit_code = EXIT_CREDENTIALS


class ServiceUnavailable(ConsumerError):
    """A bounded retry gave up (exit 69). Only raised where the user asked for a bound."""

    exit_code = EXIT_UNAVAILABLE
