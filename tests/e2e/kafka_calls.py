#!/usr/bin/env python3
"""Kafka clients for the end-to-end test and the recorded fixture
(kafka-python against Tansu):

    kafka_calls.py PORT N

A producer with acks=1 sends N messages and a 100 KB one to topic
`wl-events` (partition 0), a producer with acks=0 sends N more, a producer
with acks=1 sends the message `end`, and a consumer without a group reads
the topic from the beginning until it has read `end`. Prints what it did:
`consumed COUNT` and ` through the end` when it read `end`.

The consumer stops at `end`, not at a count: Tansu does not always keep the
acks=0 messages (their producer closes at once), and a consumer waiting for
all of them polled until its deadline and closed with a Fetch in flight.
Tansu answered that Fetch after the client's FIN, so tshark counted an
answer the client never read (and the daemon, at the client, a call given
up at its close)."""
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def main(port, n):
    servers = f"127.0.0.1:{port}"
    producer = KafkaProducer(bootstrap_servers=servers, acks=1, linger_ms=0, max_request_size=1 << 20)
    for i in range(n):
        producer.send("wl-events", b"event %d" % i, partition=0).get(timeout=10)
    producer.send("wl-events", b"x" * 100_000, partition=0).get(timeout=10)
    producer.close()
    fire = KafkaProducer(bootstrap_servers=servers, acks=0, linger_ms=0)
    for i in range(n):
        fire.send("wl-events", b"fire %d" % i, partition=0)
    fire.flush()
    fire.close()
    last = KafkaProducer(bootstrap_servers=servers, acks=1, linger_ms=0)
    last.send("wl-events", b"end", partition=0).get(timeout=10)
    last.close()
    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    tp = TopicPartition("wl-events", 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got, ended = 0, False
    deadline = time.time() + 20
    while not ended and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got += len(records)
            ended = ended or any(r.value == b"end" for r in records)
    consumer.close()
    print(f"consumed {got}" + (" through the end" if ended else ""))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
