"""A client that sends garbage is dropped (the broker closes its connection), while another
client keeps producing successfully before, during and after, and the broker stays alive.
A peer that leaves in the middle of a frame costs no CPU afterwards (no spinning on EOF)."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

import pytest

import wire
from helpers import (Deliveries, confluent_producer, consume_confluent, consume_kafka_python,
                     create_topic, unique_topic, watermarks)


class BackgroundProducer(threading.Thread):
    """Produces one record every few ms (acks=all) until stopped; bounded to 5 minutes."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True, name="bg-producer")
        self.topic = topic
        self.d = Deliveries()
        self.p = confluent_producer(bootstrap, **{"acks": "all", "linger.ms": 0,
                                                  "message.timeout.ms": 30000})
        self._stop_evt = threading.Event()
        self.sent = 0
        self.lock = threading.Lock()

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while not self._stop_evt.is_set() and time.monotonic() < deadline:
            self.p.produce(self.topic, f"bg-{self.sent:07d}".encode(), on_delivery=self.d)
            self.sent += 1
            self.p.poll(0.005)
        self.p.flush(30)

    def acked(self) -> int:
        return len(self.d.acked)

    def wait_progress(self, n: int = 20, timeout: float = 15.0, what: str = "") -> None:
        start = self.acked()
        deadline = time.monotonic() + timeout
        while self.acked() < start + n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not self.d.failed, f"{what}: the well-behaved producer saw errors: {self.d.failures_summary()}"
        assert self.acked() >= start + n, (f"{what}: the well-behaved producer made no progress "
                                           f"({self.acked() - start} acks in {timeout}s)")

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=40)


def _known_api_keys() -> set[int]:
    return set(range(0, 100))


def random_frame(rnd: random.Random, size: int) -> bytes:
    while True:
        body = rnd.randbytes(size)
        api_key = struct.unpack(">h", body[:2])[0]
        if api_key not in _known_api_keys():
            return wire.i32(size) + body


def garbage_cases():
    rnd = random.Random(42)
    hdr = lambda key, ver: wire.i16(key) + wire.i16(ver) + wire.i32(77) + wire.string("garbage")
    big_array_produce = (hdr(wire.PRODUCE, 3) + wire.string(None) + wire.i16(1) + wire.i32(1000)
                         + wire.i32(0x7FFFFFFF))  # topic_data: 2^31-1 entries in a tiny frame
    big_records_produce = (hdr(wire.PRODUCE, 3) + wire.string(None) + wire.i16(1) + wire.i32(1000)
                           + wire.i32(1) + wire.string("t") + wire.i32(1) + wire.i32(0)
                           + wire.i32(0x7FFFFFF0) + b"\x00" * 16)  # records: ~2 GiB claimed
    neg_string = hdr(wire.METADATA, 4) + wire.i32(1) + wire.i16(-7) + wire.i8(0)
    return {
        # name: (bytes to send, must_close)
        "random-frame": (random_frame(rnd, 256), True),
        "length-0x7fffffff": (b"\x7f\xff\xff\xff" + rnd.randbytes(64), True),
        "length-negative": (b"\xff\xff\xff\xff" + rnd.randbytes(64), True),
        "length-zero": (wire.i32(0), True),
        "unknown-api-key": (wire.i32(len(hdr(9999, 0))) + hdr(9999, 0), True),
        "negative-api-key": (wire.i32(len(hdr(-3, 0))) + hdr(-3, 0), True),
        # Known API at a version no one has: Kafka closes the connection (only ApiVersions
        # answers an unsupported version). An error response is tolerated here.
        "metadata-v999": (wire.i32(len(hdr(wire.METADATA, 999))) + hdr(wire.METADATA, 999), False),
        "produce-array-2^31": (wire.i32(len(big_array_produce)) + big_array_produce, False),
        "produce-records-2GiB": (wire.i32(len(big_records_produce)) + big_records_produce, False),
        "metadata-negative-string-len": (wire.i32(len(neg_string)) + neg_string, False),
        "header-only-truncated": (wire.i32(3) + b"\x00\x03\x00", True),
    }


@pytest.mark.parametrize("case", list(garbage_cases()))
def test_garbage_is_dropped_while_others_produce(broker, case):
    payload, must_close = garbage_cases()[case]
    topic = unique_topic("bg")
    create_topic(broker.bootstrap, topic, 1)
    bg = BackgroundProducer(broker.bootstrap, topic)
    bg.start()
    try:
        bg.wait_progress(what="before the garbage")
        with wire.Conn(broker.bootstrap) as c:
            try:
                c.send(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed already: fine
            closed, got = c.wait_closed(timeout=10)
            if must_close:
                assert closed, (f"{case}: connection still open 10 s after the garbage "
                                f"(received {len(got)} bytes)")
            else:
                assert closed or len(got) >= 8, (f"{case}: neither closed nor answered within 10 s")
            bg.wait_progress(what=f"during {case}")
        assert broker.alive(), f"broker died on {case}"
        bg.wait_progress(what=f"after {case}")
    finally:
        bg.stop()
    assert broker.alive()
    assert broker.http_get_status("/health/ready") == 200
    assert not bg.d.failed, bg.d.failures_summary()
    # Everything the well-behaved client got acked is there.
    n = len(bg.d.acked)
    assert watermarks(broker.bootstrap, topic, 0) == (0, n)
    got = consume_confluent(broker.bootstrap, topic, {0: n})
    assert [r.value for r in got[0]] == [v for _k, v, _p, _o, _t in sorted(bg.d.acked, key=lambda a: a[3])]


def test_truncated_frame_then_hangup_is_dropped(broker):
    """Half a frame, then the peer half-closes: the broker must close its side."""
    topic = unique_topic("bg")
    create_topic(broker.bootstrap, topic, 1)
    bg = BackgroundProducer(broker.bootstrap, topic)
    bg.start()
    try:
        bg.wait_progress(what="before")
        req = wire.api_versions_v0(5)
        for cut in (2, 4, 7, len(req) - 1):
            with wire.Conn(broker.bootstrap) as c:
                c.send(req[:cut])
                c.sock.shutdown(socket.SHUT_WR)
                closed, _ = c.wait_closed(timeout=10)
                assert closed, f"cut at {cut}: broker kept a half-closed connection open"
        # A truncated frame on a connection the client keeps open must not block others.
        hold = [wire.Conn(broker.bootstrap) for _ in range(20)]
        try:
            for c in hold:
                c.send(wire.i32(1000) + b"\x00\x12")
            bg.wait_progress(what="with 20 stalled half-frames open")
        finally:
            for c in hold:
                c.close()
        bg.wait_progress(what="after")
    finally:
        bg.stop()
    assert not bg.d.failed, bg.d.failures_summary()


def test_many_garbage_connections_at_once(broker):
    """50 connections sending garbage concurrently; the good client keeps going."""
    topic = unique_topic("bg")
    create_topic(broker.bootstrap, topic, 1)
    bg = BackgroundProducer(broker.bootstrap, topic)
    bg.start()
    try:
        bg.wait_progress(what="before")
        cases = list(garbage_cases().values())
        conns = []
        try:
            for i in range(50):
                c = wire.Conn(broker.bootstrap)
                conns.append(c)
                try:
                    c.send(cases[i % len(cases)][0])
                except OSError:
                    pass
            bg.wait_progress(what="during 50 garbage connections")
            for c in conns:
                c.wait_closed(timeout=2)
        finally:
            for c in conns:
                c.close()
        bg.wait_progress(what="after")
    finally:
        bg.stop()
    assert broker.alive()
    assert not bg.d.failed, bg.d.failures_summary()


def test_no_cpu_spin_after_peers_leave_mid_frame(broker):
    """Trap: a read of 0 bytes means the peer left; a broker once spun at 100% CPU on it."""
    for i in range(20):
        c = wire.Conn(broker.bootstrap)
        c.send(wire.i32(100) + b"\x00\x03\x00\x04")  # a frame that never completes
        if i % 2:
            c.sock.shutdown(socket.SHUT_WR)
        c.close()
    # and some that leave between frames
    for _ in range(5):
        c = wire.Conn(broker.bootstrap)
        c.roundtrip(wire.api_versions_v0(1))
        c.close()
    time.sleep(1.0)
    before = broker.cpu_seconds()
    time.sleep(3.0)
    used = broker.cpu_seconds() - before
    assert used < 0.5, f"idle broker used {used:.2f} s of CPU in 3 s after peers left mid-frame"
    assert broker.alive()


def _timed_out(b, reason: str) -> int:
    status, text = b.http_get("/metrics")
    assert status == 200, f"GET /metrics: {status}"
    prefix = f'strata_connections_timed_out_total{{reason="{reason}"}} '
    lines = [line for line in text.decode().splitlines() if line.startswith(prefix)]
    assert lines, f"no {prefix.strip()} in /metrics"
    return int(float(lines[0].split()[-1]))


def test_real_clients_carry_on_across_idle_closes(start_broker):
    """Kafka closes idle connections (connections.max.idle.ms) and clients reconnect on their
    own: the same producer and consumer keep working after the broker closed theirs."""
    b = start_broker("--connections-max-idle-ms", "1000")
    topic = unique_topic("idle")
    create_topic(b.bootstrap, topic, 1)
    d = Deliveries()
    p = confluent_producer(b.bootstrap, **{"acks": "all", "linger.ms": 0})
    for round_ in range(3):
        for i in range(10):
            p.produce(topic, f"r{round_}-{i}".encode(), partition=0, on_delivery=d)
        p.flush(30)
        # Quiet for longer than the idle timeout: the broker closes the producer's connection.
        before = _timed_out(b, "idle")
        deadline = time.monotonic() + 20
        while _timed_out(b, "idle") == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _timed_out(b, "idle") > before, "no idle connection was closed within 20 s"
    assert not d.failed, d.failures_summary()
    assert len(d.acked) == 30
    got = consume_confluent(b.bootstrap, topic, {0: 30})
    assert [r.value for r in got[0]] == [f"r{r}-{i}".encode() for r in range(3) for i in range(10)]
    got = consume_kafka_python(b.bootstrap, topic, {0: 30})
    assert len(got[0]) == 30
    assert b.alive()
