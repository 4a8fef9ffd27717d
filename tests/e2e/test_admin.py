"""Metadata and admin APIs through real clients: list_topics, CreateTopics (and its
errors), DeleteTopics, CreatePartitions, DescribeConfigs, DescribeCluster, auto-creation,
message.max.bytes, and consumers at the edges of the log."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import ConfigResource, NewPartitions, NewTopic, ResourceType

from helpers import (Deliveries, admin_client, confluent_consumer, confluent_producer,
                     consume_confluent, consume_kafka_python, create_topic, flush_all,
                     topic_partitions, unique_topic, wait_for_topic, watermarks)


def test_metadata_lists_topics_partitions_and_advertised_address(broker):
    names = {unique_topic("md"): n for n in (1, 3, 8)}
    for name, n in names.items():
        create_topic(broker.bootstrap, name, n)
    md = admin_client(broker.bootstrap).list_topics(timeout=10)
    for name, n in names.items():
        assert name in md.topics, f"{name} missing from Metadata"
        t = md.topics[name]
        assert t.error is None
        assert sorted(t.partitions) == list(range(n))
        for p in t.partitions.values():
            assert p.error is None
            assert p.leader in md.brokers, f"partition {p.id} leader {p.leader} is not a listed broker"
    assert len(md.brokers) == 1
    (b,) = md.brokers.values()
    assert (b.host, b.port) == (broker.kafka_host, broker.kafka_port), \
        f"advertised {b.host}:{b.port}, clients connect to {broker.bootstrap}"
    assert md.controller_id in md.brokers or md.controller_id == -1

    # kafka-python sees the same.
    from kafka import KafkaConsumer
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        for name, n in names.items():
            assert c.partitions_for_topic(name) == set(range(n))
    finally:
        c.close()


def test_create_existing_topic_fails_with_topic_already_exists(broker):
    name = unique_topic("dup")
    create_topic(broker.bootstrap, name, 2)
    a = admin_client(broker.bootstrap)  # keep a reference: the futures die with the client
    fs = a.create_topics([NewTopic(name, 5, 1)], request_timeout=10)
    with pytest.raises(KafkaException) as ei:
        fs[name].result(timeout=15)
    assert ei.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, str(ei.value)
    assert topic_partitions(broker.bootstrap, name) == 2, "the failed create changed the topic"

    from kafka.admin import KafkaAdminClient, NewTopic as KNewTopic
    from kafka.errors import TopicAlreadyExistsError
    ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        with pytest.raises(TopicAlreadyExistsError):
            ka.create_topics([KNewTopic(name, 3, 1)])
    finally:
        ka.close()


def test_create_topic_invalid_partitions(broker):
    name = unique_topic("bad")
    a = admin_client(broker.bootstrap)
    fs = a.create_topics([NewTopic(name, 0, 1)], request_timeout=10)
    with pytest.raises(KafkaException) as ei:
        fs[name].result(timeout=15)
    assert ei.value.args[0].code() == KafkaError.INVALID_PARTITIONS, str(ei.value)
    assert topic_partitions(broker.bootstrap, name) is None


def test_delete_topic_removes_it_and_its_data(start_broker):
    b = start_broker("--auto-create-topics", "false")
    name = unique_topic("del")
    create_topic(b.bootstrap, name, 2)
    p = confluent_producer(b.bootstrap)
    for i in range(100):
        p.produce(name, f"old-{i}".encode(), partition=i % 2)
    flush_all(p)
    a = admin_client(b.bootstrap)
    a.delete_topics([name], request_timeout=10)[name].result(timeout=15)
    deadline = time.monotonic() + 15
    while topic_partitions(b.bootstrap, name, admin=a) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert topic_partitions(b.bootstrap, name, admin=a) is None, "deleted topic still in Metadata"
    assert name not in a.list_topics(timeout=10).topics

    # Deleting it again: UNKNOWN_TOPIC_OR_PART.
    with pytest.raises(KafkaException) as ei:
        a.delete_topics([name], request_timeout=10)[name].result(timeout=15)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, str(ei.value)

    # Produce to it fails (auto-creation is off).
    d = Deliveries()
    p2 = confluent_producer(b.bootstrap, **{"message.timeout.ms": 3000})
    p2.produce(name, b"x", on_delivery=d)
    p2.flush(10)
    assert d.failed and not d.acked, "produce to a deleted topic succeeded"

    # Re-created under the same name it starts empty: no old data comes back.
    create_topic(b.bootstrap, name, 2)
    assert watermarks(b.bootstrap, name, 0) == (0, 0)
    assert watermarks(b.bootstrap, name, 1) == (0, 0)
    # ... also after a restart.
    b.restart()
    assert watermarks(b.bootstrap, name, 0) == (0, 0)
    assert watermarks(b.bootstrap, name, 1) == (0, 0)


def test_describe_configs(broker):
    name = unique_topic("cfg")
    create_topic(broker.bootstrap, name, 1, config={"retention.ms": "3600000"})
    a = admin_client(broker.bootstrap)
    res = ConfigResource(ResourceType.TOPIC, name)
    cfg = a.describe_configs([res], request_timeout=10)[res].result(timeout=15)
    assert "retention.ms" in cfg, f"retention.ms missing; got {sorted(cfg)}"
    assert cfg["retention.ms"].value == "3600000", "the config given at creation"
    for key in ("cleanup.policy", "max.message.bytes", "retention.bytes", "segment.bytes"):
        if key in cfg:
            assert cfg[key].value is not None, key
    # A topic created without configs reports defaults.
    name2 = unique_topic("cfg")
    create_topic(broker.bootstrap, name2, 1)
    res2 = ConfigResource(ResourceType.TOPIC, name2)
    cfg2 = a.describe_configs([res2], request_timeout=10)[res2].result(timeout=15)
    assert "retention.ms" in cfg2
    assert int(cfg2["retention.ms"].value) != 0
    # Unknown topic: an error, not an empty success.
    res3 = ConfigResource(ResourceType.TOPIC, "no-such-" + name)
    with pytest.raises(KafkaException):
        a.describe_configs([res3], request_timeout=10)[res3].result(timeout=15)


def test_describe_cluster(broker):
    a = admin_client(broker.bootstrap)
    desc = a.describe_cluster(request_timeout=10).result(timeout=15)
    assert len(desc.nodes) == 1
    node = desc.nodes[0]
    assert (node.host, node.port) == (broker.kafka_host, broker.kafka_port)
    assert desc.cluster_id, "empty cluster id"
    assert desc.controller is not None


def test_create_partitions(broker):
    name = unique_topic("grow")
    create_topic(broker.bootstrap, name, 1)
    a = admin_client(broker.bootstrap)
    a.create_partitions([NewPartitions(name, 4)], request_timeout=10)[name].result(timeout=15)
    wait_for_topic(broker.bootstrap, name, 4, timeout=15)
    d = Deliveries()
    p = confluent_producer(broker.bootstrap, **{"topic.metadata.refresh.interval.ms": 500})
    for part in range(4):
        p.produce(name, f"p{part}".encode(), partition=part, on_delivery=d)
    flush_all(p)
    assert not d.failed, d.failures_summary()
    assert sorted((pp, off) for _k, _v, pp, off, _t in d.acked) == [(0, 0), (1, 0), (2, 0), (3, 0)]
    # Shrinking is refused.
    with pytest.raises(KafkaException):
        a.create_partitions([NewPartitions(name, 2)], request_timeout=10)[name].result(timeout=15)
    assert topic_partitions(broker.bootstrap, name) == 4


def test_auto_create_topics_with_default_partitions(start_broker):
    b = start_broker("--auto-create-topics", "true", "--default-partitions", "4")
    name = unique_topic("auto")
    d = Deliveries()
    p = confluent_producer(b.bootstrap)
    p.produce(name, b"hello", on_delivery=d)
    flush_all(p, timeout=30)
    assert not d.failed, d.failures_summary()
    assert topic_partitions(b.bootstrap, name) == 4


def test_auto_create_off(start_broker):
    b = start_broker("--auto-create-topics", "false")
    name = unique_topic("noauto")
    d = Deliveries()
    p = confluent_producer(b.bootstrap, **{"message.timeout.ms": 3000})
    p.produce(name, b"hello", on_delivery=d)
    p.flush(10)
    assert d.failed and not d.acked
    assert topic_partitions(b.bootstrap, name) is None


@pytest.mark.parametrize("shape", ["one-large-record", "large-batch-of-small-records"])
def test_message_larger_than_max_bytes_rejected_and_not_stored(start_broker, shape):
    b = start_broker("--message-max-bytes", "10000")
    name = unique_topic("big")
    create_topic(b.bootstrap, name, 1)
    d = Deliveries()
    p = confluent_producer(b.bootstrap, **{"linger.ms": 200, "batch.size": 1_000_000,
                                           "message.timeout.ms": 10000})
    if shape == "one-large-record":
        p.produce(name, b"x" * 20_000, partition=0, on_delivery=d)
        n = 1
    else:
        n = 100
        for i in range(n):
            p.produce(name, (f"{i:04d}" * 125).encode(), partition=0, on_delivery=d)  # 500 B each
    p.flush(20)
    assert not d.acked, f"{len(d.acked)} records of an oversized batch were acked"
    assert len(d.failed) == n
    codes = {e.code() for *_, e in d.failed}
    assert codes == {KafkaError.MSG_SIZE_TOO_LARGE}, f"errors: {d.failures_summary()}"
    assert watermarks(b.bootstrap, name, 0) == (0, 0), "something of the rejected batch was stored"
    # A record under the limit goes through at offset 0.
    d2 = Deliveries()
    p.produce(name, b"small", partition=0, on_delivery=d2)
    flush_all(p)
    assert not d2.failed and d2.acked[0][3] == 0

    # kafka-python gets MessageSizeTooLargeError too.
    from kafka import KafkaProducer
    from kafka.errors import MessageSizeTooLargeError
    kp = KafkaProducer(bootstrap_servers=b.bootstrap, acks="all", max_request_size=1_000_000)
    try:
        with pytest.raises(MessageSizeTooLargeError):
            kp.send(name, b"y" * 20_000, partition=0).get(timeout=30)
    finally:
        kp.close(timeout=10)
    assert watermarks(b.bootstrap, name, 0) == (0, 1)


def test_consumer_out_of_range_resets_to_earliest(broker):
    name = unique_topic("oor")
    create_topic(broker.bootstrap, name, 1)
    p = confluent_producer(broker.bootstrap)
    for i in range(10):
        p.produce(name, f"v{i}".encode(), partition=0)
    flush_all(p)
    # librdkafka: an out-of-range fetch offset resets by auto.offset.reset.
    got = consume_confluent(broker.bootstrap, name, {0: 10}, start=1000, expect_reset=True,
                            **{"auto.offset.reset": "earliest"})
    assert [r.value for r in got[0]] == [f"v{i}".encode() for i in range(10)]
    # With reset disabled the client reports the out-of-range error.
    c = confluent_consumer(broker.bootstrap, **{"auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(name, 0, 1000)])
        err = None
        deadline = time.monotonic() + 15
        while err is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error():
                err = m.error()
            elif m is not None:
                raise AssertionError(f"got a record at offset {m.offset()} from out-of-range offset 1000")
        assert err is not None, "no error for an out-of-range offset"
        assert err.code() == KafkaError._AUTO_OFFSET_RESET, str(err)
    finally:
        c.close()
    # kafka-python, reset to earliest.
    got = consume_kafka_python(broker.bootstrap, name, {0: 10}, start=1000, expect_reset=True,
                               auto_offset_reset="earliest")
    assert [r.value for r in got[0]] == [f"v{i}".encode() for i in range(10)]


def test_consumer_on_empty_partition_waits_without_errors(broker):
    """An empty partition fetches cleanly (no 'invalid MessageSetSize'); a record produced
    later arrives."""
    name = unique_topic("empty")
    create_topic(broker.bootstrap, name, 1)
    c = confluent_consumer(broker.bootstrap, **{"fetch.wait.max.ms": 100})
    try:
        c.assign([TopicPartition(name, 0, 0)])
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            m = c.poll(0.2)
            assert m is None or (m.error() and m.error().code() == KafkaError._PARTITION_EOF), \
                f"on an empty partition: {m.error() if m and m.error() else m}"
        p = confluent_producer(broker.bootstrap)
        p.produce(name, b"late", partition=0)
        flush_all(p)
        got = None
        deadline = time.monotonic() + 15
        while got is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                assert not m.error(), str(m.error())
                got = m
        assert got is not None and (got.offset(), got.value()) == (0, b"late")
    finally:
        c.close()


def test_admin_health_endpoint(broker):
    status, _ = broker.http_get("/health/ready")
    assert status == 200
