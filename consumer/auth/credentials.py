"""Where secrets come from: inline config, an environment variable, or a file.

Every secret-bearing key (client_secret, password, refresh_token, subject_token, static_token, and
[redmist] access codes) accepts an inline value, `<key>_env` (an environment variable) or `<key>_file`.
A relative `<key>_file` is looked up in `$CREDENTIALS_DIRECTORY` first (systemd
`LoadCredential=`), then next to the config file. Every value read is registered with
`consumer.logs.register_secret` so no later log line can contain it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from consumer.auth.settings import AuthConfig
from consumer.errors import ConfigError
from consumer.logs import get_logger, register_secret
from consumer.secret import Secret

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Credentials:
    """Resolved secrets for one provider (every field is a `Secret`, so reprs are masked)."""

    client_secret: Secret | None = None
    password: Secret | None = None
    refresh_token: Secret | None = None
    subject_token: Secret | None = None
    static_token: Secret | None = None


def _is_real_file(source: str) -> bool:
    return not (source.startswith("<") and source.endswith(">")) and Path(source).is_file()


def warn_if_readable(
    path: str | os.PathLike[str],
    what: str,
    *,
    strict: bool = False,
    source: str | None = None,
    key: str | None = None,
) -> bool:
    """Log a warning (and return True) if `path` is readable by group or others (POSIX only).

    strict (check-config): a file readable by *others* is a ConfigError naming `source` and `key`."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    if os.name != "posix" or not mode & (stat.S_IRGRP | stat.S_IROTH):
        return False
    if strict and mode & stat.S_IROTH:
        raise ConfigError(
            f"{what} {str(path)!r} is world-readable (mode {oct(stat.S_IMODE(mode))}); chmod 600 it",
            file=source,
            key=key,
        )
    log.warning(
        "auth.file_readable_by_others",
        what=what,
        problem="readable by group/others; chmod 600 it",
        file=str(path),
        mode=oct(stat.S_IMODE(mode)),
    )
    return True


def _from_env(env: Mapping[str, str], var: str, key: str, source: str) -> Secret:
    value = env.get(var)
    if not value:
        raise ConfigError(f"environment variable {var} is not set or empty", file=source, key=key)
    return Secret(value)


def _secret_file(name: str, source: str, env: Mapping[str, str]) -> Path:
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    candidates = []
    creds_dir = env.get("CREDENTIALS_DIRECTORY")
    if creds_dir:
        candidates.append(Path(creds_dir) / path)
    if _is_real_file(source):
        candidates.append(Path(source).resolve().parent / path)
    candidates.append(path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]


def read_secret(
    value: Secret | None,
    env_var: str | None,
    file: str | None,
    *,
    key: str,
    source: str,
    env: Mapping[str, str],
    strict: bool = False,
    env_key: str | None = None,
    file_key: str | None = None,
) -> Secret | None:
    """One secret from exactly one of `<key>` (inline), `<key>_env` or `<key>_file`; None if none is set.

    `key` is the dotted name of the inline key (e.g. "auth.password"): errors name it (or its _env /
    _file variant) and `source`. A relative file is looked up in $CREDENTIALS_DIRECTORY (systemd
    LoadCredential=), then next to the config file. Group/other-readable files (and a config file
    holding an inline secret) are warned about; with `strict` a world-readable one is an error."""
    env_key = env_key or f"{key}_env"
    file_key = file_key or f"{key}_file"
    given = [k for k, v in ((key, value), (env_key, env_var), (file_key, file)) if v is not None]
    if len(given) > 1:
        raise ConfigError(f"set only one of {', '.join(given)}", file=source, key=given[1])
    name = "access code" if ".access_codes." in key else key.rsplit(".", 1)[-1].replace("_", " ")
    if value is not None:
        if not value:
            raise ConfigError("is empty", file=source, key=key)
        if _is_real_file(source):
            warn_if_readable(
                source, f"config file holding an inline {name}", strict=strict, source=source, key=key
            )
        return value
    if env_var is not None:
        return _from_env(env, env_var, env_key, source)
    if file is not None:
        path = _secret_file(file, source, env)
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(
                f"cannot read secret file {str(path)!r}: {err.strerror}", file=source, key=file_key
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"secret file {str(path)!r} is not UTF-8", file=source, key=file_key) from None
        secret = raw.rstrip("\r\n")
        if not secret:
            raise ConfigError(f"secret file {str(path)!r} is empty", file=source, key=file_key)
        warn_if_readable(path, f"{name} file", strict=strict, source=source, key=file_key)
        return Secret(secret)
    return None


def _auth_secret(
    cfg: AuthConfig, name: str, source: str, env: Mapping[str, str], strict: bool
) -> Secret | None:
    return read_secret(
        getattr(cfg, name),
        getattr(cfg, f"{name}_env"),
        getattr(cfg, f"{name}_file"),
        key=f"auth.{name}",
        source=source,
        env=env,
        strict=strict,
    )


def read_client_secret(
    cfg: AuthConfig, *, source: str, env: Mapping[str, str], strict: bool = False
) -> Secret | None:
    """The client secret from exactly one of client_secret / client_secret_env / client_secret_file."""
    return _auth_secret(cfg, "client_secret", source, env, strict)


def _need(secret: Secret | None, name: str, grant: str, source: str) -> Secret:
    if secret is None:
        raise ConfigError(
            f"grant {grant} needs {name}, {name}_env or {name}_file", file=source, key=f"auth.{name}"
        )
    return secret


def load_credentials(
    cfg: AuthConfig, *, source: str, env: Mapping[str, str] | None = None, strict: bool = False
) -> Credentials:
    """Read every secret the configured grant needs; ConfigError (exit 78) names file and key.

    strict (check-config): world-readable secret files are errors, not warnings."""
    env = os.environ if env is None else env
    grant = cfg.grant
    creds = Credentials()
    if grant == "none":
        return creds
    if grant == "static":
        token = _need(_auth_secret(cfg, "static_token", source, env, strict), "static_token", grant, source)
        creds = Credentials(static_token=token)
    else:
        if not cfg.client_id:
            raise ConfigError(f"grant {grant} needs client_id", file=source, key="auth.client_id")
        secret = _auth_secret(cfg, "client_secret", source, env, strict)
        own_token = grant == "token_exchange" and cfg.subject_token_source == "client_credentials"
        if (grant == "client_credentials" or own_token) and secret is None:
            what = (
                "grant client_credentials" if not own_token else 'subject_token_source = "client_credentials"'
            )
            raise ConfigError(
                f"{what} needs client_secret, client_secret_env or client_secret_file",
                file=source,
                key="auth.client_secret",
            )
        password = refresh = subject = None
        if grant == "password":
            if not cfg.username:
                raise ConfigError("grant password needs username", file=source, key="auth.username")
            password = _need(_auth_secret(cfg, "password", source, env, strict), "password", grant, source)
        elif grant == "refresh_token":
            refresh = _need(
                _auth_secret(cfg, "refresh_token", source, env, strict), "refresh_token", grant, source
            )
        elif grant == "token_exchange":
            subject = _auth_secret(cfg, "subject_token", source, env, strict)
            if own_token and subject is not None:
                raise ConfigError(
                    'subject_token_source = "client_credentials" takes the subject token from the '
                    "client's own grant; remove the configured subject token",
                    file=source,
                    key="auth.subject_token_source",
                )
        creds = Credentials(
            client_secret=secret, password=password, refresh_token=refresh, subject_token=subject
        )
    for value in (
        creds.client_secret,
        creds.password,
        creds.refresh_token,
        creds.subject_token,
        creds.static_token,
    ):
        register_secret(value)
    return creds
