"""Moves known byte counts through every family of socket send and receive
calls on one loopback TCP connection (a client and an echoing server in this
process): write/read, send/recv (sendto/recvfrom), writev/readv,
sendmsg/recvmsg (several buffers), sendfile; 1800 bytes each way in five
calls. With a DNS server port as argument, then sends two queries
(one.x.test, two.x.test) in one sendmmsg and reads both answers with
recvmmsg. Prints "tcp PORT" (the server's port) and "udp PORT" (the UDP
client's own port).

Used by host/tests/capture_l4.rs (every_send_and_receive_family_...)."""
import ctypes, os, socket, struct, sys, tempfile, threading

def tcp(report):
    ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
    def serve():
        s, _ = ls.accept()
        def take(n):
            got = b""
            while len(got) < n:
                got += s.recv(n - len(got))
            return got
        s.sendall(take(100))                       # read -> send
        s.send(take(200))
        data = take(400); os.writev(s.fileno(), [data[:100], data[100:]])
        data = take(500); s.sendmsg([data[:1], data[1:250], data[250:]])
        data = take(600); s.sendall(data)
        s.close()
    t = threading.Thread(target=serve); t.start()
    c = socket.create_connection(ls.getsockname())
    def expect(n, via):
        got = b""
        while len(got) < n:
            got += via(n - len(got))
        assert len(got) == n
    os.write(c.fileno(), b"w" * 100); expect(100, lambda n: os.read(c.fileno(), n))
    c.send(b"s" * 200); expect(200, lambda n: c.recvfrom(n)[0])
    os.writev(c.fileno(), [b"v" * 150, b"v" * 250])
    buf = bytearray(400); got = 0
    while got < 400:
        a, b = bytearray(100), bytearray(300)
        n = os.readv(c.fileno(), [a, b]); got += n
    c.sendmsg([b"m" * 100, b"m" * 400])
    got = 0
    while got < 500:
        got += c.recvmsg_into([bytearray(200), bytearray(300)])[0]
    with tempfile.TemporaryFile() as f:
        f.write(b"f" * 600); f.flush()
        assert os.sendfile(c.fileno(), f.fileno(), 0, 600) == 600
    expect(600, lambda n: c.recv(n))
    t.join(); c.close()
    report(ls.getsockname()[1])

class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint32)]

def query(name, qid):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", 1, 1)

def mmsg(dns_port):
    libc = ctypes.CDLL(None, use_errno=True)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(("127.0.0.1", dns_port))
    queries = [query("one.x.test", 0x1111), query("two.x.test", 0x2222)]
    bufs = [ctypes.create_string_buffer(q, len(q)) for q in queries]
    iovs = [iovec(ctypes.cast(b, ctypes.c_void_p), len(q)) for b, q in zip(bufs, queries)]
    vec = (mmsghdr * 2)()
    for i in range(2):
        vec[i].hdr.iov = ctypes.pointer(iovs[i]); vec[i].hdr.iovlen = 1
    assert libc.sendmmsg(u.fileno(), vec, 2, 0) == 2, ctypes.get_errno()
    rbufs = [ctypes.create_string_buffer(512) for _ in range(2)]
    riovs = [iovec(ctypes.cast(b, ctypes.c_void_p), 512) for b in rbufs]
    rvec = (mmsghdr * 2)()
    for i in range(2):
        rvec[i].hdr.iov = ctypes.pointer(riovs[i]); rvec[i].hdr.iovlen = 1
    got = 0
    while got < 2:
        n = libc.recvmmsg(u.fileno(), ctypes.byref(rvec, got * ctypes.sizeof(mmsghdr)), 2 - got, 0, None)
        assert n > 0, ctypes.get_errno()
        got += n
    print("udp", u.getsockname()[1], flush=True)

tcp(lambda port: print("tcp", port, flush=True))
if len(sys.argv) > 1:
    mmsg(int(sys.argv[1]))
