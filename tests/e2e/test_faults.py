"""Injected faults, through the real binary and real clients (the broker runs with
`--fault-injection`; faults are switched at runtime with the admin API, `/v1/faults`).

The WAL's disk:
- fsync failing (EIO) and the disk full (ENOSPC on write): produce answers KAFKA_STORAGE_ERROR
  (a raw Produce shows the code), the high watermark stands still, nothing is acknowledged past
  it; once the fault clears, the same idempotent producers get through, and every acknowledged
  record is there exactly once, in order, with no holes.
- fsync or write hanging (a disk that stops answering): a Produce gets REQUEST_TIMED_OUT after
  its own timeout, nothing is acknowledged or made visible, and the rest of the broker answers
  (metadata, offsets, fetches of what is there, the admin API); once the disk answers, the
  producers get through and every acknowledged record is there exactly once, in order.
- a real full disk (the WAL on a 2 MiB tmpfs while uploads fail, so nothing can be trimmed):
  the same, and produce recovers by itself once uploads free space. Skipped, with the reason,
  where a tmpfs cannot be mounted.

The bucket (the default local-folder store, wrapped by the fault layer):
- PUT failing, hanging (bounded by --object-store-timeout-ms) or slow: produce keeps working,
  an indexer run fails with 502 and trims nothing (a slow one succeeds), the metadata snapshot
  catches up once PUT works, and then everything is uploaded and read back from the bucket;
- GET failing, hanging or slow: a cold fetch answers KAFKA_STORAGE_ERROR for that partition only
  (a hot partition in the same request gets its records); a consumer rides it out without an
  error and gets every record once the store answers;
- DELETE failing or hanging: a deleted topic's object and its catalog entry both stay until a
  DELETE succeeds;
- LIST failing at start-up is a clear start-up error; failing during a restore onto an empty
  disk writes nothing, and the next start restores everything.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import Broker, BrokerError
from helpers import consume_confluent, create_topic, unique_topic, watermarks
import wire
from streams import (TrackedProducer, admin_call, check_log, clear_faults, metric,
                     partitions_info, read_log, set_fault)

KAFKA_STORAGE_ERROR = 56
REQUEST_TIMED_OUT = 7


# ------------------------------------------------------------------ helpers
def raw_produce(bootstrap: str, topic: str, partition: int, value: bytes) -> int:
    """One acks=all Produce on a connection of its own: its error code."""
    batch = wire.build_batch([wire.RawRecord(key=None, value=value)])
    with wire.Conn(bootstrap, timeout=30) as conn:
        payload = conn.roundtrip(wire.produce_v3(1, topic, partition, batch), timeout=30)
    _corr, answers = wire.parse_produce_v3(payload)
    assert len(answers) == 1, answers
    return answers[0][2]


def wait_for(what: str, condition, timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout}s")


def high_watermarks(bootstrap: str, topic: str, partitions: int) -> list[int]:
    return [watermarks(bootstrap, topic, p)[1] for p in range(partitions)]


def finish(producer: TrackedProducer, bootstrap: str, topic: str, partitions: int,
           extra_sent: set = frozenset()):
    """Stops the producer and checks the log against everything it recorded."""
    producer.stop()
    sent, acked, failed, fatal = producer.snapshot()
    assert not fatal, f"fatal producer errors: {fatal}"
    assert not failed, f"{len(failed)} deliveries failed, e.g. {list(failed.items())[:3]}"
    assert len(acked) == len(sent), "every record sent was acknowledged in the end"
    ends, log = read_log(bootstrap, topic, partitions)
    check_log(ends, log, acked, sent | set(extra_sent))
    return ends, log


def uploaded_topic(b, prefix: str, partitions: int, records: int,
                   written: int | None = None) -> tuple[str, TrackedProducer]:
    """A topic with at least `records` acknowledged records in its first `written` partitions
    (all of them by default), all uploaded to the bucket."""
    topic = unique_topic(prefix)
    create_topic(b.bootstrap, topic, partitions)
    producer = TrackedProducer(b.bootstrap, topic, "p0", written or partitions,
                               rate_per_s=2000).start()
    producer.wait_acked(records)
    producer.stop()
    status, run = admin_call(b, "POST", "/v1/indexer/run")
    assert status == 200 and run["uploaded"], (status, run)
    return topic, producer


def refused_while_faulty(b, topic: str, probes: set, tries: int = 1) -> None:
    """A raw Produce during the fault gets KAFKA_STORAGE_ERROR. On a real full disk a small
    write may still fit in what is left, so `tries` probes (large ones) may be sent until one
    is refused; those that fit are stored like any record."""
    codes = []
    for _ in range(tries):
        value = f"probe-{len(probes)}.".encode() + b"x" * 100_000
        probes.add(value)
        codes.append(raw_produce(b.bootstrap, topic, 0, value))
        if codes[-1] == KAFKA_STORAGE_ERROR:
            return
        time.sleep(0.1)
    raise AssertionError(f"produce during the fault answered {codes}, never KAFKA_STORAGE_ERROR")


def assert_nothing_acknowledged_past(producer: TrackedProducer, since: float, frozen: list[int]):
    _sent, acked, _failed, _fatal = producer.snapshot()
    late = [(v, a) for v, a in acked.items() if a.at > since and a.offset >= frozen[a.partition]]
    assert not late, f"acknowledged during the fault, past the high watermark {frozen}: {late[:3]}"


# ------------------------------------------------------------------ the WAL's disk
@pytest.mark.parametrize("point,errno", [("wal.fsync", "EIO"), ("wal.write", "ENOSPC")])
def test_wal_failure_refuses_produce_then_recovers(start_broker, point, errno):
    b = start_broker("--fault-injection")
    topic = unique_topic("walfault")
    create_topic(b.bootstrap, topic, 2)
    producer = TrackedProducer(b.bootstrap, topic, "p0", 2, rate_per_s=500).start()
    probes: set = set()
    try:
        producer.wait_acked(200)
        set_fault(b, point, action="error", errno=errno)
        refused_while_faulty(b, topic, probes)
        since = time.monotonic()
        frozen = high_watermarks(b.bootstrap, topic, 2)
        time.sleep(1.0)  # the producer keeps trying all along
        refused_while_faulty(b, topic, probes)
        assert high_watermarks(b.bootstrap, topic, 2) == frozen, "the log grew during the fault"
        assert_nothing_acknowledged_past(producer, since, frozen)
        assert metric(b, "strata_wal_write_failures_total") > 0
        acked_at_fault = len(producer.acked)
        clear_faults(b)
        producer.wait_acked(acked_at_fault + 500)
    finally:
        producer.stop()
    finish(producer, b.bootstrap, topic, 2, probes)


@pytest.mark.parametrize("point", ["wal.fsync", "wal.write"])
def test_wal_hang_times_produce_out_and_the_rest_answers(start_broker, point):
    b = start_broker("--fault-injection")
    topic = unique_topic("walhang")
    create_topic(b.bootstrap, topic, 2)
    producer = TrackedProducer(b.bootstrap, topic, "p0", 2, rate_per_s=500).start()
    probe = b"probe-0.during-the-hang"
    try:
        producer.wait_acked(200)
        frozen_at_start = high_watermarks(b.bootstrap, topic, 2)
        set_fault(b, point, action="hang")
        since = time.monotonic()
        batch = wire.build_batch([wire.RawRecord(key=None, value=probe)])
        with wire.Conn(b.bootstrap, timeout=30) as conn:
            started = time.monotonic()
            payload = conn.roundtrip(wire.produce_v3(1, topic, 0, batch, timeout_ms=1500),
                                     timeout=30)
            waited = time.monotonic() - started
        _corr, answers = wire.parse_produce_v3(payload)
        assert answers[0][2] == REQUEST_TIMED_OUT, answers
        assert waited < 15, f"the produce timeout of 1.5 s was answered after {waited:.1f} s"
        # The WAL is stuck, the broker is not: metadata, offsets, fetches and the admin API.
        frozen = high_watermarks(b.bootstrap, topic, 2)
        assert all(f >= s for f, s in zip(frozen, frozen_at_start)), (frozen, frozen_at_start)
        got = consume_confluent(b.bootstrap, topic, dict(enumerate(frozen)))
        assert [len(got[p]) for p in range(2)] == frozen, "a fetch during the hang fell short"
        status, _ = admin_call(b, "GET", "/v1/topics")
        assert status == 200
        time.sleep(1.0)  # the producer keeps trying all along
        assert high_watermarks(b.bootstrap, topic, 2) == frozen, "the log grew during the hang"
        assert_nothing_acknowledged_past(producer, since, frozen)
        acked_at_fault = len(producer.acked)
        clear_faults(b)
        producer.wait_acked(acked_at_fault + 500)
    finally:
        clear_faults(b)
        producer.stop()
    # The probe's request timed out; its batch may still have been written once the disk
    # answered, as Kafka's may after a timeout: it is allowed, never required.
    finish(producer, b.bootstrap, topic, 2, {probe})


def test_real_disk_full_then_space_returns(tmp_path):
    """The WAL on a 2 MiB tmpfs; uploads fail, so nothing can be trimmed, and the disk fills."""
    b = Broker(tmp_path / "full", ["--fault-injection", "--wal-segment-bytes", "131072",
                                   "--wal-segment-ms", "500"], name="strata-full")
    wal_dir = b.data_dir / "wal"
    wal_dir.mkdir(parents=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(wal_dir)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        b.discard()
        pytest.skip(f"cannot mount a tmpfs for a real full disk here (needs root and "
                    f"CAP_SYS_ADMIN): {mount.stderr.strip()}")
    producer = None
    try:
        b.start()
        topic = unique_topic("diskfull")
        create_topic(b.bootstrap, topic, 2)
        set_fault(b, "object_store.put", action="error")
        producer = TrackedProducer(b.bootstrap, topic, "p0", 2, rate_per_s=3000,
                                   value_bytes=1000).start()
        wait_for("the WAL's disk filling up",
                 lambda: metric(b, "strata_wal_write_failures_total") > 0, timeout=60)
        probes: set = set()
        refused_while_faulty(b, topic, probes, tries=50)
        acked_when_full = len(producer.acked)
        # Space returns: uploads work again, and the WAL is trimmed behind them.
        clear_faults(b)
        status, body = admin_call(b, "POST", "/v1/indexer/run")
        assert status == 200, body
        producer.wait_acked(acked_when_full + 2000, timeout=90)
        producer_done = producer
        producer = None
        finish(producer_done, b.bootstrap, topic, 2, probes)
        b.stop()
    finally:
        if producer is not None:
            producer.stopping.set()
        b.discard()
        subprocess.run(["umount", "-l", str(wal_dir)], capture_output=True)


# ------------------------------------------------------------------ the bucket
FAULTS = {
    "error": {"action": "error"},
    "hang": {"action": "hang"},
    "delay": {"action": "delay", "ms": 300},
}


def snapshot_names(b) -> str:
    path = b.data_dir / "objects" / "v2" / "metadata" / "snapshot.json"
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("action", ["error", "hang", "delay"])
def test_upload_faults(start_broker, action):
    b = start_broker("--fault-injection", "--object-store-timeout-ms", "1000")
    topic = unique_topic("putfault")
    create_topic(b.bootstrap, topic, 2)
    producer = TrackedProducer(b.bootstrap, topic, "p0", 2, rate_per_s=500).start()
    try:
        producer.wait_acked(300)
        set_fault(b, "object_store.put", **FAULTS[action])
        status, run = admin_call(b, "POST", "/v1/indexer/run")
        if action == "delay":
            assert status == 200 and run["uploaded"], (status, run)
        else:
            assert status == 502, (status, run)
            assert "error" in run, run
            # Nothing was trimmed: every offset is still in the WAL.
            for info in partitions_info(b, topic):
                assert info["wal_start_offset"] == 0 and info["remote_end_offset"] == 0, info
            assert metric(b, "strata_upload_failures_total") >= 1
            # Produce goes on, and topic changes are not held up by the snapshot upload.
            producer.wait_acked(len(producer.acked) + 300)
            other = unique_topic("during-outage")
            create_topic(b.bootstrap, other, 1)
            assert other not in snapshot_names(b)
            clear_faults(b)
            wait_for("the metadata snapshot to catch up", lambda: other in snapshot_names(b))
        producer.wait_acked(len(producer.acked) + 100)
    finally:
        producer.stop()
    clear_faults(b)
    status, run = admin_call(b, "POST", "/v1/indexer/run")
    assert status == 200 and run["uploaded"], (status, run)
    hws = high_watermarks(b.bootstrap, topic, 2)
    for info in partitions_info(b, topic):
        assert info["remote_end_offset"] == hws[info["partition"]], info
    finish(producer, b.bootstrap, topic, 2)


def two_partition_fetch(bootstrap: str, topic: str) -> dict[int, wire.FetchPartition]:
    """One Fetch v4 of partitions 0 and 1 from offset 0."""
    max_bytes = 16 * 1024 * 1024
    partitions = [wire.i32(p) + wire.i64(0) + wire.i32(max_bytes) for p in (0, 1)]
    body = (wire.i32(-1) + wire.i32(0) + wire.i32(0) + wire.i32(max_bytes) + wire.i8(0)
            + wire.array([wire.string(topic) + wire.array(partitions)]))
    with wire.Conn(bootstrap, timeout=30) as conn:
        payload = conn.roundtrip(wire.request(wire.FETCH, 4, 7, body), timeout=30)
    _corr, answers = wire.parse_fetch_v4(payload)
    return {a.partition: a for a in answers}


@pytest.mark.parametrize("action", ["error", "hang", "delay"])
def test_cold_read_faults(start_broker, action):
    b = start_broker("--fault-injection", "--object-store-timeout-ms", "1000")
    # Two partitions; partition 0 is written and uploaded, partition 1 written later (hot).
    topic, producer = uploaded_topic(b, "getfault", 2, 2000, written=1)
    cold_end = watermarks(b.bootstrap, topic, 0)[1]
    assert partitions_info(b, topic)[0]["remote_end_offset"] == cold_end
    # Partition 1 stays hot: in the WAL only.
    assert raw_produce(b.bootstrap, topic, 1, b"hot") == 0

    set_fault(b, "object_store.get", **FAULTS[action])
    answers = two_partition_fetch(b.bootstrap, topic)
    assert answers[1].error_code == 0 and answers[1].records, "the hot partition is served"
    if action == "delay":
        assert answers[0].error_code == 0 and answers[0].records, answers[0]
    else:
        assert answers[0].error_code == KAFKA_STORAGE_ERROR, answers[0]
        assert not answers[0].records

    # A consumer reading the cold partition during the fault gets no error, and every record
    # once the store answers (nothing of the failed reads was cached).
    result: dict = {}

    def consume():
        try:
            result["log"] = consume_confluent(b.bootstrap, topic, {0: cold_end}, timeout=90)
        except BaseException as e:  # noqa: BLE001 - reported below
            result["error"] = e

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    if action != "delay":
        time.sleep(2.0)
        assert "error" not in result, result.get("error")
        assert reader.is_alive(), "the consumer finished while every cold read failed"
        clear_faults(b)
    reader.join(timeout=120)
    assert not reader.is_alive() and "error" not in result, result.get("error")
    _sent, acked, _failed, _fatal = producer.snapshot()
    stored = {r.value: r.offset for r in result["log"][0]}
    assert stored == {v: a.offset for v, a in acked.items()}


@pytest.mark.parametrize("action", ["error", "hang"])
def test_failed_delete_keeps_the_catalog_entry(start_broker, action):
    b = start_broker("--fault-injection", "--object-store-timeout-ms", "1000")
    topic, _producer = uploaded_topic(b, "delfault", 1, 500)

    def objects() -> list[Path]:
        return sorted((b.data_dir / "objects" / "v2" / "segments").rglob("*.seg"))

    def entries() -> list[Path]:
        return sorted((b.data_dir / "meta" / "catalog").glob("*.entry"))

    assert objects() and entries()
    before = (objects(), entries())
    set_fault(b, "object_store.delete", **FAULTS[action])
    status, body = admin_call(b, "DELETE", f"/v1/topics/{topic}")
    assert status == 200, body
    status, run = admin_call(b, "POST", "/v1/indexer/run")
    assert status == 502, (status, run)
    assert (objects(), entries()) == before, "a failed DELETE removed the object or its entry"
    clear_faults(b)
    status, run = admin_call(b, "POST", "/v1/indexer/run")
    assert status == 200 and run["retention"]["objects_deleted"] >= 1, (status, run)
    assert objects() == [] and entries() == []


def test_list_failure_at_start_up_is_a_clear_error(tmp_path):
    faults = json.dumps({"object_store.list": {"action": "error"}})
    b = Broker(tmp_path / "nolist", ["--fault-injection", "--faults", faults], name="strata-nolist")
    try:
        with pytest.raises(BrokerError):
            b.start(timeout=30)
        assert "is not usable" in b.stderr_tail(), b.stderr_tail()
    finally:
        b.discard()


def test_list_failure_during_restore_writes_nothing_and_the_next_start_restores(start_broker,
                                                                                tmp_path):
    a = start_broker()
    topic, producer = uploaded_topic(a, "restore", 2, 1000)
    a.stop()
    objects = f"file://{a.data_dir / 'objects'}"

    # The start-up probe's LIST passes; the restore's LIST fails.
    faults = json.dumps({"object_store.list": {"action": "error", "after": 1}})
    first = Broker(tmp_path / "fresh", ["--object-store", objects, "--fault-injection",
                                         "--faults", faults], name="strata-fresh")
    try:
        with pytest.raises(BrokerError):
            first.start(timeout=30)
        assert "cannot restore" in first.stderr_tail(), first.stderr_tail()
    finally:
        first.discard()
    assert not (first.data_dir / "meta" / "metadata.json").exists()

    again = Broker(tmp_path / "fresh", ["--object-store", objects], name="strata-again",
                   data_dir=first.data_dir)
    try:
        again.start()
        ends, log = read_log(again.bootstrap, topic, 2)
        sent, acked, _failed, _fatal = producer.snapshot()
        check_log(ends, log, acked, sent)
        again.stop()
    finally:
        again.discard()
