#!/usr/bin/env python3
"""Connection flood for the abuse test: OPEN connections held open at once,
then SHORT short-lived ones, each sending one byte, on loopback. A forked
child accepts (each side then needs OPEN descriptors, under the usual
limit of 20,000). Bounded: gives up after LIMIT seconds.

    flood.py OPEN SHORT LIMIT
"""
import os
import resource
import socket
import sys
import time

open_n, short_n, limit = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
deadline = time.time() + limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = open_n + 256
if soft < want:
    if hard != resource.RLIM_INFINITY and hard < want:
        sys.exit(f"need {want} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(4096)
addr = server.getsockname()

child = os.fork()
if child == 0:
    # Accept and hold the first OPEN connections, then close each at once.
    held = []
    server.settimeout(max(1.0, deadline - time.time()))
    try:
        while time.time() < deadline:
            s, _ = server.accept()
            if len(held) < open_n:
                held.append(s)
                if len(held) == open_n:
                    time.sleep(2)
                    for h in held:
                        h.close()
                    held = [None] * open_n  # keep the count, not the sockets
            else:
                s.close()
    except OSError:
        pass
    os._exit(0)

server.close()
retried = 0


def connect(byte):
    """A connection that sent `byte`. A handshake the loopback stack resets
    or leaves unanswered (a SYN dropped under the flood waits out the
    kernel's retries, over two minutes) is tried again with a new one: the
    test is about the daemon, not about the listener's queues."""
    global retried
    for _ in range(5):
        c = None
        try:
            c = socket.create_connection(addr, timeout=5)
            c.send(byte)
            return c
        except (ConnectionResetError, ConnectionRefusedError, socket.timeout):
            retried += 1
            # A connection whose send failed is not kept open.
            if c is not None:
                c.close()
    raise RuntimeError(f"5 tries to connect failed ({retried} retries so far)")


conns = []
while len(conns) < open_n and time.time() < deadline:
    conns.append(connect(b"x"))
print(f"open {len(conns)} (retried {retried})", flush=True)
time.sleep(2.5)
for c in conns:
    c.close()

done = 0
while done < short_n and time.time() < deadline:
    connect(b"y").close()
    done += 1
print(f"short {done} (retried {retried})", flush=True)
os.kill(child, 15)
os.waitpid(child, 0)
