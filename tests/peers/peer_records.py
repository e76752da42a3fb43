"""Reading records back for the Python peers of the interop tests."""
import time

from confluent_kafka import Consumer, TopicPartition


def records(bootstrap, topic, partitions, count, group, on_error=None):
    """The first COUNT records of the topic's partitions from offset 0 (60 s
    at most), read by a consumer of GROUP that commits nothing; errors go to
    ON_ERROR when given."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = 0
    deadline = time.time() + 60
    try:
        while seen < count and time.time() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if on_error is not None:
                    on_error(msg.error())
                continue
            yield msg
            seen += 1
    finally:
        consumer.close()
