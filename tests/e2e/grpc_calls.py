#!/usr/bin/env python3
"""gRPC over plaintext HTTP/2 with grpcio (PyPI; scripts/setup.sh installs
it), for the HTTP/2 plugin's tests. Messages are raw bytes (no generated
code): the service is registered with a generic handler.

  grpc_calls.py server PORT       serve demo.Store until killed; prints "ready"
  grpc_calls.py hold PORT N       on one channel: one Get, then "open", then
                                  after a line on stdin N Get and one
                                  Missing; prints "done"
  grpc_calls.py client PORT N     on one channel: N unary Get (OK), one
                                  Missing (NOT_FOUND), one Watch (3 replies),
                                  one Upload (4 messages in), one Chat (2 and
                                  2); prints "done"
  grpc_calls.py cancel PORT       one Slow call (the server answers after
                                  3 s) given up after 0.3 s (its deadline:
                                  grpcio resets the stream); prints "done"
"""

import sys
import time
from concurrent import futures

try:
    import grpc
except ImportError as e:
    sys.exit(f"grpc_calls: {e}: run `python3 -m pip install grpcio` (scripts/setup.sh does it)")

SERVICE = "demo.Store"


def get(request, context):
    return b"v" * 16


def missing(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such key")


def watch(request, context):
    for i in range(3):
        yield b"w%d" % i


def upload(requests, context):
    return b"%d" % sum(1 for _ in requests)


def chat(requests, context):
    for m in requests:
        yield m


def serve(port):
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Get": grpc.unary_unary_rpc_method_handler(get),
            "Missing": grpc.unary_unary_rpc_method_handler(missing),
            "Watch": grpc.unary_stream_rpc_method_handler(watch),
            "Upload": grpc.stream_unary_rpc_method_handler(upload),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def gets_and_missing(ch, unary):
    """`unary` Get calls (OK), then Missing (NOT_FOUND)."""
    for i in range(unary):
        assert ch.unary_unary(f"/{SERVICE}/Get")(b"k%d" % i, timeout=10) == b"v" * 16
    try:
        ch.unary_unary(f"/{SERVICE}/Missing")(b"x", timeout=10)
        sys.exit("Missing answered")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e


def client(port, unary):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        gets_and_missing(ch, unary)
        assert len(list(ch.unary_stream(f"/{SERVICE}/Watch")(b"w", timeout=10))) == 3
        assert ch.stream_unary(f"/{SERVICE}/Upload")(iter([b"a", b"b", b"c", b"d"]), timeout=10) == b"4"
        assert len(list(ch.stream_stream(f"/{SERVICE}/Chat")(iter([b"x", b"y"]), timeout=10))) == 2
    print("done", flush=True)


def cancel(port):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        try:
            ch.unary_unary(f"/{SERVICE}/Slow")(b"s", timeout=0.3)
            sys.exit("Slow answered within its deadline")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
        # The channel stays open past the reset (no close ends the call).
        time.sleep(0.5)
    print("done", flush=True)


def hold(port, unary):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert ch.unary_unary(f"/{SERVICE}/Get")(b"first", timeout=10) == b"v" * 16
        print("open", flush=True)
        sys.stdin.readline()
        gets_and_missing(ch, unary)
    print("done", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "cancel":
        cancel(int(sys.argv[2]))
    elif sys.argv[1] == "hold":
        hold(int(sys.argv[2]), int(sys.argv[3]))
    else:
        client(int(sys.argv[2]), int(sys.argv[3]))
