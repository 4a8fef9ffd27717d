#!/usr/bin/env python3
"""Smoke test of a running strata broker on S3 (MinIO, LocalStack, moto or AWS):

1. creates a topic and produces records to it (acks=all);
2. forces an upload: POST /v1/indexer/run on the admin API (seals the active WAL segment,
   uploads it to the bucket, trims the WAL);
3. checks GET /v1/topics/{topic}/partitions: every partition's records are all in the bucket
   (remote_end_offset == high_watermark) and none is left in the WAL
   (wal_start_offset == high_watermark);
4. consumes every record from offset 0, which can only come from the bucket now, compares them
   with what was produced, and checks that the broker's strata_object_gets_total went up.

Needs confluent-kafka (`pip install confluent-kafka`, present in .venv and .venv-ls).
Exits 0 and prints `smoke: ok` on success; otherwise prints what differed and exits 1.

    localstack/smoke.py --bootstrap 127.0.0.1:9092 --admin http://127.0.0.1:9080
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 120.0


class SmokeError(Exception):
    pass


def admin_call(base: str, method: str, path: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(base.rstrip("/") + path, method=method,
                                     data=b"" if method == "POST" else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def admin_json(base: str, method: str, path: str, token: str | None) -> dict:
    status, body = admin_call(base, method, path, token)
    if status != 200:
        raise SmokeError(f"{method} {path} answered {status}: {body}")
    return json.loads(body)


def object_gets(base: str, token: str | None) -> int:
    status, body = admin_call(base, "GET", "/metrics", token)
    if status != 200:
        raise SmokeError(f"GET /metrics answered {status}: {body}")
    for line in body.splitlines():
        if line.startswith("strata_object_gets_total "):
            return int(float(line.split()[1]))
    raise SmokeError("GET /metrics has no strata_object_gets_total")


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the answer
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)],
        request_timeout=TIMEOUT_S)
    futures[topic].result(timeout=TIMEOUT_S)


def produce(bootstrap: str, topic: str, partitions: int, count: int) -> dict[tuple[int, int], bytes]:
    """Produces `count` records round-robin; returns {(partition, offset): value}."""
    acked: dict[tuple[int, int], bytes] = {}
    failed: list[str] = []

    def on_delivery(error, message):
        if error is not None:
            failed.append(str(error))
        else:
            acked[(message.partition(), message.offset())] = message.value()

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "compression.type": "zstd"})
    for i in range(count):
        value = f"smoke record {i} ".encode() * (1 + i % 7)
        producer.produce(topic, value, key=str(i).encode(), partition=i % partitions,
                         on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(TIMEOUT_S)
    if left or failed or len(acked) != count:
        raise SmokeError(f"produce: {len(acked)} of {count} acknowledged, {left} in flight, "
                         f"errors: {failed[:3]}")
    return acked


def check_tiers(admin: str, topic: str, token: str | None, ends: dict[int, int]) -> None:
    doc = admin_json(admin, "GET", f"/v1/topics/{topic}/partitions", token)
    for p in doc["partitions"]:
        hw = p["high_watermark"]
        print(f"smoke: partition {p['partition']}: high watermark {hw}, bucket up to "
              f"{p['remote_end_offset']} in {p['segment_count']} object(s), WAL from "
              f"{p['wal_start_offset']}")
        if hw != ends[p["partition"]]:
            raise SmokeError(f"partition {p['partition']}: high watermark {hw}, "
                             f"expected {ends[p['partition']]}")
        if p["remote_end_offset"] != hw or p["wal_start_offset"] != hw or p["segment_count"] < 1:
            raise SmokeError(f"partition {p['partition']} is not wholly in the bucket: {p}")


def consume(bootstrap: str, topic: str, ends: dict[int, int]) -> dict[tuple[int, int], bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"smoke-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "error",
                         "enable.partition.eof": True, "check.crcs": True})
    got: dict[tuple[int, int], bytes] = {}
    todo = {p for p, end in ends.items() if end > 0}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in sorted(todo)])
        deadline = time.monotonic() + TIMEOUT_S
        while todo and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise SmokeError(f"consume: {m.error()}")
                got[(m.partition(), m.offset())] = m.value()
                if m.offset() >= ends[m.partition()] - 1:
                    todo.discard(m.partition())
    finally:
        consumer.close()
    if todo:
        raise SmokeError(f"consume: partitions {sorted(todo)} not read to the end in {TIMEOUT_S} s")
    return got


def run(args: argparse.Namespace) -> None:
    token = args.admin_token or None
    topic = args.topic or f"smoke-{uuid.uuid4().hex[:12]}"
    print(f"smoke: topic {topic} on {args.bootstrap}, admin {args.admin}", flush=True)
    create_topic(args.bootstrap, topic, args.partitions)
    produced = produce(args.bootstrap, topic, args.partitions, args.records)
    ends = {p: 0 for p in range(args.partitions)}
    for (p, offset) in produced:
        ends[p] = max(ends[p], offset + 1)
    print(f"smoke: produced {len(produced)} records, ends {ends}")

    run_doc = admin_json(args.admin, "POST", "/v1/indexer/run", token)
    uploaded = run_doc.get("uploaded", [])
    print(f"smoke: indexer run uploaded {len(uploaded)} object(s)")
    check_tiers(args.admin, topic, token, ends)

    gets_before = object_gets(args.admin, token)
    consumed = consume(args.bootstrap, topic, ends)
    gets_after = object_gets(args.admin, token)
    if consumed != produced:
        missing = sorted(set(produced) - set(consumed))[:5]
        differ = sorted(k for k in produced if k in consumed and consumed[k] != produced[k])[:5]
        raise SmokeError(f"consume: {len(consumed)} records read back, {len(produced)} produced; "
                         f"missing {missing}, different {differ}")
    if gets_after <= gets_before:
        raise SmokeError(f"consume: strata_object_gets_total stayed at {gets_before}: "
                         "the records did not come from the bucket")
    print(f"smoke: consumed {len(consumed)} records from the bucket "
          f"({gets_after - gets_before} ranged GETs), identical to those produced")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap address")
    parser.add_argument("--admin", default="http://127.0.0.1:9080", help="admin API base URL")
    parser.add_argument("--admin-token", default=os.environ.get("STRATA_ADMIN_TOKEN", ""),
                        help="admin API token (default: $STRATA_ADMIN_TOKEN)")
    parser.add_argument("--topic", default="", help="topic to create (default: a new name)")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    try:
        run(args)
    except (SmokeError, Exception) as error:  # noqa: BLE001 - every failure is reported the same way
        print(f"smoke: FAILED: {error}", file=sys.stderr)
        return 1
    print("smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
