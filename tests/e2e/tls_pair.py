"""A Python `ssl` HTTPS server and client, for the TLS capture tests.

server PORT CERT KEY: serve the current directory over HTTPS (HTTP/1.1,
keep-alive) on 127.0.0.1:PORT until killed; prints "ready".

client PORT N [wait]: with `wait`, print "waiting" and wait for a line on
stdin first (so the client can start before the daemon); then make N GETs
of /index.html and one of /missing on one keep-alive connection, and print
"done STATUS..." with every status.

late PORT N: load OpenSSL only when told (a line on stdin), as a program
that loads it late (dlopen) does: then one GET, "connected", and after
another line N GETs and one of /missing on the same connection, "done ...".

hang PORT: print "waiting", wait for a line, connect and shake hands,
print "hanging", then wait inside SSL_read for bytes the server never
sends, until killed.

OpenSSL (Python's `ssl`, which `http.client` imports) is imported only
where it is used, for `late`.
"""
import sys


def server(port, cert, key):
    import http.server
    import ssl

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", int(port)), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    print("ready", flush=True)
    httpd.serve_forever()


def client_context():
    """A client context that takes the test's self-signed certificate."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(port):
    import http.client

    return http.client.HTTPSConnection("127.0.0.1", int(port), context=client_context())


def get(conn, paths):
    statuses = []
    for path in paths:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        statuses.append(str(r.status))
    return statuses


def client(port, n, wait=False):
    conn = connect(port)
    if wait:
        print("waiting", flush=True)
        sys.stdin.readline()
    statuses = get(conn, ["/index.html"] * int(n) + ["/missing"])
    conn.close()
    print("done", " ".join(statuses), flush=True)


def late(port, n):
    print("waiting", flush=True)
    sys.stdin.readline()
    conn = connect(port)
    get(conn, ["/index.html"])
    print("connected", flush=True)
    sys.stdin.readline()
    statuses = get(conn, ["/index.html"] * int(n) + ["/missing"])
    conn.close()
    print("done", " ".join(statuses), flush=True)


def hang(port):
    import socket

    print("waiting", flush=True)
    sys.stdin.readline()
    s = client_context().wrap_socket(socket.create_connection(("127.0.0.1", int(port))))
    print("hanging", flush=True)
    s.recv(1)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(*sys.argv[2:5])
    elif sys.argv[1] == "late":
        late(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "hang":
        hang(sys.argv[2])
    else:
        client(sys.argv[2], sys.argv[3], len(sys.argv) > 4)
