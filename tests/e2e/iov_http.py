"""HTTP/1.1 calls whose every message is gathered from, or scattered into,
many buffers, cut inside their tokens, for the capture tests: the client
sends with sendmsg and receives with recvmsg_into, the server receives with
readv and answers with writev. One request is cut into 40 buffers, more
than the kernel programs read iovec headers of at once (32). Both sides run
in this process. Usage: iov_http.py; prints "done PORT" at the end."""
import os
import socket
import threading

REQUESTS = [
    [b"GE", b"T /spl", b"it/pa", b"th HTTP/1.1\r\nHo", b"st: x\r\n\r\n"],
    [b"G", b"ET", b" /split/", b"path HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"],
]
whole = b"GET /split/path HTTP/1.1\r\nHost: x\r\n\r\n"
# The third: one byte a buffer for its first 39 bytes, then the rest.
REQUESTS.append([whole[i:i + 1] for i in range(39)] + [whole[39:]])
RESPONSE = [b"HTTP/1.", b"1 2", b"01 Created\r\nContent-Length: 5\r\n\r\n", b"hel", b"lo"]
ANSWER = b"".join(RESPONSE)

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
port = listener.getsockname()[1]


def serve():
    s, _ = listener.accept()
    for parts in REQUESTS:
        want = sum(map(len, parts))
        bufs = [bytearray(3), bytearray(7), bytearray(11), bytearray(want)]
        got = os.readv(s.fileno(), bufs)
        assert got == want, (got, want)
        assert b"".join(bufs)[:got] == b"".join(parts)
        assert os.writev(s.fileno(), RESPONSE) == len(ANSWER)
    s.close()


server = threading.Thread(target=serve)
server.start()
c = socket.create_connection(("127.0.0.1", port))
for parts in REQUESTS:
    assert c.sendmsg(parts) == len(whole)
    bufs = [bytearray(4), bytearray(9), bytearray(300)]
    got = c.recvmsg_into(bufs)[0]
    assert got == len(ANSWER) and b"".join(bufs)[:got] == ANSWER, got
c.close()
server.join()
print("done", port, flush=True)
