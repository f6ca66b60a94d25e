#!/usr/bin/env python3
"""An OTLP metrics receiver for the flusher_otlp tests, built on the
OpenTelemetry project's own `opentelemetry-proto` messages and `grpcio`
(PyPI; scripts/setup.sh installs them).

It listens for OTLP/gRPC and OTLP/HTTP (protobuf) on loopback, decodes
every request with the official messages, checks what the data model
requires of it, and writes one JSON line per request to --out:
  {"transport": "grpc"|"http", "status": "taken"|"refused"|"failed",
   "problems": [...], "request": {... the request as protobuf's JSON ...}}

--fail-first N answers the first N requests of each transport with a
failure worth a retry (gRPC UNAVAILABLE, HTTP 503); --refuse answers every
request with a final one (gRPC INVALID_ARGUMENT, HTTP 400).
Prints "ready" once both listeners are up.
"""

import argparse
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import grpc
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
except ImportError as e:
    sys.exit(f"otlp_receiver: {e}: run `python3 -m pip install grpcio opentelemetry-proto` (scripts/setup.sh does it)")

SCALE = 5  # the sketch's bucket factor is 2^(2^-5)


def problems_of(req):
    """What the OTLP data model forbids, found in one request."""
    found = []
    for rm in req.resource_metrics:
        keys = {kv.key for kv in rm.resource.attributes}
        if "service.name" not in keys:
            found.append(f"a resource without service.name: {sorted(keys)}")
        for sm in rm.scope_metrics:
            names = [m.name for m in sm.metrics]
            if len(names) != len(set(names)):
                found.append(f"a metric twice in one scope: {names}")
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                points = getattr(m, kind).data_points
                seen = set()
                for p in points:
                    # A stream may hold several points (one per window),
                    # but never two for the same attributes and time.
                    attrs = tuple(sorted((kv.key, str(kv.value)) for kv in p.attributes))
                    if (attrs, p.time_unix_nano) in seen:
                        found.append(f"{m.name}: two points with the same attributes and time {attrs}")
                    seen.add((attrs, p.time_unix_nano))
                    if p.time_unix_nano == 0:
                        found.append(f"{m.name}: a point without a time")
                    if kind in ("sum", "exponential_histogram") and not p.start_time_unix_nano < p.time_unix_nano:
                        found.append(f"{m.name}: start {p.start_time_unix_nano} not before {p.time_unix_nano}")
                    if kind == "sum" and p.as_int < 0:
                        found.append(f"{m.name}: a negative count")
                    if kind == "exponential_histogram":
                        if p.scale != SCALE:
                            found.append(f"{m.name}: scale {p.scale}")
                        total = sum(p.positive.bucket_counts) + sum(p.negative.bucket_counts) + p.zero_count
                        if total != p.count:
                            found.append(f"{m.name}: buckets hold {total}, count says {p.count}")
                        if p.count and not p.max <= 2 ** ((p.positive.offset + len(p.positive.bucket_counts)) / 2**SCALE):
                            found.append(f"{m.name}: max {p.max} above the last bucket")
    return found


class Receiver:
    def __init__(self, out, fail_first, refuse):
        self.out = open(out, "a", encoding="utf-8")
        self.lock = threading.Lock()
        self.fail_first = fail_first
        self.refuse = refuse
        self.seen = {"grpc": 0, "http": 0}

    def take(self, transport, req):
        """What to answer: taken, failed (retry) or refused (final)."""
        with self.lock:
            self.seen[transport] += 1
            if self.refuse:
                status = "refused"
            elif self.seen[transport] <= self.fail_first:
                status = "failed"
            else:
                status = "taken"
            line = {
                "transport": transport,
                "status": status,
                "problems": problems_of(req),
                "request": MessageToDict(req, preserving_proto_field_name=True),
            }
            self.out.write(json.dumps(line) + "\n")
            self.out.flush()
            return status


class Service(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver):
        self.receiver = receiver

    def Export(self, request, context):
        status = self.receiver.take("grpc", request)
        if status == "failed":
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        if status == "refused":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused by the test")
        return metrics_service_pb2.ExportMetricsServiceResponse()


def http_handler(receiver):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/metrics" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_error(404 if self.path != "/v1/metrics" else 415)
                return
            req = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
            status = receiver.take("http", req)
            code = {"taken": 200, "failed": 503, "refused": 400}[status]
            answer = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            self.send_response(code)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--refuse", action="store_true")
    a = ap.parse_args()
    receiver = Receiver(a.out, a.fail_first, a.refuse)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Service(receiver), server)
    server.add_insecure_port(f"127.0.0.1:{a.grpc_port}")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", a.http_port), http_handler(receiver))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
