from __future__ import annotations

from pathlib import Path

import pytest

from consumer.cli import main
from consumer.config import load_config, to_display
from consumer.errors import EXIT_CONFIG, ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_shipped_config_loads() -> None:
    cfg = load_config(ROOT / "config.toml", env={})
    assert cfg.auth.realm == "redmist"
    assert cfg.hub.url.startswith("https://")


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[auth]\nclient_idd = 'x'\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert e.value.key == "auth.client_idd"
    assert str(p) in str(e.value)


def test_wrong_type_names_key_and_expected_type(tmp_path: Path) -> None:
    p = write(tmp_path, "[auth]\ntimeout_seconds = 'ten'\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert e.value.key == "auth.timeout_seconds"
    assert "expected float" in str(e.value)


def test_env_override_parses_toml_values(tmp_path: Path) -> None:
    p = write(tmp_path, "[auth]\nclient_id = 'a'\n")
    cfg = load_config(
        p,
        env={
            "EVENT_CONSUMER__AUTH__CLIENT_ID": "from-env",
            "EVENT_CONSUMER__AUTH__TIMEOUT_SECONDS": "5",
            "EVENT_CONSUMER__REDMIST__EVENTS": "[390, 410]",
        },
    )
    assert cfg.auth.client_id == "from-env"
    assert cfg.auth.timeout_seconds == 5
    assert cfg.redmist.events == [390, 410]


def test_secret_masked_in_repr_and_display(tmp_path: Path) -> None:
    p = write(tmp_path, "[auth]\nclient_secret = 'hunter2-very-secret'\n")
    cfg = load_config(p, env={})
    assert cfg.auth.client_secret is not None
    assert cfg.auth.client_secret.reveal() == "hunter2-very-secret"
    assert "hunter2" not in repr(cfg)
    assert "hunter2" not in str(to_display(cfg))


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    p = write(tmp_path, "[auth\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(p, env={})


def test_check_config_cli_exit_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, "[nope]\n")
    assert main(["check-config", "--config", str(p)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and str(p) in err


def test_usage_error_exit_2() -> None:
    assert main(["no-such-command"]) == 2


def test_shipped_config_is_complete_and_defaults_match_the_schema() -> None:
    cfg = load_config(ROOT / "config.toml", env={})
    assert cfg.hub.url == "https://api.redmist.racing/status/event-status"
    assert cfg.hub.skip_negotiation and cfg.sinks[0].type == "stdout"
    assert not cfg.http.enabled and cfg.http.host == "127.0.0.1"
    assert cfg.service.shutdown_grace_seconds == 10


def test_demo_config_targets_the_simulator() -> None:
    cfg = load_config(ROOT / "config.demo.toml", env={})
    assert cfg.hub.url.startswith("http://127.0.0.1:")
    assert cfg.redmist.events and [s.type for s in cfg.sinks] == ["stdout", "file"]


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[[sinks]]\ntype = 'file'\n", "sinks.0.path", "a file path"),
        ("[[sinks]]\nqueue_size = 0\n", "sinks.0.queue_size", "an int >= 1"),
        ("[[sinks]]\noverflow = 'sometimes'\n", "sinks.0.overflow", "expected one of"),
        ("[http]\nport = 70000\n", "http.port", "0..65535"),
        ("[hub]\nurl = 'ftp://x'\n", "hub.url", "URL"),
        ("[redmist]\nevents = ['x']\n", "redmist.events.0", "expected int"),
        ("[redmist]\naccess_codes = { abc = 'x' }\n", "redmist.access_codes.abc", "event id"),
        ("[[hub.on_connect]]\nmethod = 'M'\narguments = 5\n", "hub.on_connect.0.arguments", "expected array"),
        ("[[sinks]]\n[[sinks]]\n", "sinks.1.name", "unique"),
    ],
)
def test_schema_errors_name_key_and_expectation(tmp_path: Path, text: str, key: str, expected: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert e.value.key == key
    assert expected in str(e.value) and str(p) in str(e.value)


def test_env_override_reaches_list_elements(tmp_path: Path) -> None:
    p = write(tmp_path, "[[sinks]]\ntype = 'stdout'\n")
    cfg = load_config(
        p, env={"EVENT_CONSUMER__SINKS__0__QUEUE_SIZE": "5", "EVENT_CONSUMER__HTTP__ENABLED": "true"}
    )
    assert cfg.sinks[0].queue_size == 5 and cfg.http.enabled
