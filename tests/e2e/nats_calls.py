#!/usr/bin/env python3
"""NATS clients for the end-to-end test and the recorded fixtures.

    nats_calls.py client PORT N   # nats-py 2.16: N publishes delivered to a
                                  # subscriber on the same connection, N
                                  # requests answered by a responder, flushes
    nats_calls.py raw PORT        # one raw socket, CONNECT verbose: PUB,
                                  # SUB, UNSUB and PING each answered, then
                                  # an invalid subject (-ERR)

Prints what it did, as counts the test checks against the wire."""
import asyncio
import socket
import sys
import time


async def client(port, n):
    import nats

    nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False, ping_interval=3600)
    got = []

    async def on_msg(msg):
        got.append(msg.data)

    async def responder(msg):
        await msg.respond(b"pong:" + msg.data)

    sub = await nc.subscribe("wl.events", cb=on_msg)
    await nc.subscribe("wl.service", cb=responder)
    await nc.flush()
    for i in range(n):
        await nc.publish("wl.events", b"event %d" % i)
    await nc.publish("wl.events", b"x" * 100_000)  # a large payload
    await nc.flush()
    replies = []
    for i in range(n):
        r = await nc.request("wl.service", b"q%d" % i, timeout=5)
        replies.append(r.data)
    await nc.flush()
    for _ in range(50):
        if len(got) == n + 1:
            break
        await asyncio.sleep(0.05)
    await sub.unsubscribe()
    await nc.flush()
    await nc.close()
    print(f"delivered {len(got)} replies {len(replies)}")


def raw(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    buf = b""

    def line():
        # One byte at a time, as the simplest clients read.
        nonlocal buf
        while not buf.endswith(b"\r\n"):
            buf += s.recv(1)
        got, buf = buf, b""
        return got

    def answer():
        # The next +OK, -ERR or PONG; a delivery (MSG and its payload) is
        # read through.
        while True:
            got = line()
            if got.startswith(b"MSG "):
                line()
                continue
            return got.strip().decode()

    assert line().startswith(b"INFO ")
    s.sendall(b'CONNECT {"verbose":true,"pedantic":true,"name":"wl-raw","lang":"python","version":"0"}\r\n')
    assert answer() == "+OK"
    for op in [b"SUB wl.raw 1\r\n", b"PUB wl.raw 5\r\nhello\r\n", b"UNSUB 1\r\n", b"PING\r\n"]:
        s.sendall(op)
        print(op.split()[0].decode(), answer())
    # Pedantic: a publish to a wildcard subject is refused (-ERR, then +OK).
    s.sendall(b"PUB wl.* 2\r\nno\r\n")
    print("PUB", answer(), answer())
    s.sendall(b"PING\r\n")
    print("PING", answer())
    s.close()


if __name__ == "__main__":
    if sys.argv[1] == "client":
        asyncio.run(client(int(sys.argv[2]), int(sys.argv[3])))
    else:
        raw(int(sys.argv[2]))
