"""NKey seed and TLS with client certificates against a real nats-server (issue 14: sink auth)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
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
    await Relay([worker], hub="redmist").on_raw("ReceiveCarPatches", msgspec.Raw(b'[[{"eventId":"1"}]]'))
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
