"""Helpers of the crash and fault tests (test_crash_loop.py, test_faults.py): the admin fault
API, idempotent acks=all producers that record exactly what was acknowledged, and the check of
a partition log against those records.

Values are `<producer>-<seq>` (seq zero-padded), unique per test, so a stored record names who
sent it and in which order.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Producer

from helpers import Rec, consume_confluent, watermarks


# ------------------------------------------------------------------ admin API
def admin_call(broker, method: str, path: str, body: dict | None = None,
               timeout: float = 60.0) -> tuple[int, object]:
    """One admin call: (status, parsed JSON body or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{broker.admin}{path}", data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def set_fault(broker, point: str, **fault) -> None:
    status, body = admin_call(broker, "PUT", f"/v1/faults/{point}", fault)
    assert status == 200, f"PUT /v1/faults/{point} {fault}: {status} {body}"


def clear_faults(broker) -> None:
    status, body = admin_call(broker, "DELETE", "/v1/faults")
    assert status == 200 and body == {}, f"DELETE /v1/faults: {status} {body}"


def metric(broker, name: str) -> float:
    status, body = broker.http_get("/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {name} at /metrics")


def partitions_info(broker, topic: str) -> list[dict]:
    status, body = admin_call(broker, "GET", f"/v1/topics/{topic}/partitions")
    assert status == 200, body
    return body["partitions"]


# ------------------------------------------------------------------ producing
@dataclass
class Ack:
    partition: int
    offset: int
    at: float  # time.monotonic() when the delivery report came


@dataclass
class TrackedProducer:
    """An idempotent acks=all confluent-kafka producer in a thread of its own, producing
    `<name>-<seq>` round-robin over the partitions until stopped, recording every send, every
    acknowledgement (partition, offset, when) and every failed delivery."""

    bootstrap: str
    topic: str
    name: str
    partitions: int
    rate_per_s: int = 1000
    value_bytes: int = 0
    sent: set = field(default_factory=set)
    acked: dict = field(default_factory=dict)      # value -> Ack
    failed: dict = field(default_factory=dict)     # value -> KafkaError
    fatal: list = field(default_factory=list)      # fatal client errors (must stay empty)

    def __post_init__(self):
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.producer = Producer({
            "bootstrap.servers": self.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # Long enough to ride out every kill and fault of a test: nothing expires.
            "message.timeout.ms": 240000,
            "request.timeout.ms": 10000,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 500,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "error_cb": self._on_error,
        })
        self.thread = threading.Thread(target=self._run, name=f"producer-{self.name}", daemon=True)

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            with self.lock:
                self.fatal.append(str(error))

    def _on_delivery(self, error, message) -> None:
        value = message.value()
        with self.lock:
            if error is not None:
                self.failed[value] = error
            else:
                self.acked[value] = Ack(message.partition(), message.offset(), time.monotonic())

    def _run(self) -> None:
        seq = 0
        padding = b"." * self.value_bytes
        started = time.monotonic()
        while not self.stopping.is_set():
            value = f"{self.name}-{seq:08d}".encode() + padding
            # Recorded before it can be stored anywhere.
            with self.lock:
                self.sent.add(value)
            try:
                self.producer.produce(self.topic, value, partition=seq % self.partitions,
                                      on_delivery=self._on_delivery)
            except BufferError:
                self.producer.poll(0.05)
                continue
            seq += 1
            self.producer.poll(0)
            # Keep to the rate: the tests are about correctness, not load.
            ahead = seq / self.rate_per_s - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(min(ahead, 0.05))

    def start(self) -> "TrackedProducer":
        self.thread.start()
        return self

    def stop(self, flush_timeout: float = 120.0) -> None:
        """Stops producing and waits (bounded) until every record sent is acknowledged or
        failed."""
        self.stopping.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), f"producer {self.name} did not stop"
        left = self.producer.flush(flush_timeout)
        assert left == 0, f"producer {self.name}: {left} records neither acknowledged nor failed " \
                          f"after {flush_timeout}s"

    def snapshot(self) -> tuple[set, dict, dict, list]:
        with self.lock:
            return set(self.sent), dict(self.acked), dict(self.failed), list(self.fatal)

    def wait_acked(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.acked) >= count:
                    return
            time.sleep(0.05)
        raise AssertionError(f"producer {self.name}: fewer than {count} acknowledgements within "
                             f"{timeout}s ({len(self.acked)}; failed: {len(self.failed)})")


# ------------------------------------------------------------------ reading back
def read_log(bootstrap: str, topic: str, partitions: int,
             timeout: float = 120.0) -> tuple[dict[int, tuple[int, int]], dict[int, list[Rec]]]:
    """Every record of every partition, from the log start to the high watermark as read at the
    call: ({p: (log_start, high_watermark)}, {p: records})."""
    ends = {p: watermarks(bootstrap, topic, p) for p in range(partitions)}
    got = consume_confluent(bootstrap, topic, {p: hw for p, (_lo, hw) in ends.items()},
                            start={p: lo for p, (lo, _hw) in ends.items()}, timeout=timeout)
    return ends, got


def producer_of(value: bytes) -> tuple[str, int]:
    name, seq = value.split(b".")[0].rsplit(b"-", 1)
    return name.decode(), int(seq)


def check_log(ends: dict[int, tuple[int, int]], log: dict[int, list[Rec]], acked: dict,
              sent: set, what: str = "") -> None:
    """The log against the producers' records:
    - offsets are contiguous from the log start to the high watermark (no holes);
    - nothing is stored twice, and nothing is stored that was never sent;
    - every acknowledged record is stored once, at the partition and offset of its ack;
    - per partition, each producer's records are in the order it produced them."""
    for p, recs in log.items():
        lo, hw = ends[p]
        offsets = [r.offset for r in recs]
        assert offsets == list(range(lo, hw)), (
            f"{what}partition {p}: offsets are not contiguous from {lo} to {hw}: "
            f"{len(offsets)} records, first gap near {next((o for i, o in enumerate(offsets) if o != lo + i), None)}")
    counts = Counter(r.value for recs in log.values() for r in recs)
    twice = [v for v, n in counts.items() if n > 1]
    assert not twice, f"{what}{len(twice)} records stored more than once, e.g. {twice[:3]}"
    unknown = [v for v in counts if v not in sent]
    assert not unknown, f"{what}{len(unknown)} stored records were never sent, e.g. {unknown[:3]}"
    where = {r.value: (p, r.offset) for p, recs in log.items() for r in recs}
    lost = [(v, a) for v, a in acked.items() if v not in where]
    assert not lost, f"{what}{len(lost)} acknowledged records are missing, e.g. {lost[:3]}"
    moved = [(v, (a.partition, a.offset), where[v]) for v, a in acked.items()
             if where[v] != (a.partition, a.offset)]
    assert not moved, f"{what}{len(moved)} acknowledged records are not where their ack said, e.g. {moved[:3]}"
    for p, recs in log.items():
        last: dict[str, int] = {}
        for r in recs:
            name, seq = producer_of(r.value)
            assert seq > last.get(name, -1), (
                f"{what}partition {p}: {name}'s record {seq} at offset {r.offset} comes after "
                f"its record {last[name]}: out of produce order")
            last[name] = seq
