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


# What an exception that carries no text means, by class name (httpx/httpcore/websockets/stdlib classes
# whose str() is often empty, e.g. `httpx.ReadError()` after a TCP reset). Matched along the MRO.
_QUIET_MEANINGS: dict[str, str] = {
    "ReadError": "connection reset or closed while reading the response",
    "WriteError": "connection reset or closed while sending the request",
    "ConnectError": "could not connect",
    "RemoteProtocolError": "the peer closed the connection or broke the HTTP protocol",
    "LocalProtocolError": "invalid HTTP request",
    "ReadTimeout": "timed out reading the response",
    "WriteTimeout": "timed out sending the request",
    "ConnectTimeout": "timed out connecting",
    "PoolTimeout": "timed out waiting for a free connection",
    "TimeoutException": "timed out",
    "TimeoutError": "timed out",
    "ConnectionResetError": "connection reset by peer",
    "ConnectionRefusedError": "connection refused",
    "ConnectionAbortedError": "connection aborted",
    "BrokenPipeError": "broken pipe (the peer closed the connection)",
    "IncompleteReadError": "connection closed before the end of the message",
    "EOFError": "connection closed before the end of the message",
    "EndOfStream": "connection closed before the end of the message",
    "BrokenResourceError": "connection closed",
    "ClosedResourceError": "connection closed",
    "CancelledError": "cancelled",
    "NetworkError": "network error",
    "TransportError": "transport error",
}


def _text_of(error: BaseException) -> str:
    text = str(error).strip()
    if not text and isinstance(error, OSError) and error.errno is not None:
        import errno as _errno  # local: keeps this module import-light

        text = _errno.errorcode.get(error.errno, str(error.errno))
    return text


def describe_error(error: BaseException, context: str | None = None, *, errno_name: bool = False) -> str:
    """`ClassName: text` for logs and messages — never with an empty text.

    `errno_name=True`: an OSError with an errno is described by its errno name instead
    (`ENOSPC: No space left on device`: what an operator greps for when a disk or file fails).

    When the exception carries no text (`httpx.ReadError()` after a TCP reset prints as `ReadError: `),
    the text comes from its cause/context chain (e.g. `[Errno 104] Connection reset by peer`), else from
    what the class means ("connection reset or closed while reading the response"), else the class name
    alone. `context` (e.g. "fetching the snapshot") is appended as "while ..." when given.
    """
    if errno_name and isinstance(error, OSError) and error.errno is not None:
        import errno as _errno  # local: keeps this module import-light

        out = f"{_errno.errorcode.get(error.errno, str(error.errno))}: {error.strerror or error}"
        return f"{out} (while {context})" if context else out
    name = type(error).__name__
    text = _text_of(error)
    seen: set[int] = {id(error)}
    link = error.__cause__ or error.__context__
    while not text and link is not None and id(link) not in seen and len(seen) < 8:
        seen.add(id(link))
        text = _text_of(link)
        link = link.__cause__ or link.__context__
    if not text:
        text = next(
            (_QUIET_MEANINGS[k.__name__] for k in type(error).__mro__ if k.__name__ in _QUIET_MEANINGS), ""
        )
    out = f"{name}: {text}" if text else name
    return f"{out} (while {context})" if context else out
