"""Crash safety: a loop of rounds (20 by default, STRATA_CRASH_ROUNDS=200 for more), each of
which lets two idempotent acks=all producers and a consumer run against the broker, then ends
the broker at a random moment and restarts it on the same data dir and ports.

Each round ends one of three ways, picked at random from a seed that is printed
(STRATA_CRASH_SEED replays a run):
- SIGKILL at a random moment;
- a crash point armed for the round (`crash` through the admin fault API): the process aborts
  mid-WAL-write (a torn tail), between WAL write and fsync, between fsync and ack, as an upload
  starts, after the upload before the catalog entry, in the middle of writing the catalog
  entry, or after the catalog entry before the WAL trim;
- a point slowed down (a `delay`: the WAL fsync, an upload, a catalog write) so that the
  SIGKILL that follows at a random moment most likely lands inside that window.

Small WAL segments (64 KiB, or 200 ms) keep the indexer uploading, committing the catalog and
trimming the WAL all through the rounds, so the kills land in every step of it.

After every restart, and at the end, everything is read back from the log start (the bucket
and the WAL) and checked: every acknowledged record is there exactly once, at the offset its
ack gave; each producer's records are in produce order per partition; offsets are contiguous
(no holes); nothing is there that was never sent; the high watermark never moves backwards.
Whatever the concurrent consumer saw is in the final log at the same offset. At the end, data
is in the bucket (the partitions' cold tier is not empty) and read back from it.
"""

from __future__ import annotations

import os
import random
import threading
import time

from confluent_kafka import KafkaError, TopicPartition

from helpers import confluent_consumer, create_topic, unique_topic
from streams import (TrackedProducer, check_log, partitions_info, read_log, set_fault)

ROUNDS = int(os.environ.get("STRATA_CRASH_ROUNDS", "20"))
PARTITIONS = 3

# Points where an armed `crash` aborts the broker.
CRASH_POINTS = [
    "wal.write",
    "wal.after_write_before_sync",
    "wal.after_sync_before_ack",
    "object_store.put",
    "indexer.after_upload_before_catalog",
    "catalog.mid_write",
    "indexer.after_catalog_before_trim",
]
# Points slowed down so that a SIGKILL lands inside them: (point, delay in ms).
SLOW_POINTS = [("wal.fsync", 40), ("object_store.put", 300), ("catalog.mid_write", 200)]

BROKER_ARGS = ["--fault-injection", "--wal-segment-bytes", "65536", "--wal-segment-ms", "200"]


class Follower:
    """A consumer that follows every partition from offset 0 across the broker's restarts and
    records what it saw: {(partition, offset): value}."""

    def __init__(self, bootstrap: str, topic: str):
        self.seen: dict[tuple[int, int], bytes] = {}
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.consumer = confluent_consumer(bootstrap, **{
            "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
            "fetch.error.backoff.ms": 100})
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        self.thread = threading.Thread(target=self._run, name="follower", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # A broker that is down is not an error of the log: librdkafka reports it and reconnects.
        transient = {KafkaError._PARTITION_EOF, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                     KafkaError._TIMED_OUT, KafkaError._RESOLVE}
        while not self.stopping.is_set():
            for m in self.consumer.consume(num_messages=1000, timeout=0.2):
                if m.error():
                    if m.error().code() not in transient:
                        self.errors.append(str(m.error()))
                    continue
                key = (m.partition(), m.offset())
                if key in self.seen and self.seen[key] != m.value():
                    self.errors.append(f"offset {key} read as {self.seen[key]!r} and later {m.value()!r}")
                self.seen[key] = m.value()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        self.consumer.close()


def end_round(b, rng: random.Random) -> str:
    """Ends the broker one way or another; returns how."""
    way = rng.choice(["sigkill", "crash", "crash", "slow"])
    if way == "crash":
        point = rng.choice(CRASH_POINTS)
        set_fault(b, point, action="crash")
        rc = b.wait_exit(timeout=10)
        if rc is None:  # the point was not reached in time (nothing to upload, say)
            b.kill()
            return f"crash at {point} (not reached in 10 s: SIGKILL)"
        return f"crash at {point} (exit {rc})"
    if way == "slow":
        point, ms = rng.choice(SLOW_POINTS)
        set_fault(b, point, action="delay", ms=ms)
        time.sleep(rng.uniform(0.05, 0.6))
        b.kill()
        return f"SIGKILL with {point} slowed by {ms} ms"
    b.kill()
    return "SIGKILL"


def test_crash_loop(start_broker):
    seed = int(os.environ.get("STRATA_CRASH_SEED", str(random.randrange(1 << 30))))
    print(f"crash loop: {ROUNDS} rounds, seed {seed} (STRATA_CRASH_SEED={seed} replays it)")
    rng = random.Random(seed)
    b = start_broker(*BROKER_ARGS)
    topic = unique_topic("crash")
    create_topic(b.bootstrap, topic, PARTITIONS)
    producers = [TrackedProducer(b.bootstrap, topic, f"p{i}", PARTITIONS, rate_per_s=300).start()
                 for i in range(2)]
    follower = Follower(b.bootstrap, topic)
    high_watermarks = {p: 0 for p in range(PARTITIONS)}

    def check(what: str) -> dict:
        # Acknowledgements before the log (every ack taken is below the watermarks read after
        # it), what was sent after it (everything stored was sent before it was read).
        acked = {}
        for producer in producers:
            _s, a, _failed, fatal = producer.snapshot()
            assert not fatal, f"producer {producer.name} hit a fatal error: {fatal}"
            acked.update(a)
        ends, log = read_log(b.bootstrap, topic, PARTITIONS)
        sent = set().union(*(producer.snapshot()[0] for producer in producers))
        for p, (lo, hw) in ends.items():
            assert lo == 0, f"{what}partition {p}: log start {lo}, expected 0 (no retention here)"
            assert hw >= high_watermarks[p], \
                f"{what}partition {p}: high watermark went back from {high_watermarks[p]} to {hw}"
            high_watermarks[p] = hw
        check_log(ends, log, acked, sent, what)
        return log

    try:
        for round_ in range(ROUNDS):
            for producer in producers:
                producer.wait_acked(len(producer.acked) + 50, timeout=60)
            time.sleep(rng.uniform(0.2, 1.2))
            how = end_round(b, rng)
            b.restart(same_ports=True)
            check(f"after round {round_} ({how}): ")
            print(f"round {round_}: {how}; high watermarks {high_watermarks}")
    finally:
        for producer in producers:
            producer.stop()
        follower.stop()

    log = check("at the end: ")
    acked_total = sum(len(p.acked) for p in producers)
    failed_total = sum(len(p.failed) for p in producers)
    print(f"{acked_total} records acknowledged, {failed_total} failed deliveries, "
          f"{sum(high_watermarks.values())} stored")
    assert acked_total >= ROUNDS * 100
    # What the consumer saw while the broker crashed under it is what the log holds.
    assert not follower.errors, follower.errors[:5]
    stored = {(p, r.offset): r.value for p, recs in log.items() for r in recs}
    differs = [(k, v, stored.get(k)) for k, v in follower.seen.items() if stored.get(k) != v]
    assert not differs, f"the consumer saw records the log does not hold: {differs[:3]}"
    assert follower.seen, "the consumer saw nothing"
    # The loop went through the bucket: older offsets are served from uploaded objects.
    for info in partitions_info(b, topic):
        assert info["remote_end_offset"] > 0, f"nothing of partition {info['partition']} was uploaded: {info}"
