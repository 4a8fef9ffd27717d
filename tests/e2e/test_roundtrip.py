"""100,000 records with keys, values and headers over 3 partitions come back identical
and in order per partition: produced by confluent-kafka with its default settings, read
back by confluent-kafka (CRC checks on) and by kafka-python."""

from __future__ import annotations

import random
import time

import pytest

from conftest import Broker
from helpers import (Deliveries, Rec, assert_contiguous, confluent_producer, consume_confluent,
                     consume_kafka_python, create_topic, flush_all, produce_with_backpressure,
                     unique_topic, watermarks)

N = 100_000
PARTITIONS = 3


def make_record(i: int, rnd: random.Random):
    """Key, value and headers of record i, with the edge cases mixed in:
    null keys, null values (tombstones), empty values, no headers, null header values."""
    key = None if i % 997 == 0 else f"key-{i % 5000}".encode()
    if i % 1009 == 0:
        value = None
    elif i % 1013 == 0:
        value = b""
    else:
        value = f"v{i}:".encode() + rnd.randbytes(rnd.randint(0, 200))
    if i % 7 == 0:
        headers = None
    else:
        headers = [("seq", str(i).encode()), ("bin", bytes([i % 256, 0, 255]))]
        if i % 101 == 0:
            headers.append(("null-value", None))
        if i % 11 == 0:
            headers.append(("héader-ü", "ünïcode".encode()))
    return key, value, headers


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("strata-roundtrip"), name="strata-roundtrip")
    b.start()
    yield b
    b.teardown()


@pytest.fixture(scope="module")
def produced(module_broker):
    """Produces N records once; returns (topic, {partition: [Rec expected, by offset]})."""
    b = module_broker
    topic = unique_topic("roundtrip")
    create_topic(b.bootstrap, topic, PARTITIONS)
    rnd = random.Random(1234)
    sent = {}
    d = Deliveries()
    p = confluent_producer(b.bootstrap)  # client defaults: acks=all, linger.ms=5, no idempotence
    t0 = time.monotonic()
    for i in range(N):
        key, value, headers = make_record(i, rnd)
        sent[i] = (key, value, headers)
        produce_with_backpressure(p, topic, value, key=key, headers=headers,
                                  on_delivery=d.tagged(i))
        if i % 1000 == 0:
            p.poll(0)
    flush_all(p, timeout=120)
    elapsed = time.monotonic() - t0
    print(f"produced {N} records in {elapsed:.1f}s")
    assert not d.failed, d.failures_summary()
    assert len(d.acked) == N

    # Expected content per partition, from the delivery reports.
    final: dict[int, list[Rec]] = {p_: [] for p_ in range(PARTITIONS)}
    order: dict[int, list[int]] = {p_: [] for p_ in range(PARTITIONS)}
    for i, part, offset, ts in sorted(d.acked_ids, key=lambda a: (a[1], a[2])):
        key, value, headers = sent[i]
        final[part].append(Rec(offset, key, value, tuple(headers or ()), ts))
        order[part].append(i)
    for part in range(PARTITIONS):
        assert order[part] == sorted(order[part]), \
            f"partition {part}: delivery offsets do not follow produce order"
        assert final[part], f"partition {part} got no records (the default partitioner should spread keys)"
        assert_contiguous(final[part], 0, what=f"delivery reports of partition {part}: ")
    return topic, final


def _compare(got: dict[int, list[Rec]], expected: dict[int, list[Rec]], who: str) -> None:
    for part, exp in expected.items():
        g = got[part]
        assert len(g) == len(exp), f"{who}: partition {part}: got {len(g)} records, expected {len(exp)}"
        for a, e in zip(g, exp):
            if a != e:
                raise AssertionError(f"{who}: partition {part} offset {e.offset}: got {a!r}, expected {e!r}")


def test_watermarks_after_100k(module_broker, produced):
    topic, expected = produced
    for part, exp in expected.items():
        lo, hi = watermarks(module_broker.bootstrap, topic, part)
        assert (lo, hi) == (0, len(exp)), f"partition {part}: watermarks {(lo, hi)}, expected (0, {len(exp)})"


def test_confluent_reads_100k_identical_in_order(module_broker, produced):
    topic, expected = produced
    ends = {p: len(r) for p, r in expected.items()}
    t0 = time.monotonic()
    got = consume_confluent(module_broker.bootstrap, topic, ends, timeout=120)
    print(f"confluent consumed {N} in {time.monotonic() - t0:.1f}s")
    _compare(got, expected, "confluent-kafka")


def test_kafka_python_reads_100k_identical_in_order(module_broker, produced):
    topic, expected = produced
    ends = {p: len(r) for p, r in expected.items()}
    t0 = time.monotonic()
    got = consume_kafka_python(module_broker.bootstrap, topic, ends, timeout=240)
    print(f"kafka-python consumed {N} in {time.monotonic() - t0:.1f}s")
    _compare(got, expected, "kafka-python")


def test_read_from_the_middle(module_broker, produced):
    """Fetch starting inside a batch returns records from exactly that offset."""
    topic, expected = produced
    starts = {p: len(r) // 2 + 1 for p, r in expected.items()}
    ends = {p: min(len(r), starts[p] + 500) for p, r in expected.items()}
    got = consume_confluent(module_broker.bootstrap, topic, ends, start=starts, timeout=60)
    for part in expected:
        assert [r.offset for r in got[part]] == list(range(starts[part], ends[part]))
        assert got[part] == expected[part][starts[part]:ends[part]]
    got = consume_kafka_python(module_broker.bootstrap, topic, ends, start=starts, timeout=60)
    for part in expected:
        assert got[part] == expected[part][starts[part]:ends[part]]


def test_large_records_roundtrip(broker):
    """Records up to ~900 KB (under the default 1 MiB message.max.bytes) in both clients."""
    from helpers import Deliveries as D
    topic = unique_topic("large")
    create_topic(broker.bootstrap, topic, 1)
    rnd = random.Random(7)
    vals = [rnd.randbytes(n) for n in (1, 1000, 100_000, 500_000, 900_000, 10, 700_000)]
    d = D()
    p = confluent_producer(broker.bootstrap, **{"message.max.bytes": 1_000_000})
    for i, v in enumerate(vals):
        p.produce(topic, v, key=str(i).encode(), partition=0, on_delivery=d)
    flush_all(p)
    assert not d.failed, d.failures_summary()
    got = consume_confluent(broker.bootstrap, topic, {0: len(vals)})
    assert [r.value for r in got[0]] == vals
    got = consume_kafka_python(broker.bootstrap, topic, {0: len(vals)})
    assert [r.value for r in got[0]] == vals
