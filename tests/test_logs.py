from __future__ import annotations

import io
import logging

from consumer.logs import get_logger, register_secret, setup_logging
from consumer.secret import Secret


def test_redaction_of_keys_registered_values_and_patterns() -> None:
    buf = io.StringIO()
    setup_logging("DEBUG", fmt="json", stream=buf)
    token = "eyJhbGciOiJSUzI1NiJ9.payload-part-abcdef.signature-xyz"
    register_secret(token)
    log = get_logger("t")
    log.info("got token", client_secret="s3cr3t-value", fp=Secret("other-secret-value"))
    log.info(f"url wss://h/hub?id=1&access_token={token}")
    logging.getLogger("httpx").debug("Authorization: Bearer abcdefghijklmnop")
    try:
        raise RuntimeError(f"boom {token}")
    except RuntimeError:
        log.exception("failed")
    out = buf.getvalue()
    assert "got token" in out and "failed" in out
    for leaked in (token, "s3cr3t-value", "other-secret-value", "abcdefghijklmnop"):
        assert leaked not in out


def test_numbers_under_secret_looking_keys_are_not_masked_but_text_is() -> None:
    buf = io.StringIO()
    setup_logging("INFO", fmt="json", stream=buf)
    get_logger("t").info(
        "stopped",
        written={"file:/tmp/test_token_expiry0/out.jsonl": 3002},
        token_requests_total=7,
        nested={"client_secret": "plain-text-secret-value", "refresh_token": None},
    )
    out = buf.getvalue()
    assert '"file:/tmp/test_token_expiry0/out.jsonl": 3002' in out
    assert '"token_requests_total": 7' in out
    assert "plain-text-secret-value" not in out


def test_text_inside_containers_under_secret_looking_keys_is_masked() -> None:
    buf = io.StringIO()
    setup_logging("INFO", fmt="json", stream=buf)
    get_logger("t").info(
        "creds",
        tokens=["first-unregistered-token-value", 5],
        credentials={"pw": "second-unregistered-value", "attempts": 2},
    )
    out = buf.getvalue()
    assert "first-unregistered-token-value" not in out
    assert "second-unregistered-value" not in out
    assert '"attempts": 2' in out and "5]" in out
