#!/usr/bin/env python3
"""The daemon's CPU per observed call at a fixed rate, for two or more
variants of it (binaries, or one binary under different environments),
alternating in the same run so that the machine's drift falls on all alike.

    sudo python3 bench/daemon_cpu_ab.py --proto http --rate 40000 --rounds 4 \\
        --variant glibc-default=BINARY:GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=0x840 \\
        --variant tuned=BINARY

A variant is NAME=BINARY, then optionally `:KEY=VALUE` environment settings
(each after a colon; a value may hold `=` but not `:`). Each round starts
every variant's daemon in turn (everything on: bench/common.py's config),
runs the load at the fixed rate, and reads the daemon's CPU time over the
middle of it (from /proc: user and system). An observed call is one end's
view of one request (two per request on loopback), as in run.py. Prints
each round, then per variant the median (min-max) and its ratio to the
first variant paired by round, median (min-max). Not a test: nothing is asserted.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from run import HttpLoad, RedisLoad, mmm  # noqa: E402


def parse_variant(text):
    name, _, rest = text.partition("=")
    binary, *settings = rest.split(":")
    if not name or not binary:
        sys.exit(f"--variant {text}: expected NAME=BINARY[:KEY=VALUE...]")
    env = {}
    for s in settings:
        key, eq, value = s.partition("=")
        if not eq:
            sys.exit(f"--variant {text}: `{s}` is not KEY=VALUE")
        env[key] = value
    return name, binary, env


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proto", choices=["http", "redis"], default="http")
    ap.add_argument("--rate", type=int, default=40000, help="requests per second (fixed)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=12, help="load per variant and round (CPU read over 2/3 of it)")
    ap.add_argument("--variant", action="append", required=True, type=parse_variant)
    args = ap.parse_args()
    common.require([v[1] for v in args.variant] + [os.path.join(common.TARGET, "release", "wirelens-loadgen")],
                   "cargo build --release -p wirelens -p wirelens-loadgen")
    tmp = tempfile.mkdtemp()
    servers = common.Servers(tmp, ("nginx",) if args.proto == "http" else ("redis",))
    per_call = {name: [] for name, _, _ in args.variant}
    try:
        load = HttpLoad("nginx", servers.nginx) if args.proto == "http" else RedisLoad("redis", servers.redis, 1)
        for r in range(args.rounds):
            for name, binary, env in args.variant:
                records = os.path.join(tmp, f"records-{name}-{r}.jsonl")
                daemon = common.Daemon(binary, tmp, config=common.config_text(records), records=records,
                                       env=env or None)
                if not daemon.ready:
                    sys.exit(f"the daemon ({binary}) did not start; see {daemon.err.name}")
                running = load.fixed(args.rate, args.seconds)
                time.sleep(args.seconds / 6)
                c0, t0 = daemon.cpu(), time.time()
                time.sleep(args.seconds * 2 / 3)
                c1, t1 = daemon.cpu(), time.time()
                achieved, p50, p99, _answered = running.result(timeout=args.seconds * 4 + 30)
                daemon.terminate()
                ns = (c1 - c0) / (t1 - t0) / (2 * achieved) * 1e9
                per_call[name].append(ns)
                print(f"round {r} {name}: {achieved:.0f} requests/s (p50 {p50:.2f} ms, p99 {p99:.2f} ms), "
                      f"daemon {ns:.0f} ns per observed call", flush=True)
    finally:
        servers.stop()
    first = next(iter(per_call))
    for name, values in per_call.items():
        # Paired: each round's figure over the first variant's in the same
        # round (drift between rounds falls on both).
        ratios = [a / b for a, b in zip(values, per_call[first])]
        print(f"{name}: {mmm(values)} ns per observed call; to {first}, paired: {mmm(ratios, '{:.3f}')}")


if __name__ == "__main__":
    main()
