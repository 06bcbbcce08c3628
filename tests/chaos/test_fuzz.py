"""Fuzz: the config loader and the protocol readers only ever fail with their own error types.

Quick form: a few hundred inputs per property inside `make test`. `make chaos` (`--chaos-long`) runs
1,000,000 inputs per property.
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

LONG = 1_000_000
QUICK = 300

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


def _examples(request: pytest.FixtureRequest) -> int:
    return LONG if request.config.getoption("--chaos-long") else QUICK


def test_parse_config_raises_only_config_error(request: pytest.FixtureRequest) -> None:
    @settings(max_examples=_examples(request), deadline=None, suppress_health_check=list(HealthCheck))
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
        max_examples=max(QUICK, _examples(request) // 10),
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

    @settings(max_examples=_examples(request), deadline=None, suppress_health_check=list(HealthCheck))
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
