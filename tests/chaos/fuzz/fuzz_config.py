"""atheris target: the config loader only ever raises ConfigError.

The input goes through `load_config`'s own steps in memory (nothing is written to disk): UTF-8 decode,
`tomllib.loads`, `apply_env_overrides`, `parse_config`. UnicodeDecodeError and TOMLDecodeError are
expected (load_config translates exactly those two into ConfigError); anything else but ConfigError is a
crash. Input layout: the TOML document, optionally followed by a NUL byte and environment overrides, one
`SECTION__KEY=value` per line (the `EVENT_CONSUMER__` prefix is added; undecodable bytes become
surrogates, as in os.environ), so the override paths (list indexes, non-table nodes, TOML-valued env
values) are fuzzed too.

Run: `.venv/bin/python tests/chaos/fuzz/fuzz_config.py -runs=1000000` (see _common.py).
"""

from __future__ import annotations

import sys

import atheris
from _common import ROOT, run

# tomllib is instrumented too, so libFuzzer learns TOML syntax and reaches the validation code.
with atheris.instrument_imports(include=["consumer", "tomllib"]):
    import tomllib

    from consumer.config import ENV_PREFIX, Config, apply_env_overrides, parse_config
    from consumer.errors import ConfigError

SOURCE = "fuzz.toml"


def _env(blob: bytes) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in blob.decode("utf-8", "surrogateescape").split("\n"):
        name, sep, value = line.partition("=")
        if sep and "\0" not in line:
            env[ENV_PREFIX + name] = value
    return env


def test_one_input(data: bytes) -> None:
    toml_bytes, _, env_blob = data.partition(b"\0")
    try:
        doc = tomllib.loads(toml_bytes.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return
    try:
        cfg = parse_config(apply_env_overrides(doc, _env(env_blob)), source=SOURCE)
    except ConfigError as err:
        assert str(err), "a ConfigError must say what is wrong"
        return
    assert isinstance(cfg, Config)
    assert cfg.source == SOURCE


def _seeds() -> dict[str, bytes]:
    seeds = {name: (ROOT / name).read_bytes() for name in ("config.toml", "config.demo.toml")}
    seeds["empty"] = b""
    seeds["env-overrides"] = (
        b'[hub]\nurl = "https://h/x"\n[[sinks]]\ntype = "file"\npath = "a"\n'
        b'[[hub.on_connect]]\nmethod = "M"\n'
        b"\0HUB__PROTOCOL=messagepack\nSINKS__0__PATH=b\nHUB__ON_CONNECT__0__ARGUMENTS=[1, 2]\n"
        b"REDMIST__EVENTS=[1]\nHTTP__PORT=0"
    )
    return seeds


if __name__ == "__main__":
    sys.exit(run(test_one_input, _seeds))
