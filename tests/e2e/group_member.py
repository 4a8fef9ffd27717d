"""One consumer-group member as its own process, so a test can kill it without it leaving.

Usage: group_member.py CLIENT BOOTSTRAP GROUP TOPIC [STRATEGY [INSTANCE_ID]]
CLIENT is `confluent` or `kafka-python`. Prints one JSON object per line on stdout:
  {"assignment": [partitions...]}   whenever the member's assignment changes
  {"records": [[partition, offset], ...]}   for each polled batch
SIGTERM closes the consumer cleanly (commits, leaves the group) and exits 0.
"""

import json
import signal
import sys

stopping = False


def on_term(*_):
    global stopping
    stopping = True


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run_confluent(bootstrap, group, topic, strategy, instance_id=None):
    from confluent_kafka import Consumer

    static = {"group.instance.id": instance_id} if instance_id else {}
    c = Consumer({
        **static,
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "partition.assignment.strategy": strategy,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 500,
        "check.crcs": True,
    })
    c.subscribe([topic])
    last = None
    while not stopping:
        msgs = c.consume(num_messages=500, timeout=0.2)
        recs = [[m.partition(), m.offset()] for m in msgs if m.error() is None]
        if recs:
            emit({"records": recs})
        now = sorted(tp.partition for tp in c.assignment())
        if now != last:
            emit({"assignment": now})
            last = now
    c.close()


def run_kafka_python(bootstrap, group, topic, _strategy, _instance_id=None):
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                      auto_offset_reset="earliest", enable_auto_commit=True,
                      auto_commit_interval_ms=500, session_timeout_ms=6000,
                      heartbeat_interval_ms=500)
    last = None
    while not stopping:
        polled = c.poll(timeout_ms=200, max_records=500)
        recs = [[tp.partition, m.offset] for tp, ms in polled.items() for m in ms]
        if recs:
            emit({"records": recs})
        now = sorted(tp.partition for tp in c.assignment())
        if now != last:
            emit({"assignment": now})
            last = now
    c.close()


def main():
    signal.signal(signal.SIGTERM, on_term)
    client, bootstrap, group, topic = sys.argv[1:5]
    strategy = sys.argv[5] if len(sys.argv) > 5 else "range"
    instance_id = sys.argv[6] if len(sys.argv) > 6 else None
    run = {"confluent": run_confluent, "kafka-python": run_kafka_python}[client]
    run(bootstrap, group, topic, strategy, instance_id)


if __name__ == "__main__":
    main()
