"""ListOffsets: by timestamp (exact record, between records, inside a batch, before all,
after all), earliest/latest, max timestamp; with confluent-kafka (consumer and admin) and
kafka-python."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import OffsetSpec

from helpers import (Deliveries, admin_client, confluent_consumer, confluent_producer,
                     create_topic, flush_all, kafka_python_consumer, unique_topic, watermarks)

N = 200
BATCH = 10
STEP_MS = 10


@pytest.fixture
def ts_topic(broker):
    """Partition 0: N records, timestamp T0 + 10*i, in batches of 10 (one flush per batch).
    Partition 1: timestamps out of order, [+100, +500, +200] in one batch, then [+300].
    Partition 2: empty."""
    topic = unique_topic("ts")
    create_topic(broker.bootstrap, topic, 3)
    t0 = (int(time.time() * 1000) - 3_600_000) // 1000 * 1000
    d = Deliveries()
    p = confluent_producer(broker.bootstrap, **{"linger.ms": 50})
    for b in range(N // BATCH):
        for j in range(BATCH):
            i = b * BATCH + j
            p.produce(topic, f"r{i}".encode(), partition=0, timestamp=t0 + STEP_MS * i, on_delivery=d)
        flush_all(p)
    for dt in (100, 500, 200):
        p.produce(topic, f"x{dt}".encode(), partition=1, timestamp=t0 + dt, on_delivery=d)
    flush_all(p)
    p.produce(topic, b"x300", partition=1, timestamp=t0 + 300, on_delivery=d)
    flush_all(p)
    assert not d.failed, d.failures_summary()
    offs0 = sorted((off, ts) for _k, _v, part, off, ts in d.acked if part == 0)
    assert offs0 == [(i, t0 + STEP_MS * i) for i in range(N)], "acked offsets/timestamps differ"
    return topic, t0


def expected_offset(t0: int, target: int) -> int:
    """Partition 0: first offset whose timestamp >= target, -1 if none."""
    for i in range(N):
        if t0 + STEP_MS * i >= target:
            return i
    return -1


def queries(t0):
    last = t0 + STEP_MS * (N - 1)
    return [t0 - 86_400_000, t0 - 1, t0, t0 + 1, t0 + STEP_MS * 5, t0 + STEP_MS * 5 - 3,
            t0 + STEP_MS * 13 + 9, t0 + STEP_MS * 100, t0 + STEP_MS * 150 + 1, last - 1, last,
            last + 1, last + 86_400_000]


def test_offsets_for_times_confluent_consumer(broker, ts_topic):
    topic, t0 = ts_topic
    c = confluent_consumer(broker.bootstrap)
    try:
        for target in queries(t0):
            res = c.offsets_for_times([TopicPartition(topic, 0, target)], timeout=10)
            assert res[0].error is None, f"ts {target - t0:+d}: {res[0].error}"
            assert res[0].offset == expected_offset(t0, target), (
                f"offsets_for_times(T0{target - t0:+d}) = {res[0].offset}, "
                f"expected {expected_offset(t0, target)}")
        # Out-of-order timestamps: the first offset whose timestamp >= target.
        for dt, want in [(0, 0), (100, 0), (150, 1), (250, 1), (400, 1), (500, 1), (501, -1)]:
            res = c.offsets_for_times([TopicPartition(topic, 1, t0 + dt)], timeout=10)
            assert res[0].offset == want, f"partition 1, T0+{dt}: got {res[0].offset}, expected {want}"
        # Empty partition: nothing at or after any timestamp.
        res = c.offsets_for_times([TopicPartition(topic, 2, t0)], timeout=10)
        assert res[0].offset == -1, f"empty partition: got {res[0].offset}"
    finally:
        c.close()


def test_watermarks_confluent(broker, ts_topic):
    topic, _ = ts_topic
    assert watermarks(broker.bootstrap, topic, 0) == (0, N)
    assert watermarks(broker.bootstrap, topic, 1) == (0, 4)
    assert watermarks(broker.bootstrap, topic, 2) == (0, 0)


def test_list_offsets_admin_confluent(broker, ts_topic):
    topic, t0 = ts_topic
    a = admin_client(broker.bootstrap)

    def one(part, spec):
        tp = TopicPartition(topic, part)
        return a.list_offsets({tp: spec}, request_timeout=10)[tp].result(timeout=15)

    assert one(0, OffsetSpec.earliest()).offset == 0
    assert one(0, OffsetSpec.latest()).offset == N
    assert one(2, OffsetSpec.earliest()).offset == 0
    assert one(2, OffsetSpec.latest()).offset == 0
    for target in queries(t0):
        r = one(0, OffsetSpec.for_timestamp(target))
        want = expected_offset(t0, target)
        assert r.offset == want, f"list_offsets for_timestamp(T0{target - t0:+d}) = {r.offset}, expected {want}"
        if want >= 0:
            assert r.timestamp == t0 + STEP_MS * want, "timestamp of the found record"
    # Max timestamp (KIP-734): the record with the largest timestamp, not the last one.
    r = one(1, OffsetSpec.max_timestamp())
    assert (r.offset, r.timestamp) == (1, t0 + 500), f"max_timestamp: {(r.offset, r.timestamp - t0)}"
    r = one(0, OffsetSpec.max_timestamp())
    assert (r.offset, r.timestamp) == (N - 1, t0 + STEP_MS * (N - 1))


def test_offsets_for_times_kafka_python(broker, ts_topic):
    from kafka import TopicPartition as KTP
    topic, t0 = ts_topic
    c = kafka_python_consumer(broker.bootstrap)
    try:
        tp0, tp1, tp2 = KTP(topic, 0), KTP(topic, 1), KTP(topic, 2)
        for target in queries(t0):
            res = c.offsets_for_times({tp0: target}, timeout_ms=10000)
            want = expected_offset(t0, target)
            got = res[tp0]
            if want < 0:
                assert got is None, f"T0{target - t0:+d}: expected no offset, got {got}"
            else:
                assert got is not None, f"T0{target - t0:+d}: expected {want}, got None"
                assert (got.offset, got.timestamp) == (want, t0 + STEP_MS * want), \
                    f"T0{target - t0:+d}: got {got}, expected offset {want}"
        res = c.offsets_for_times({tp1: t0 + 250}, timeout_ms=10000)
        assert res[tp1] is not None and res[tp1].offset == 1
        res = c.offsets_for_times({tp2: t0}, timeout_ms=10000)
        assert res[tp2] is None
        assert c.beginning_offsets([tp0, tp1, tp2], timeout_ms=10000) == {tp0: 0, tp1: 0, tp2: 0}
        assert c.end_offsets([tp0, tp1, tp2], timeout_ms=10000) == {tp0: N, tp1: 4, tp2: 0}
    finally:
        c.close()


def test_consumer_starts_at_beginning_and_end(broker, ts_topic):
    """Logical offsets: OFFSET_BEGINNING reads from 0, OFFSET_END sees only new records."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END
    topic, _ = ts_topic
    c = confluent_consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        first = None
        deadline = time.monotonic() + 20
        while first is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                assert m.error() is None, str(m.error())
                first = m
        assert first is not None and first.offset() == 0 and first.value() == b"r0"
        c.assign([TopicPartition(topic, 1, OFFSET_END)])
        # Let the client resolve OFFSET_END (a ListOffsets round trip) before producing;
        # nothing may arrive meanwhile.
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            m = c.poll(0.2)
            assert m is None, f"got {m.error() or (m.offset(), m.value())} before producing"
        p = confluent_producer(broker.bootstrap)
        p.produce(topic, b"after-end", partition=1)
        flush_all(p)
        got = None
        deadline = time.monotonic() + 20
        while got is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                assert m.error() is None, str(m.error())
                got = m
        assert got is not None, "no record after OFFSET_END"
        assert (got.offset(), got.value()) == (4, b"after-end")
    finally:
        c.close()
