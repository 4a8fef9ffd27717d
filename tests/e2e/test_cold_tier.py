"""Reads from the cold tier: with tiny WAL segments the indexer seals, uploads (to the
default file:// object store under the data dir) and trims the WAL; then every record read
back must be the record that was produced (offset, timestamp, key, value, headers), for
every codec, through both clients, with valid CRCs, before and after a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import wire
from helpers import (Deliveries, Rec, confluent_producer, consume_confluent, consume_kafka_python,
                     create_topic, flush_all, unique_topic, watermarks)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PER_CODEC = 400


def _sizes(data_dir: Path) -> tuple[int, int]:
    """(bytes in *.wal files, number of *.seg objects) under the data dir."""
    wal = sum(f.stat().st_size for f in data_dir.rglob("*.wal") if f.is_file())
    segs = sum(1 for f in data_dir.rglob("*.seg") if f.is_file())
    return wal, segs


def _produce_kafka_python(bootstrap, topic, codec, recs):
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10,
                      compression_type=None if codec == "none" else codec)
    try:
        futs = [p.send(topic, key=k, value=v, headers=h, partition=0, timestamp_ms=ts)
                for k, v, h, ts in recs]
        p.flush(timeout=60)
        return [f.get(timeout=60) for f in futs]
    finally:
        p.close(timeout=10)


def test_records_read_back_from_segments_are_the_records_produced(start_broker):
    from kafka import codec as kc
    if not (kc.has_snappy() and kc.has_lz4() and kc.has_zstd()):
        pytest.skip("kafka-python lacks a codec package (python-snappy, lz4, zstandard)")
    b = start_broker("--wal-segment-bytes", "32768", "--wal-segment-ms", "200")
    base_ts = (int(time.time() * 1000) - 600_000) // 1000 * 1000
    expected: dict[str, list[Rec]] = {}
    produced_bytes = 0
    for c_i, codec in enumerate(CODECS):
        topic = f"cold-{codec}-{unique_topic('x')}"
        create_topic(b.bootstrap, topic, 1)
        recs = []
        for i in range(PER_CODEC):
            key = None if i % 10 == 0 else f"key-{i}".encode()
            value = None if i % 37 == 1 and key is not None else (f"{codec} value {i} " * (i % 9 + 1)).encode()
            headers = [] if i % 5 == 0 else [("i", str(i).encode()), ("empty", b"")] if i % 7 == 0 \
                else [("i", str(i).encode())]
            recs.append((key, value, headers, base_ts + i * 3))
            produced_bytes += len(value or b"") + 20
        mds = _produce_kafka_python(b.bootstrap, topic, codec, recs)
        assert [m.offset for m in mds] == list(range(PER_CODEC))
        expected[topic] = [Rec(i, k, v, tuple(h), ts) for i, (k, v, h, ts) in enumerate(recs)]

    # An idempotent confluent producer too: producer id / epoch / sequence must survive.
    idem_topic = unique_topic("cold-idem")
    create_topic(b.bootstrap, idem_topic, 1)
    d = Deliveries()
    p = confluent_producer(b.bootstrap, **{"enable.idempotence": True, "linger.ms": 10,
                                           "compression.type": "zstd"})
    idem_vals = [f"idem {i} ".encode() * 20 for i in range(PER_CODEC)]
    for v in idem_vals:
        p.produce(idem_topic, v, partition=0, on_delivery=d)
    flush_all(p)
    assert not d.failed, d.failures_summary()
    acks = sorted((off, ts) for _k, _v, _p, off, ts in d.acked)
    expected[idem_topic] = [Rec(off, None, v, (), ts) for (off, ts), v in zip(acks, idem_vals)]
    with wire.Conn(b.bootstrap) as c:
        _, parts = wire.parse_fetch_v4(c.roundtrip(wire.fetch_v4(1, idem_topic, 0, 0, 100, 1)))
        hot_batches = [(x.base_offset, x.producer_id, x.producer_epoch, x.base_sequence, x.record_count)
                       for x in wire.parse_batches(parts[0].records)]
    assert hot_batches and all(pid >= 0 for _o, pid, *_ in hot_batches)

    # Wait (bounded) until the indexer has uploaded segments and trimmed most of the WAL.
    # A few more tiny produces keep time-based sealing going.
    deadline = time.monotonic() + 30
    wal, segs = _sizes(b.data_dir)
    keep_topic = unique_topic("cold-tick")
    create_topic(b.bootstrap, keep_topic, 1)
    tick = confluent_producer(b.bootstrap)
    while time.monotonic() < deadline:
        wal, segs = _sizes(b.data_dir)
        if segs > 0 and wal < produced_bytes // 4:
            break
        tick.produce(keep_topic, b"tick", partition=0)
        tick.flush(5)
        time.sleep(0.3)
    assert segs > 0 and wal < produced_bytes // 4, (
        f"the indexer did not move the data to segments within 30 s: {wal} bytes still in the "
        f"WAL, {segs} segment objects (produced ~{produced_bytes} bytes)")

    def check(when: str):
        for topic, exp in expected.items():
            assert watermarks(b.bootstrap, topic, 0) == (0, len(exp)), f"{when}: {topic} watermarks"
            got = consume_confluent(b.bootstrap, topic, {0: len(exp)})
            assert got[0] == exp, f"{when}: {topic}: confluent read differs from what was produced"
            got = consume_kafka_python(b.bootstrap, topic, {0: len(exp)})
            assert got[0] == exp, f"{when}: {topic}: kafka-python read differs from what was produced"
            with wire.Conn(b.bootstrap) as c:
                off = 0
                for _ in range(1000):
                    if off >= len(exp):
                        break
                    _, parts = wire.parse_fetch_v4(c.roundtrip(wire.fetch_v4(2, topic, 0, off, 100, 1)))
                    assert parts[0].error_code == 0
                    batches = wire.parse_batches(parts[0].records or b"")
                    assert batches, f"{when}: {topic}: no batch at offset {off}"
                    for x in batches:
                        assert x.crc_ok, f"{when}: {topic}: bad CRC in batch at {x.base_offset}"
                    off = batches[-1].base_offset + batches[-1].last_offset_delta + 1
        with wire.Conn(b.bootstrap) as c:
            _, parts = wire.parse_fetch_v4(c.roundtrip(wire.fetch_v4(3, idem_topic, 0, 0, 100, 1)))
            cold = [(x.base_offset, x.producer_id, x.producer_epoch, x.base_sequence, x.record_count)
                    for x in wire.parse_batches(parts[0].records)]
        assert cold[:len(hot_batches)] == hot_batches[:len(cold)], \
            f"{when}: producer id/epoch/sequence of the batches changed: {cold[:3]} vs {hot_batches[:3]}"

    check("from segments")
    b.kill()
    b.restart()
    check("after kill -9 and restart")
