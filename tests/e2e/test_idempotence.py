"""An idempotent producer's retries create no duplicates.

The retries are real: the broker is frozen with SIGSTOP for a few seconds in the middle of
the stream while the client's socket timeout is 1 s, so librdkafka times out its in-flight
ProduceRequests and sends them again once the broker answers; the broker then sees the
same batches (same producer id, epoch, sequence) twice. A second test does the same across
a kill -9 and a restart on the same port, where the sequence state must come back from the
log."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

from helpers import (Deliveries, Rec, assert_contiguous, confluent_producer, consume_confluent,
                     create_topic, flush_all, produce_with_backpressure, unique_topic, watermarks)

PARTITIONS = 3


class Stats:
    def __init__(self):
        self.last = None
        self.calls = 0

    def __call__(self, s: str) -> None:
        self.last = json.loads(s)
        self.calls += 1

    def broker_sum(self, field: str) -> int:
        if not self.last:
            return 0
        return sum(b.get(field, 0) for b in self.last.get("brokers", {}).values())


class LogCapture(logging.Handler):
    """librdkafka's log lines (delivered through the client's `logger` on poll())."""

    def __init__(self, name: str):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.logger = logging.getLogger(f"rdkafka.{name}")
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines)

    def close(self) -> None:
        self.logger.removeHandler(self)
        super().close()


def idempotent_producer(bootstrap: str, stats: Stats | None = None, **extra):
    conf = {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        # Client-side request timeout of librdkafka: short, so a frozen broker causes retries.
        "socket.timeout.ms": 1000,
        "message.timeout.ms": 120000,
        "retry.backoff.ms": 100,
        "retry.backoff.max.ms": 500,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 500,
    }
    if stats is not None:
        conf["statistics.interval.ms"] = 200
        conf["stats_cb"] = stats
    conf.update(extra)
    return confluent_producer(bootstrap, **conf)


def read_and_check_exactly_once(bootstrap: str, topic: str, d: Deliveries, values_in_order: list[bytes]):
    ends = {}
    for part in range(PARTITIONS):
        lo, hi = watermarks(bootstrap, topic, part)
        assert lo == 0
        ends[part] = hi
    got = consume_confluent(bootstrap, topic, ends, timeout=120)
    for part in range(PARTITIONS):
        assert_contiguous(got[part], 0, what=f"partition {part}: ")
    counts = Counter(r.value for recs in got.values() for r in recs)
    dups = {v: n for v, n in counts.items() if n > 1}
    assert not dups, (f"{len(dups)} values stored more than once by an idempotent producer, "
                      f"e.g. {list(dups.items())[:5]}")
    assert len(counts) == len(values_in_order), (
        f"{len(values_in_order)} values produced and acked, {len(counts)} distinct values stored")
    where = {r.value: (part, r.offset) for part, recs in got.items() for r in recs}
    for _k, value, part, offset, _ts in d.acked:
        assert value in where, f"acked value {value!r} missing"
        if offset >= 0:  # librdkafka may report -1 for a batch acked as a duplicate
            assert where[value] == (part, offset), (
                f"{value!r}: delivery report says {(part, offset)}, log has it at {where[value]}")
    # Idempotence also keeps the order per partition.
    rank = {v: i for i, v in enumerate(values_in_order)}
    for part, recs in got.items():
        ranks = [rank[r.value] for r in recs]
        assert ranks == sorted(ranks), f"partition {part}: records out of produce order"
    return got


def test_idempotent_producer_many_records(broker):
    topic = unique_topic("idem")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    d = Deliveries()
    p = idempotent_producer(broker.bootstrap)
    values = [f"idem-{i:07d}".encode() for i in range(50_000)]
    for i, v in enumerate(values):
        produce_with_backpressure(p, topic, v, key=str(i % 100).encode(), on_delivery=d)
        if i % 1000 == 0:
            p.poll(0)
    flush_all(p, timeout=120)
    assert not d.failed, d.failures_summary()
    read_and_check_exactly_once(broker.bootstrap, topic, d, values)


def _stream(p, topic, d, seconds: float, events: dict[float, callable], prefix: str):
    """Produces ~10k records/s for `seconds`, running events[t] once t seconds have passed."""
    values = []
    t0 = time.monotonic()
    pending = sorted(events.items())
    i = 0
    while time.monotonic() - t0 < seconds and i < 1_000_000:
        for _ in range(100):
            v = f"{prefix}-{i:07d}".encode()
            produce_with_backpressure(p, topic, v, key=str(i % 1000).encode(), on_delivery=d, timeout=90)
            values.append(v)
            i += 1
        p.poll(0.01)
        while pending and time.monotonic() - t0 >= pending[0][0]:
            pending.pop(0)[1]()
    for _, fn in pending:
        fn()
    return values


def test_idempotent_retries_after_broker_freeze_create_no_duplicates(broker):
    topic = unique_topic("idem-freeze")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    d = Deliveries()
    stats = Stats()
    logs = LogCapture(topic)
    p = idempotent_producer(broker.bootstrap, stats, logger=logs.logger)
    values = _stream(p, topic, d, seconds=8.0, prefix="frz", events={
        2.0: broker.pause,    # SIGSTOP: requests pile up, the client times out after 1 s
        5.0: broker.resume,   # SIGCONT: the broker sees the originals and the retries
    })
    flush_all(p, timeout=120)
    p.poll(0.5)  # one more stats callback
    assert broker.alive()
    assert not d.failed, d.failures_summary()
    logs.close()
    timed_out = logs.count("Timed out ProduceRequest")
    print(f"{len(values)} records, {timed_out} ProduceRequests timed out and retried; stats: "
          f"txretries={stats.broker_sum('txretries')} req_timeouts={stats.broker_sum('req_timeouts')}")
    assert timed_out > 0, "the freeze timed out no ProduceRequest: the test did not test retries"
    read_and_check_exactly_once(broker.bootstrap, topic, d, values)


def test_idempotent_producer_across_kill9_and_restart_on_same_port(start_broker):
    """The producer keeps running through a crash; the restarted broker rebuilds the
    producer's sequence state from its log, so retried batches that had been written before
    the crash are recognised as duplicates (not written twice, not refused)."""
    b = start_broker()
    topic = unique_topic("idem-crash")
    create_topic(b.bootstrap, topic, PARTITIONS)
    d = Deliveries()
    p = idempotent_producer(b.bootstrap)

    def crash_and_restart():
        b.kill()
        b.restart(same_ports=True)

    values = _stream(p, topic, d, seconds=6.0, prefix="crs", events={2.0: crash_and_restart})
    flush_all(p, timeout=120)
    assert not d.failed, d.failures_summary()
    read_and_check_exactly_once(b.bootstrap, topic, d, values)


def test_kafka_python_idempotent_producer(broker):
    from kafka import KafkaProducer
    topic = unique_topic("idem-kp")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True, acks="all",
                      linger_ms=5, request_timeout_ms=30000)
    values = [f"kp-{i:06d}".encode() for i in range(5000)]
    try:
        futs = [p.send(topic, value=v, key=str(i % 10).encode()) for i, v in enumerate(values)]
        p.flush(timeout=60)
        mds = [f.get(timeout=60) for f in futs]
    finally:
        p.close(timeout=10)
    d = Deliveries()
    d.acked = [(None, v, md.partition, md.offset, md.timestamp) for v, md in zip(values, mds)]
    read_and_check_exactly_once(broker.bootstrap, topic, d, values)
