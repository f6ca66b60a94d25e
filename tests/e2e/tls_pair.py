"""A Python `ssl` HTTPS server and client, for the TLS capture tests.

server PORT CERT KEY: serve the current directory over HTTPS (HTTP/1.1,
keep-alive) on 127.0.0.1:PORT until killed; prints "ready".

client PORT N [WAIT]: with WAIT, print "waiting" and wait for a line on
stdin first (so the client can start before the daemon); then make N GETs
of /index.html and one of /missing on one keep-alive connection, and print
"done STATUS..." with every status.
"""
import http.client
import http.server
import ssl
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass


def server(port, cert, key):
    httpd = http.server.HTTPServer(("127.0.0.1", int(port)), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    print("ready", flush=True)
    httpd.serve_forever()


def client(port, n, wait=False):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx)
    if wait:
        print("waiting", flush=True)
        sys.stdin.readline()
    statuses = []
    for path in ["/index.html"] * int(n) + ["/missing"]:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        statuses.append(str(r.status))
    conn.close()
    print("done", " ".join(statuses), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(*sys.argv[2:5])
    else:
        client(sys.argv[2], sys.argv[3], len(sys.argv) > 4)
