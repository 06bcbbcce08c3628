"""NKey seed, `.creds` files (decentralised JWT auth) and TLS with client certificates against a real
nats-server (issue 14: sink auth)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import time
from pathlib import Path

import msgspec
import nkeys
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from consumer.config import NatsSinkConfig, parse_config
from consumer.errors import CredentialsRejected
from consumer.natsconn import connect_kwargs
from consumer.redmist import PAYLOADS
from consumer.relay.relay import Relay
from consumer.sinks import SinkWorker
from consumer.sinks.nats import NatsSink

from .natsserver import NatsServer


def user_seed() -> tuple[str, str]:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), nkeys.from_seed(bytearray(seed)).public_key.decode()


async def publish_one(cfg_nats: dict[str, object], tmp_path: Path, env: dict[str, str]) -> NatsSink:
    (tmp_path / "c.toml").write_text("# relative secret files resolve next to this file\n")
    cfg = parse_config({"nats": cfg_nats}, source=str(tmp_path / "c.toml"))
    sink = NatsSink(
        NatsSinkConfig(create_stream=True),
        connect_kwargs(cfg.nats, source=cfg.source, env=env),
        hub="redmist",
    )
    worker = SinkWorker(sink)
    await worker.start()
    await Relay([worker], hub="redmist", profile=PAYLOADS).on_raw(
        "ReceiveCarPatches", msgspec.Raw(b'[[{"eventId":"1"}]]')
    )
    await worker.close(grace=10)
    return sink


async def test_nkey_seed_from_a_file_and_a_wrong_seed(tmp_path: Path) -> None:
    seed, public = user_seed()
    other, _ = user_seed()
    server = NatsServer(tmp_path / "js", config=f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
    await server.start()
    try:
        (tmp_path / "seed").write_text(seed + "\n")
        (tmp_path / "seed").chmod(0o600)
        sink = await publish_one({"servers": [server.url], "nkey_seed_file": "seed"}, tmp_path, {})
        assert sink.published == 1
        assert len(await stream_messages_as(server, seed)) == 1
        with pytest.raises(CredentialsRejected) as err:
            await publish_one({"servers": [server.url], "nkey_seed_env": "SEED"}, tmp_path, {"SEED": other})
        assert server.url in str(err.value) and other not in str(err.value)
    finally:
        await server.kill()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _keypair(prefix: int) -> tuple[str, nkeys.KeyPair]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return seed.decode(), nkeys.from_seed(bytearray(seed))


def _jwt(issuer: nkeys.KeyPair, subject: str, name: str, claims: dict[str, object]) -> str:
    """A NATS JWT (v2 claims, ed25519-nkey): what `nsc` writes, built here so the test needs no Go tool."""
    body: dict[str, object] = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {"version": 2, **claims},
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signing_input = _b64(b'{"typ":"JWT","alg":"ed25519-nkey"}') + "." + _b64(json.dumps(body).encode())
    return signing_input + "." + _b64(issuer.sign(signing_input.encode()))


UNLIMITED = {
    k: -1
    for k in (
        "subs",
        "data",
        "payload",
        "imports",
        "exports",
        "conn",
        "leaf",
        "mem_storage",
        "disk_storage",
        "streams",
        "consumer",
    )
}


def _creds(account: nkeys.KeyPair) -> str:
    """A `.creds` file's text: a user JWT signed by `account` and the user's seed."""
    seed, user = _keypair(nkeys.PREFIX_BYTE_USER)
    limits = {"subs": -1, "data": -1, "payload": -1}  # 0 (the default) would allow no subscription
    token = _jwt(account, user.public_key.decode(), "relay", {"type": "user", "pub": {}, "sub": {}, **limits})
    return (
        f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )


def operator_mode() -> tuple[str, nkeys.KeyPair]:
    """nats-server config for decentralised auth (operator, system account, one JetStream-enabled
    account, memory resolver) and the account's key pair (which signs user JWTs)."""
    _, operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    _, account = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, system = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    op_key, acc_key, sys_key = (k.public_key.decode() for k in (operator, account, system))
    op_jwt = _jwt(operator, op_key, "op", {"type": "operator"})
    acc_jwt = _jwt(
        operator, acc_key, "relay", {"type": "account", "limits": {**UNLIMITED, "wildcards": True}}
    )
    sys_jwt = _jwt(operator, sys_key, "SYS", {"type": "account"})
    config = (
        f"operator: {op_jwt}\nsystem_account: {sys_key}\nresolver: MEMORY\n"
        f"resolver_preload: {{\n  {acc_key}: {acc_jwt}\n  {sys_key}: {sys_jwt}\n}}\n"
    )
    return config, account


async def test_creds_file_with_an_operator_signed_account_and_a_foreign_user(tmp_path: Path) -> None:
    """Decentralised JWT auth: nats-server trusts an operator; the account JWT (signed by the operator)
    is preloaded; the `.creds` file holds a user JWT signed by that account and the user's seed. A user
    signed by an account the server does not know is rejected: exit-77 error naming the server,
    nothing of the creds in it."""
    config, account = operator_mode()
    server = NatsServer(tmp_path / "js", config=config)
    await server.start()
    try:
        creds = _creds(account)
        (tmp_path / "relay.creds").write_text(creds)
        (tmp_path / "relay.creds").chmod(0o600)
        sink = await publish_one({"servers": [server.url], "creds_file": "relay.creds"}, tmp_path, {})
        assert sink.published == 1

        import nats

        nc = await nats.connect(server.url, user_credentials=str(tmp_path / "relay.creds"))
        try:
            assert (await nc.jetstream().stream_info("EVENTS")).state.messages == 1
        finally:
            await nc.close()

        _, stranger = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        foreign = _creds(stranger)
        (tmp_path / "foreign.creds").write_text(foreign)
        (tmp_path / "foreign.creds").chmod(0o600)
        with pytest.raises(CredentialsRejected) as err:
            await publish_one({"servers": [server.url], "creds_file": "foreign.creds"}, tmp_path, {})
        text = str(err.value)
        assert server.url in text and "rejected the credentials" in text
        for secret_line in (*creds.splitlines(), *foreign.splitlines()):
            if len(secret_line) > 40:  # the JWTs and seeds
                assert secret_line not in text
    finally:
        await server.kill()


async def stream_messages_as(server: NatsServer, seed: str) -> list[object]:
    import nats

    nc = await nats.connect(server.url, nkeys_seed_str=seed)
    try:
        info = await nc.jetstream().stream_info("EVENTS")
        return [None] * info.state.messages
    finally:
        await nc.close()


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0] if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def write_pem(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


async def test_tls_with_ca_and_client_certificate(tmp_path: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, None, ca=True)
    ca_file, _ = write_pem(tmp_path / "ca", ca, ca_key)
    issuer = (ca.subject, ca_key)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    s_cert, s_key = write_pem(tmp_path / "server", _cert("nats", server_key, issuer, ca=False), server_key)
    c_cert, c_key = write_pem(
        tmp_path / "client", _cert("event-consumer", client_key, issuer, ca=False), client_key
    )
    conf = f'tls {{ cert_file: "{s_cert}", key_file: "{s_key}", ca_file: "{ca_file}", verify: true }}\n'
    server = NatsServer(tmp_path / "js", config=conf)
    await server.start()
    try:
        url = f"tls://127.0.0.1:{server.port}"
        sink = await publish_one(
            {"servers": [url], "tls_ca_file": ca_file, "tls_cert_file": c_cert, "tls_key_file": c_key},
            tmp_path,
            {},
        )
        assert sink.published == 1
        from consumer.errors import ServiceUnavailable

        with pytest.raises(ServiceUnavailable, match=r"tls://127\.0\.0\.1"):  # no client certificate
            await publish_one({"servers": [url], "tls_ca_file": ca_file}, tmp_path, {})
    finally:
        await server.kill()
