"""Unverified claim decoding without a JWT library, checked against tokens pyjwt signs."""

from __future__ import annotations

import base64

import pytest

from consumer.auth.jwtinfo import decode_unverified

jwt = pytest.importorskip("jwt", reason="pyjwt comes with the sim extra (make test installs it)")


def test_claims_of_a_signed_token_match_pyjwt() -> None:
    claims = {"sub": "svc", "exp": 1_900_000_000, "realm_access": {"roles": ["a", "b"]}, "name": "Zoë"}
    token = jwt.encode(claims, "k" * 32, algorithm="HS256")
    assert decode_unverified(token) == claims
    assert decode_unverified(token) == jwt.decode(token, options={"verify_signature": False})


@pytest.mark.parametrize(
    "token",
    [
        "opaque-token",
        "a.b",
        "a.b.c.d",
        "!!!.###.sig",
        base64.urlsafe_b64encode(b'{"alg":"none"}').decode()
        + "."
        + base64.urlsafe_b64encode(b"[1,2]").decode()
        + ".",
        base64.urlsafe_b64encode(b"not json").decode()
        + "."
        + base64.urlsafe_b64encode(b"{}").decode()
        + ".x",
        "..",
    ],
)
def test_not_a_jwt_is_none(token: str) -> None:
    assert decode_unverified(token) is None


def test_unpadded_segments_decode() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(b'{"sub":"x1"}').rstrip(b"=").decode()
    assert decode_unverified(f"{header}.{payload}.") == {"sub": "x1"}
