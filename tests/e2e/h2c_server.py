#!/usr/bin/env python3
"""An HTTP server that accepts `Upgrade: h2c` (RFC 7540 3.2), on the
`h2` package from PyPI (scripts/setup.sh installs it), for the HTTP/1
plugin's h2c test: nginx and the other Debian servers offer no h2c upgrade.

  h2c_server.py PORT     prints "ready"; for each connection: reads the
                         HTTP/1.1 request, answers 101, then serves it and
                         every later request in HTTP/2: 200 "hello" for
                         /index.html, 404 otherwise.
"""

import socket
import sys
import threading

try:
    import h2.config
    import h2.connection
    import h2.events
except ImportError as e:
    sys.exit(f"h2c_server: {e}: run `python3 -m pip install h2` (scripts/setup.sh does it)")


def respond(conn, sock, stream, path):
    status, body = (b"200", b"hello\n") if path.split(b"?")[0] == b"/index.html" else (b"404", b"not found\n")
    conn.send_headers(stream, [(b":status", status), (b"content-length", str(len(body)).encode())])
    conn.send_data(stream, body, end_stream=True)
    sock.sendall(conn.data_to_send())


def serve_one(sock):
    # A client that closes with bytes unread resets the connection: that
    # ends its service like a close (no traceback for the test's output).
    try:
        serve(sock)
    except ConnectionResetError:
        pass


def serve(sock):
    with sock:
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                return
            data += more
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        path = lines[0].split(b" ")[1]
        settings = next(l.split(b":", 1)[1].strip() for l in lines if l.lower().startswith(b"http2-settings:"))
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_upgrade_connection(settings_header=settings)
        sock.sendall(conn.data_to_send())
        respond(conn, sock, 1, path)
        pending = rest
        while True:
            events = conn.receive_data(pending) if pending else []
            pending = b""
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    headers = dict(ev.headers)
                    respond(conn, sock, ev.stream_id, headers[b":path"])
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    return
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
            more = sock.recv(65536)
            if not more:
                return
            pending = more


def main():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(sys.argv[1])))
    srv.listen(16)
    print("ready", flush=True)
    while True:
        sock, _ = srv.accept()
        threading.Thread(target=serve_one, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
