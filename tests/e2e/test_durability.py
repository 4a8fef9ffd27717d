"""kill -9 of the broker in the middle of an acks=all stream, then restart on the same data
dir: every acknowledged record is there exactly once, at the offset its delivery report
gave; offsets are contiguous from 0; produce after the restart continues at the next
offset. Records that were not acknowledged may or may not be there."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from conftest import Broker, BrokerError
from streams import metric
from helpers import (Deliveries, Rec, assert_contiguous, confluent_producer, consume_confluent,
                     create_topic, flush_all, produce_with_backpressure, unique_topic, watermarks)

PARTITIONS = 2


def read_all(bootstrap: str, topic: str) -> dict[int, list[Rec]]:
    ends = {}
    for p in range(PARTITIONS):
        lo, hi = watermarks(bootstrap, topic, p)
        assert lo == 0, f"partition {p}: log start offset {lo} after restart, expected 0"
        ends[p] = hi
    got = consume_confluent(bootstrap, topic, ends, timeout=120)
    for p in range(PARTITIONS):
        assert_contiguous(got[p], 0, what=f"after restart, partition {p}: ")
        assert len(got[p]) == ends[p]
    return got


def check_log(got: dict[int, list[Rec]], acked: dict[bytes, tuple[int, int]], all_sent: set[bytes]):
    """acked: value -> (partition, offset) from delivery reports."""
    counts = Counter(r.value for recs in got.values() for r in recs)
    dups = [v for v, n in counts.items() if n > 1]
    assert not dups, f"{len(dups)} values stored more than once, e.g. {dups[:3]}"
    unknown = [v for v in counts if v not in all_sent]
    assert not unknown, f"{len(unknown)} stored values were never produced, e.g. {unknown[:3]}"
    where = {r.value: (p, r.offset) for p, recs in got.items() for r in recs}
    missing = [v for v in acked if v not in where]
    assert not missing, (f"{len(missing)} acknowledged records lost after kill -9, "
                         f"e.g. {[(v, acked[v]) for v in missing[:5]]}")
    moved = [(v, acked[v], where[v]) for v in acked if where[v] != acked[v]]
    assert not moved, (f"{len(moved)} acknowledged records are not at the (partition, offset) of "
                       f"their delivery report, e.g. {moved[:5]}")
    # Per partition, the log holds the records in produce order (a single producer, no retries).
    for p, recs in got.items():
        seqs = [int(r.value.split(b"-")[2]) + 10**7 * int(r.value.split(b"-")[1]) for r in recs]
        assert seqs == sorted(seqs), f"partition {p}: records out of produce order after restart"


def test_kill9_during_acks_all_stream_then_restart(start_broker):
    b = start_broker()
    topic = unique_topic("crash")
    create_topic(b.bootstrap, topic, PARTITIONS)

    acked: dict[bytes, tuple[int, int]] = {}
    all_sent: set[bytes] = set()
    unacked_total = 0
    hwm_after_restart = {p: 0 for p in range(PARTITIONS)}

    for cycle in range(3):
        d = Deliveries()
        p = confluent_producer(b.bootstrap, **{
            "acks": "all", "linger.ms": 2, "message.timeout.ms": 60000,
            "request.timeout.ms": 30000, "retry.backoff.ms": 100,
        })
        cycle_start = time.monotonic()
        killed_at = None
        produced_at_kill = 0
        i = 0
        # Produce until some records are acked and at least 1.5 s have passed, kill -9 the
        # broker while the stream is still going, then keep producing for a moment.
        while i < 2_000_000:
            v = f"c-{cycle}-{i:08d}".encode()
            if killed_at is None:
                produce_with_backpressure(p, topic, v, key=str(i).encode(), partition=i % PARTITIONS,
                                          on_delivery=d, timeout=30)
            else:
                try:  # the broker is gone: queue what fits, never wait
                    p.produce(topic, v, key=str(i).encode(), partition=i % PARTITIONS, on_delivery=d)
                except BufferError:
                    break
            all_sent.add(v)
            i += 1
            if i % 200 == 0:
                p.poll(0)
                now = time.monotonic()
                if killed_at is None and len(d.acked) > 2000 and now - cycle_start > 1.5:
                    b.kill()
                    killed_at = now
                    produced_at_kill = i
                elif killed_at is not None and now - killed_at > 0.5:
                    break
                assert now - cycle_start < 60, "stream did not get going within 60 s"
        # Whatever is still queued or in flight is abandoned: nothing may be retried after
        # the restart (this producer is not idempotent, a retry could duplicate).
        p.poll(1.0)
        p.purge(in_queue=True, in_flight=True, blocking=True)
        p.flush(10)
        assert len(d.acked) + len(d.failed) == i, "some delivery reports never came"
        assert d.acked, "nothing was acknowledged before the kill"
        for key, value, part, offset, _ts in d.acked:
            assert value not in acked, f"value {value!r} acknowledged twice"
            acked[value] = (part, offset)
        # Produce after restart continues at the next offset: the first record produced in
        # this cycle (to each partition) was acked at the high watermark seen after the
        # previous restart.
        first = {}
        for key, value, part, offset, _ts in d.acked:
            first[part] = min(first.get(part, offset), offset)
        for part, hw in hwm_after_restart.items():
            if part in first:
                assert first[part] == hw, (f"cycle {cycle}, partition {part}: first new record got offset "
                                           f"{first[part]}, expected the high watermark {hw}")
        unacked_total += len(d.failed)
        print(f"cycle {cycle}: {produced_at_kill} produced before the kill, {len(d.acked)} acked "
              f"(so {produced_at_kill - len(d.acked)} were queued or in flight at the kill), "
              f"{i - produced_at_kill} more queued after it")

        b.restart()
        got = read_all(b.bootstrap, topic)
        check_log(got, acked, all_sent)
        hwm_after_restart = {part: len(recs) for part, recs in got.items()}

    # Finally a clean stream after the last restart: contiguous, right after the old end.
    d = Deliveries()
    p = confluent_producer(b.bootstrap, acks="all")
    for j in range(1000):
        v = f"c-9-{j:08d}".encode()
        all_sent.add(v)
        produce_with_backpressure(p, topic, v, partition=j % PARTITIONS, on_delivery=d)
    flush_all(p)
    assert not d.failed, d.failures_summary()
    for part in range(PARTITIONS):
        offs = sorted(off for _k, _v, pp, off, _t in d.acked if pp == part)
        assert offs == list(range(hwm_after_restart[part], hwm_after_restart[part] + 500)), \
            f"partition {part}: offsets after restart {offs[:3]}..., expected from {hwm_after_restart[part]}"
    for key, value, part, offset, _ts in d.acked:
        acked[value] = (part, offset)
    got = read_all(b.bootstrap, topic)
    check_log(got, acked, all_sent)


def test_sigterm_then_restart_keeps_everything(start_broker):
    b = start_broker()
    topic = unique_topic("sigterm")
    create_topic(b.bootstrap, topic, PARTITIONS)
    d = Deliveries()
    p = confluent_producer(b.bootstrap, acks="1")
    for i in range(5000):
        produce_with_backpressure(p, topic, f"v-{i}".encode(), partition=i % PARTITIONS, on_delivery=d)
    flush_all(p)
    assert not d.failed, d.failures_summary()
    b.stop()  # asserts exit code 0
    b.restart()
    got = read_all(b.bootstrap, topic)
    stored = {(part, r.offset): r.value for part, recs in got.items() for r in recs}
    for _k, value, part, offset, _ts in d.acked:
        assert stored.get((part, offset)) == value
    assert sum(len(r) for r in got.values()) == 5000
    # The topic's metadata survived too.
    from helpers import topic_partitions
    assert topic_partitions(b.bootstrap, topic) == PARTITIONS


def test_restart_with_empty_and_idle_topics(start_broker):
    """Topics with no records, and a restart right after creation, come back empty at 0."""
    b = start_broker()
    topics = [unique_topic("empty") for _ in range(3)]
    for t in topics:
        create_topic(b.bootstrap, t, 2)
    b.kill()
    b.restart()
    from helpers import topic_partitions, wait_for_topic
    for t in topics:
        wait_for_topic(b.bootstrap, t, 2, timeout=10)
        for part in range(2):
            assert watermarks(b.bootstrap, t, part) == (0, 0)
    d = Deliveries()
    p = confluent_producer(b.bootstrap)
    produce_with_backpressure(p, topics[0], b"first", partition=1, on_delivery=d)
    flush_all(p)
    assert not d.failed, d.failures_summary()
    assert d.acked[0][3] == 0


def test_second_broker_on_same_data_dir_refuses_to_start(start_broker, tmp_path):
    """One writer per WAL: a second process on a data dir that a running broker owns must
    not start (two writers on one WAL gave 100% duplicates after recovery in one broker)."""
    a = start_broker()
    topic = unique_topic("owner")
    create_topic(a.bootstrap, topic, 1)
    p = confluent_producer(a.bootstrap)
    for i in range(100):
        p.produce(topic, f"a-{i}".encode(), partition=0)
    flush_all(p)

    second = Broker(tmp_path / "second", name="strata-second", data_dir=a.data_dir)
    try:
        try:
            second.start(timeout=10)
            started = True
        except BrokerError:
            started = False
        rc = second.proc.poll() if second.proc else None
    finally:
        second.discard()
    assert not started, ("a second broker started on a data dir owned by a running broker "
                         "(no lock on the data dir: two WAL writers)")
    assert rc is None or rc != 0, "the refused second broker exited 0"
    # The owner is unaffected.
    assert a.alive()
    assert watermarks(a.bootstrap, topic, 0) == (0, 100)


def test_small_wal_segments_roundtrip_and_recover(start_broker):
    """Many sealed WAL segments (64 KiB, or 300 ms), most in reused files: reads span them,
    and after kill -9 the restarted broker recovers all of them and keeps appending after the
    last offset."""
    b = start_broker("--wal-segment-bytes", "65536", "--wal-segment-ms", "300")
    topic = unique_topic("segments")
    create_topic(b.bootstrap, topic, PARTITIONS)
    values = {p: [] for p in range(PARTITIONS)}
    d = Deliveries()
    p = confluent_producer(b.bootstrap, **{"linger.ms": 5})
    t0 = time.monotonic()
    i = 0
    while i < 20_000:
        v = f"seg-{i:06d}-".encode() + bytes([i % 251]) * 200
        values[i % PARTITIONS].append(v)
        produce_with_backpressure(p, topic, v, partition=i % PARTITIONS, on_delivery=d)
        i += 1
        if i % 5000 == 0:
            flush_all(p)
            time.sleep(0.5)  # let time-based sealing happen between bursts
    flush_all(p)
    assert not d.failed, d.failures_summary()
    print(f"produced {i} records over {time.monotonic() - t0:.1f}s")

    def check(expected_extra=None):
        got = read_all(b.bootstrap, topic)
        for part in range(PARTITIONS):
            want = values[part] + (expected_extra or {}).get(part, [])
            assert [r.value for r in got[part]] == want, f"partition {part} differs"

    check()
    # Trimmed segments' files became later segments: replay below reads files that held
    # other segments' entries after the last one written.
    assert metric(b, "strata_wal_segments_reused_total") > 0
    time.sleep(1.0)  # a time-sealed segment or two more
    b.kill()
    b.restart()
    check()
    d2 = Deliveries()
    p2 = confluent_producer(b.bootstrap)
    extra = {part: [f"after-{part}".encode()] for part in range(PARTITIONS)}
    for part in range(PARTITIONS):
        p2.produce(topic, extra[part][0], partition=part, on_delivery=d2)
    flush_all(p2)
    assert sorted((pp, off) for _k, _v, pp, off, _t in d2.acked) == \
        [(part, len(values[part])) for part in range(PARTITIONS)]
    check(extra)
    b.stop()
    b.restart()
    check(extra)
