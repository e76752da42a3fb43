#!/usr/bin/env python3
"""The Python library Kavari ports (kavari 0.2.2.1), as the peer of the
interop tests. Every line it prints is one JSON object.

  python_kavari.py publish BOOTSTRAP TOPIC N
      publishes N OrderPlaced messages with Python kavari's own
      KafkaManager.publish_message: payload Order(order_id="o-<i>",
      amount_cents=i, note="ü-<i>" for even i and None for odd i,
      tags=["t<i>"]), keyed by order_id; prints
      {"published": N, "partitions": {order_id: partition}}.
  python_kavari.py publish-text BOOTSTRAP TOPIC N
      publishes N Greeting messages (payload: str, "hello <i> ü"), keyed
      "g-<i>"; prints {"published": N}.
  python_kavari.py decode-int BOOTSTRAP TOPIC COUNT
      reads COUNT records of partition 0 and decodes each with the
      deserializer into Counted (payload: int); prints {"payload": n}.
  python_kavari.py decode BOOTSTRAP TOPIC PARTITIONS COUNT
      reads COUNT records from offset 0 of every partition (60 s at most)
      and decodes each value with Python kavari's KafkaMessageDeserializer
      into the Shipment dataclass (a nested Address inside); prints one
      {"partition", "key", "headers", "payload"} per record.
"""
import dataclasses
import json
import logging
import socket
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from confluent_kafka import Producer
from kavari import FibonacciRetryPolicy, KafkaClient, KafkaManager, KafkaMessage
from kavari.kafka_message_deserializer import KafkaMessageDeserializer
from peer_records import records


@dataclass
class Order:
    order_id: str
    amount_cents: int
    note: Optional[str] = None
    tags: List[str] = field(default_factory=list)


class OrderPlaced(KafkaMessage):
    topic = "set at run time"
    payload: Order

    def __init__(self, payload: Order):
        super().__init__()
        self.payload = payload

    def get_partition_key(self) -> str:
        return self.payload.order_id


@dataclass
class Address:
    city: str
    zip: Optional[str] = None


@dataclass
class Shipment:
    shipment_id: str
    weight_grams: int
    express: bool
    address: Address
    notes: List[str]
    volume_litres: float
    labels: Dict[str, int]
    carrier: str  # a Rust enum: the variant's name
    shipped_at: str  # a chrono DateTime<Utc>: RFC 3339
    tracking: Optional[str] = None


class ShipmentSent(KafkaMessage):
    topic = "set at run time"
    payload: Shipment

    def get_partition_key(self) -> str:
        return self.payload.shipment_id


class Greeting(KafkaMessage):
    topic = "set at run time"
    payload: str

    def __init__(self, payload: str, key: str):
        super().__init__()
        self.payload = payload
        self.key = key

    def get_partition_key(self) -> str:
        return self.key


class Counted(KafkaMessage):
    topic = "set at run time"
    payload: int

    def get_partition_key(self) -> str:
        return ""


def manager_for(bootstrap):
    logger = logging.getLogger("python-kavari")
    # kavari_create's producer settings; its consumer is left out because
    # it refuses to subscribe while no handler is registered.
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "client.id": socket.gethostname(),
        "acks": "1",
        "message.timeout.ms": 30000,
        "queue.buffering.max.messages": 100000,
    })
    client = KafkaClient(producer, FibonacciRetryPolicy(3), logger, dlq_suffix=".dlq")
    return KafkaManager(kafka_client=client, kafka_consumer=None, logger=logger)


def publish(bootstrap, topic, n):
    OrderPlaced.topic = topic
    manager = manager_for(bootstrap)
    partitions = {}
    failures = []

    def done(msg, err):
        if err is not None:
            failures.append(str(err))
        else:
            partitions[msg.key().decode()] = msg.partition()

    for i in range(n):
        order = Order(
            order_id=f"o-{i}",
            amount_cents=i,
            note=f"ü-{i}" if i % 2 == 0 else None,
            tags=[f"t{i}"],
        )
        manager.publish_message(OrderPlaced(order), on_complete=done)
    manager.kafka_client.stop()
    if failures:
        print(json.dumps({"failed": failures[0]}), flush=True)
        sys.exit(1)
    print(json.dumps({"published": n, "partitions": partitions}), flush=True)


def publish_text(bootstrap, topic, n):
    Greeting.topic = topic
    manager = manager_for(bootstrap)
    failures = []
    for i in range(n):
        manager.publish_message(
            Greeting(f"hello {i} ü", f"g-{i}"),
            on_complete=lambda msg, err: err is not None and failures.append(str(err)),
        )
    manager.kafka_client.stop()
    if failures:
        print(json.dumps({"failed": failures[0]}), flush=True)
        sys.exit(1)
    print(json.dumps({"published": n}), flush=True)


def decode_int(bootstrap, topic, count):
    deserializer = KafkaMessageDeserializer()
    for msg in records(bootstrap, topic, 1, count, "kavari-python-decoder"):
        print(json.dumps({"payload": deserializer.deserialize(msg.value(), Counted)}), flush=True)


def decode(bootstrap, topic, partitions, count):
    deserializer = KafkaMessageDeserializer()
    for msg in records(bootstrap, topic, partitions, count, "kavari-python-decoder"):
        payload = deserializer.deserialize(msg.value(), ShipmentSent)
        headers = {k: v.decode() for k, v in (msg.headers() or [])}
        print(json.dumps({
            "partition": msg.partition(),
            "key": msg.key().decode() if msg.key() is not None else None,
            "headers": headers,
            "payload": dataclasses.asdict(payload),
        }, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "publish":
        publish(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "publish-text":
        publish_text(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "decode-int":
        decode_int(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "decode":
        decode(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(f"unknown mode {mode}")
