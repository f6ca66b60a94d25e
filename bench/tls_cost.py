#!/usr/bin/env python3
"""What reading TLS plaintext costs one SSL_write or SSL_read (issue 17).

A Python `ssl` client makes HTTP round trips (a 44-byte GET, a 40-byte
response) to a Python `ssl` server on loopback (both OpenSSL 3 through Python's `ssl`
module): each round trip is four SSL calls (the client's SSL_write and
SSL_read, the server's SSL_read and SSL_write), each of which the daemon's
uprobes hit twice (entry and return). Rounds alternate three variants in
the same run:
- without the daemon;
- the daemon with `Wirelens.Tls: false` (the socket is seen, the library
  is not: the ciphertext connection is left to layer 4);
- the daemon with TLS capture on: every SSL call is read at the library,
  recorded and parsed by the HTTP plugin (both ends).

Reported per SSL call, median (min-max) over the rounds, paired within a
round: the added time of TLS capture (on minus off), of the whole daemon
(on minus without), and the time inside the uprobe programs (BPF run-time
statistics, on while the daemon runs: the socket programs' share is in
both daemon variants, the uprobes' is the difference).

Run: python3 bench/tls_cost.py [--rounds 7] [--trips 20000]
"""
import argparse
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from run import bpf_run_ns, set_bpf_stats  # noqa: E402

# An HTTP exchange the HTTP plugin parses: every SSL call is recorded.
REQUEST = b"GET /item?id=42 HTTP/1.1\r\nHost: bench\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def serve(port, cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with socket.create_server(("127.0.0.1", int(port))) as listener:
        print("ready", flush=True)
        while True:
            conn, _ = listener.accept()
            with ctx.wrap_socket(conn, server_side=True) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while True:
                    data = s.recv(4096)
                    if not data:
                        break
                    s.sendall(RESPONSE)


def trips(port, n):
    """ns per round trip over one TLS connection."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port)))) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(200):  # warm up
            s.sendall(REQUEST)
            s.recv(4096)
        start = time.perf_counter_ns()
        for _ in range(int(n)):
            s.sendall(REQUEST)
            got = s.recv(4096)
            while len(got) < len(RESPONSE):
                got += s.recv(4096)
        return (time.perf_counter_ns() - start) / int(n)


def daemon_config(tmp, tls):
    text = common.config_text(os.path.join(tmp, "records.jsonl"), l4=5, l7=5)
    return text.replace("flushers:", f"    Wirelens:\n      Tls: {'true' if tls else 'false'}\nflushers:")


def start_daemon(binary, tmp, tls):
    path = os.path.join(tmp, f"tls-{tls}.yaml")
    with open(path, "w") as f:
        f.write(daemon_config(tmp, tls))
    log = open(os.path.join(tmp, f"daemon-{tls}.log"), "w")
    d = subprocess.Popen([binary, "run", "-c", path], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        with open(log.name) as f:
            text = f.read()
        if "running" in text and (not tls or "TLS library attached" in text):
            time.sleep(0.5)
            return d
        if d.poll() is not None:
            sys.exit(f"the daemon exited: {text[-2000:]}")
        time.sleep(0.1)
    d.kill()
    sys.exit("the daemon did not start within 30 s")


def stop_daemon(d):
    d.send_signal(2)
    d.wait(timeout=30)


def mmm(values):
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--trips", type=int, default=20000)
    ap.add_argument("--daemon", default=common.DEFAULT_DAEMON)
    args = ap.parse_args()
    common.require([args.daemon], "cargo build --release")
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=localhost", "-keyout", key, "-out", cert], check=True, capture_output=True)
        port = common.free_port()
        server = subprocess.Popen([sys.executable, __file__, "serve", str(port), cert, key], stdout=subprocess.PIPE)
        assert server.stdout.readline().strip() == b"ready"
        client = [sys.executable, __file__, "trips", str(port), str(args.trips)]
        results = {"without": [], "tls off": [], "tls on": [], "programs off": [], "programs on": []}
        try:
            for r in range(args.rounds):
                for variant in ("without", "tls off", "tls on"):
                    d = None
                    if variant != "without":
                        d = start_daemon(args.daemon, tmp, variant == "tls on")
                    if d:
                        set_bpf_stats(True)
                        before = bpf_run_ns(d.pid)
                    out = subprocess.run(client, check=True, capture_output=True, text=True).stdout
                    ns = float(out.strip())
                    if d:
                        # The programs' time per SSL call (4 per trip), all
                        # programs: the socket's too.
                        key = "programs on" if variant == "tls on" else "programs off"
                        results[key].append((bpf_run_ns(d.pid) - before) / ((args.trips + 200) * 4))
                        set_bpf_stats(False)
                    if d:
                        stop_daemon(d)
                    results[variant].append(ns)
                print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in results.items()), flush=True)
        finally:
            server.kill()
            set_bpf_stats(False)
        per_call = lambda a, b: [(x - y) / 4 for x, y in zip(results[a], results[b])]  # noqa: E731
        print(f"\n{args.rounds} rounds of {args.trips} round trips (4 SSL calls each), ns, median (min-max):")
        print(f"round trip without the daemon:             {mmm(results['without'])}")
        print(f"added per SSL call by TLS capture (on-off): {mmm(per_call('tls on', 'tls off'))}")
        print(f"added per SSL call by the daemon (on-none): {mmm(per_call('tls on', 'without'))}")
        print(f"kernel programs per SSL call, TLS off:      {mmm(results['programs off'])}")
        print(f"kernel programs per SSL call, TLS on:       {mmm(results['programs on'])}")
        print(f"  of which the uprobes' (on-off):           {mmm([a - b for a, b in zip(results['programs on'], results['programs off'])])}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(*sys.argv[2:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "trips":
        print(trips(sys.argv[2], sys.argv[3]))
    else:
        main()
