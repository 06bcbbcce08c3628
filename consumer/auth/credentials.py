"""Where secrets come from: inline config, an environment variable, or a file.

A relative `client_secret_file` is looked up in `$CREDENTIALS_DIRECTORY` first (systemd
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

log = get_logger("consumer.auth")


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


def warn_if_readable(path: str | os.PathLike[str], what: str) -> bool:
    """Log a warning (and return True) if `path` is readable by group or others (POSIX only)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    if os.name != "posix" or not mode & (stat.S_IRGRP | stat.S_IROTH):
        return False
    log.warning(
        f"{what} is readable by group/others; chmod 600 it",
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


def read_client_secret(cfg: AuthConfig, *, source: str, env: Mapping[str, str]) -> Secret | None:
    """The client secret from exactly one of client_secret / client_secret_env / client_secret_file."""
    given = [
        k
        for k, v in (
            ("client_secret", cfg.client_secret),
            ("client_secret_env", cfg.client_secret_env),
            ("client_secret_file", cfg.client_secret_file),
        )
        if v is not None
    ]
    if len(given) > 1:
        raise ConfigError(f"set only one of {', '.join(given)}", file=source, key=f"auth.{given[1]}")
    if cfg.client_secret is not None:
        if not cfg.client_secret:
            raise ConfigError("is empty", file=source, key="auth.client_secret")
        if _is_real_file(source):
            warn_if_readable(source, "config file holding an inline client_secret")
        return cfg.client_secret
    if cfg.client_secret_env is not None:
        return _from_env(env, cfg.client_secret_env, "auth.client_secret_env", source)
    if cfg.client_secret_file is not None:
        path = _secret_file(cfg.client_secret_file, source, env)
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(
                f"cannot read secret file {str(path)!r}: {err.strerror}",
                file=source,
                key="auth.client_secret_file",
            ) from None
        value = raw.rstrip("\r\n")
        if not value:
            raise ConfigError(
                f"secret file {str(path)!r} is empty", file=source, key="auth.client_secret_file"
            )
        warn_if_readable(path, "client secret file")
        return Secret(value)
    return None


def load_credentials(cfg: AuthConfig, *, source: str, env: Mapping[str, str] | None = None) -> Credentials:
    """Read every secret the configured grant needs; ConfigError (exit 78) names file and key."""
    env = os.environ if env is None else env
    grant = cfg.grant
    creds = Credentials()
    if grant == "none":
        return creds
    if grant == "static":
        if not cfg.static_token_env:
            raise ConfigError("grant static needs static_token_env", file=source, key="auth.static_token_env")
        creds = Credentials(
            static_token=_from_env(env, cfg.static_token_env, "auth.static_token_env", source)
        )
    else:
        if not cfg.client_id:
            raise ConfigError(f"grant {grant} needs client_id", file=source, key="auth.client_id")
        secret = read_client_secret(cfg, source=source, env=env)
        if grant == "client_credentials" and secret is None:
            raise ConfigError(
                "grant client_credentials needs client_secret, client_secret_env or client_secret_file",
                file=source,
                key="auth.client_secret",
            )
        password = refresh = subject = None
        if grant == "password":
            if not cfg.username:
                raise ConfigError("grant password needs username", file=source, key="auth.username")
            if not cfg.password_env:
                raise ConfigError("grant password needs password_env", file=source, key="auth.password_env")
            password = _from_env(env, cfg.password_env, "auth.password_env", source)
        elif grant == "refresh_token":
            if not cfg.refresh_token_env:
                raise ConfigError(
                    "grant refresh_token needs refresh_token_env", file=source, key="auth.refresh_token_env"
                )
            refresh = _from_env(env, cfg.refresh_token_env, "auth.refresh_token_env", source)
        elif grant == "token_exchange" and cfg.subject_token_env:
            subject = _from_env(env, cfg.subject_token_env, "auth.subject_token_env", source)
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
