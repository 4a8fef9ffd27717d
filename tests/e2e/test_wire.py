"""Raw-socket checks of wire-protocol details that real clients depend on (see
shared traps): ApiVersions framing and contents, offsets assigned by the broker, several
batches in one Produce, batches stored as formed, CRC checks, empty record sets, offsets out
of range, response order on a pipelined connection, producer ids across restarts."""

from __future__ import annotations

import time

import pytest

import wire
from helpers import create_topic, unique_topic

IMPLEMENTED = {
    wire.PRODUCE, wire.FETCH, wire.LIST_OFFSETS, wire.METADATA, wire.API_VERSIONS,
    wire.CREATE_TOPICS, wire.DELETE_TOPICS, wire.INIT_PRODUCER_ID, wire.OFFSET_FOR_LEADER_EPOCH,
    wire.DESCRIBE_CONFIGS, wire.CREATE_PARTITIONS, wire.DESCRIBE_CLUSTER,
    wire.OFFSET_COMMIT, wire.OFFSET_FETCH, wire.FIND_COORDINATOR, wire.JOIN_GROUP, wire.HEARTBEAT,
    wire.LEAVE_GROUP, wire.SYNC_GROUP, wire.DESCRIBE_GROUPS, wire.LIST_GROUPS,
    wire.SASL_HANDSHAKE, wire.SASL_AUTHENTICATE, wire.DESCRIBE_USER_SCRAM_CREDENTIALS,
    wire.ALTER_USER_SCRAM_CREDENTIALS,
}
# Not implemented yet (per the broker's contract): must not be advertised. Move a key from
# here to IMPLEMENTED when the broker gains it.
NOT_IMPLEMENTED = {
    wire.ADD_PARTITIONS_TO_TXN, wire.ADD_OFFSETS_TO_TXN, wire.END_TXN, wire.TXN_OFFSET_COMMIT,
}


def api_versions(bootstrap: str) -> dict[int, tuple[int, int]]:
    with wire.Conn(bootstrap) as c:
        corr, err, apis = wire.parse_api_versions_v0(c.roundtrip(wire.api_versions_v0(11)))
    assert (corr, err) == (11, 0)
    return apis


def need_version(apis, key: int, version: int, name: str) -> None:
    lo, hi = apis.get(key, (1, 0))
    if not lo <= version <= hi:
        pytest.skip(f"broker does not advertise {name} v{version} (range {lo}..{hi}); raw test needs it")


def test_api_versions_v0_lists_what_is_implemented_only(broker):
    apis = api_versions(broker.bootstrap)
    missing = IMPLEMENTED - set(apis)
    assert not missing, f"ApiVersions does not list implemented APIs {sorted(missing)}"
    extra = NOT_IMPLEMENTED & set(apis)
    assert not extra, f"ApiVersions advertises APIs the broker does not implement: {sorted(extra)}"
    for k, (lo, hi) in apis.items():
        assert 0 <= lo <= hi, f"api {k}: bad range {lo}..{hi}"


def test_api_versions_v3_flexible_request_gets_v0_response_header(broker):
    """KIP-482/511: the ApiVersions response header is v0 even for a flexible request."""
    with wire.Conn(broker.bootstrap) as c:
        payload = c.roundtrip(wire.api_versions_v3(21))
    corr, err, apis = wire.parse_api_versions_v3(payload)
    assert corr == 21
    assert err == 0, f"error {err} (a stray tagged-field byte in the response header shifts this)"
    assert wire.API_VERSIONS in apis and wire.PRODUCE in apis and wire.FETCH in apis


def test_api_versions_unsupported_version_answers_v0_error_and_list(broker):
    """KIP-511: an ApiVersions request at a version the broker does not know gets a v0
    response with UNSUPPORTED_VERSION and the broker's list, so the client can downgrade."""
    with wire.Conn(broker.bootstrap) as c:
        payload = c.roundtrip(wire.request(wire.API_VERSIONS, 127, 31, b"\x00\x00\x00", flexible=True))
    corr, err, apis = wire.parse_api_versions_v0(payload)
    assert corr == 31
    assert err == wire.UNSUPPORTED_VERSION
    assert wire.API_VERSIONS in apis


def _raw_produce(bootstrap, topic, partition, records, acks=-1, corr=41):
    with wire.Conn(bootstrap) as c:
        corr_back, res = wire.parse_produce_v3(c.roundtrip(wire.produce_v3(corr, topic, partition, records, acks)))
    assert corr_back == corr
    assert len(res) == 1 and res[0][:2] == (topic, partition)
    return res[0][2], res[0][3]  # error_code, base_offset


def _raw_fetch_all(bootstrap, topic, partition, offset=0):
    with wire.Conn(bootstrap) as c:
        _, parts = wire.parse_fetch_v4(c.roundtrip(wire.fetch_v4(51, topic, partition, offset, max_wait_ms=100, min_bytes=1)))
    assert len(parts) == 1
    return parts[0]


def test_produce_two_batches_in_one_request_offsets_assigned_by_broker(broker):
    """Two batches in one records field (both must be stored), the client's base_offset
    (12345) ignored, and each batch served back byte for byte except base_offset and the
    partition leader epoch, which lie outside the CRC."""
    apis = api_versions(broker.bootstrap)
    need_version(apis, wire.PRODUCE, 3, "Produce")
    need_version(apis, wire.FETCH, 4, "Fetch")
    topic = unique_topic("raw")
    create_topic(broker.bootstrap, topic, 1)
    ts = int(time.time() * 1000)
    b1 = wire.build_batch([wire.RawRecord(b"k1", b"v1", [("h", b"x")]),
                           wire.RawRecord(None, b"v2", [], 5),
                           wire.RawRecord(b"k3", None, [("n", None)], 9)],
                          base_offset=12345, base_timestamp=ts)
    b2 = wire.build_batch([wire.RawRecord(b"k4", b"", [], 0), wire.RawRecord(b"k5", b"v5" * 100)],
                          base_offset=777, base_timestamp=ts + 100)
    err, base = _raw_produce(broker.bootstrap, topic, 0, b1 + b2)
    assert err == 0, f"produce error {err}"
    assert base == 0, f"base_offset {base}: the first record of a new partition must get offset 0"
    err, base = _raw_produce(broker.bootstrap, topic, 0, b1)
    assert (err, base) == (0, 5)

    fp = _raw_fetch_all(broker.bootstrap, topic, 0)
    assert fp.error_code == 0
    assert fp.high_watermark == 8
    batches = wire.parse_batches(fp.records)
    assert [b.base_offset for b in batches] == [0, 3, 5], "each produced batch served as its own batch"
    for got, sent in zip(batches, [b1, b2, b1]):
        assert got.crc_ok
        assert got.raw[8:12] == sent[8:12], "batch length changed"
        assert got.raw[16:] == sent[16:], "batch re-encoded: bytes from magic on differ"
    recs = [r for b in batches for r in b.records()]
    assert [(o, k, v, h) for o, _ts, k, v, h in recs] == [
        (0, b"k1", b"v1", [("h", b"x")]), (1, None, b"v2", []), (2, b"k3", None, [("n", None)]),
        (3, b"k4", b"", []), (4, b"k5", b"v5" * 100, []),
        (5, b"k1", b"v1", [("h", b"x")]), (6, None, b"v2", []), (7, b"k3", None, [("n", None)]),
    ]
    assert [t for _o, t, *_ in recs[:3]] == [ts, ts + 5, ts + 9]


def test_produce_with_bad_crc_is_rejected_and_not_stored(broker):
    apis = api_versions(broker.bootstrap)
    need_version(apis, wire.PRODUCE, 3, "Produce")
    topic = unique_topic("raw-crc")
    create_topic(broker.bootstrap, topic, 1)
    good = wire.build_batch([wire.RawRecord(b"k", b"value")])
    bad = bytearray(good)
    bad[-1] ^= 0xFF  # flip a byte of the record: the CRC no longer matches
    err, _ = _raw_produce(broker.bootstrap, topic, 0, bytes(bad))
    assert err == wire.CORRUPT_MESSAGE, f"expected CORRUPT_MESSAGE (2), got {err}"
    crc_wrong_order = bytearray(good)
    crc_wrong_order[17:21] = crc_wrong_order[17:21][::-1]  # little-endian CRC
    err, _ = _raw_produce(broker.bootstrap, topic, 0, bytes(crc_wrong_order))
    assert err == wire.CORRUPT_MESSAGE, f"little-endian CRC accepted (error {err})"
    fp = _raw_fetch_all(broker.bootstrap, topic, 0)
    assert fp.high_watermark == 0, "a rejected batch moved the high watermark"
    err, base = _raw_produce(broker.bootstrap, topic, 0, good)
    assert (err, base) == (0, 0)


def test_fetch_empty_partition_returns_empty_not_null_records(broker):
    apis = api_versions(broker.bootstrap)
    need_version(apis, wire.FETCH, 4, "Fetch")
    topic = unique_topic("raw-empty")
    create_topic(broker.bootstrap, topic, 2)
    fp = _raw_fetch_all(broker.bootstrap, topic, 1)
    assert fp.error_code == 0
    assert fp.high_watermark == 0
    assert fp.records_len == 0, f"empty partition: records length {fp.records_len} (want 0, not null/-1)"


def test_fetch_offset_out_of_range_both_ways(broker):
    apis = api_versions(broker.bootstrap)
    need_version(apis, wire.PRODUCE, 3, "Produce")
    need_version(apis, wire.FETCH, 4, "Fetch")
    topic = unique_topic("raw-oor")
    create_topic(broker.bootstrap, topic, 1)
    err, _ = _raw_produce(broker.bootstrap, topic, 0, wire.build_batch([wire.RawRecord(b"a", b"b")] * 3))
    assert err == 0
    assert _raw_fetch_all(broker.bootstrap, topic, 0, 3).error_code == 0  # == high watermark: fine, empty
    assert _raw_fetch_all(broker.bootstrap, topic, 0, 3).records_len == 0
    for off in (4, 1000, 2**62):
        assert _raw_fetch_all(broker.bootstrap, topic, 0, off).error_code == wire.OFFSET_OUT_OF_RANGE, off
    for off in (-1, -5, -(2**62)):
        assert _raw_fetch_all(broker.bootstrap, topic, 0, off).error_code == wire.OFFSET_OUT_OF_RANGE, off
    assert _raw_fetch_all(broker.bootstrap, topic, 5, 0).error_code == wire.UNKNOWN_TOPIC_OR_PARTITION
    assert _raw_fetch_all(broker.bootstrap, "no-such-" + topic, 0, 0).error_code in (
        wire.UNKNOWN_TOPIC_OR_PARTITION, 100)  # 100 = UNKNOWN_TOPIC_ID on newer versions


def test_pipelined_requests_answered_in_order(broker):
    """Responses go out in request order even if a later request finishes first: a Fetch
    that long-polls 500 ms is followed by quick ApiVersions and Metadata requests."""
    apis = api_versions(broker.bootstrap)
    need_version(apis, wire.FETCH, 4, "Fetch")
    need_version(apis, wire.METADATA, 4, "Metadata")
    need_version(apis, wire.PRODUCE, 3, "Produce")
    topic = unique_topic("raw-order")
    create_topic(broker.bootstrap, topic, 1)
    batch = wire.build_batch([wire.RawRecord(b"k", b"v")])
    reqs = [
        wire.api_versions_v0(1),
        wire.fetch_v4(2, topic, 0, 0, max_wait_ms=500, min_bytes=1),  # empty: waits
        wire.api_versions_v0(3),
        wire.metadata_v4(4, [topic]),
        wire.produce_v3(5, topic, 0, batch, acks=-1),
        wire.api_versions_v0(6),
        wire.fetch_v4(7, topic, 0, 1, max_wait_ms=300, min_bytes=1),
        wire.metadata_v4(8, None),
    ]
    with wire.Conn(broker.bootstrap, timeout=15) as c:
        c.send(b"".join(reqs))
        order = [wire.response_correlation_id(c.recv_frame()) for _ in reqs]
    assert order == list(range(1, len(reqs) + 1)), f"responses came back in order {order}"


def test_init_producer_id_never_repeats_across_restarts(start_broker):
    b = start_broker()
    apis = api_versions(b.bootstrap)
    need_version(apis, wire.INIT_PRODUCER_ID, 1, "InitProducerId")
    seen = []
    for round_ in range(3):
        with wire.Conn(b.bootstrap) as c:
            for i in range(5):
                corr, err, pid, epoch = wire.parse_init_producer_id_v1(c.roundtrip(wire.init_producer_id_v1(60 + i)))
                assert (corr, err) == (60 + i, 0)
                assert pid >= 0 and epoch >= 0
                seen.append(pid)
        if round_ == 0:
            b.kill()       # crash
        else:
            b.stop()       # clean
        b.restart()
    assert len(set(seen)) == len(seen), f"producer ids repeated: {seen}"


def test_message_max_bytes_raw(start_broker):
    b = start_broker("--message-max-bytes", "2000")
    apis = api_versions(b.bootstrap)
    need_version(apis, wire.PRODUCE, 3, "Produce")
    topic = unique_topic("raw-big")
    create_topic(b.bootstrap, topic, 1)
    big = wire.build_batch([wire.RawRecord(b"k", b"x" * 3000)])
    err, _ = _raw_produce(b.bootstrap, topic, 0, big)
    assert err == wire.MESSAGE_TOO_LARGE, f"expected MESSAGE_TOO_LARGE (10), got {err}"
    assert _raw_fetch_all(b.bootstrap, topic, 0).high_watermark == 0
    err, base = _raw_produce(b.bootstrap, topic, 0, wire.build_batch([wire.RawRecord(b"k", b"x" * 100)]))
    assert (err, base) == (0, 0)
