#!/usr/bin/env python3
"""A librdkafka (confluent-kafka) consumer-group peer for Kavari's interop tests.

  rdkafka_member.py member BOOTSTRAP GROUP TOPIC SECONDS
      joins GROUP on TOPIC with partition.assignment.strategy=range and prints
      "ASSIGNMENT p,p,..." after every change, until SECONDS pass or stdin closes.
  rdkafka_member.py committed BOOTSTRAP GROUP TOPIC PARTITIONS
      prints "COMMITTED p offset epoch" for each partition (offset -1001:
      none; epoch None: not known).
"""
import os
import sys
import threading
import time

from confluent_kafka import Consumer, TopicPartition


# Security settings from the environment, librdkafka's names upper-cased
# with dots as underscores after PEER_ (PEER_SECURITY_PROTOCOL=SASL_SSL,
# PEER_SASL_MECHANISM, PEER_SASL_USERNAME, PEER_SASL_PASSWORD,
# PEER_SSL_CA_LOCATION).
SECURITY = ["security.protocol", "sasl.mechanism", "sasl.username", "sasl.password",
            "ssl.ca.location"]


def conf(bootstrap, group):
    c = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "partition.assignment.strategy": "range",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    for name in SECURITY:
        value = os.environ.get("PEER_" + name.upper().replace(".", "_"))
        if value:
            c[name] = value
    return c


def member(bootstrap, group, topic, seconds):
    consumer = Consumer(conf(bootstrap, group))
    current = []

    def show():
        print("ASSIGNMENT " + ",".join(str(p) for p in sorted(current)), flush=True)

    def on_assign(c, partitions):
        current[:] = [tp.partition for tp in partitions]
        show()

    def on_revoke(c, partitions):
        current[:] = []
        show()

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    deadline = time.time() + seconds
    while time.time() < deadline and not stop.is_set():
        consumer.poll(0.2)
    consumer.close()
    print("CLOSED", flush=True)


def committed(bootstrap, group, topic, partitions):
    consumer = Consumer(conf(bootstrap, group))
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    for tp in consumer.committed(tps, timeout=30):
        print(f"COMMITTED {tp.partition} {tp.offset} {tp.leader_epoch}", flush=True)
    consumer.close()


if __name__ == "__main__":
    mode, bootstrap, group, topic, n = sys.argv[1:6]
    if mode == "member":
        member(bootstrap, group, topic, float(n))
    else:
        committed(bootstrap, group, topic, int(n))
