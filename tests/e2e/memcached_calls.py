#!/usr/bin/env python3
"""A memcached client for the end-to-end test, on one connection, one
command per write, each reply read whole before the next command (so tshark,
which dissects the first command of a segment only, sees every one).

    memcached_calls.py text PORT     # classic text commands
    memcached_calls.py binary PORT   # binary protocol

Prints one line per command: what was sent and the reply's first bytes."""
import socket
import struct
import sys
import time

BIG = 200_000


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until(s, done):
    data = b""
    while not done(data):
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data


def text(port):
    s = connect(port)
    line_end = lambda d: d.endswith(b"\r\n")
    get_end = lambda d: d.endswith(b"END\r\n") or d.endswith(b"ERROR\r\n")
    steps = [
        (b"set big 0 0 %d\r\n" % BIG + b"v" * BIG + b"\r\n", line_end),
        (b"get big\r\n", get_end),
        (b"incr big 1\r\n", line_end),          # CLIENT_ERROR: not a number
        (b"bogus\r\n", line_end),               # ERROR
        (b"set n 0 0 1 noreply\r\n5\r\n", None),  # one-way
        (b"incr n 2\r\n", line_end),
        (b"gets big n missing\r\n", get_end),
        (b"delete missing\r\n", line_end),      # NOT_FOUND: an answer
        (b"add n 0 0 1\r\n9\r\n", line_end),    # NOT_STORED: an answer
        (b"version\r\n", line_end),
    ]
    for cmd, done in steps:
        s.sendall(cmd)
        if done is None:
            time.sleep(0.05)
            print(cmd[:24], "(noreply)")
            continue
        print(cmd[:24], read_until(s, done)[:40])
    s.sendall(b"quit\r\n")
    read_until(s, lambda d: False)  # the server closes
    s.close()


def binary_message(opcode, key=b"", extras=b"", value=b"", opaque=0):
    body = len(extras) + len(key) + len(value)
    header = struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), len(extras), 0, 0, body, opaque, 0)
    return header + extras + key + value


def read_binary(s):
    header = read_until(s, lambda d: len(d) >= 24)
    body_len = struct.unpack(">I", header[8:12])[0]
    data = header
    while len(data) < 24 + body_len:
        data += s.recv(24 + body_len - len(data))
    return data


def binary(port):
    s = connect(port)
    steps = [
        binary_message(0x01, b"k", struct.pack(">II", 0, 0), b"x" * BIG, 1),  # set, large
        binary_message(0x00, b"k", opaque=2),                                  # get hit
        binary_message(0x00, b"gone", opaque=3),                               # get miss: an answer
        binary_message(0x05, b"k", struct.pack(">QQI", 1, 0, 0), opaque=4),    # incr: not a number
        binary_message(0x0B, opaque=5),                                        # version
    ]
    for m in steps:
        s.sendall(m)
        reply = read_binary(s)
        print(hex(m[1]), "status", struct.unpack(">H", reply[6:8])[0])
    # A quiet get that hits (its answer is passed over), then a noop.
    s.sendall(binary_message(0x09, b"k", opaque=6))
    hit = read_binary(s)
    s.sendall(binary_message(0x0A, opaque=7))
    print("getq", hex(hit[1]), "noop", hex(read_binary(s)[1]))
    s.sendall(binary_message(0x07, opaque=8))  # quit
    read_until(s, lambda d: False)
    s.close()


if __name__ == "__main__":
    {"text": text, "binary": binary}[sys.argv[1]](int(sys.argv[2]))
