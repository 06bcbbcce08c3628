"""Issue 10 item 10: every secret-bearing key accepts value / `<key>_env` / `<key>_file`
($CREDENTIALS_DIRECTORY for relative files), with the same permission warnings and redaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from authtest_helpers import LogCapture

from consumer.auth import build_token_provider
from consumer.auth.credentials import load_credentials
from consumer.config import load_config, to_display
from consumer.errors import ConfigError
from consumer.logs import get_logger

URL = "https://idp.example/token"
VALUE = "s3cret-value-for-a-test"

# key -> the [auth] lines that make the grant use it
GRANTS: dict[str, str] = {
    "client_secret": 'grant = "client_credentials"\nclient_id = "c"\n',
    "password": 'grant = "password"\nclient_id = "c"\nusername = "u"\n',
    "refresh_token": 'grant = "refresh_token"\nclient_id = "c"\n',
    "subject_token": 'grant = "token_exchange"\nclient_id = "c"\n',
    "static_token": 'grant = "static"\n',
}


def write_config(tmp_path: Path, key: str, line: str, mode: int = 0o600) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f'[auth]\ntoken_url = "{URL}"\n{GRANTS[key]}{line}\n')
    config.chmod(mode)
    return config


def creds_of(config: Path, env: dict[str, str], strict: bool = False) -> Any:
    cfg = load_config(config, env={})
    return load_credentials(cfg.auth, source=cfg.source, env=env, strict=strict)


@pytest.mark.parametrize("key", list(GRANTS))
@pytest.mark.parametrize("how", ["value", "env", "file", "credentials_directory"])
def test_every_secret_key_from_every_source(
    tmp_path: Path, key: str, how: str, json_logs: LogCapture
) -> None:
    env: dict[str, str] = {}
    if how == "value":
        line = f'{key} = "{VALUE}"'
    elif how == "env":
        line = f'{key}_env = "MY_{key.upper()}"'
        env[f"MY_{key.upper()}"] = VALUE
    elif how == "file":
        (tmp_path / "secret.txt").write_text(VALUE + "\n")
        (tmp_path / "secret.txt").chmod(0o600)
        line = f'{key}_file = "{tmp_path / "secret.txt"}"'
    else:  # a relative name: systemd LoadCredential= puts it in $CREDENTIALS_DIRECTORY
        creds_dir = tmp_path / "creds"
        creds_dir.mkdir()
        (creds_dir / key).write_text(VALUE)
        (creds_dir / key).chmod(0o600)
        env["CREDENTIALS_DIRECTORY"] = str(creds_dir)
        line = f'{key}_file = "{key}"'
    config = write_config(tmp_path, key, line)
    creds = creds_of(config, env)
    secret = getattr(creds, key)
    assert secret is not None and secret.reveal() == VALUE
    # Redaction: not in reprs, the displayed config, or any later log line.
    assert VALUE not in repr(creds) and VALUE not in str(to_display(load_config(config, env={})))
    get_logger("test").info("something mentions it", detail=f"value={VALUE}")
    assert VALUE not in json_logs.text
    assert not [r for r in json_logs.records() if r["level"] == "warning"]  # 0600 everywhere


@pytest.mark.parametrize("key", list(GRANTS))
def test_missing_sources_name_file_and_key(tmp_path: Path, key: str) -> None:
    config = write_config(tmp_path, key, f'{key}_env = "UNSET_VAR"')
    with pytest.raises(ConfigError) as caught:
        creds_of(config, {})
    assert str(caught.value).startswith(f"{config}: auth.{key}_env: ") and "UNSET_VAR" in str(caught.value)
    config = write_config(tmp_path, key, f'{key}_file = "no-such-file"')
    with pytest.raises(ConfigError, match=rf"auth\.{key}_file: cannot read secret file"):
        creds_of(config, {})
    if key != "client_secret":  # client_secret is optional for some grants
        config = write_config(tmp_path, key, "")
        cfg = load_config(config, env={})
        with pytest.raises(ConfigError, match=rf"auth\.{key}: grant .* needs {key}, {key}_env or {key}_file"):
            build_token_provider(cfg.auth, source=cfg.source, env={})


@pytest.mark.parametrize("key", list(GRANTS))
def test_only_one_source_per_key(tmp_path: Path, key: str) -> None:
    config = write_config(tmp_path, key, f'{key} = "{VALUE}"\n{key}_env = "X"')
    with pytest.raises(ConfigError, match=rf"auth\.{key}_env: set only one of auth\.{key}, auth\.{key}_env"):
        creds_of(config, {"X": "y"})


@pytest.mark.parametrize("key", list(GRANTS))
def test_readable_secret_file_warns_and_world_readable_fails_strict(
    tmp_path: Path, key: str, json_logs: LogCapture
) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(VALUE)
    secret_file.chmod(0o640)
    config = write_config(tmp_path, key, f'{key}_file = "secret.txt"')  # relative: next to the config
    assert getattr(creds_of(config, {}), key).reveal() == VALUE
    warnings = [r for r in json_logs.records() if r["level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["file"] == str(secret_file)
    assert warnings[0]["event"] == "auth.file_readable_by_others"
    assert "readable by group/others" in warnings[0]["problem"]
    creds_of(config, {}, strict=True)  # group-readable: a warning even for the preflight
    secret_file.chmod(0o604)
    with pytest.raises(ConfigError) as caught:
        creds_of(config, {}, strict=True)
    assert f"auth.{key}_file" in str(caught.value) and "world-readable" in str(caught.value)
    assert VALUE not in str(caught.value)


@pytest.mark.parametrize("key", list(GRANTS))
def test_inline_secret_in_readable_config_warns(tmp_path: Path, key: str, json_logs: LogCapture) -> None:
    config = write_config(tmp_path, key, f'{key} = "{VALUE}"', mode=0o644)
    creds_of(config, {})
    warnings = [r for r in json_logs.records() if r["level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["file"] == str(config)
    with pytest.raises(ConfigError, match=rf"auth\.{key}: config file holding an inline"):
        creds_of(config, {}, strict=True)


def test_access_codes_from_value_env_and_files(tmp_path: Path) -> None:
    from consumer.config import load_access_codes

    creds_dir = tmp_path / "creds"
    creds_dir.mkdir()
    (creds_dir / "code-390").write_text("code-from-file\n")
    (creds_dir / "code-390").chmod(0o600)
    config = tmp_path / "config.toml"
    config.write_text(
        "[redmist]\nevents = [390, 391, 392]\n"
        '[redmist.access_codes]\n"391" = "inline-code"\n'
        '[redmist.access_codes_file]\n"390" = "code-390"\n'
        '[redmist.access_codes_env]\n"392" = "CODE_392"\n'
    )
    config.chmod(0o600)
    cfg = load_config(config, env={})
    codes = load_access_codes(cfg, env={"CREDENTIALS_DIRECTORY": str(creds_dir), "CODE_392": "code-from-env"})
    assert {k: v.reveal() for k, v in codes.items()} == {
        "390": "code-from-file",
        "391": "inline-code",
        "392": "code-from-env",
    }
    with pytest.raises(ConfigError, match=r"redmist\.access_codes_env\.392: environment variable CODE_392"):
        load_access_codes(cfg, env={"CREDENTIALS_DIRECTORY": str(creds_dir)})
    assert "code-from" not in str(to_display(cfg))
