"""TCP or unix-socket exchange with exact byte counts, for the capture tests.

server: python3 echo.py server ADDR RECV SEND   (ADDR: host:port or a unix path)
client: python3 echo.py client ADDR SEND RECV [--wait]
The server prints its port (or "ready") on stdout once listening, accepts one
connection, reads RECV bytes, writes SEND bytes, and exits. The client
connects, writes SEND bytes in 1000-byte writes, reads RECV bytes, and exits.
With --wait the client prints its pid and waits for a line on stdin first;
with --wait-connected it connects, prints its port, then waits for a line;
with --hold it prints "exchanged" after the exchange and keeps the connection
open (idle) until a line on stdin.
"""
import os
import socket
import sys


def addr(a):
    if a.startswith("/"):
        return socket.AF_UNIX, a
    host, port = a.rsplit(":", 1)
    return socket.AF_INET, (host, int(port))


def read_exactly(s, n):
    got = 0
    while got < n:
        chunk = s.recv(min(65536, n - got))
        if not chunk:
            raise SystemExit(f"peer closed after {got} of {n} bytes")
        got += len(chunk)


def write_all(s, n):
    left = n
    while left:
        k = min(1000, left)
        s.sendall(b"w" * k)
        left -= k


def main():
    role, a = sys.argv[1], sys.argv[2]
    family, target = addr(a)
    if role == "server":
        recv_n, send_n = int(sys.argv[3]), int(sys.argv[4])
        srv = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_UNIX and os.path.exists(target):
            os.unlink(target)
        srv.bind(target)
        srv.listen(1)
        print(srv.getsockname()[1] if family == socket.AF_INET else "ready", flush=True)
        conn, _ = srv.accept()
        read_exactly(conn, recv_n)
        write_all(conn, send_n)
        conn.close()
        srv.close()
    else:
        send_n, recv_n = int(sys.argv[3]), int(sys.argv[4])
        if "--wait" in sys.argv:
            print(os.getpid(), flush=True)
            sys.stdin.readline()
        c = socket.socket(family, socket.SOCK_STREAM)
        c.connect(target)
        print(c.getsockname()[1] if family == socket.AF_INET else "connected", flush=True)
        if "--wait-connected" in sys.argv:
            sys.stdin.readline()
        write_all(c, send_n)
        read_exactly(c, recv_n)
        if "--hold" in sys.argv:
            print("exchanged", flush=True)
            sys.stdin.readline()
        c.close()


if __name__ == "__main__":
    main()
