"""Issue 10 item 8: `check-config` is a preflight (offline part). The online part runs against the
simulator in tests/sim/test_check_config_online.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.errors import EXIT_CONFIG, EXIT_OK

SECRET = "preflight-secret-value"


def write(tmp_path: Path, body: str, mode: int = 0o600) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(body)
    config.chmod(mode)
    return config


def good(tmp_path: Path, extra: str = "") -> str:
    return (
        '[auth]\ntoken_url = "https://idp.example/token"\nclient_id = "svc"\n'
        'client_secret_env = "PF_SECRET"\n'
        '[hub]\nurl = "wss://hub.example/status/event-status"\n'
        f'[[sinks]]\ntype = "file"\npath = "{tmp_path / "out.jsonl"}"\n' + extra
    )


def run(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["check-config", "--config", str(config), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_good_config_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PF_SECRET", SECRET)
    code, out, _ = run(write(tmp_path, good(tmp_path)), capsys)
    assert code == EXIT_OK, out
    assert out.rstrip().endswith("result: ok")
    for check in ("schema", "urls", "secrets", "sinks"):
        assert f"  ok    {check}" in out
    assert "auth.client_secret_env" in out and SECRET not in out
    assert not (tmp_path / "out.jsonl").exists()  # checked, not created


def test_every_offline_problem_is_reported_with_file_key_and_cause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PF_UNSET", raising=False)
    config = write(
        tmp_path,
        '[auth]\ntoken_url = "http://idp.example/token"\nclient_id = "svc"\nclient_secret_env = "PF_UNSET"\n'
        '[hub]\nurl = "ws://hub.example/hub"\n'
        f'[[sinks]]\ntype = "file"\npath = "{tmp_path / "missing-dir" / "out.jsonl"}"\n'
        f'[[sinks]]\ntype = "file"\npath = "{tmp_path}"\n'
        '[http]\nenabled = true\nhost = "192.0.2.1"\n',
    )
    code, out, _ = run(config, capsys)
    assert code == EXIT_CONFIG
    fails = [line for line in out.splitlines() if line.startswith("  FAIL")]
    expected = [
        ("hub.url", "plain ws to non-loopback host"),
        ("auth.token_url", "plain http to non-loopback host"),
        ("auth.client_secret_env", "environment variable PF_UNSET is not set"),
        ("sinks.0.path", "does not exist"),
        ("sinks.1.path", "is a directory"),
        ("http.host", "is not an address of this machine"),
    ]
    assert len(fails) == len(expected), out
    for (key, cause), line in zip(expected, fails, strict=True):
        assert f"{config}: {key}: " in line and cause in line, line
    assert out.rstrip().endswith("result: FAILED (exit 78)")


def test_world_readable_secret_file_fails_group_readable_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "client_secret"
    secret.write_text(SECRET)
    body = good(tmp_path).replace('client_secret_env = "PF_SECRET"', 'client_secret_file = "client_secret"')
    config = write(tmp_path, body)
    secret.chmod(0o640)
    code, out, err = run(config, capsys)
    assert code == EXIT_OK, out
    assert "readable by group/others" in err  # a warning on stderr, the report still passes
    secret.chmod(0o644)
    code, out, _ = run(config, capsys)
    assert code == EXIT_CONFIG
    assert f"{config}: auth.client_secret_file: " in out and "world-readable" in out and SECRET not in out


def test_inline_secret_in_world_readable_config_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = good(tmp_path).replace('client_secret_env = "PF_SECRET"', f'client_secret = "{SECRET}"')
    code, out, _ = run(write(tmp_path, body, mode=0o644), capsys)
    assert code == EXIT_CONFIG
    assert "auth.client_secret: config file holding an inline client secret" in out and SECRET not in out


def test_unset_access_code_variable_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PF_SECRET", SECRET)
    extra = '[redmist]\nevents = [390]\n[redmist.access_codes_env]\n"390" = "PF_CODE_UNSET"\n'
    code, out, _ = run(write(tmp_path, good(tmp_path, extra)), capsys)
    assert code == EXIT_CONFIG
    assert "redmist.access_codes_env.390: environment variable PF_CODE_UNSET" in out


def test_http_port_in_use_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PF_SECRET", SECRET)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        extra = f'[http]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n'
        code, out, _ = run(write(tmp_path, good(tmp_path, extra)), capsys)
    assert code == EXIT_OK, out
    assert f"  warn  http      127.0.0.1:{port}: port in use now" in out


def test_show_config_masks_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PF_SECRET", SECRET)
    body = good(tmp_path, '[redmist.access_codes]\n"390" = "inline-code-1234"\n')
    code, out, _ = run(write(tmp_path, body), capsys, "--show-config")
    assert code == EXIT_OK
    shown = json.loads(out[: out.index("\ncheck-config ")])
    assert shown["auth"]["client_secret_env"] == "PF_SECRET"
    assert "inline-code-1234" not in out and SECRET not in out
