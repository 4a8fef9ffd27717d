"""TLS and SASL on the Kafka listener with real clients.

confluent-kafka (librdkafka) and kafka-python connect over SASL_SSL with SCRAM-SHA-512,
SCRAM-SHA-256 and PLAIN, verifying the broker's certificate against a CA made here; users are
created over the admin API and with the AdminClient's SCRAM APIs. A wrong password, a client
without SASL and a plaintext client on the TLS port are refused with the errors clients report,
while the broker keeps serving the others. Passwords never appear in the broker's log.

The certificates are generated per test session (cryptography): nothing secret is committed.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import strata_bin
from helpers import unique_topic

PASSWORD = "s3cret-Passw0rd"
SASL_SSL = ("--kafka-security-protocol", "SASL_SSL")
# Groups in these tests have one member: no need to wait for more.
NO_DELAY = ("--group-initial-rebalance-delay-ms", "0")
WAIT_S = 30.0


# ----------------------------------------------------------------------- certificates
def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _issue(subject: str, key, issuer_name: x509.Name, issuer_key, ca: bool,
           san: list | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False), critical=True)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class Pki:
    """A test CA, a server certificate for 127.0.0.1/localhost, a client certificate, and an
    unrelated key (for the mismatch test)."""

    def __init__(self, folder: Path):
        self.folder = folder
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _issue("strata test CA", ca_key, _name("strata test CA"), ca_key, ca=True)
        self.ca = folder / "ca.pem"
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _issue("localhost", server_key, ca.subject, ca_key, ca=False,
                        san=[x509.DNSName("localhost"),
                             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        self.cert = folder / "server.pem"
        # The chain: the server's certificate, then the CA's (a chain in the file is fine).
        self.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM)
                              + ca.public_bytes(serialization.Encoding.PEM))
        self.key = folder / "server.key"
        _write_key(self.key, server_key)
        client_key = ec.generate_private_key(ec.SECP256R1())
        client = _issue("client", client_key, ca.subject, ca_key, ca=False)
        self.client_cert = folder / "client.pem"
        self.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
        self.client_key = folder / "client.key"
        _write_key(self.client_key, client_key)
        self.other_key = folder / "other.key"
        _write_key(self.other_key, ec.generate_private_key(ec.SECP256R1()))

    def flags(self) -> tuple:
        return ("--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


# ----------------------------------------------------------------------- helpers
def put_user(broker, user: str, mechanism: str, password: str = PASSWORD) -> dict:
    body = json.dumps({"mechanism": mechanism, "password": password}).encode()
    request = urllib.request.Request(f"http://{broker.admin}/v1/users/{user}", data=body,
                                     method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    assert password not in text
    return json.loads(text)


def client_conf(broker, pki: Pki, mechanism: str = "SCRAM-SHA-512", user: str = "alice",
                password: str = PASSWORD, **extra) -> dict:
    return {"bootstrap.servers": broker.bootstrap, "security.protocol": "SASL_SSL",
            "sasl.mechanisms": mechanism, "sasl.username": user, "sasl.password": password,
            "ssl.ca.location": str(pki.ca), **extra}


def create_topic(conf: dict, topic: str, partitions: int = 1) -> None:
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                        request_timeout=WAIT_S)[topic].result(timeout=WAIT_S)


def produce(conf: dict, topic: str, values: list[bytes]) -> None:
    producer = Producer({**conf, "acks": "all"})
    failed = []
    for value in values:
        producer.produce(topic, value=value,
                         on_delivery=lambda err, _msg: failed.append(err) if err else None)
    assert producer.flush(WAIT_S) == 0, "undelivered records"
    assert not failed, failed


def consume_in_group(conf: dict, topic: str, group: str, count: int) -> list[bytes]:
    consumer = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + WAIT_S
    try:
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            values.append(message.value())
        assert len(values) == count, f"consumed {len(values)} of {count}"
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, 0)], timeout=WAIT_S)
        assert committed[0].offset == count
    finally:
        consumer.close()
    return values


def refused_error(conf: dict, wait_s: float = 15.0) -> KafkaError:
    """The first error librdkafka reports for a client that cannot get in."""
    errors: list[KafkaError] = []
    admin = AdminClient({**conf, "error_cb": errors.append})
    deadline = time.monotonic() + wait_s
    while not errors and time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1)
            pytest.fail("the client was let in")
        except KafkaException:
            pass
        admin.poll(0.1)
    assert errors, "librdkafka reported no error"
    return errors[0]


def assert_no_secret_in_log(broker, *secrets: str) -> None:
    log = broker.stderr_path.read_text(errors="replace")
    for secret in secrets:
        assert secret not in log, "a secret is in the broker's log"
    assert "panicked" not in log


# ----------------------------------------------------------------------- tests
def test_confluent_kafka_over_sasl_ssl_with_scram_sha_512_produces_consumes_and_commits(
        start_broker, pki):
    broker = start_broker(*SASL_SSL, *pki.flags(), *NO_DELAY)
    user = put_user(broker, "alice", "SCRAM-SHA-512")
    assert user["credentials"] == [{"mechanism": "SCRAM-SHA-512", "iterations": 8192}]
    conf = client_conf(broker, pki)
    topic = unique_topic("sasl")
    create_topic(conf, topic)
    values = [f"record-{i}".encode() for i in range(20)]
    produce(conf, topic, values)
    assert consume_in_group(conf, topic, "secure-group", len(values)) == values
    assert_no_secret_in_log(broker, PASSWORD)


def test_scram_sha_256_plain_and_kafka_python_over_sasl_ssl(start_broker, pki):
    from kafka import KafkaConsumer, KafkaProducer

    broker = start_broker(*SASL_SSL, *pki.flags(), *NO_DELAY)
    put_user(broker, "bob", "SCRAM-SHA-256")
    put_user(broker, "bob", "SCRAM-SHA-512")
    topic = unique_topic("mechs")
    sha256 = client_conf(broker, pki, "SCRAM-SHA-256", user="bob")
    create_topic(sha256, topic)
    produce(sha256, topic, [b"by-sha256"])
    plain = client_conf(broker, pki, "PLAIN", user="bob")
    produce(plain, topic, [b"by-plain"])

    python_tls = dict(bootstrap_servers=broker.bootstrap, security_protocol="SASL_SSL",
                      sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="bob",
                      sasl_plain_password=PASSWORD, ssl_cafile=str(pki.ca))
    producer = KafkaProducer(acks="all", **python_tls)
    producer.send(topic, b"by-kafka-python").get(timeout=WAIT_S)
    producer.close()
    consumer = KafkaConsumer(topic, group_id="py-group", auto_offset_reset="earliest",
                             consumer_timeout_ms=int(WAIT_S * 1000), **python_tls)
    values = []
    for message in consumer:
        values.append(message.value)
        if len(values) == 3:
            break
    consumer.commit()
    consumer.close()
    assert values == [b"by-sha256", b"by-plain", b"by-kafka-python"]
    assert_no_secret_in_log(broker, PASSWORD)


def test_wrong_password_is_an_authentication_failure(start_broker, pki):
    broker = start_broker(*SASL_SSL, *pki.flags())
    put_user(broker, "alice", "SCRAM-SHA-512")
    for mechanism in ("SCRAM-SHA-512", "PLAIN"):
        error = refused_error(client_conf(broker, pki, mechanism, password="not-the-password"))
        assert error.code() == KafkaError._AUTHENTICATION, error
        assert "invalid credentials" in error.str(), error
    # An unknown user gets the very same answer.
    error = refused_error(client_conf(broker, pki, user="mallory"))
    assert error.code() == KafkaError._AUTHENTICATION, error
    assert broker.alive()
    assert "SASL authentication failed" in broker.stderr_path.read_text()
    assert_no_secret_in_log(broker, "not-the-password", PASSWORD)


def test_a_client_without_sasl_is_refused_and_others_are_served(start_broker, pki):
    broker = start_broker(*SASL_SSL, *pki.flags())
    put_user(broker, "alice", "SCRAM-SHA-512")
    tls_only = {"bootstrap.servers": broker.bootstrap, "security.protocol": "SSL",
                "ssl.ca.location": str(pki.ca)}
    # The broker closes the connection at the first request past ApiVersions: librdkafka sees
    # disconnects (it reports "N/N brokers are down").
    error = refused_error(tls_only)
    assert error.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN), error
    assert "before SASL authentication" in broker.stderr_path.read_text()
    # An authenticated client is served meanwhile.
    AdminClient(client_conf(broker, pki)).list_topics(timeout=WAIT_S)


def test_a_plaintext_client_on_the_tls_port_fails_and_the_broker_serves_on(start_broker, pki):
    broker = start_broker(*SASL_SSL, *pki.flags())
    put_user(broker, "alice", "SCRAM-SHA-512")
    plaintext = {"bootstrap.servers": broker.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                 "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "alice",
                 "sasl.password": PASSWORD}
    error = refused_error(plaintext)
    assert error.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN), error
    # Raw Kafka bytes (an ApiVersions v0 request) on the TLS port: the broker closes.
    host, port = broker.bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x01\x00\x00")
        raw.settimeout(10)
        answer = b""
        while True:
            chunk = raw.recv(4096)
            if not chunk:
                break
            answer += chunk
        assert not answer.startswith(b"\x00\x00"), "a Kafka answer on the TLS port"
    log = broker.stderr_path.read_text()
    assert "TLS handshake failed" in log
    assert broker.alive()
    AdminClient(client_conf(broker, pki)).list_topics(timeout=WAIT_S)
    assert_no_secret_in_log(broker, PASSWORD)


def test_admin_client_alters_and_describes_scram_credentials(start_broker, pki):
    broker = start_broker(*SASL_SSL, *pki.flags())
    put_user(broker, "admin", "SCRAM-SHA-512")
    admin = AdminClient(client_conf(broker, pki, user="admin"))
    upsert = UserScramCredentialUpsertion(
        "frank", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"frank-pw")
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=WAIT_S)
    described = admin.describe_user_scram_credentials(["frank"])["frank"].result(timeout=WAIT_S)
    infos = [(i.mechanism, i.iterations) for i in described.scram_credential_infos]
    assert infos == [(ScramMechanism.SCRAM_SHA_256, 4096)]
    everyone = admin.describe_user_scram_credentials().result(timeout=WAIT_S)
    assert set(everyone) == {"admin", "frank"}

    frank = client_conf(broker, pki, "SCRAM-SHA-256", user="frank", password="frank-pw")
    AdminClient(frank).list_topics(timeout=WAIT_S)

    deletion = UserScramCredentialDeletion("frank", ScramMechanism.SCRAM_SHA_256)
    for future in admin.alter_user_scram_credentials([deletion]).values():
        future.result(timeout=WAIT_S)
    with pytest.raises(KafkaException) as raised:
        admin.describe_user_scram_credentials(["frank"])["frank"].result(timeout=WAIT_S)
    assert raised.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND
    error = refused_error(frank)
    assert error.code() == KafkaError._AUTHENTICATION
    assert_no_secret_in_log(broker, "frank-pw", PASSWORD)


def test_users_come_back_with_a_broker_restored_from_the_bucket(start_broker, pki, tmp_path):
    bucket = f"file://{tmp_path / 'bucket'}"
    (tmp_path / "bucket").mkdir()
    first = start_broker(*SASL_SSL, *pki.flags(), "--object-store", bucket)
    put_user(first, "carol", "SCRAM-SHA-512")
    assert first.stop() == 0
    # A new broker on an empty disk, the same bucket: carol still logs in.
    second = start_broker(*SASL_SSL, *pki.flags(), "--object-store", bucket)
    AdminClient(client_conf(second, pki, user="carol")).list_topics(timeout=WAIT_S)


def test_mutual_tls_requires_a_client_certificate(start_broker, pki):
    broker = start_broker("--kafka-security-protocol", "SSL", *pki.flags(),
                          "--tls-client-ca-file", str(pki.ca))
    base = {"bootstrap.servers": broker.bootstrap, "security.protocol": "SSL",
            "ssl.ca.location": str(pki.ca)}
    with_cert = {**base, "ssl.certificate.location": str(pki.client_cert),
                 "ssl.key.location": str(pki.client_key)}
    topic = unique_topic("mtls")
    create_topic(with_cert, topic)
    produce(with_cert, topic, [b"over mutual TLS"])
    error = refused_error(base)
    assert error.code() in (KafkaError._SSL, KafkaError._TRANSPORT,
                            KafkaError._ALL_BROKERS_DOWN), error


def _start_fails(tmp_path: Path, *flags: str) -> str:
    result = subprocess.run(
        [str(strata_bin()), "serve", "--data-dir", str(tmp_path / "data"),
         "--kafka-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", *flags],
        capture_output=True, text=True, timeout=30)
    assert result.returncode != 0, result.stdout
    assert "strata: ready" not in result.stdout
    return result.stderr


def test_bad_tls_settings_stop_the_start_with_a_clear_message(tmp_path, pki):
    message = _start_fails(tmp_path, *SASL_SSL)
    assert "--tls-cert-file" in message
    message = _start_fails(tmp_path, *SASL_SSL, "--tls-cert-file", str(pki.cert),
                           "--tls-key-file", str(pki.other_key))
    assert "does not match" in message, message
    missing = tmp_path / "missing.key"
    message = _start_fails(tmp_path, *SASL_SSL, "--tls-cert-file", str(pki.cert),
                           "--tls-key-file", str(missing))
    assert str(missing) in message, message
    # A certificate given as the key: named, never printed.
    message = _start_fails(tmp_path, *SASL_SSL, "--tls-cert-file", str(pki.cert),
                           "--tls-key-file", str(pki.cert))
    assert "key file" in message and "BEGIN" not in message, message
    key_text = pki.key.read_text()
    message = _start_fails(tmp_path, "--tls-key-file", str(pki.key))
    assert "uses no TLS" in message
    assert key_text.splitlines()[1] not in message
