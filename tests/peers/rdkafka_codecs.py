#!/usr/bin/env python3
"""A librdkafka (confluent-kafka) producer and reader for Kavari's codec tests.

  rdkafka_codecs.py produce BOOTSTRAP TOPIC CODEC
      reads lines "PARTITION KEY VALUE_HEX MSG_TYPE" from stdin and produces
      them with compression.type=CODEC (batched: linger.ms=50), then prints
      "PRODUCED n".
  rdkafka_codecs.py read BOOTSTRAP TOPIC PARTITIONS COUNT
      reads every partition from offset 0 until COUNT records arrived (or 60 s
      passed) and prints "RECORD partition offset key value_hex" for each.
"""
import sys

from confluent_kafka import Producer

from peer_records import records


def produce(bootstrap, topic, codec):
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "compression.type": codec,
        "linger.ms": 50,
        "enable.idempotence": False,
    })
    failures = []

    def done(err, _msg):
        if err is not None:
            failures.append(err)

    n = 0
    for line in sys.stdin:
        partition, key, value, msg_type = line.split()
        producer.produce(
            topic,
            key=key.encode(),
            value=bytes.fromhex(value),
            partition=int(partition),
            headers=[("msg_type", msg_type.encode())],
            on_delivery=done,
        )
        n += 1
    producer.flush(30)
    if failures:
        print("FAILED", failures[0], flush=True)
        sys.exit(1)
    print("PRODUCED", n, flush=True)


def read(bootstrap, topic, partitions, count):
    def error(e):
        print("ERROR", e, flush=True)

    for msg in records(bootstrap, topic, partitions, count, "kavari-codec-reader", error):
        key = msg.key().decode() if msg.key() is not None else "-"
        print("RECORD", msg.partition(), msg.offset(), key, msg.value().hex(), flush=True)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "produce":
        produce(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "read":
        read(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(f"unknown command {cmd}")
