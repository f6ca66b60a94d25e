#!/usr/bin/env python3
"""What wirelens costs the applications it watches, measured on this machine.

    sudo python3 bench/run.py [--rounds 3] [--seconds 5]

For each load (redis-benchmark GET/SET with and without pipelining, pgbench
select-only, wrk against nginx) it alternates runs without the daemon, with
the daemon's probes attached but filtering every call out at their first
check (EBPF.Pid naming no live process: what hooking the socket calls alone
costs), with the daemon capturing everything but layer 4 only
(ProtocolProcess: false: the kernel's capture and the daemon's statistics,
no protocol parsing), and with the daemon capturing everything (all
protocols), and records the
application's throughput and p99 latency, the daemon's CPU (percent of one
core) and peak RSS, the layer-7 calls it reported per second and the events
lost in the kernel. Then it runs the plugin-path benchmarks (wasm against
native). Writes bench/report.md and bench/throughput.png (gnuplot).

Needs root (eBPF), the servers and tools scripts/setup.sh installs, and a
release build (made here with cargo). Every load is bounded in time.
"""
import argparse
import csv
import glob
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import CARGO_ENV, ROOT, TARGET, Daemon, Servers, config_text  # shared with soak.py and hostile_load.py
import fixed_rate

# A process id no process has (pid_max is at most 2^22): the probes run on
# every socket call and drop it at their first check.
NO_PID = 4_194_000


def redis_load(port, pipeline, seconds):
    def run():
        n = 60000 * seconds * (8 if pipeline > 1 else 1)
        out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set,get", "-n", str(n), "-c", "8",
                              "-P", str(pipeline), "--csv"], capture_output=True, text=True, timeout=seconds * 10)
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        rps = sum(float(r["rps"]) for r in rows) / len(rows)
        p99 = max(float(r["p99_latency_ms"]) for r in rows)
        return rps, p99
    return run


def pgbench_load(port, seconds, tmp, rate=None):
    """pgbench select-only as fast as it goes, or at `rate` transactions per
    second (a load the machine sustains: throughput stays the rate, the
    daemon shows in latency)."""
    def run():
        logdir = tempfile.mkdtemp(dir=tmp)
        fixed = ["-R", str(rate)] if rate else []
        out = subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-S", "-n", "-c", "4",
                              "-j", "2", "-T", str(seconds), *fixed, "--log", "--log-prefix", f"{logdir}/tx",
                              "postgres"],
                             capture_output=True, text=True, timeout=seconds * 10, cwd=logdir)
        tps = float(re.search(r"tps = ([0-9.]+)", out.stdout).group(1))
        latencies = []
        for path in glob.glob(f"{logdir}/tx*"):
            with open(path) as f:
                latencies += [int(line.split()[2]) for line in f if line.strip()]
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99)] / 1000.0 if latencies else 0.0
        shutil.rmtree(logdir, ignore_errors=True)
        return tps, p99
    return run


def fixed_redis_load(port, rate, seconds):
    """Redis GETs of one small value at a fixed rate (open loop)."""
    request = b"*2\r\n$3\r\nGET\r\n$8\r\nwl:fixed\r\n"
    subprocess.run(["redis-cli", "-p", str(port), "set", "wl:fixed", "value"], check=True, capture_output=True)

    def run():
        return fixed_rate.run(port, request, fixed_rate.reply_size(port, request), rate, seconds)
    return run


def fixed_http_load(port, rate, seconds):
    """HTTP GETs of one file from nginx at a fixed rate (open loop, keep-alive)."""
    request = b"GET /index.html HTTP/1.1\r\nHost: bench\r\n\r\n"

    def run():
        return fixed_rate.run(port, request, fixed_rate.reply_size(port, request), rate, seconds)
    return run


def wrk_load(port, seconds):
    def run():
        out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/index.html"],
                             capture_output=True, text=True, timeout=seconds * 10).stdout
        rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
        m = re.search(r"99%\s+([0-9.]+)(us|ms|s)", out)
        p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return rps, p99
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (the daemon loads eBPF programs)")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "wirelens"], cwd=ROOT, check=True, env=CARGO_ENV)
    binary = os.path.join(TARGET, "release", "wirelens")
    tmp = tempfile.mkdtemp(prefix="wirelens-bench-")
    os.chmod(tmp, 0o755)  # PostgreSQL runs as its own user
    servers = Servers(tmp)
    loads = [
        ("redis SET/GET", redis_load(servers.redis, 1, args.seconds)),
        ("redis SET/GET, pipeline 16", redis_load(servers.redis, 16, args.seconds)),
        ("pgbench select-only", pgbench_load(servers.pg, args.seconds, tmp)),
        ("pgbench select-only, fixed 5,000/s", pgbench_load(servers.pg, args.seconds, tmp, rate=5000)),
        ("wrk, nginx", wrk_load(servers.nginx, args.seconds)),
        # Loads the machine sustains (a fraction of the rates above), as
        # observers are usually run: what shows is latency, not throughput.
        ("redis GET, fixed 5,000/s", fixed_redis_load(servers.redis, 5000, args.seconds)),
        ("nginx GET, fixed 3,000/s", fixed_http_load(servers.nginx, 3000, args.seconds)),
    ]
    results = []
    try:
        for name, load in loads:
            base, probes, l4only, capt, daemon_stats = [], [], [], [], []
            for r in range(args.rounds):
                base.append(load())
                quiet = os.path.join(tmp, f"probes-only-{r}.jsonl")
                d = Daemon(binary, tmp, config=config_text(quiet, pids=[NO_PID]), records=quiet)
                probes.append(load())
                d.terminate()
                l4 = os.path.join(tmp, f"l4-only-{r}.jsonl")
                d = Daemon(binary, tmp, config=config_text(l4, protocols=False), records=l4)
                l4only.append(load())
                d.terminate()
                d = Daemon(binary, tmp)
                started = time.time()
                capt.append(load())
                daemon_stats.append(d.stop(time.time() - started))
                print(f"{name} round {r + 1}: without {base[-1]}, probes only {probes[-1]}, layer 4 only {l4only[-1]},"
                      f" with {capt[-1]}, daemon {daemon_stats[-1]}", flush=True)
            results.append((name, base, probes, l4only, capt, daemon_stats))
    finally:
        servers.stop()
    benches = {}
    for bench in ["l7_path", "plugin_path"]:
        out = subprocess.run(["cargo", "bench", "-q", "--locked", "-p", "wirelens", "--bench", bench], cwd=ROOT, env=CARGO_ENV,
                             capture_output=True, text=True)
        benches[bench] = out.stdout.strip()
    write_report(results, benches, args)
    shutil.rmtree(tmp, ignore_errors=True)


def mmm(values, fmt="{:.0f}"):
    return "/".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def write_report(results, benches, args):
    lines = [
        "# wirelens: what it costs the applications it watches",
        "",
        f"Measured by `bench/run.py` on this machine ({os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}):"
        f" {args.rounds} rounds of {args.seconds} s per load, alternating: without the daemon, with its probes"
        " only (attached to every socket call, every call filtered out at their first check), with the daemon"
        " capturing every process but layer 4 only (ProtocolProcess: false), and with the daemon capturing every"
        " process with all protocols, loopback kept, records to a file."
        " Figures are min/median/max over the rounds.",
        "",
        "| load | throughput without (/s) | probes only (/s) | ratio | layer 4 only (/s) | ratio |"
        " with daemon (/s) | ratio (median) | p99 without (ms) | p99 with (ms) |"
        " p99 ratio | daemon CPU (% of a core) | daemon peak RSS (MiB) | L7 calls reported /s (client and server sides) |"
        " kernel lost | plugin call failures |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, base, probes, l4only, capt, stats in results:
        tb, tp, tc = [b[0] for b in base], [p[0] for p in probes], [c[0] for c in capt]
        tl = [x[0] for x in l4only]
        pb, pc = [b[1] for b in base], [c[1] for c in capt]
        lines.append(
            f"| {name} | {mmm(tb)} | {mmm(tp)} | {statistics.median(tp) / statistics.median(tb):.3f} |"
            f" {mmm(tl)} | {statistics.median(tl) / statistics.median(tb):.3f} |"
            f" {mmm(tc)} | {statistics.median(tc) / statistics.median(tb):.3f} |"
            f" {mmm(pb, '{:.3f}')} | {mmm(pc, '{:.3f}')} | {statistics.median(pc) / max(1e-9, statistics.median(pb)):.2f} |"
            f" {mmm([s['cpu'] for s in stats], '{:.1f}')} | {mmm([s['rss'] for s in stats], '{:.0f}')} |"
            f" {mmm([s['calls_per_s'] for s in stats])} | {max(s['lost'] for s in stats)} |"
            f" {sum(s['plugin_failures'] for s in stats)} |")
    lines += ["", "Targets (issue 7): throughput loss at most 5% (ratio >= 0.95), p99 increase at most 10%"
              " (p99 ratio <= 1.10), no kernel loss at 20,000 calls per second.", "",
              "![throughput with and without the daemon](throughput.png)", ""]
    for bench, out in benches.items():
        lines += [f"## `cargo bench -p wirelens --bench {bench}`", "", "```", out, "```", ""]
    with open(os.path.join(ROOT, "bench", "report.md"), "w") as f:
        f.write("\n".join(lines))
    data = os.path.join(ROOT, "bench", "throughput.dat")
    with open(data, "w") as f:
        for name, base, probes, l4only, capt, _ in results:
            f.write(f"\"{name}\" {statistics.median([b[0] for b in base]) / 1000:.1f} "
                    f"{statistics.median([p[0] for p in probes]) / 1000:.1f} "
                    f"{statistics.median([x[0] for x in l4only]) / 1000:.1f} "
                    f"{statistics.median([c[0] for c in capt]) / 1000:.1f}\n")
    script = (f"set terminal png size 900,450; set output '{ROOT}/bench/throughput.png';"
              "set style data histogram; set style histogram cluster gap 1; set style fill solid border -1;"
              "set ylabel 'thousand operations per second (median)'; set title 'Application throughput';"
              "set xtics rotate by -15; set grid y;"
              f"plot '{data}' using 2:xtic(1) title 'without wirelens', '' using 3 title 'probes only',"
              " '' using 4 title 'layer 4 only', '' using 5 title 'with wirelens'")
    subprocess.run(["gnuplot", "-e", script], check=True)
    os.remove(data)
    print(f"wrote {ROOT}/bench/report.md and throughput.png")


if __name__ == "__main__":
    main()
