"""Client-side helpers shared by the end-to-end tests (confluent-kafka and kafka-python).

Consumers never join a group: the broker has no group coordinator yet, so every
consumer uses assign() with explicit offsets and never commits.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

# A record as the tests compare it: offset, key, value, headers, timestamp.
# headers is a tuple of (str, bytes|None) pairs (empty tuple when none).


@dataclass(frozen=True)
class Rec:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple
    timestamp: int


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ------------------------------------------------------------------ admin
def admin_client(bootstrap: str, **conf) -> AdminClient:
    # Never create a topic as a side effect of asking for its metadata.
    return AdminClient({"bootstrap.servers": bootstrap, "allow.auto.create.topics": False, **conf})


def create_topic(bootstrap: str, name: str, partitions: int, config: dict | None = None,
                 timeout: float = 30.0) -> None:
    a = admin_client(bootstrap)
    fs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                   config=config or {})], request_timeout=timeout)
    fs[name].result(timeout=timeout)
    wait_for_topic(bootstrap, name, partitions, timeout=timeout, admin=a)


def topic_partitions(bootstrap: str, name: str, admin: AdminClient | None = None,
                     timeout: float = 10.0) -> int | None:
    """Partition count from Metadata, or None if the topic is unknown."""
    a = admin or admin_client(bootstrap)
    md = a.list_topics(topic=name, timeout=timeout)
    t = md.topics.get(name)
    if t is None or t.error is not None:
        return None
    return len(t.partitions)


def wait_for_topic(bootstrap: str, name: str, partitions: int, timeout: float = 30.0,
                   admin: AdminClient | None = None) -> None:
    a = admin or admin_client(bootstrap)
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = topic_partitions(bootstrap, name, admin=a)
        if seen == partitions:
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {name} did not show {partitions} partitions in Metadata within "
                         f"{timeout}s (last seen: {seen})")


# ------------------------------------------------------------------ produce
class Deliveries:
    """Collects delivery reports of a confluent-kafka producer."""

    def __init__(self) -> None:
        self.acked: list[tuple] = []   # (key, value, partition, offset, timestamp)
        self.failed: list[tuple] = []  # (key, value, partition, KafkaError)
        self.acked_ids: list[tuple] = []   # (ident, partition, offset, timestamp) via tagged()
        self.failed_ids: list = []

    def __call__(self, err, msg) -> None:
        if err is not None:
            self.failed.append((msg.key(), msg.value(), msg.partition(), err))
        else:
            self.acked.append((msg.key(), msg.value(), msg.partition(), msg.offset(),
                               msg.timestamp()[1]))

    def tagged(self, ident):
        """A callback that records `ident` with the report: acked_ids / failed_ids."""
        def cb(err, msg):
            if err is not None:
                self.failed.append((msg.key(), msg.value(), msg.partition(), err))
                self.failed_ids.append(ident)
            else:
                self.acked.append((msg.key(), msg.value(), msg.partition(), msg.offset(),
                                   msg.timestamp()[1]))
                self.acked_ids.append((ident, msg.partition(), msg.offset(), msg.timestamp()[1]))
        return cb

    def failures_summary(self, n: int = 5) -> str:
        errs = {}
        for *_, e in self.failed:
            errs.setdefault(str(e), 0)
            errs[str(e)] += 1
        return f"{len(self.failed)} failed deliveries: " + "; ".join(
            f"{k} x{v}" for k, v in list(errs.items())[:n])


def confluent_producer(bootstrap: str, **conf) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, **conf})


def produce_with_backpressure(p: Producer, topic: str, value, key=None, partition=None,
                              headers=None, timestamp=None, on_delivery=None,
                              timeout: float = 60.0) -> None:
    """produce() that waits (bounded) while the local queue is full."""
    kwargs = {"value": value, "key": key}
    if partition is not None:
        kwargs["partition"] = partition
    if headers is not None:
        kwargs["headers"] = headers
    if timestamp is not None:
        kwargs["timestamp"] = timestamp
    if on_delivery is not None:
        kwargs["on_delivery"] = on_delivery
    deadline = time.monotonic() + timeout
    while True:
        try:
            p.produce(topic, **kwargs)
            return
        except BufferError:
            if time.monotonic() > deadline:
                raise
            p.poll(0.05)


def flush_all(p: Producer, timeout: float = 60.0) -> None:
    left = p.flush(timeout)
    assert left == 0, f"{left} messages still undelivered after flush({timeout})"


# ------------------------------------------------------------------ offsets
def watermarks(bootstrap: str, topic: str, partition: int, timeout: float = 10.0) -> tuple[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-unused",
                  "enable.auto.commit": False})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
    finally:
        c.close()


# ------------------------------------------------------------------ consume
def _norm_headers(h) -> tuple:
    if not h:
        return ()
    return tuple((k, v) for k, v in h)


def confluent_consumer(bootstrap: str, **conf) -> Consumer:
    base = {
        "bootstrap.servers": bootstrap,
        # Needed by the client even for assign(); never used to join or commit.
        "group.id": "e2e-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "check.crcs": True,
    }
    base.update(conf)
    return Consumer(base)


def consume_confluent(bootstrap: str, topic: str, ends: dict[int, int], start: int | dict = 0,
                      timeout: float = 60.0, expect_reset: bool = False, **conf) -> dict[int, list[Rec]]:
    """Reads each partition p from `start` up to offset ends[p] (exclusive).

    expect_reset: `start` is out of range and the consumer's reset policy moves it; read
    until ends[p] anyway. Any consumer error fails the test (the message names it).
    """
    starts = start if isinstance(start, dict) else {p: start for p in ends}
    out: dict[int, list[Rec]] = {p: [] for p in ends}
    todo = {p for p in ends if ends[p] > starts[p] or (expect_reset and ends[p] > 0)}
    if not todo:
        return out
    c = confluent_consumer(bootstrap, **conf)
    try:
        c.assign([TopicPartition(topic, p, starts[p]) for p in sorted(todo)])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"confluent consumer error on {topic}: {m.error()}")
                p = m.partition()
                out[p].append(Rec(m.offset(), m.key(), m.value(), _norm_headers(m.headers()),
                                  m.timestamp()[1]))
                if m.offset() >= ends[p] - 1:
                    todo.discard(p)
        if todo:
            got = {p: (len(out[p]), out[p][-1].offset if out[p] else None) for p in todo}
            raise AssertionError(f"confluent consumer: timed out after {timeout}s reading {topic}; "
                                 f"partitions not done (count, last offset): {got}, wanted ends {ends}")
    finally:
        c.close()
    return {p: [r for r in recs if r.offset < ends[p]] for p, recs in out.items()}


def kafka_python_consumer(bootstrap: str, **conf):
    from kafka import KafkaConsumer
    base = dict(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                auto_offset_reset="none", check_crcs=True, request_timeout_ms=30000)
    base.update(conf)
    return KafkaConsumer(**base)


def consume_kafka_python(bootstrap: str, topic: str, ends: dict[int, int], start: int | dict = 0,
                         timeout: float = 120.0, expect_reset: bool = False, **conf) -> dict[int, list[Rec]]:
    from kafka import TopicPartition as KTP
    starts = start if isinstance(start, dict) else {p: start for p in ends}
    out: dict[int, list[Rec]] = {p: [] for p in ends}
    todo = {p for p in ends if ends[p] > starts[p] or (expect_reset and ends[p] > 0)}
    if not todo:
        return out
    c = kafka_python_consumer(bootstrap, **conf)
    try:
        tps = {p: KTP(topic, p) for p in sorted(todo)}
        c.assign(list(tps.values()))
        for p, tp in tps.items():
            c.seek(tp, starts[p])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            batch = c.poll(timeout_ms=500, max_records=10000)
            for tp, msgs in batch.items():
                for m in msgs:
                    out[tp.partition].append(Rec(m.offset, m.key, m.value,
                                                 _norm_headers(m.headers), m.timestamp))
                    if m.offset >= ends[tp.partition] - 1:
                        todo.discard(tp.partition)
        if todo:
            got = {p: (len(out[p]), out[p][-1].offset if out[p] else None) for p in todo}
            raise AssertionError(f"kafka-python consumer: timed out after {timeout}s reading {topic}; "
                                 f"partitions not done (count, last offset): {got}, wanted ends {ends}")
    finally:
        c.close()
    return {p: [r for r in recs if r.offset < ends[p]] for p, recs in out.items()}


def assert_contiguous(recs: list[Rec], start: int = 0, what: str = "") -> None:
    offs = [r.offset for r in recs]
    expected = list(range(start, start + len(recs)))
    if offs != expected:
        bad = next(i for i, (a, b) in enumerate(zip(offs, expected)) if a != b) if len(offs) == len(expected) else None
        raise AssertionError(f"{what}offsets not contiguous from {start}: {len(offs)} records, "
                             f"first mismatch at index {bad}: got {offs[bad] if bad is not None else offs[:5]}...")


def raise_kafka(e: Exception) -> str:
    if isinstance(e, KafkaException) and e.args:
        return str(e.args[0])
    return repr(e)
