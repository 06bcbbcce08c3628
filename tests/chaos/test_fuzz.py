"""Fuzz: the config loader and the protocol readers only ever fail with their own error types.

Quick form: a few hundred inputs per property inside `make test`. `make chaos` (`--chaos-long`) runs
20,000 inputs per reader, 5,000 config documents and 20,000 load_config files here (measured: about
20 s, 46 s and 15 s; hypothesis costs ~1 ms per input, ~9 ms per config document). The 1,000,000
inputs per target of issue 7 come from the coverage-guided atheris targets in tests/chaos/fuzz/ (run
by `make chaos` after this suite; smoke-tested in tests/chaos/test_fuzz_atheris_smoke.py).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.config import Config, load_config, parse_config
from consumer.errors import ConfigError
from consumer.signalr import protocol as p

pytestmark = pytest.mark.chaos

QUICK = 300
LONG_READERS = 20_000
LONG_CONFIG = 5_000
LONG_LOAD_CONFIG = 20_000

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(
    ["auth", "hub", "redmist", "sinks", "http", "logging", "service", "url", "grant", "protocol", "path", "x"]
)
_docs = st.dictionaries(_keys, _values | st.dictionaries(_keys, _values, max_size=5), max_size=6)


def _examples(request: pytest.FixtureRequest, long: int) -> int:
    return long if request.config.getoption("--chaos-long") else QUICK


def test_parse_config_raises_only_config_error(request: pytest.FixtureRequest) -> None:
    @settings(
        max_examples=_examples(request, LONG_CONFIG), deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(_docs)
    def check(doc: dict[str, Any]) -> None:
        try:
            cfg = parse_config(doc, source="fuzz.toml")
        except ConfigError as err:
            assert "fuzz.toml" in str(err)
        else:
            assert isinstance(cfg, Config)

    check()


def test_load_config_on_arbitrary_bytes(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"

    @settings(
        max_examples=_examples(request, LONG_LOAD_CONFIG),
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.binary(max_size=200) | st.text(max_size=200).map(lambda s: s.encode()))
    def check(data: bytes) -> None:
        path.write_bytes(data)
        with contextlib.suppress(ConfigError):  # anything else fails the property
            assert isinstance(load_config(path, env={}), Config)

    check()


@pytest.mark.parametrize("name", ["json", "messagepack"])
def test_protocol_readers_raise_only_protocol_error(request: pytest.FixtureRequest, name: str) -> None:
    proto = p.get_protocol(name)

    @settings(
        max_examples=_examples(request, LONG_READERS), deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.lists(st.binary(max_size=64), max_size=6))
    def check(chunks: list[bytes]) -> None:
        reader = proto.reader(max_message_size=4096)
        try:
            for chunk in chunks:
                for message in reader.feed(chunk):
                    assert message is not None
        except p.ProtocolError:
            pass

    check()


# Inputs the atheris config target found (each crashed load_config with a non-ConfigError before).
@pytest.mark.parametrize(
    ("toml", "env"),
    [
        # os.environ holds undecodable bytes as surrogates: UnicodeEncodeError in msgspec / on output.
        ('[hub]\nprotocol = "json"\n', {"EVENT_CONSUMER__HUB__PROTOCOL": "\udcff"}),
        ("[hub]\n", {"EVENT_CONSUMER__HUB__N\udcffAME": "x"}),
        # A list element that is not a table, indexed further: TypeError on item assignment.
        ('[hub]\non_connect = ["x"]\n', {"EVENT_CONSUMER__HUB__ON_CONNECT__0__METHOD": "M"}),
        # A non-ASCII digit passes str.isdigit() but not int(): ValueError.
        ('[[sinks]]\ntype = "stdout"\n', {"EVENT_CONSUMER__SINKS__\u00b2__TYPE": "file"}),
    ],
)
def test_env_override_fuzz_findings_are_config_errors(tmp_path: Path, toml: str, env: dict[str, str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    str(info.value).encode("utf-8")  # the message itself must be printable
