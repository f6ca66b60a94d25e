"""A Python HTTP/1.1 client on one keep-alive connection, for the decoder
comparison tests: GET, HEAD, a POST with a chunked body, a 404, a large
body, and a gzip (chunked) response. Usage: http_client.py PORT."""
import http.client
import sys

conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))


def call(method, path, body=None, headers=None, chunked=False):
    conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
    r = conn.getresponse()
    r.read()
    return r.status


assert call("GET", "/index.html") == 200
assert call("HEAD", "/big.bin") == 200
assert call("POST", "/echo", body=iter([b"part one,", b"part two"]), chunked=True) == 201
assert call("GET", "/nothing-here") == 404
assert call("GET", "/big.bin") == 200
assert call("GET", "/gz/text.txt", headers={"Accept-Encoding": "gzip"}) == 200
assert call("GET", "/index.html?last=1") == 200
conn.close()
