"""Search over every record, through the admin HTTP API of the real binary: 50,000 JSON log
lines with a known distribution of levels, services and words, part of them uploaded to the
bucket (cold) and part still in the WAL (hot). Counts and offsets must match what was produced
in each tier and across both; a fresh record must be searchable within --search-refresh-ms
plus one second of its acknowledgement; bad queries, bad tokens, the OpenAPI document."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from helpers import confluent_producer, flush_all, produce_with_backpressure, unique_topic

TOKEN = "e2e-token-0123456789"
REFRESH_MS = 500
RECORDS = 50_000
COLD = 30_000
PARTITIONS = 2
LEVELS = ["error", "warn", "info", "debug"]
SERVICES = ["api", "db", "auth", "billing", "search"]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"]


def line(i: int) -> dict:
    """The i-th log line; level, service and word cycle with coprime periods 4, 5 and 7."""
    return {
        "kind": "log",
        "level": LEVELS[i % 4],
        "service": SERVICES[i % 5],
        "word": WORDS[i % 7],
        "seq": i,
        "msg": f"{WORDS[i % 7]} happened in {SERVICES[i % 5]}" + (" disk full" if i % 97 == 0 else ""),
    }


class Api:
    def __init__(self, broker, token: str | None = TOKEN):
        self.base = f"http://{broker.admin}"
        self.token = token

    def call(self, method: str, path: str, body=None, token: str | None = "default"):
        token = self.token if token == "default" else token
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        if token is not None:
            request.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def search(self, topic: str, q: str, **params):
        query = urllib.parse.urlencode({"topic": topic, "q": q, **params})
        status, body = self.call("GET", f"/v1/search?{query}")
        assert status == 200, f"{q!r} {params}: {status} {body}"
        return body


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A broker holding the 50,000 lines: the first 30,000 uploaded, the rest in the WAL."""
    from conftest import Broker
    b = Broker(tmp_path_factory.mktemp("search"),
               ["--search-refresh-ms", str(REFRESH_MS), "--admin-token", TOKEN,
                # Only the explicit indexer run uploads: the tier boundary stays where it was.
                "--wal-segment-ms", "3600000"], name="search")
    b.start()
    try:
        api = Api(b)
        topic = unique_topic("logs")
        status, body = api.call("POST", "/v1/topics", {
            "name": topic, "partitions": PARTITIONS, "configs": {"retention.ms": "-1"}})
        assert status == 201, body
        where: dict[int, tuple[int, int]] = {}
        p = confluent_producer(b.bootstrap, **{"linger.ms": 20, "compression.type": "lz4"})

        def produce(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                def ack(err, msg, i=i):
                    assert err is None, err
                    where[i] = (msg.partition(), msg.offset())
                produce_with_backpressure(
                    p, topic, json.dumps(line(i)).encode(), key=f"user-{i % 10}".encode(),
                    partition=i % PARTITIONS, headers=[("region", b"eu" if i % 3 == 0 else b"us")],
                    on_delivery=ack)
            flush_all(p)

        produce(0, COLD)
        status, run = api.call("POST", "/v1/indexer/run")
        assert status == 200 and run["uploaded"], run
        produce(COLD, RECORDS)
        assert len(where) == RECORDS
        status, parts = api.call("GET", f"/v1/topics/{topic}/partitions")
        assert status == 200, parts
        boundary = {p["partition"]: p["remote_end_offset"] for p in parts["partitions"]}
        assert all(boundary[p] > 0 for p in range(PARTITIONS)), parts
        # Hot records become searchable within a refresh.
        deadline = time.monotonic() + 60
        while api.search(topic, "value.kind:log", limit=0)["total"] < RECORDS:
            assert time.monotonic() < deadline, "the hot tier never became searchable"
            time.sleep(0.2)
        yield b, api, topic, where, boundary
    finally:
        b.teardown()


def expected(where, pred, partition=None, lo=None, hi=None) -> set[tuple[int, int]]:
    out = set()
    for i in range(RECORDS):
        p, o = where[i]
        if not pred(line(i)) or (partition is not None and p != partition):
            continue
        if (lo is not None and o < lo) or (hi is not None and o > hi):
            continue
        out.add((p, o))
    return out


QUERIES = [
    ("value.level:error", lambda r: r["level"] == "error"),
    ("value.level:error AND value.service:db", lambda r: r["level"] == "error" and r["service"] == "db"),
    ("value.level:error AND NOT value.service:db", lambda r: r["level"] == "error" and r["service"] != "db"),
    ("value.service:api OR value.service:auth", lambda r: r["service"] in ("api", "auth")),
    ('value.msg:"disk full"', lambda r: "disk full" in r["msg"]),
    ("charlie", lambda r: r["word"] == "charlie"),
    ("value.seq:150 OR value.seq:49999", lambda r: r["seq"] in (150, 49999)),
]


@pytest.mark.parametrize("q,pred", QUERIES, ids=[q for q, _ in QUERIES])
def test_counts_match_in_each_tier_and_across_both(loaded, q, pred):
    _, api, topic, where, boundary = loaded
    total = api.search(topic, q, limit=0)
    assert total["total"] == len(expected(where, pred)), q
    assert total["hits"] == []
    for p in range(PARTITIONS):
        cold = api.search(topic, q, partition=p, to_offset=boundary[p] - 1, limit=0)
        hot = api.search(topic, q, partition=p, from_offset=boundary[p], limit=0)
        assert cold["total"] == len(expected(where, pred, p, hi=boundary[p] - 1)), (q, p, "cold")
        assert hot["total"] == len(expected(where, pred, p, lo=boundary[p])), (q, p, "hot")
        assert cold["objects_searched"] >= 1


def test_hits_are_the_produced_records_at_their_offsets(loaded):
    _, api, topic, where, boundary = loaded
    q = "value.level:warn AND value.service:billing AND value.word:golf"
    pred = lambda r: r["level"] == "warn" and r["service"] == "billing" and r["word"] == "golf"  # noqa: E731
    want = expected(where, pred)
    assert 200 < len(want) < 1000
    body = api.search(topic, q, limit=1000, order="offset")
    assert body["total"] == len(want)
    got = [(h["partition"], h["offset"]) for h in body["hits"]]
    assert set(got) == want
    assert [o for _, o in got] == sorted(o for _, o in got), "order=offset"
    by_place = {v: i for i, v in where.items()}
    tiers = set()
    for h in body["hits"]:
        i = by_place[(h["partition"], h["offset"])]
        assert json.loads(h["value"]) == line(i) and not h["value_base64"]
        assert h["key"] == f"user-{i % 10}"
        assert h["headers"] == [{"key": "region", "value": "eu" if i % 3 == 0 else "us",
                                 "value_base64": False}]
        tiers.add(h["offset"] >= boundary[h["partition"]])
    assert tiers == {True, False}, "hits from both tiers"

    # The same search as a JSON body.
    status, posted = api.call("POST", "/v1/search", {"topic": topic, "q": q, "limit": 1000,
                                                     "order": "offset"})
    assert status == 200 and posted["hits"] == body["hits"]

    # Timestamps and a partition narrow the search.
    one = api.search(topic, q, partition=1, limit=1000)
    assert {(h["partition"], h["offset"]) for h in one["hits"]} == {x for x in want if x[0] == 1}
    future = api.search(topic, q, from_ts=int(time.time() * 1000) + 3_600_000, limit=0)
    assert future["total"] == 0


def test_score_order_is_a_global_top_n(loaded):
    _, api, topic, _, _ = loaded
    body = api.search(topic, 'value.msg:"disk full" OR charlie', limit=20)
    scores = [h["score"] for h in body["hits"]]
    assert len(scores) == 20
    assert scores == sorted(scores, reverse=True)
    # The rarer phrase scores higher than the common word: the best hits are all phrase hits.
    assert all("disk full" in h["value"] for h in body["hits"][:5])


def test_limits_and_bad_requests(loaded):
    b, api, topic, _, _ = loaded
    assert len(api.search(topic, "value.kind:log")["hits"]) == 10, "default limit"
    status, body = api.call("GET", f"/v1/search?topic={topic}&q=x&limit=1001")
    assert status == 400 and "1000" in body["error"]
    status, body = api.call("GET", f"/v1/search?topic={topic}&q=" + urllib.parse.quote("value:(unclosed"))
    assert status == 400 and body["error"], body
    status, body = api.call("GET", f"/v1/search?topic={topic}&q=" + urllib.parse.quote("value.seq:[1 TO 5]"))
    assert status == 400 and "RangeQuery" in body["error"], body
    status, body = api.call("GET", "/v1/search?topic=no-such-topic&q=x")
    assert status == 404, body
    for token in (None, "wrong-token"):
        status, body = api.call("GET", f"/v1/search?topic={topic}&q=x", token=token)
        assert status == 401 and body["error"], body
    status, _ = api.call("GET", "/health/live", token=None)
    assert status == 200


def test_single_offsets_and_sets_are_found_in_each_tier(loaded):
    _, api, topic, where, boundary = loaded
    by_place = {v: i for i, v in where.items()}
    for p in range(PARTITIONS):
        last_cold, first_hot = boundary[p] - 1, boundary[p]
        for o in (last_cold, first_hot):
            body = api.search(topic, f"offset:{o}", partition=p, limit=10)
            assert [(h["partition"], h["offset"]) for h in body["hits"]] == [(p, o)], (p, o)
            assert json.loads(body["hits"][0]["value"]) == line(by_place[(p, o)])
        both = api.search(topic, f"offset: IN [{last_cold} {first_hot}]", partition=p,
                          order="offset", limit=10)
        assert [h["offset"] for h in both["hits"]] == [last_cold, first_hot], p
        ts = both["hits"][1]["timestamp"]
        # Many records may share a millisecond: narrowed to the one offset, it is the only hit.
        at = api.search(topic, f"timestamp:{ts}", partition=p, from_offset=first_hot,
                        to_offset=first_hot)
        assert [(h["partition"], h["offset"]) for h in at["hits"]] == [(p, first_hot)]
        same_ms = api.search(topic, f"timestamp:{ts}", partition=p, limit=1000)
        assert same_ms["hits"] and all(h["timestamp"] == ts for h in same_ms["hits"])
        assert api.search(topic, f"timestamp:{ts + 3_600_000}", partition=p, limit=0)["total"] == 0
    status, body = api.call("GET", f"/v1/search?topic={topic}&q=" + urllib.parse.quote("offset:3^2"))
    assert status == 400 and "offset takes a value" in body["error"], body


def test_a_record_is_searchable_within_the_refresh_interval_plus_a_second(loaded):
    b, api, topic, _, _ = loaded
    p = confluent_producer(b.bootstrap)
    for n in range(3):
        word = f"needle{n}x{time.monotonic_ns()}"
        p.produce(topic, json.dumps({"kind": "probe", "word": word}).encode(), partition=n % 2)
        flush_all(p)
        acked = time.monotonic()
        while api.search(topic, f"value.word:{word}", limit=0)["total"] != 1:
            assert time.monotonic() - acked < 30, "never found"
            time.sleep(0.02)
        took = time.monotonic() - acked
        assert took <= REFRESH_MS / 1000 + 1.0, f"found after {took:.2f} s"


def test_binary_values_come_back_as_base64(loaded):
    b, api, topic, _, _ = loaded
    p = confluent_producer(b.bootstrap)
    raw = b"\xff\x00\xfebinary"
    p.produce(topic, raw, key=b"binkey-e2e", partition=0)
    flush_all(p)
    deadline = time.monotonic() + 30
    while (body := api.search(topic, "key:binkey-e2e"))["total"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (hit,) = body["hits"]
    assert hit["value_base64"] and base64.b64decode(hit["value"]) == raw


def test_topic_routes_use_the_kafka_paths(loaded):
    b, api, _, _, _ = loaded
    name = unique_topic("http")
    assert api.call("POST", "/v1/topics", {"name": name, "partitions": 3})[0] == 201
    status, body = api.call("POST", "/v1/topics", {"name": name, "partitions": 3})
    assert status == 409, body
    status, body = api.call("POST", "/v1/topics", {"name": "bad/name"})
    assert status == 400, body
    status, body = api.call("PATCH", f"/v1/topics/{name}/configs", {"set": {"retention.ms": "1234"}})
    assert status == 200 and body["retention.ms"] == {"value": "1234", "source": "topic"}, body
    status, body = api.call("PATCH", f"/v1/topics/{name}/configs", {"set": {"retention.ms": "soon"}})
    assert status == 400, body
    status, body = api.call("GET", f"/v1/topics/{name}")
    assert status == 200 and len(body["partitions"]) == 3
    assert body["configs"]["retention.ms"]["value"] == "1234"
    from helpers import topic_partitions
    assert topic_partitions(b.bootstrap, name) == 3, "Kafka clients see the HTTP-created topic"
    status, listed = api.call("GET", "/v1/topics")
    assert name in {t["name"] for t in listed}
    assert api.call("DELETE", f"/v1/topics/{name}")[0] == 200
    assert api.call("GET", f"/v1/topics/{name}")[0] == 404
    assert api.call("DELETE", f"/v1/topics/{name}")[0] == 404
    status, cluster = api.call("GET", "/v1/cluster")
    assert status == 200 and cluster["kafka_advertised"] == b.bootstrap and cluster["uptime_ms"] > 0


def test_segments_list_what_the_bucket_holds(loaded):
    _, api, topic, _, boundary = loaded
    status, segments = api.call("GET", f"/v1/segments?topic={topic}")
    assert status == 200 and segments, segments
    for p in range(PARTITIONS):
        mine = [s for s in segments if s["partition"] == p]
        assert mine and max(s["last_offset"] for s in mine) + 1 == boundary[p]
    status, _ = api.call("GET", f"/v1/segments?topic={topic}&partition=9")
    assert status == 404


def test_metrics_count_requests_per_api(loaded):
    b, api, _, _, _ = loaded
    status, text = b.http_get("/metrics")
    text = text.decode()
    assert status == 200
    for needle in ('strata_requests_total{api="Produce"}', 'strata_request_duration_seconds_bucket{api="Produce"',
                   "strata_wal_fsync_seconds_count", "strata_produce_bytes_total", "strata_connections",
                   "strata_indexer_lag_segments", "strata_objects_uploaded_total 1\n"):
        assert needle in text, needle


def test_the_openapi_document_validates_and_lists_every_route(loaded):
    from openapi_spec_validator import validate
    _, api, _, _, _ = loaded
    assert api.call("GET", "/v1/openapi.json", token=None)[0] == 401
    status, doc = api.call("GET", "/v1/openapi.json")
    assert status == 200
    validate(doc)
    operations = {(m.upper(), path) for path, item in doc["paths"].items() for m in item}
    for route in [("GET", "/health/live"), ("GET", "/health/ready"), ("GET", "/metrics"),
                  ("GET", "/v1/cluster"), ("GET", "/v1/topics"), ("POST", "/v1/topics"),
                  ("GET", "/v1/topics/{topic}"), ("DELETE", "/v1/topics/{topic}"),
                  ("PATCH", "/v1/topics/{topic}/configs"), ("GET", "/v1/topics/{topic}/partitions"),
                  ("GET", "/v1/segments"), ("POST", "/v1/indexer/run"), ("GET", "/v1/search"),
                  ("POST", "/v1/search"), ("GET", "/v1/groups"), ("GET", "/v1/groups/{group}"),
                  ("GET", "/v1/openapi.json")]:
        assert route in operations, route


def test_a_reachable_admin_listener_without_a_token_is_refused(tmp_path):
    import subprocess
    from conftest import strata_bin
    run = subprocess.run([str(strata_bin()), "serve", "--data-dir", str(tmp_path),
                          "--admin-listen", "0.0.0.0:0", "--kafka-listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "--admin-token" in run.stderr


def metric(broker, name: str) -> float:
    _, text = broker.http_get("/metrics")
    for row in text.decode().splitlines():
        if row.startswith(name + " "):
            return float(row.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_repeated_cold_search_reads_nothing_from_the_bucket(loaded):
    b, api, topic, _, boundary = loaded
    q = "value.level:debug AND value.word:echo"
    first = api.search(topic, q, partition=0, to_offset=boundary[0] - 1, limit=50)
    gets = metric(b, "strata_object_gets_total")
    again = api.search(topic, q, partition=0, to_offset=boundary[0] - 1, limit=50)
    assert again["hits"] == first["hits"] and again["total"] == first["total"]
    assert metric(b, "strata_object_gets_total") == gets, "the opened index and its chunks are cached"


def test_the_hot_index_is_rebuilt_from_the_wal_and_each_record_counts_once(start_broker):
    b = start_broker("--search-refresh-ms", str(REFRESH_MS), "--wal-segment-ms", "3600000")
    api = Api(b, token=None)
    topic = unique_topic("restart")
    assert api.call("POST", "/v1/topics", {"name": topic, "partitions": 1,
                                           "configs": {"retention.ms": "-1"}})[0] == 201
    p = confluent_producer(b.bootstrap)
    for i in range(500):
        p.produce(topic, json.dumps({"n": i, "tag": "even" if i % 2 == 0 else "odd"}).encode())
    flush_all(p)

    def wait_total(q: str, want: int) -> None:
        deadline = time.monotonic() + 30
        while (got := api.search(topic, q, limit=0)["total"]) != want:
            assert time.monotonic() < deadline, f"{q}: {got} != {want}"
            time.sleep(0.1)

    wait_total("value.tag:even", 250)
    b.restart()
    api = Api(b, token=None)
    wait_total("value.tag:even", 250)  # from the WAL again, after a restart
    status, run = api.call("POST", "/v1/indexer/run")
    assert status == 200 and run["uploaded"], run
    wait_total("value.tag:even", 250)  # now from the bucket, not twice
    body = api.search(topic, "value.tag:odd", limit=1000, order="offset")
    assert [h["offset"] for h in body["hits"]] == list(range(1, 500, 2))
