"""Tiered storage against a real S3 server: moto's server, started as a process by these tests,
with a bucket made through boto3, and, where the tests need an outage, a TCP proxy in front of
it that can be switched off (cutting the S3 client's pooled keep-alive connections too).

- 200,000 records over 4 partitions, mixed codecs (gzip, snappy, zstd and none from
  confluent-kafka, lz4 from kafka-python: librdkafka sends lz4 uncompressed until
  FindCoordinator is served), with keys, values and headers, are uploaded; the WAL is trimmed
  to its empty active segment; with the block cache wiped, both clients read every record
  back from the bucket, identical (offset, key, value, headers, timestamp).
- The broker is stopped and its data dir deleted; a fresh broker on the same bucket and prefix
  has the topics (partition counts, configs) and every record, and new produce continues at
  the old high watermark, and a consumer group's committed offsets (with metadata) are back.
- S3 switched off under an acks=all produce load: produce is still acknowledged, an indexer
  run answers 502 and trims nothing; S3 back: the backlog uploads and every acknowledged
  record is read back from the bucket.
- A multipart upload whose part PUT fails (fault injection in front of the real S3 client) is
  aborted on S3: an AbortMultipartUpload reaches moto and nothing the broker started is left
  in progress; the run answers 502 and trims nothing; the next run uploads the object in
  parts and the records read back from the bucket.
- With a small --wal-disk-bytes-max, produce during the outage ends in KAFKA_STORAGE_ERROR
  (retriable, no offsets taken); nothing acknowledged is lost and a retrying producer gets
  through once S3 is back.

Every wait is bounded; moto and the proxy are always stopped at teardown.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from confluent_kafka import KafkaError
from confluent_kafka.admin import ConfigResource, ResourceType

import streams
from helpers import (Deliveries, Rec, admin_client, assert_contiguous, confluent_producer,
                     consume_confluent, consume_kafka_python, create_topic, flush_all,
                     produce_with_backpressure, topic_partitions, unique_topic, watermarks)

PARTITIONS = 4
TOTAL_RECORDS = 200_000
# (codec, client): lz4 from kafka-python (see the module docstring), the rest from librdkafka.
CODECS = [("gzip", "confluent"), ("snappy", "confluent"), ("lz4", "kafka-python"),
          ("zstd", "confluent"), ("none", "confluent")]
PER_CODEC = TOTAL_RECORDS // len(CODECS)
# The background indexer uploads each sealed segment while we produce: with ~30 MB of WAL, one
# object above the broker's 16 MiB multipart threshold (several parts) and smaller ones (a
# single PUT).
SEGMENT_BYTES = 16 * 1024 * 1024
MULTIPART_THRESHOLD = 16 * 1024 * 1024

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "strata-e2e",
    "AWS_SECRET_ACCESS_KEY": "strata-e2e-secret",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}

SEGMENT_KEY_RE = r"v2/segments/([0-9A-Za-z_-]+)/(\d{20})\.seg"


# ======================================================================= processes
def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL if pytest dies, so none is left behind."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - best effort only
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL; always waits (bounded) so nothing is left behind."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _moto_server_path() -> Path | None:
    env = os.environ.get("STRATA_MOTO_SERVER")
    candidates = [Path(env)] if env else []
    candidates += [Path(sys.executable).parent / "moto_server",
                   Path(__file__).resolve().parents[2] / ".venv" / "bin" / "moto_server"]
    found = shutil.which("moto_server")
    if found:
        candidates.append(Path(found))
    return next((c for c in candidates if c.exists()), None)


class Moto:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc = proc
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.log = log

    def client(self):
        import boto3
        from botocore.config import Config
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=AWS_ENV["AWS_REGION"],
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=30,
                          retries={"max_attempts": 2}))


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory):
    """moto's S3 server as a process on a free port; stopped at teardown, always."""
    path = _moto_server_path()
    if path is None:
        pytest.skip("moto_server not found (scripts/test installs moto[server] into .venv)")
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    port = _free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(path), "-H", "127.0.0.1", "-p", str(port)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **AWS_ENV}, preexec_fn=_die_with_parent)
    try:
        moto = Moto(proc, port, log)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"moto_server exited with {proc.returncode}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{moto.endpoint}/moto-api/", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"moto_server did not answer on {port} within 30 s:\n{_tail(log)}")
            time.sleep(0.1)
        yield moto
        assert proc.poll() is None, f"moto_server died during the tests:\n{_tail(log)}"
    finally:
        _stop_process(proc)


@pytest.fixture
def aws_env(monkeypatch):
    """Static credentials for the AWS chain of the broker (which inherits our environment)."""
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def bucket(moto_server, aws_env):
    """A fresh bucket and prefix: (moto, s3 client, bucket name, prefix)."""
    s3 = moto_server.client()
    name = f"strata-e2e-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return moto_server, s3, name, f"cluster-{uuid.uuid4().hex[:6]}/tiered"


# --------------------------------------------------------------------- S3 switch
# A TCP proxy in its own process (so it never competes with the test for the GIL), switched by
# lines on its stdin ("off" / "on"), each acknowledged on stdout once in effect. Off, it aborts
# every open connection and drops new ones as soon as they are accepted.
_PROXY_SRC = r'''
import asyncio, sys, threading

upstream_port = int(sys.argv[1])
up = True
open_conns = set()

async def pump(reader, writer):
    try:
        while True:
            data = await reader.read(262144)
            if not data:
                return
            writer.write(data)
            await writer.drain()
    except Exception:
        return

async def handle(cr, cw):
    if not up:
        cw.transport.abort()
        return
    try:
        ur, uw = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", upstream_port), 5)
    except Exception:
        cw.transport.abort()
        return
    pair = (cw, uw)
    open_conns.add(pair)
    try:
        tasks = [asyncio.ensure_future(pump(cr, uw)), asyncio.ensure_future(pump(ur, cw))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
    finally:
        open_conns.discard(pair)
        cw.transport.abort()
        uw.transport.abort()

def command(line):
    global up
    if line == "off":
        up = False
        for cw, uw in list(open_conns):
            cw.transport.abort()
            uw.transport.abort()
        open_conns.clear()
    elif line == "on":
        up = True
    print(line, flush=True)

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("listening", server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    def read_stdin():
        for raw in sys.stdin:
            loop.call_soon_threadsafe(command, raw.strip())
        loop.call_soon_threadsafe(done.set_result, None)
    threading.Thread(target=read_stdin, daemon=True).start()
    await done

asyncio.run(main())
'''


class S3Switch:
    """The proxy process: `endpoint` for the broker, `off()` / `on()` for the test."""

    def __init__(self, upstream_port: int, log: Path):
        self.log = log
        self._err = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", _PROXY_SRC, str(upstream_port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, preexec_fn=_die_with_parent)
        self._lines: "queue.Queue[str | None]" = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        first = self._next(10)
        m = re.match(r"listening (\d+)$", first or "")
        assert m, f"the S3 proxy did not start: {first!r}\n{_tail(log)}"
        self.endpoint = f"http://127.0.0.1:{m.group(1)}"

    def _pump(self) -> None:
        for raw in self.proc.stdout:
            self._lines.put(raw.decode().strip())
        self._lines.put(None)

    def _next(self, timeout: float) -> str | None:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def _command(self, what: str) -> None:
        assert self.proc.poll() is None, f"the S3 proxy died:\n{_tail(self.log)}"
        self.proc.stdin.write(f"{what}\n".encode())
        self.proc.stdin.flush()
        answer = self._next(10)
        assert answer == what, f"the S3 proxy did not acknowledge {what!r} (got {answer!r})"

    def off(self) -> None:
        self._command("off")

    def on(self) -> None:
        self._command("on")

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        _stop_process(self.proc)
        self._err.close()


@pytest.fixture
def s3_switch(moto_server, tmp_path):
    switch = S3Switch(moto_server.port, tmp_path / "s3-proxy.log")
    try:
        yield switch
    finally:
        switch.close()


# ======================================================================= broker side
def s3_flags(bucket_name: str, prefix: str, endpoint: str) -> list[str]:
    return ["--object-store", f"s3://{bucket_name}/{prefix}", "--s3-endpoint", endpoint]


def http_json(b, method: str, path: str, timeout: float = 90.0) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://{b.admin}{path}", method=method,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"unparsed": body.decode("utf-8", "replace")}


def run_indexer(b, timeout: float = 90.0) -> tuple[int, dict]:
    return http_json(b, "POST", "/v1/indexer/run", timeout=timeout)


def tiers(b, topic: str) -> dict[int, dict]:
    status, body = http_json(b, "GET", f"/v1/topics/{topic}/partitions", timeout=10)
    assert status == 200, f"GET /v1/topics/{topic}/partitions: {status} {body}"
    return {p["partition"]: p for p in body["partitions"]}


def metric(b, name: str) -> float:
    status, text = b.http_get("/metrics", timeout=10)
    assert status == 200, f"GET /metrics: {status}"
    total, seen = 0.0, False
    for line in text.decode().splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+(\S+)$", line)
        if m:
            total += float(m.group(1))
            seen = True
    assert seen, f"metric {name} not in GET /metrics"
    return total


def wal_files(b) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in sorted((b.data_dir / "wal").glob("*.wal"))}


def wipe_cache(b) -> None:
    """Empties the disk tier of the block cache (the broker treats a vanished file as a miss)."""
    cache = b.data_dir / "cache"
    if cache.exists():
        for f in cache.iterdir():
            if f.is_dir():
                shutil.rmtree(f, ignore_errors=True)
            else:
                f.unlink(missing_ok=True)


def bucket_objects(s3, bucket_name: str, prefix: str) -> dict[str, int]:
    """key (without the prefix) -> size, for every object under the prefix."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket_name, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix) + 1:]] = o["Size"]
    return out


def segment_objects(objects: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in objects.items() if re.fullmatch(SEGMENT_KEY_RE, k)}


def assert_all_uploaded(b, topic: str) -> dict[int, dict]:
    """Every partition's records are in the bucket, none left in the WAL; WAL trimmed."""
    t = tiers(b, topic)
    for p, info in t.items():
        assert info["log_start_offset"] == 0, f"partition {p}: {info}"
        assert info["wal_start_offset"] == info["high_watermark"], \
            f"partition {p}: records left in the WAL after the indexer run: {info}"
        assert info["remote_end_offset"] == info["high_watermark"], \
            f"partition {p}: the bucket does not reach the high watermark: {info}"
    # One segment file left, holding next to nothing: a reused file keeps its length, so the
    # broker's count of valid WAL bytes says how much it holds.
    files = wal_files(b)
    wal_bytes = metric(b, "strata_wal_bytes")
    assert len(files) == 1 and wal_bytes <= 4096, \
        f"the WAL should be trimmed to its (empty) active segment, found {files}, {wal_bytes} valid bytes"
    return t


def compare(what: str, got: dict[int, list[Rec]], expected: dict[int, list[Rec]]) -> None:
    """Per partition, in order; on a difference, names the first one (not a 200k-item diff)."""
    for p, exp in expected.items():
        recs = got.get(p, [])
        if recs == exp:
            continue
        assert_contiguous(recs, 0, what=f"{what}, partition {p}: ")
        for r, e in zip(recs, exp):
            if r != e:
                raise AssertionError(f"{what}, partition {p}: offset {e.offset} differs:\n"
                                     f"  read     {r}\n  produced {e}")
        raise AssertionError(f"{what}, partition {p}: read {len(recs)} records, produced {len(exp)}")


# ======================================================================= records
def make_record(codec: str, i: int, rng: random.Random):
    """key, value, headers of record i of one codec: text (compressible) plus random bytes."""
    key = None if i % 50 == 7 else f"{codec}-key-{i % 977}".encode()
    if i % 211 == 3 and key is not None:
        value = None  # a tombstone
    else:
        value = (f"{codec} record {i} " * (1 + i % 4)).encode() + rng.randbytes(16 + i % 128)
    if i % 5 == 0:
        headers = []
    elif i % 5 == 1:
        headers = [("i", str(i).encode())]
    elif i % 5 == 2:
        headers = [("i", str(i).encode()), ("empty", b""), ("bin", rng.randbytes(6))]
    elif i % 5 == 3:
        headers = [("dup", b"1"), ("dup", b"2")]  # duplicate names are kept, in order
    else:
        headers = [("codec", codec.encode())]
    return key, value, headers


def produce_confluent_codec(bootstrap, topic, codec, rng) -> list[Rec | tuple]:
    d = Deliveries()
    p = confluent_producer(bootstrap, **{"compression.type": codec, "linger.ms": 20,
                                         "acks": "all", "batch.size": 262144,
                                         "queue.buffering.max.messages": 200000})
    sent = {}
    for i in range(PER_CODEC):
        k, v, h = make_record(codec, i, rng)
        sent[i] = (k, v, h)
        produce_with_backpressure(p, topic, v, key=k, headers=h or None, partition=i % PARTITIONS,
                                  on_delivery=d.tagged(i))
    flush_all(p, timeout=120)
    assert not d.failed, f"{codec}: {d.failures_summary()}"
    assert len(d.acked_ids) == PER_CODEC
    out = []
    for i, part, off, ts in d.acked_ids:
        k, v, h = sent[i]
        out.append((part, Rec(off, k, v, tuple(h), ts)))
    return out


def produce_kafka_python_codec(bootstrap, topic, codec, rng) -> list[tuple]:
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                      batch_size=262144,
                      compression_type=None if codec == "none" else codec,
                      request_timeout_ms=30000)
    try:
        futs = []
        for i in range(PER_CODEC):
            k, v, h = make_record(codec, i, rng)
            ts = int(time.time() * 1000)
            futs.append((k, v, h, ts, p.send(topic, key=k, value=v, headers=h,
                                             partition=i % PARTITIONS, timestamp_ms=ts)))
        p.flush(timeout=120)
        out = []
        for k, v, h, ts, f in futs:
            md = f.get(timeout=60)
            out.append((md.partition, Rec(md.offset, k, v, tuple(h), ts)))
        return out
    finally:
        p.close(timeout=10)


# ======================================================================= tests
def commit_offsets(bootstrap: str, group: str, topic: str, positions: dict[int, int]) -> None:
    """Commits `positions` for `group` as a consumer outside any generation does."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p, off, metadata=f"m{p}") for p, off in positions.items()]
        for tp in c.commit(offsets=tps, asynchronous=False):
            assert tp.error is None, tp
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets (OffsetFetch), checking each one's metadata."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=15)
    finally:
        c.close()
    for tp in got:
        assert tp.error is None and tp.metadata == f"m{tp.partition}", tp
    return {tp.partition: tp.offset for tp in got}


def test_200k_records_in_s3_read_back_and_recovered_on_an_empty_disk(bucket, start_broker):
    from kafka import codec as kc
    if not (kc.has_snappy() and kc.has_lz4() and kc.has_zstd()):
        pytest.skip("kafka-python lacks a codec package (python-snappy, lz4, zstandard)")
    moto, s3, bucket_name, prefix = bucket
    t0 = time.monotonic()
    flags = s3_flags(bucket_name, prefix, moto.endpoint)
    b = start_broker(*flags, "--wal-segment-bytes", str(SEGMENT_BYTES), name="first")

    topic = unique_topic("s3-tiered")
    create_topic(b.bootstrap, topic, PARTITIONS)  # default retention.ms (7 days): timestamps are now
    side = unique_topic("s3-side")  # an empty topic with a config: its metadata must come back too
    create_topic(b.bootstrap, side, 3, config={"retention.ms": "-1", "max.message.bytes": "2000000"})

    # ---- produce 200,000 records, every partition gets every codec
    rng = random.Random(20240611)
    produced: list[tuple[int, Rec]] = []
    for codec, client in CODECS:
        if client == "kafka-python":
            produced += produce_kafka_python_codec(b.bootstrap, topic, codec, rng)
        else:
            produced += produce_confluent_codec(b.bootstrap, topic, codec, rng)
    expected: dict[int, list[Rec]] = {p: [] for p in range(PARTITIONS)}
    for part, rec in produced:
        expected[part].append(rec)
    for p in expected:
        expected[p].sort(key=lambda r: r.offset)
        assert_contiguous(expected[p], 0, what=f"delivery reports, partition {p}: ")
    ends = {p: len(expected[p]) for p in expected}
    assert sum(ends.values()) == TOTAL_RECORDS
    t_produced = time.monotonic()

    # ---- upload everything; the WAL is trimmed to its empty active segment
    status, body = run_indexer(b)
    assert status == 200, f"POST /v1/indexer/run: {status} {body}"
    assert set(body) >= {"uploaded", "retention"}, body
    assert body["uploaded"], f"the run sealed the active segment, so it must upload it: {body}"
    t = assert_all_uploaded(b, topic)
    assert {p: t[p]["high_watermark"] for p in t} == ends
    assert all(t[p]["segment_count"] >= 1 and t[p]["segment_bytes"] > 0 for p in t), t
    assert metric(b, "strata_upload_failures_total") == 0

    # ---- the objects are in the bucket, under the prefix, one incarnation
    objects = bucket_objects(s3, bucket_name, prefix)
    segments = segment_objects(objects)
    assert "v2/metadata/snapshot.json" in objects, f"no metadata snapshot under {prefix}/: {sorted(objects)}"
    assert segments, f"no segment objects under {prefix}/v2/segments/: {sorted(objects)}"
    assert len(segments) >= 2, f"expected several objects with {SEGMENT_BYTES}-byte WAL segments: {segments}"
    # Objects above the threshold went up as multipart uploads (moto's ETag then ends in
    # "-<parts>"), the others with one PUT.
    big = [k for k, size in segments.items() if size >= MULTIPART_THRESHOLD]
    assert big and len(big) < len(segments), \
        f"expected objects on both sides of the multipart threshold: {segments}"
    for k in segments:
        etag = s3.head_object(Bucket=bucket_name, Key=f"{prefix}/{k}")["ETag"].strip('"')
        assert ("-" in etag) == (k in big), f"{k} ({segments[k]} bytes): ETag {etag}"
    incarnations = {re.fullmatch(SEGMENT_KEY_RE, k).group(1) for k in segments}
    assert len(incarnations) == 1, incarnations
    for u in body["uploaded"]:
        assert u["key"] in segments, f"uploaded {u['key']} is not in the bucket: {sorted(segments)}"
        assert segments[u["key"]] == u["bytes"], f"{u['key']}: {segments[u['key']]} bytes in the bucket, run said {u}"
    assert metric(b, "strata_objects_uploaded_total") == len(segments)
    assert not (set(objects) - set(segments) - {"v2/metadata/snapshot.json", "v2/metadata/offsets.json"}), \
        f"unexpected objects: {sorted(set(objects) - set(segments))}"
    t_uploaded = time.monotonic()

    # ---- read everything back from the bucket, cache wiped, with both clients
    wipe_cache(b)
    gets = metric(b, "strata_object_gets_total")
    got = consume_confluent(b.bootstrap, topic, ends, timeout=120)
    compare("confluent-kafka, cold", got, expected)
    assert metric(b, "strata_object_gets_total") >= gets + len(segments), \
        "the cold read did not GET from the bucket"
    del got
    assert any((b.data_dir / "cache").iterdir()), "the cold read left no blocks in the disk cache"
    wipe_cache(b)
    # (This read may be served by the in-memory block cache; on the fresh broker below it is
    # kafka-python that reads from the bucket first.)
    got = consume_kafka_python(b.bootstrap, topic, ends, timeout=120)
    compare("kafka-python, cold", got, expected)
    del got
    t_read = time.monotonic()

    # A consumer group commits a position in every partition (with metadata): the snapshot
    # taken at shutdown carries it to the bucket.
    group = unique_topic("s3-group")
    positions = {p: ends[p] // (p + 2) for p in range(PARTITIONS)}
    commit_offsets(b.bootstrap, group, topic, positions)
    assert committed_offsets(b.bootstrap, group, topic) == positions

    # ---- lose the disk: stop, delete the data dir, start a fresh broker on the same bucket
    b.stop()
    old_data = b.data_dir
    shutil.rmtree(old_data)
    assert not old_data.exists()
    b2 = start_broker(*flags, "--wal-segment-bytes", str(SEGMENT_BYTES), name="fresh")
    assert b2.data_dir != old_data

    # Topics, partition counts and configs are back (from the metadata snapshot).
    assert topic_partitions(b2.bootstrap, topic) == PARTITIONS
    assert topic_partitions(b2.bootstrap, side) == 3
    res = ConfigResource(ResourceType.TOPIC, side)
    admin = admin_client(b2.bootstrap)  # kept alive until the result is in
    cfg = admin.describe_configs([res], request_timeout=10)[res].result(timeout=15)
    assert cfg["retention.ms"].value == "-1" and cfg["max.message.bytes"].value == "2000000", \
        {k: cfg[k].value for k in ("retention.ms", "max.message.bytes") if k in cfg}
    for p in range(3):
        assert watermarks(b2.bootstrap, side, p) == (0, 0)
    # Every record, from the bucket (the new data dir has no WAL data and an empty cache).
    t2 = tiers(b2, topic)
    for p in range(PARTITIONS):
        assert t2[p]["high_watermark"] == ends[p] and t2[p]["remote_end_offset"] == ends[p], t2[p]
        assert watermarks(b2.bootstrap, topic, p) == (0, ends[p])
    assert metric(b2, "strata_object_gets_total") == 0
    got = consume_kafka_python(b2.bootstrap, topic, ends, timeout=120)
    compare("kafka-python, after recovery on an empty disk", got, expected)
    del got
    assert metric(b2, "strata_object_gets_total") >= len(segments), "the read did not GET from the bucket"
    wipe_cache(b2)
    got = consume_confluent(b2.bootstrap, topic, ends, timeout=120)
    compare("confluent-kafka, after recovery on an empty disk", got, expected)
    del got
    # The group's committed offsets are back, with their metadata.
    assert committed_offsets(b2.bootstrap, group, topic) == positions

    # New produce continues at the old high watermark, and its object goes under a new
    # incarnation: the objects of the lost disk are neither overwritten nor removed.
    d = Deliveries()
    p2 = confluent_producer(b2.bootstrap, **{"acks": "all", "compression.type": "zstd"})
    new = {}
    for p in range(PARTITIONS):
        for j in range(3):
            v = f"after recovery {p}/{j}".encode()
            new[(p, j)] = v
            p2.produce(topic, v, key=b"new", partition=p, headers=[("j", str(j).encode())],
                       on_delivery=d.tagged((p, j)))
    flush_all(p2)
    assert not d.failed, d.failures_summary()
    offsets = {ident: off for ident, _part, off, _ts in d.acked_ids}
    for (p, j), off in offsets.items():
        assert off == ends[p] + j, f"partition {p}: new record {j} got offset {off}, expected {ends[p] + j}"
    status, body2 = run_indexer(b2)
    assert status == 200 and body2["uploaded"], f"POST /v1/indexer/run on the fresh broker: {status} {body2}"
    assert_all_uploaded(b2, topic)
    segments2 = segment_objects(bucket_objects(s3, bucket_name, prefix))
    for k, size in segments.items():
        assert segments2.get(k) == size, f"{k} was changed or removed by the fresh broker"
    new_keys = set(segments2) - set(segments)
    assert new_keys and all(re.fullmatch(SEGMENT_KEY_RE, k).group(1) not in incarnations for k in new_keys), \
        f"the fresh broker's objects should be under a new incarnation: {sorted(new_keys)}"
    ends2 = {p: ends[p] + 3 for p in range(PARTITIONS)}
    wipe_cache(b2)
    tail = consume_confluent(b2.bootstrap, topic, ends2, start=ends, timeout=60)
    for p in range(PARTITIONS):
        assert [(r.offset, r.value, r.headers) for r in tail[p]] == \
            [(ends[p] + j, new[(p, j)], (("j", str(j).encode()),)) for j in range(3)], tail[p]
    t_end = time.monotonic()
    print(f"\ntimings: produce {t_produced - t0:.1f}s, upload {t_uploaded - t_produced:.1f}s, "
          f"cold reads {t_read - t_uploaded:.1f}s, recovery {t_end - t_read:.1f}s, "
          f"objects {len(segments)} ({sum(segments.values()) / 1e6:.1f} MB)")


class LoadThread:
    """An acks=all (idempotent) confluent producer, producing until stopped."""

    def __init__(self, bootstrap: str, topic: str, **conf):
        self.topic = topic
        self.p = confluent_producer(bootstrap, **{"acks": "all", "enable.idempotence": True,
                                                  "linger.ms": 5, "compression.type": "lz4",
                                                  "message.timeout.ms": 120000, **conf})
        self.d = Deliveries()
        self.sent: dict[int, tuple[bytes, bytes, list]] = {}
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="s3-load", daemon=True)

    def start(self) -> "LoadThread":
        self.thread.start()
        return self

    def _run(self) -> None:
        n = 0
        try:
            while not self.stop_flag.is_set():
                for _ in range(200):
                    key = f"k{n % 101}".encode()
                    value = f"load {n} {os.urandom(60).hex()} ".encode() * 2
                    headers = [("n", str(n).encode())]
                    self.sent[n] = (key, value, headers)
                    produce_with_backpressure(self.p, self.topic, value, key=key, headers=headers,
                                              on_delivery=self.d.tagged(n))
                    n += 1
                self.p.poll(0.01)  # ~ a few MB/s: enough WAL segments, not a flood
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def acked(self) -> int:
        return len(self.d.acked_ids)

    def stop(self, timeout: float = 90.0) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the producer thread did not stop"
        assert self.error is None, f"the producer thread failed: {self.error!r}"
        flush_all(self.p, timeout=timeout)


def wait_until(cond, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_back_acked(b, topic: str, partitions: int, acked: list[tuple], sent: dict, what: str):
    """Reads every partition from 0 (cache wiped) and checks every acknowledged record is at the
    offset its delivery report gave, identical; offsets contiguous. Returns the high watermarks."""
    ends = {p: watermarks(b.bootstrap, topic, p)[1] for p in range(partitions)}
    wipe_cache(b)
    gets = metric(b, "strata_object_gets_total")
    got = consume_confluent(b.bootstrap, topic, ends, timeout=120)
    assert metric(b, "strata_object_gets_total") > gets, f"{what}: the read did not GET from the bucket"
    for p in range(partitions):
        assert_contiguous(got[p], 0, what=f"{what}, partition {p}: ")
        assert len(got[p]) == ends[p]
    lost, wrong = [], []
    for ident, part, off, ts in acked:
        k, v, h = sent[ident]
        exp = Rec(off, k, v, tuple(h), ts)
        recs = got[part]
        if off >= len(recs):
            lost.append((ident, part, off))
        elif recs[off] != exp:
            wrong.append((recs[off], exp))
    assert not lost, f"{what}: {len(lost)} acknowledged records missing, e.g. {lost[:5]}"
    assert not wrong, f"{what}: {len(wrong)} records differ from what was acknowledged, e.g. {wrong[:2]}"
    return ends, got


# (Fixture order matters: the broker is set up last so that it is stopped first, while S3 is
# still there for its final metadata snapshot.)
def test_s3_outage_under_produce_load_then_backlog_uploads(bucket, s3_switch, start_broker):
    moto, s3, bucket_name, prefix = bucket
    b = start_broker(*s3_flags(bucket_name, prefix, s3_switch.endpoint),
                     "--wal-segment-bytes", str(1024 * 1024), name="outage")
    topic = unique_topic("s3-outage")
    create_topic(b.bootstrap, topic, 3)
    load = LoadThread(b.bootstrap, topic).start()
    try:
        # S3 up: uploads work.
        wait_until(lambda: load.acked() >= 5000, 30, "5000 acknowledged records before the outage")
        status, body = run_indexer(b)
        assert status == 200 and body["uploaded"], f"POST /v1/indexer/run before the outage: {status} {body}"
        failures0 = metric(b, "strata_upload_failures_total")

        # S3 down (open connections cut): produce is still acknowledged.
        s3_switch.off()
        # What is in the bucket now: an upload cut mid-answer may still have been stored by moto.
        time.sleep(0.5)
        before = segment_objects(bucket_objects(s3, bucket_name, prefix))
        assert before
        acked_at_off = load.acked()
        wait_until(lambda: load.acked() >= acked_at_off + 10000, 60,
                   "produce to be acknowledged while S3 is unreachable")
        wait_until(lambda: len(wal_files(b)) >= 3, 30, "sealed WAL segments piling up during the outage")
        wal_before = wal_files(b)
        started = time.monotonic()
        status, body = run_indexer(b)
        took = time.monotonic() - started
        assert status == 502, f"POST /v1/indexer/run with S3 unreachable: expected 502, got {status} {body}"
        assert isinstance(body.get("error"), str) and body["error"], body
        # Nothing trimmed: every WAL file that existed before the failed run is still there,
        # at least as large (the active one grows).
        wal_after = wal_files(b)
        missing = [f for f in wal_before if f not in wal_after or wal_after[f] < wal_before[f]]
        assert not missing, f"WAL files trimmed although nothing was uploaded: {missing} (before {wal_before}, after {wal_after})"
        assert len(wal_after) >= 3, wal_after
        assert metric(b, "strata_upload_failures_total") > failures0
        t = tiers(b, topic)
        assert all(t[p]["wal_start_offset"] < t[p]["high_watermark"] for p in t), \
            f"the records produced during the outage must still be in the WAL: {t}"
        assert segment_objects(bucket_objects(s3, bucket_name, prefix)) == before, \
            "objects appeared although S3 was switched off"
        acked_after_502 = load.acked()
        wait_until(lambda: load.acked() >= acked_after_502 + 2000, 30,
                   "produce to keep being acknowledged after the failed run")

        # S3 back: the backlog uploads, the WAL is trimmed.
        s3_switch.on()
        wait_until(lambda: load.acked() >= acked_after_502 + 5000, 30, "produce after S3 came back")
    finally:
        load.stop()
    assert not load.d.failed, load.d.failures_summary()
    status, body = run_indexer(b)
    assert status == 200, f"POST /v1/indexer/run after S3 came back: {status} {body}"
    t = assert_all_uploaded(b, topic)
    after = segment_objects(bucket_objects(s3, bucket_name, prefix))
    assert set(before) < set(after), "the backlog did not reach the bucket"
    assert metric(b, "strata_objects_uploaded_total") == len(after)
    print(f"\noutage: 502 after {took:.1f}s; {len(wal_before)} WAL files kept; "
          f"{load.acked()} records acknowledged, {len(after)} objects")

    ends, _got = read_back_acked(b, topic, 3, load.d.acked_ids, load.sent, "after the outage")
    assert sum(ends.values()) == load.acked() == len(load.sent), \
        (ends, load.acked(), len(load.sent))
    assert {p: t[p]["high_watermark"] for p in t} == ends


def uploads_in_progress(s3, bucket_name: str, prefix: str) -> list[str]:
    listed = s3.list_multipart_uploads(Bucket=bucket_name, Prefix=prefix + "/")
    return [u["Key"] for u in listed.get("Uploads", [])]


def test_a_failed_multipart_upload_is_aborted_on_s3_then_retried(bucket, start_broker):
    moto, s3, bucket_name, prefix = bucket
    b = start_broker(*s3_flags(bucket_name, prefix, moto.endpoint), "--fault-injection",
                     "--wal-segment-bytes", str(64 * 1024 * 1024), name="multipart")
    topic = unique_topic("s3-multipart")
    create_topic(b.bootstrap, topic, 1)
    # ~24 MB of incompressible values: one object above the multipart threshold, three parts.
    rng = random.Random(11)
    d = Deliveries()
    p = confluent_producer(b.bootstrap, **{"acks": "all", "linger.ms": 20, "batch.size": 262144})
    values = [rng.randbytes(1024) for _ in range(24_000)]
    for i, value in enumerate(values):
        produce_with_backpressure(p, topic, value, partition=0, on_delivery=d.tagged(i))
    flush_all(p, timeout=120)
    assert not d.failed and len(d.acked_ids) == len(values), d.failures_summary()
    assert uploads_in_progress(s3, bucket_name, prefix) == []

    # The first two PUTs pass (CreateMultipartUpload and a part), the next part fails.
    streams.set_fault(b, "object_store.put", action="error", errno="EIO", after=2)
    status, body = run_indexer(b)
    assert status == 502, f"POST /v1/indexer/run with a failing part: {status} {body}"
    faults = streams.admin_call(b, "GET", "/v1/faults")[1]
    assert faults, "the fault was cleared by something else"
    # The upload was started on S3 and aborted there. An S3 client may retry a
    # CreateMultipartUpload whose answer it did not get, starting a second upload that the
    # broker never heard of; the bucket's lifecycle rule (terraform/) removes those. So what
    # is left in progress must be no more than the uploads started beyond those aborted.
    plain = re.sub(r"\x1b\[[0-9;]*m", "", moto.log.read_text())  # werkzeug colours some
    requests = [line for line in plain.splitlines()
                if f"{prefix}/v2/segments/" in line and '"GET ' not in line]
    started = [line for line in requests if '"POST ' in line and "?uploads" in line]
    aborted = [line for line in requests
               if '"DELETE ' in line and "uploadId=" in line and '" 204 ' in line]
    assert aborted, f"no AbortMultipartUpload answered by S3: {requests}"
    left = uploads_in_progress(s3, bucket_name, prefix)
    assert len(left) <= len(started) - len(aborted), \
        f"the failed multipart upload was left on S3: {left}, requests {requests}"
    assert segment_objects(bucket_objects(s3, bucket_name, prefix)) == {}
    assert tiers(b, topic)[0]["wal_start_offset"] == 0, "trimmed although nothing was uploaded"

    # The background indexer retries too; whichever run gets there, the object goes up whole.
    streams.clear_faults(b)
    status, body = run_indexer(b)
    assert status == 200, f"the retry: {status} {body}"
    assert len(uploads_in_progress(s3, bucket_name, prefix)) <= len(left)
    objects = segment_objects(bucket_objects(s3, bucket_name, prefix))
    assert len(objects) == 1 and max(objects.values()) > MULTIPART_THRESHOLD, objects
    (key,) = objects
    etag = s3.head_object(Bucket=bucket_name, Key=f"{prefix}/{key}")["ETag"]
    assert re.search(r"-\d+\"?$", etag), f"not a multipart object: ETag {etag}"
    assert_all_uploaded(b, topic)
    got = consume_confluent(b.bootstrap, topic, {0: len(values)})
    assert [r.value for r in got[0]] == values


def test_wal_disk_budget_during_outage_refuses_produce_retriably(bucket, s3_switch, start_broker):
    from kafka.errors import KafkaStorageError
    moto, s3, bucket_name, prefix = bucket
    budget = 2_000_000
    b = start_broker(*s3_flags(bucket_name, prefix, s3_switch.endpoint),
                     "--wal-disk-bytes-max", str(budget), "--wal-segment-bytes", "262144",
                     name="budget")
    topic = unique_topic("s3-budget")
    create_topic(b.bootstrap, topic, 2)
    s3_switch.off()

    # A producer that does not retry, so the broker's error reaches the delivery report.
    d = Deliveries()
    p = confluent_producer(b.bootstrap, **{"acks": "all", "retries": 0, "linger.ms": 5,
                                           "enable.idempotence": False})
    sent: dict[int, tuple] = {}
    n = 0
    refused = None
    deadline = time.monotonic() + 60
    while refused is None and n < 100_000 and time.monotonic() < deadline:
        for _ in range(100):
            key, value, headers = f"b{n}".encode(), f"budget {n} ".encode() * 40, [("n", str(n).encode())]
            sent[n] = (key, value, headers)
            produce_with_backpressure(p, topic, value, key=key, headers=headers,
                                      partition=n % 2, on_delivery=d.tagged(n))
            n += 1
        flush_all(p, timeout=30)
        if d.failed:
            refused = d.failed[0][3]
    assert refused is not None, f"produce was never refused: {n} records, {len(d.acked_ids)} acknowledged, " \
                                f"WAL {sum(wal_files(b).values())} bytes, budget {budget}"
    codes = {e.code() for *_x, e in d.failed}
    assert codes == {KafkaError.KAFKA_STORAGE_ERROR}, d.failures_summary()
    # KAFKA_STORAGE_ERROR (56) is retriable: clients retry it.
    assert KafkaStorageError.errno == 56 and KafkaStorageError.retriable
    assert len(d.acked_ids) * len(sent[0][1]) >= budget // 2, "produce was refused well before the budget"
    assert sum(wal_files(b).values()) >= budget
    # Refused records take no offsets: the acknowledged ones are exactly [0, high watermark).
    hw = {q: watermarks(b.bootstrap, topic, q)[1] for q in range(2)}
    assert sum(hw.values()) == len(d.acked_ids), (hw, len(d.acked_ids))

    # A producer with default retries keeps trying while the WAL is full ...
    d2 = Deliveries()
    p2 = confluent_producer(b.bootstrap, **{"acks": "all", "enable.idempotence": True,
                                            "message.timeout.ms": 120000, "retry.backoff.ms": 200})
    for j in range(100):
        key, value, headers = f"r{j}".encode(), f"retried {j}".encode(), [("j", str(j).encode())]
        sent[("r", j)] = (key, value, headers)
        p2.produce(topic, value, key=key, headers=headers, partition=j % 2, on_delivery=d2.tagged(("r", j)))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        p2.poll(0.1)
    assert not d2.acked_ids and not d2.failed, \
        f"while the WAL is over budget nothing should be acknowledged: {len(d2.acked_ids)} acked, {d2.failures_summary()}"

    # ... and gets through once S3 is back and the backlog is uploaded.
    s3_switch.on()
    status, body = run_indexer(b)
    assert status == 200, f"POST /v1/indexer/run after S3 came back: {status} {body}"
    flush_all(p2, timeout=90)
    assert not d2.failed and len(d2.acked_ids) == 100, d2.failures_summary()
    for ident, part, off, _ts in d2.acked_ids:
        assert off >= hw[part], f"a retried record landed at {off}, below the old high watermark {hw[part]}"
    status, body = run_indexer(b)
    assert status == 200, f"{status} {body}"
    assert_all_uploaded(b, topic)

    ends, got = read_back_acked(b, topic, 2, d.acked_ids + d2.acked_ids, sent, "after the WAL budget outage")
    assert sum(ends.values()) == len(d.acked_ids) + 100
    refused_values = {sent[i][1] for i in d.failed_ids}
    stored_refused = [r for recs in got.values() for r in recs if r.value in refused_values]
    assert not stored_refused, f"{len(stored_refused)} refused records were stored, e.g. {stored_refused[:3]}"
