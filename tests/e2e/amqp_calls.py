#!/usr/bin/env python3
"""An AMQP 0-9-1 client (pika) for the end-to-end test and the recorded
fixture:

    amqp_calls.py PORT N

On one connection: a queue and a direct exchange declared and bound,
publisher confirms, N messages and a 100 KB one published, one fetched with
basic.get, the rest consumed and acknowledged, basic.get on the empty
queue, a passive declare of a missing queue (the broker refuses it by
closing the channel: a failed call), then on a new channel the queue and
the exchange deleted, the channel and the connection closed. Prints what it did."""
import sys

import pika


def main(port, n):
    params = pika.ConnectionParameters(host="127.0.0.1", port=port, heartbeat=0, blocked_connection_timeout=10)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.queue_declare("wl-q")
    ch.exchange_declare("wl-x", "direct")
    ch.queue_bind("wl-q", "wl-x", routing_key="wl.key")
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("wl-x", "wl.key", b"message %d" % i)
    ch.basic_publish("wl-x", "wl.key", b"x" * 100_000)
    got = 0
    method, _, body = ch.basic_get("wl-q", auto_ack=True)
    got += method is not None
    for method, _, body in ch.consume("wl-q", inactivity_timeout=2):
        if method is None:
            break
        ch.basic_ack(method.delivery_tag)
        got += 1
        if got == n + 1:
            break
    ch.cancel()
    empty, _, _ = ch.basic_get("wl-q", auto_ack=True)
    refused = False
    try:
        ch.queue_declare("wl-missing", passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        refused = True
    ch = conn.channel()
    ch.queue_delete("wl-q")
    ch.exchange_delete("wl-x")
    ch.close()
    conn.close()
    print(f"received {got} empty {empty is None} refused {refused}")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
