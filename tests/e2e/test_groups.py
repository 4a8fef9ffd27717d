"""Consumer groups with real clients: members share the partitions, a member killed without
leaving is replaced after its session timeout, cooperative-sticky moves only what it must,
nothing is skipped, and committed offsets survive a broker kill -9 (and are what a new member
resumes from). Each member is its own process (group_member.py), so it can be SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from helpers import (confluent_producer, create_topic, flush_all, produce_with_backpressure,
                     unique_topic)

MEMBER = Path(__file__).with_name("group_member.py")
PARTITIONS = 6
# Kafka's group.initial.rebalance.delay.ms shortened: the test starts members one by one.
# The group's debug lines (joins, syncs, rejected calls) go into a failed test's broker tail.
FLAGS = ("--group-initial-rebalance-delay-ms", "1000", "--log", "info,strata::groups=debug")


class Member:
    """A group member process and what it reported."""

    def __init__(self, client: str, bootstrap: str, group: str, topic: str,
                 strategy: str = "cooperative-sticky", instance_id: str | None = None):
        static = [instance_id] if instance_id else []
        # A file, not a pipe: librdkafka logs every failed reconnect while the broker is down,
        # and a pipe nobody reads would fill and block the client's threads.
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, str(MEMBER), client, bootstrap, group, topic, strategy, *static],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.assignment: list[int] = []
        self.assignments: list[list[int]] = []
        self.consumed: list[tuple[int, int]] = []
        self.lock = threading.Lock()
        self.hung = False  # did not close within 30 s of SIGTERM and was killed
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            event = json.loads(line)
            with self.lock:
                if "assignment" in event:
                    self.assignment = event["assignment"]
                    self.assignments.append(event["assignment"])
                else:
                    self.consumed.extend((p, o) for p, o in event["records"])

    def current(self) -> list[int]:
        with self.lock:
            return list(self.assignment)

    def records(self) -> list[tuple[int, int]]:
        with self.lock:
            return list(self.consumed)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.hung = True
                self.proc.kill()
                self.proc.wait(10)
        self.reader.join(10)
        assert self.proc.returncode in (0, -signal.SIGKILL), self.stderr_tail()

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-2000:]


def wait_until(condition, timeout: float, what: str, detail=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} {detail()}")


def partitioned(members: list[Member]) -> bool:
    """Every partition owned by exactly one of `members`."""
    owned = [p for m in members for p in m.current()]
    return sorted(owned) == list(range(PARTITIONS))


def produce(bootstrap: str, topic: str, count: int) -> None:
    p = confluent_producer(bootstrap, **{"acks": "all", "linger.ms": 5})
    for i in range(count):
        produce_with_backpressure(p, topic, value=b"v%d" % i, key=b"k%d" % i)
    flush_all(p)


def ends(bootstrap: str, topic: str) -> dict[int, int]:
    from helpers import watermarks
    return {p: watermarks(bootstrap, topic, p)[1] for p in range(PARTITIONS)}


def all_consumed(members: list[Member], end: dict[int, int]) -> bool:
    seen: dict[int, set[int]] = {p: set() for p in range(PARTITIONS)}
    for m in members:
        for p, o in m.records():
            seen[p].add(o)
    return all(set(range(end[p])) <= seen[p] for p in range(PARTITIONS))


def group_detail(broker, group: str) -> dict:
    status, body = broker.http_get(f"/v1/groups/{group}")
    assert status == 200, body
    return json.loads(body)


def committed(broker, group: str) -> dict[int, int]:
    return {o["partition"]: o["committed_offset"] for o in group_detail(broker, group)["offsets"]}


def test_three_members_share_fail_over_rebalance_sticky_and_resume_after_kill9(start_broker):
    broker = start_broker(*FLAGS)
    topic, group = unique_topic("grp"), unique_topic("g")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    produce(broker.bootstrap, topic, 3000)
    everyone: list[Member] = []
    try:
        members = [Member("confluent", broker.bootstrap, group, topic) for _ in range(3)]
        everyone += members
        wait_until(lambda: partitioned(members) and all(len(m.current()) == 2 for m in members),
                   60, "three members with two partitions each")
        end = ends(broker.bootstrap, topic)
        wait_until(lambda: all_consumed(members, end), 60, "the first 3000 records")

        detail = group_detail(broker, group)
        assert detail["state"] == "Stable" and len(detail["members"]) == 3
        assert sorted(p for m in detail["members"] for a in m["assignment"]
                      for p in a["partitions"]) == list(range(PARTITIONS))

        # kill -9 one member: it never leaves; the others take its partitions after its
        # session timeout (6 s).
        victim, survivors = members[2], members[:2]
        victim.kill()
        wait_until(lambda: partitioned(survivors), 60, "the survivors to own every partition",
                   lambda: [m.assignments for m in survivors])
        produce(broker.bootstrap, topic, 3000)
        end = ends(broker.bootstrap, topic)
        wait_until(lambda: all_consumed(everyone, end), 60, "records after the fail-over")

        # A new member: cooperative-sticky takes partitions only from where it must.
        before = {id(m): set(m.current()) for m in survivors}
        history_from = {id(m): len(m.assignments) for m in survivors}
        joiner = Member("confluent", broker.bootstrap, group, topic)
        everyone.append(joiner)
        members = survivors + [joiner]
        wait_until(lambda: partitioned(members) and all(len(m.current()) == 2 for m in members),
                   60, "the joiner to get its share", lambda: [m.assignments for m in members])
        for m in survivors:
            assert set(m.current()) <= before[id(m)], "a survivor was given another's partition"
            # Eager rebalancing would revoke everything first (an empty assignment).
            during = m.assignments[history_from[id(m)]:]
            assert all(a and set(a) <= before[id(m)] for a in during), \
                f"cooperative-sticky revoked more than it moved: {during}"
        produce(broker.bootstrap, topic, 3000)
        end = ends(broker.bootstrap, topic)
        wait_until(lambda: all_consumed(everyone, end), 60, "records after the join")
        # Nothing skipped: every offset below the end was delivered to some member.
        assert all_consumed(everyone, end)

        # kill -9 the broker under the live group: the members rejoin and go on from their
        # committed offsets (never from the start: auto.offset.reset=earliest would show it).
        committed_at_kill = committed(broker, group)
        seen_before = {id(m): len(m.records()) for m in members}
        broker.kill()
        broker.restart(same_ports=True)
        produce(broker.bootstrap, topic, 3000)
        end = ends(broker.bootstrap, topic)
        wait_until(lambda: all_consumed(everyone, end), 90, "records after the broker restart")
        wait_until(lambda: partitioned(members), 60, "the group to settle after the restart",
                   lambda: [m.assignments for m in members])
        after = [rec for m in members for rec in m.records()[seen_before[id(m)]:]]
        for p in range(PARTITIONS):
            offsets = [o for q, o in after if q == p]
            assert offsets and min(offsets) >= committed_at_kill[p], (
                f"partition {p} re-read from {min(offsets, default=None)}, "
                f"committed {committed_at_kill[p]}")

        for m in members:
            m.stop()  # commits and leaves
        wait_until(lambda: committed(broker, group) == end, 30, "the final commits",
                   lambda: f"committed {committed(broker, group)}, end {end}, group "
                           f"{group_detail(broker, group)}, members (hung, stderr) "
                           f"{[(m.hung, m.stderr_tail()) for m in members]}")
        assert group_detail(broker, group)["state"] == "Empty"

        broker.kill()
        broker.restart(same_ports=True)
        assert committed(broker, group) == end, "committed offsets lost by kill -9"

        produce(broker.bootstrap, topic, 600)
        end_after = ends(broker.bootstrap, topic)
        resumed = Member("confluent", broker.bootstrap, group, topic)
        everyone.append(resumed)
        wait_until(lambda: sum(end_after[p] - end[p] for p in end) <= len(resumed.records()),
                   60, "the resumed member to read the new records")
        first = {}
        for p, o in resumed.records():
            first.setdefault(p, o)
        assert first == {p: end[p] for p in range(PARTITIONS) if end_after[p] > end[p]}, \
            "the group did not resume from its committed offsets"
        lag = {o["partition"]: o["lag"] for o in group_detail(broker, group)["offsets"]}
        assert set(lag) == set(range(PARTITIONS))
    finally:
        for m in everyone:
            if m.proc.poll() is None:
                m.proc.kill()
                m.proc.wait(10)


def test_kafka_python_group_commits_and_resumes(start_broker):
    broker = start_broker(*FLAGS)
    topic, group = unique_topic("kp"), unique_topic("g")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    produce(broker.bootstrap, topic, 1200)
    end = ends(broker.bootstrap, topic)
    members = [Member("kafka-python", broker.bootstrap, group, topic, "range") for _ in range(2)]
    try:
        wait_until(lambda: partitioned(members), 60, "two kafka-python members to split the topic")
        wait_until(lambda: all_consumed(members, end), 60, "every record")
        for m in members:
            m.stop()
        wait_until(lambda: committed(broker, group) == end, 30, "kafka-python's commits")
        produce(broker.bootstrap, topic, 300)
        again = Member("kafka-python", broker.bootstrap, group, topic, "range")
        members.append(again)
        wait_until(lambda: len(again.records()) >= 300, 60, "the new records")
        assert all(o >= end[p] for p, o in again.records()), "re-read committed records"
    finally:
        for m in members:
            if m.proc.poll() is None:
                m.proc.kill()
                m.proc.wait(10)


def test_a_simple_consumer_that_only_commits_is_listed(broker):
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    topic, group = unique_topic("simple"), unique_topic("g")
    create_topic(broker.bootstrap, topic, 1)
    produce(broker.bootstrap, topic, 10)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    c.commit(offsets=[TopicPartition(topic, 0, 7, "meta")], asynchronous=False)
    got = c.committed([TopicPartition(topic, 0)], timeout=10)
    c.close()
    assert got[0].offset == 7 and got[0].metadata == "meta"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.list_topics(timeout=10)  # a fresh client asks only the brokers it already knows
    listed = admin.list_consumer_groups().result(10)
    assert group in {g.group_id for g in listed.valid}
    status, body = broker.http_get("/v1/groups")
    assert status == 200 and group in {g["group_id"] for g in json.loads(body)}
    offsets = group_detail(broker, group)["offsets"]
    # confluent-kafka sends the metadata string with its C terminator; the broker keeps the
    # bytes it was given (and the client strips the NUL when it reads them back, above).
    assert offsets[0]["metadata"].rstrip("\x00") == "meta"
    del offsets[0]["metadata"]
    assert offsets == [{"topic": topic, "partition": 0, "committed_offset": 7,
                        "log_end_offset": 10, "lag": 3}]


def test_a_broker_restored_from_the_bucket_resumes_a_group_where_it_was(start_broker, tmp_path):
    """The data disk is lost: a new broker on an empty data dir, same bucket (a shared local
    folder here), gets the group's committed offsets back from the snapshot."""
    from confluent_kafka import Consumer, TopicPartition

    bucket = ("--object-store", f"file://{tmp_path / 'bucket'}")
    first = start_broker(*bucket, *FLAGS, name="lost")
    topic, group = unique_topic("dr"), unique_topic("g")
    create_topic(first.bootstrap, topic, PARTITIONS)
    produce(first.bootstrap, topic, 600)
    end = ends(first.bootstrap, topic)
    member = Member("confluent", first.bootstrap, group, topic)
    try:
        wait_until(lambda: all_consumed([member], end), 60, "every record")
        member.stop()
    finally:
        if member.proc.poll() is None:
            member.proc.kill()
    wait_until(lambda: committed(first, group) == end, 30, "the commits")
    first.stop()  # uploads the final snapshots; the disk is then gone

    restored = start_broker(*bucket, *FLAGS, name="restored")
    assert restored.data_dir != first.data_dir
    assert committed(restored, group) == end
    c = Consumer({"bootstrap.servers": restored.bootstrap, "group.id": group})
    got = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    c.close()
    assert {tp.partition: tp.offset for tp in got} == end


def test_a_static_member_restarts_without_a_rebalance(start_broker):
    """group.instance.id: a follower killed and started again within its session timeout
    takes its old place (same generation, same partitions) while the group stays Stable."""
    broker = start_broker(*FLAGS)
    topic, group = unique_topic("static"), unique_topic("g")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    members = {i: Member("confluent", broker.bootstrap, group, topic, "range", i)
               for i in ("static-a", "static-b")}
    try:
        wait_until(lambda: partitioned(list(members.values())), 60, "two static members")
        before = group_detail(broker, group)
        assert before["state"] == "Stable"
        leader = next(m for m in before["members"] if m["member_id"] == before["leader"])
        follower = next(i for i in members if i != leader["group_instance_id"])
        old = members[follower]
        partitions = old.current()
        old.kill()
        members[follower] = Member("confluent", broker.bootstrap, group, topic, "range", follower)
        wait_until(lambda: members[follower].current() == partitions, 30,
                   "the restarted member to get its partitions back")
        after = group_detail(broker, group)
        assert after["state"] == "Stable"
        assert after["generation_id"] == before["generation_id"], "the group rebalanced"
        ids = {m["group_instance_id"]: m["member_id"] for m in after["members"]}
        old_ids = {m["group_instance_id"]: m["member_id"] for m in before["members"]}
        assert ids[follower] != old_ids[follower], "the old member id must be fenced"
        assert ids[leader["group_instance_id"]] == old_ids[leader["group_instance_id"]]
    finally:
        for m in members.values():
            if m.proc.poll() is None:
                m.proc.kill()
                m.proc.wait(10)
