#!/usr/bin/env python3
"""Instructions per event of the daemon's layer-7 path outside the plugin,
counted by callgrind: the same from run to run, whatever else this noisy
VM does (its wall clock does not resolve 20 ns per event between builds).

Each protocol runs `l7_path BINARY PROTOCOL --host-only` under
`valgrind --tool=callgrind` with `L7_PATH_BATCHES=N` (fixed rounds), and
reports per event: `l7_path::host_path` minus `Collector::new` (loading the
plugins) minus the plugin calls (`Sandbox::feed`, `Sandbox::close`: the
sandbox, the lifting of their results and the wasm), and the plugin calls
themselves. The bench's own building of events (about 100-140 per event)
stays in the first figure. Each round's first call per connection
(`detect_connections`: detection, which may ask every plugin) is a cost
per new connection, reported apart; the plugins' instances are made
before it, on other connections (`make_instances`, not counted).

    cargo bench -p wirelens --bench l7_path --no-run   # prints the binary
    cp target/release/deps/l7_path-HASH /tmp/l7_before  # then change, rebuild
    python3 bench/l7_instructions.py /tmp/l7_before target/release/deps/l7_path-HASH [PROTOCOL...]

Runs from anywhere (the bench is run in `host/`); needs valgrind.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

# `redis-p16`: 16 pipelined GETs per write and their 16 replies per read
# (its events carry 16 messages each: per message is a sixteenth).
PROTOCOLS = "http redis redis-p16 http2 memcached nats mqtt kafka amqp dns mysql pgsql".split()
CONNS = 64
EVENTS_PER_STEP = 32 * CONNS * 2  # batches per step, connections, events per call
ROUNDS = 3


def inclusive(out_file):
    """Inclusive instruction counts by function name."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", out_file], capture_output=True, text=True, check=True
    ).stdout
    counts = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \(.*?\)\s+\S*?:(\S+)", line)
        if m:
            counts.setdefault(m.group(2), int(m.group(1).replace(",", "")))
    return counts


def callgrind(binary, protocol, batches, out, toggles):
    env = dict(os.environ, L7_PATH_BATCHES=str(batches))
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *toggles, binary, protocol, "--host-only"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return inclusive(out)


def measure(binary, protocol, batches, workdir):
    """(outside the plugin, in the plugin) per event, and the first call of a
    new connection (detection included) per connection, or None for a bench
    built before it was measured apart."""
    out = os.path.join(workdir, f"cg.{os.path.basename(binary)}.{protocol}")
    # Each round's first steps (`make_instances`, `detect_connections`) are
    # not counted here...
    toggles = ["--toggle-collect=l7_path::make_instances", "--toggle-collect=l7_path::detect_connections"]
    c = callgrind(binary, protocol, batches, out, [*toggles, "--collect-atstart=yes"])
    events = ROUNDS * batches * EVENTS_PER_STEP
    plugin = c.get("wirelens::protocols::sandbox::Sandbox::feed", 0) + c.get(
        "wirelens::protocols::sandbox::Sandbox::close", 0
    )
    if "l7_path::host_path" not in c or plugin == 0:
        sys.exit(f"{binary} {protocol}: no host_path or plugin calls in the profile (a release build of l7_path?)")
    host = c["l7_path::host_path"] - c.get("wirelens::collector::Collector::new", 0) - plugin
    # ... but alone.
    c = callgrind(binary, protocol, batches, out, ["--collect-atstart=no", "--toggle-collect=l7_path::detect_connections"])
    first = c.get("l7_path::detect_connections", 0)
    return host / events, plugin / events, (first / (ROUNDS * CONNS) if first else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", nargs="+", help="one l7_path binary, or two to compare (before, after)")
    ap.add_argument("--batches", type=int, default=10, help="steps of 32 batches per round (3 rounds)")
    ap.add_argument("--only", nargs="*", default=None, help="protocols (default: all)")
    args = ap.parse_args()
    binaries = [os.path.abspath(b) for b in args.binaries[:2]]
    protocols = args.only or PROTOCOLS
    if not shutil.which("valgrind"):
        sys.exit("valgrind is missing: apt-get install valgrind")
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "host"))
    with tempfile.TemporaryDirectory() as workdir:
        head = "".join(f"{os.path.basename(b)[:20]:>22}" for b in binaries)
        print(f"instructions per event ({ROUNDS} rounds of {args.batches} x 32 batches)")
        print(f"{'outside the plugin':>{10 + 22 * len(binaries) + 9}}   in the plugin (wasm, lifting)")
        print(f"{'proto':>10}{head}{'change' if len(binaries) == 2 else '':>9}{head}{'change' if len(binaries) == 2 else '':>9}")
        firsts = []
        for p in protocols:
            figures = [measure(b, p, args.batches, workdir) for b in binaries]
            cols = "".join(f"{host:22.0f}" for host, _, _ in figures)
            plugin_cols = "".join(f"{plugin:22.0f}" for _, plugin, _ in figures)
            change = plugin_change = ""
            if len(figures) == 2:
                change = f"{100 * (figures[1][0] - figures[0][0]) / figures[0][0]:+.1f}%"
                plugin_change = f"{100 * (figures[1][1] - figures[0][1]) / figures[0][1]:+.1f}%"
            print(f"{p:>10}{cols}{change:>9}{plugin_cols}{plugin_change:>9}", flush=True)
            firsts.append((p, [f for _, _, f in figures]))
        print("\nthe first call of a new connection (detection included), instructions per connection")
        print(f"{'proto':>10}{head}")
        for p, figures in firsts:
            print(f"{p:>10}" + "".join(f"{f:22.0f}" if f is not None else f"{'(in the events)':>22}" for f in figures))


if __name__ == "__main__":
    main()
