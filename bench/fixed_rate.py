"""An open-loop load at a fixed rate, for loads the machine sustains (the
tools Debian ships, redis-benchmark and wrk, only run flat out).

Request k is due at start + k / rate and is sent then on connection
k % conns, whether or not the earlier ones were answered (open loop: a slow
server does not lower the rate). Each request's latency runs from when it
was written to the end of its reply (not from its due time: this client's
own timer, epoll's whole milliseconds, would dominate that).
Every reply to a given request has a fixed size here (the same key and
value, the same file), so replies are counted by bytes. One thread, standard
library only; a request costs it some tens of microseconds, so it suits a
few thousand requests per second.
"""
import selectors
import socket
import time


def run(port, request, reply_len, rate, seconds, conns=4):
    """Send `request` (bytes) `rate` times a second for `seconds` over
    `conns` loopback connections; each reply is `reply_len` bytes. Returns
    (replies per second, p99 latency in ms)."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, len(socks))
        socks.append(s)
    due = [[] for _ in range(conns)]  # per connection: send times of unanswered requests
    pending = [0] * conns             # reply bytes received towards the oldest
    latencies = []
    start = time.perf_counter()
    end = start + seconds
    sent = 0
    while True:
        now = time.perf_counter()
        while sent < rate * seconds and start + sent / rate <= now:
            c = sent % conns
            socks[c].sendall(request)
            due[c].append(time.perf_counter())
            sent += 1
        if now >= end and not any(due):
            break
        if now >= end + 5:
            break  # replies that never came count as lost
        next_due = start + sent / rate if sent < rate * seconds else now + 0.01
        for key, _ in sel.select(timeout=max(0.0, min(next_due - time.perf_counter(), 0.01))):
            c = key.data
            data = socks[c].recv(65536)
            if not data:
                raise RuntimeError("the server closed a connection")
            pending[c] += len(data)
            done = time.perf_counter()
            while pending[c] >= reply_len and due[c]:
                pending[c] -= reply_len
                latencies.append(done - due[c].pop(0))
    elapsed = time.perf_counter() - start
    for s in socks:
        s.close()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0
    return len(latencies) / min(elapsed, seconds), p99


def reply_size(port, request):
    """The size of the reply to `request` (read until the server pauses)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request)
        s.settimeout(0.5)
        got = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except socket.timeout:
            pass
        return len(got)
