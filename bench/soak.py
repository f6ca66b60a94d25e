#!/usr/bin/env python3
"""Soak: the daemon under mixed moderate load for minutes, with live reloads.

    sudo python3 bench/soak.py [--minutes 10] [--reload-every 30] [--daemon PATH]

Starts redis-server, nginx and PostgreSQL on loopback (as run.py does) and a
`testproto` line server, then the daemon capturing everything (all
protocols, loopback kept) with records to a file, short flush intervals and
a plugin directory holding testproto.wasm. For the whole duration it runs
a moderate load: a rate-limited pgbench in the background (-R), a testproto
client (a few exchanges per second), and in rotation, one per 10 s slot,
redis-benchmark (bounded -n), pgbench -M prepared (-R), a short wrk run and a
few curl requests, each followed by a pause. Every --reload-every seconds it
alternately (a) swaps testproto.wasm between the v1 and v2 builds (written
to a temporary name, then renamed) and (b) rewrites the config file (new
`Common.Tags.soak` value, FlushOutL7Interval toggled between 2 and 3), both
of which the daemon applies live.

Every few seconds it samples the daemon's RSS, CPU, threads and open files
from /proc. At the end it reports and checks (exit status 1 if broken):
- RSS growth after warm-up at most 10% (median of samples around the
  warm-up point against the median of the last 30 s);
- no ERROR or WARN line in the daemon's log (nothing here provokes one);
- every reload logged by the daemon (and the new tags seen in records);
- health counters: no kernel loss, plugin failure, flusher drop or failure;
- records of each type in every minute up to the end; exit code 0 on SIGINT.
Writes bench/soak.md (--report). Needs root (eBPF) and the servers and tools
scripts/setup.sh installs; builds nothing.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Daemon, Servers, config_text, free_port, group_log, add_scenario_args, require,  # noqa: E402
                    num, parse_log, port_is_free, proc_cpu_seconds, proc_status, read_records, remote_port,
                    start_testproto_server, testproto_exchange, write_atomically)

HEALTH_KEYS = ["events", "kernel_lost", "kernel_filtered", "truncated", "kernel_denied", "malformed", "connections",
               "connections_over_capacity", "connections_expired", "l4_overflow", "rss_bytes", "plugin_failures",
               "plugins_quarantined", "l7_connections", "l7_messages", "l7_dropped_connections",
               "l7_orphan_responses", "l7_overflow", "flusher_dropped", "flusher_failures"]
# Health counters that must stay 0 in a soak with nothing hostile.
MUST_BE_ZERO = ["kernel_lost", "malformed", "connections_over_capacity", "l4_overflow", "plugin_failures",
                "plugins_quarantined", "l7_overflow", "flusher_dropped", "flusher_failures"]
L4_INTERVAL = 2


def run(cmd, timeout):
    """A bounded load command; its stdout, or "" if it failed."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
    except (subprocess.TimeoutExpired, OSError):
        return ""


class Load:
    """The soak's traffic, every loop bounded by the deadline and a count."""

    def __init__(self, servers, testproto_port, deadline, slot):
        self.s, self.tp, self.deadline, self.slot = servers, testproto_port, deadline, slot
        self.stop = threading.Event()
        self.counts = {"redis-benchmark runs": 0, "pgbench -M prepared runs": 0, "wrk runs": 0, "curl requests": 0,
                       "testproto exchanges": 0, "testproto answers": 0}
        self.lock = threading.Lock()
        self.threads = []
        self.background = None

    def count(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    def start(self):
        seconds = max(1, int(self.deadline - time.time()))
        pg = ["-h", "127.0.0.1", "-p", str(self.s.pg), "-U", "postgres"]
        # One long-lived connection for the whole run, 20 transactions/s.
        self.background = subprocess.Popen(["pgbench", *pg, "-S", "-n", "-c", "1", "-j", "1", "-R", "20", "-T",
                                            str(seconds), "postgres"], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
        for target in (self.rotation, self.testproto):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self.threads.append(t)

    def rotation(self):
        s, pg = self.s, ["-h", "127.0.0.1", "-p", str(self.s.pg), "-U", "postgres"]
        url = f"http://127.0.0.1:{s.nginx}"
        loads = [
            ("redis-benchmark runs", lambda: run(["redis-benchmark", "-p", str(s.redis), "-t",
                                                  "set,get,incr,lpush,lpop,mset", "-n", "2000", "-c", "2", "-r",
                                                  "1000", "-q"], 60)),
            ("pgbench -M prepared runs", lambda: run(["pgbench", *pg, "-S", "-M", "prepared", "-n", "-c", "2", "-j",
                                                      "1", "-R", "100", "-T", "5", "postgres"], 30)),
            ("wrk runs", lambda: run(["wrk", "-t1", "-c2", "-d2s", f"{url}/index.html"], 30)),
            ("curl requests", self.curls),
        ]
        for i in range(100000):
            start = time.time()
            if self.stop.is_set() or start + self.slot > self.deadline:
                return
            name, load = loads[i % len(loads)]
            load()
            if name != "curl requests":
                self.count(name)
            self.stop.wait(max(0.0, start + self.slot - time.time()))

    def curls(self):
        for i in range(10):
            if self.stop.is_set():
                return
            path = "index.html" if i % 3 else f"missing-{i % 4}"
            run(["curl", "-s", "-o", "/dev/null", "--max-time", "5", f"http://127.0.0.1:{self.s.nginx}/{path}"], 10)
            self.count("curl requests")
            self.stop.wait(0.3)

    def testproto(self):
        """Two exchanges per connection, a connection every 0.5 s."""
        for i in range(1000000):
            if self.stop.is_set() or time.time() > self.deadline:
                return
            texts = [f"hello-{i % 10}", f"world-{i % 5}"]
            answers = testproto_exchange(self.tp, texts)
            self.count("testproto exchanges", len(texts))
            self.count("testproto answers", len(answers))
            self.stop.wait(0.5)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=90)
        if self.background and self.background.poll() is None:
            self.background.terminate()
        if self.background:
            try:
                self.background.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.background.kill()


class Sampler(threading.Thread):
    """The daemon's RSS, CPU, threads and open files every `every` s."""

    def __init__(self, pid, every, deadline):
        super().__init__(daemon=True)
        self.pid, self.every, self.deadline = pid, every, deadline
        self.samples = []
        self.stop = threading.Event()

    def sample(self):
        try:
            st = proc_status(self.pid)
            st["cpu_s"] = proc_cpu_seconds(self.pid)
        except (OSError, AttributeError):
            return
        st["t"] = time.time()
        self.samples.append(st)

    def run(self):
        for _ in range(1000000):
            if self.stop.is_set() or time.time() > self.deadline:
                return
            self.sample()
            self.stop.wait(self.every)


def median_around(samples, key, t_from, t_to):
    vals = [s[key] for s in samples if t_from <= s["t"] <= t_to]
    return statistics.median(vals) if vals else None


def slope_per_minute(samples, key, t_from):
    """Least-squares slope of `key` over time after t_from, per minute."""
    pts = [(s["t"], s[key]) for s in samples if s["t"] >= t_from]
    if len(pts) < 3:
        return 0.0
    mt = statistics.fmean(t for t, _ in pts)
    mv = statistics.fmean(v for _, v in pts)
    den = sum((t - mt) ** 2 for t, _ in pts)
    return sum((t - mt) * (v - mv) for t, v in pts) / den * 60 if den else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--reload-every", type=float, default=30, help="seconds between reloads (plugin, config, ...)")
    ap.add_argument("--plugin-v1", help="testproto v1 component (default: testproto-v1.wasm next to the daemon)")
    ap.add_argument("--plugin-v2", help="testproto v2 component (default: testproto-v2.wasm next to the daemon)")
    ap.add_argument("--warmup", type=float, help="seconds of warm-up (default 120, or a quarter of shorter runs)")
    ap.add_argument("--sample-every", type=float, default=5)
    ap.add_argument("--slot", type=float, default=10, help="seconds per load of the rotation")
    add_scenario_args(ap, "soak.md")
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(args.daemon))
    v1 = args.plugin_v1 or os.path.join(here, "testproto-v1.wasm")
    v2 = args.plugin_v2 or os.path.join(here, "testproto-v2.wasm")
    require((args.daemon, v1, v2), "build the daemon, and testproto with `wirelens plugins build"
            " tests/plugins/testproto` and `--features v2`, or pass --daemon/--plugin-v1/--plugin-v2")
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else (120 if duration >= 300 else duration / 4)
    plugins = {"1.0.0": open(v1, "rb").read(), "2.0.0": open(v2, "rb").read()}

    tmp = tempfile.mkdtemp(prefix="wirelens-soak-")
    os.chmod(tmp, 0o755)  # PostgreSQL runs as its own user
    cfg_dir, plugin_dir = os.path.join(tmp, "config"), os.path.join(tmp, "plugins")
    os.makedirs(cfg_dir)
    os.makedirs(plugin_dir)
    write_atomically(os.path.join(plugin_dir, "testproto.wasm"), plugins["1.0.0"], "wb")
    records = os.path.join(tmp, "out", "records.jsonl")
    config_path = os.path.join(cfg_dir, "soak.yaml")

    def config(gen):
        return config_text(records, l4=L4_INTERVAL, l7=2 if gen % 2 == 0 else 3, tags={"soak": f"gen-{gen}"},
                           plugin_dir=plugin_dir)

    servers = Servers(tmp)
    tp_port = 7777 if port_is_free(7777) else free_port()
    tp_server = start_testproto_server(tp_port, duration + 300)
    daemon = load = sampler = None
    reloads = []
    try:
        daemon = Daemon(args.daemon, tmp, config=config(0), records=records, config_path=config_path,
                        env={"NO_COLOR": "1"})
        if not daemon.ready:
            sys.exit(f"the daemon did not start; its log: {daemon.err.name}")
        t0 = time.time()
        deadline = t0 + duration
        print(f"soak: {args.minutes} min, daemon pid {daemon.proc.pid}, log {daemon.err.name}, records {records}",
              flush=True)
        sampler = Sampler(daemon.proc.pid, args.sample_every, deadline + 120)
        sampler.start()
        load = Load(servers, tp_port, deadline, args.slot)
        load.start()
        version, gen = "1.0.0", 0
        for k in range(1, 100000):
            at = t0 + k * args.reload_every
            if at > deadline - 5 or not daemon.alive():
                break
            time.sleep(max(0.0, at - time.time()))
            if k % 2 == 1:
                new = "2.0.0" if version == "1.0.0" else "1.0.0"
                reloads.append({"kind": "plugin", "t": time.time(), "from": version, "to": new})
                write_atomically(os.path.join(plugin_dir, "testproto.wasm"), plugins[new], "wb")
                version = new
            else:
                gen += 1
                reloads.append({"kind": "config", "t": time.time(), "gen": gen, "l7": 2 if gen % 2 == 0 else 3})
                write_atomically(config_path, config(gen))
            r = reloads[-1]
            what = f"testproto {r['from']} -> {r['to']}" if r["kind"] == "plugin" else f"config gen-{r['gen']}"
            rss = sampler.samples[-1]["VmRSS"] / 1024 if sampler.samples else 0
            print(f"  {time.time() - t0:6.0f} s: reload {what}; RSS {rss:.1f} MiB", flush=True)
        time.sleep(max(0.0, deadline - time.time()))
        alive_at_end = daemon.alive()
        load.finish()
        time.sleep(2 * 3 + 1)  # the last windows flush
        sampler.sample()
        sampler.stop.set()
        t_end = time.time()
        exit_code = daemon.terminate()
    finally:
        if load:
            load.finish()
        if sampler:
            sampler.stop.set()
        if daemon and daemon.alive():
            daemon.terminate()
        tp_server.terminate()
        servers.stop()
    ports = {servers.redis, servers.nginx, servers.pg, tp_port}
    result = analyse(args, t0, t_end, warmup, sampler.samples, daemon, reloads, load.counts, alive_at_end, exit_code,
                     ports)
    write_report(args, result)
    print(f"wrote {args.report}")
    for line in result["verdicts"]:
        print(line)
    if not result["ok"] or args.keep:
        print(f"kept for inspection: {tmp}")
    if not result["ok"]:
        sys.exit(1)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


def analyse(args, t0, t_end, warmup, samples, daemon, reloads, counts, alive_at_end, exit_code, ports):
    r = {"t0": t0, "t_end": t_end, "warmup": warmup, "samples": samples, "counts": counts, "verdicts": []}
    # RSS
    rss_warm = median_around(samples, "VmRSS", t0 + warmup - 15, t0 + warmup + 15)
    rss_end = median_around(samples, "VmRSS", t_end - 30, t_end)
    after = [s for s in samples if s["t"] >= t0 + warmup]
    r["rss_warm"], r["rss_end"] = rss_warm, rss_end
    r["rss_max_after_warm"] = max((s["VmRSS"] for s in after), default=None)
    r["rss_max"] = max(s["VmRSS"] for s in samples)
    r["hwm_end"] = samples[-1]["VmHWM"]
    r["growth_end"] = (rss_end - rss_warm) / rss_warm * 100
    r["growth_max"] = (r["rss_max_after_warm"] - rss_warm) / rss_warm * 100
    r["slope_kib_min"] = slope_per_minute(samples, "VmRSS", t0 + warmup)
    r["slope_last_third"] = slope_per_minute(samples, "VmRSS", t_end - (t_end - t0) / 3)
    steps = [(b["VmRSS"] - a["VmRSS"], b["t"] - t0) for a, b in zip(samples, samples[1:])]
    r["largest_step"] = max(steps, default=(0, 0))
    r["fds"] = (median_around(samples, "fds", t0 + warmup - 15, t0 + warmup + 15), samples[-1]["fds"],
                max(s["fds"] for s in samples))
    r["threads"] = (median_around(samples, "Threads", t0 + warmup - 15, t0 + warmup + 15), samples[-1]["Threads"],
                    max(s["Threads"] for s in samples))
    r["cpu_avg"] = (samples[-1]["cpu_s"] - samples[0]["cpu_s"]) / (samples[-1]["t"] - samples[0]["t"]) * 100
    cpu_steps = [(b["cpu_s"] - a["cpu_s"]) / (b["t"] - a["t"]) * 100 for a, b in zip(samples, samples[1:])
                 if b["t"] > a["t"]]
    r["cpu_max"] = max(cpu_steps, default=0.0)
    # per-minute table
    rows = []
    marks = [(m, t0 + m * 60) for m in range(int((t_end - t0) // 60) + 1)] + [("end", t_end)]
    for m, at in marks:
        near = min(samples, key=lambda s: abs(s["t"] - at))
        prev = min(samples, key=lambda s: abs(s["t"] - (at - 60)))
        cpu = ((near["cpu_s"] - prev["cpu_s"]) / (near["t"] - prev["t"]) * 100) if near["t"] > prev["t"] else None
        rows.append({"min": m, "t": near["t"] - t0, "rss": near["VmRSS"], "hwm": near["VmHWM"], "cpu": cpu,
                     "threads": near["Threads"], "fds": near["fds"]})
    r["rows"] = rows
    # logs
    log = parse_log(daemon.err.name)
    r["log_groups"] = group_log(log)
    r["info_groups"] = group_log(log, levels=("INFO",))
    r["log_lines"] = len(log)
    # reloads observed in the log
    loaded = [e for e in log
              if e["message"] == "plugin loaded" and e["fields"].get("plugin", "").startswith("testproto")]
    reloaded = [e for e in log if e["message"] == "config reloaded"]
    for i, rl in enumerate(reloads):
        until = reloads[i + 1]["t"] if i + 1 < len(reloads) else t_end
        if rl["kind"] == "plugin":
            hits = [e for e in loaded if rl["t"] - 0.5 <= e["time"] < until
                    and e["fields"].get("plugin") == f"testproto@{rl['to']}"
                    and e["fields"].get("replaces") == f"testproto@{rl['from']}"]
        else:
            hits = [e for e in reloaded if rl["t"] - 0.5 <= e["time"] < until]
        rl["logged"] = len(hits)
        rl["log_delay"] = hits[0]["time"] - rl["t"] if hits else None
    # records
    recs, bad = read_records(daemon.records)
    r["bad_lines"] = bad
    r["records_total"] = len(recs)
    r["dup_key_records"] = sum(1 for x in recs if x["_dup_keys"])
    r["max_line_bytes"] = max((x["_line_bytes"] for x in recs), default=0)
    per_min, per_proto = {}, {}
    for x in recs:
        m = int((num(x, "__time__") - t0) // 60)
        per_min.setdefault(m, {}).setdefault(x["type"], 0)
        per_min[m][x["type"]] += 1
        if x["type"] == "protocols" and x["role"] == "client" and remote_port(x) in ports:
            p = per_proto.setdefault(m, {})
            p[x["protocol"]] = p.get(x["protocol"], 0) + num(x, "total_count")
    r["per_min"], r["per_proto"] = per_min, per_proto
    # Calls to this soak's servers, client side (the host's other processes
    # are captured too: they are in calls_all).
    calls, calls_all = {}, {}
    for x in recs:
        if x["type"] == "protocols":
            calls_all[x["protocol"]] = calls_all.get(x["protocol"], 0) + num(x, "total_count")
            if x["role"] == "client" and remote_port(x) in ports:
                calls[x["protocol"]] = calls.get(x["protocol"], 0) + num(x, "total_count")
    r["calls"], r["calls_all"] = calls, calls_all
    failed = {}
    for x in recs:
        if (x["type"] == "protocols" and x.get("success") == "0" and x["role"] == "client"
                and remote_port(x) in ports):
            what = " ".join([x["protocol"]] + [f"{k}={x[k]}" for k in ("resp_code", "error_code", "command", "rcode")
                                               if x.get(k)])
            failed[what] = failed.get(what, 0) + num(x, "total_count")
    r["failed_calls"] = failed
    health = [x for x in recs if x["type"] == "health"]
    r["health_last"] = {k: num(health[-1], k) for k in HEALTH_KEYS} if health else {}
    r["health_max"] = {k: max(num(h, k) for h in health) for k in HEALTH_KEYS} if health else {}
    r["health_count"] = len(health)
    # Events per second captured on the whole host, per minute and at most
    # (the daemon sees every process, not only this soak's load).
    ev_min, r["events_peak"] = {}, (0.0, 0)
    for a, b in zip(health, health[1:]):
        dt = num(b, "__time__") - num(a, "__time__")
        if dt <= 0:
            continue
        rate = (num(b, "events") - num(a, "events")) / dt
        m = int((num(b, "__time__") - t0) // 60)
        ev_min.setdefault(m, []).append(rate)
        if rate > r["events_peak"][0]:
            r["events_peak"] = (rate, num(b, "__time__") - t0)
    r["events_per_min"] = {m: statistics.fmean(v) for m, v in ev_min.items()}
    before = [num(h, "__time__") for h in health if num(h, "__time__") <= t_end]
    r["last_health_age"] = t_end - before[-1] if before else None
    r["health_max_gap"] = max((b - a for a, b in zip(before, before[1:])), default=None)
    # counters that went down between health records (counters should only grow)
    decreasing = {}
    for k in HEALTH_KEYS:
        if k in ("connections", "rss_bytes", "plugins_quarantined", "l7_connections"):
            continue
        for a, b in zip(health, health[1:]):
            if num(b, k) < num(a, k):
                decreasing[k] = decreasing.get(k, 0) + 1
    r["decreasing"] = decreasing
    # tags applied (config reloads seen in the records)
    first_gen = {}
    for x in recs:
        g = x.get("soak")
        if g and g not in first_gen:
            first_gen[g] = num(x, "__time__")
    for rl in reloads:
        if rl["kind"] == "config":
            seen = first_gen.get(f"gen-{rl['gen']}")
            rl["in_records"] = seen is not None
            rl["records_delay"] = seen - rl["t"] if seen is not None else None
    r["reloads"] = reloads

    # verdicts
    v = r["verdicts"]

    def check(ok, text):
        v.append(("ok     " if ok else "BROKEN ") + text)
        return ok

    ok = True
    ok &= check(alive_at_end and exit_code == 0, f"daemon alive to the end and exit code 0 on SIGINT "
                f"(alive {alive_at_end}, exit code {exit_code})")
    ok &= check(r["growth_end"] <= 10.0, f"RSS growth after warm-up {r['growth_end']:+.1f}% <= 10% "
                f"({rss_warm / 1024:.1f} MiB at {warmup:.0f} s -> {rss_end / 1024:.1f} MiB at the end; "
                f"max after warm-up {r['rss_max_after_warm'] / 1024:.1f} MiB, {r['growth_max']:+.1f}%; largest rise"
                f" {r['largest_step'][0] / 1024:+.1f} MiB at {r['largest_step'][1]:.0f} s, slope over the last third"
                f" {r['slope_last_third']:+.0f} KiB/min)")
    ok &= check(not r["log_groups"], f"no ERROR/WARN log lines ({sum(r['log_groups'].values())} found)")
    missing = [rl for rl in reloads if not rl["logged"]]
    ok &= check(reloads and not missing, f"every reload logged by the daemon ({len(reloads) - len(missing)} of "
                f"{len(reloads)})")
    unseen = [rl for rl in reloads if rl["kind"] == "config" and not rl["in_records"]]
    ok &= check(not unseen, f"every config reload's new tag seen in the records ({len(unseen)} missing)")
    nonzero = {k: r["health_max"].get(k, 0) for k in MUST_BE_ZERO if r["health_max"].get(k, 0)}
    ok &= check(health and not nonzero, f"health counters {', '.join(MUST_BE_ZERO)} all 0 (nonzero: {nonzero})")
    full = [m for m in range(int((t_end - t0) // 60))]
    gaps = [m for m in full if not all(per_min.get(m, {}).get(t) for t in ("health", "statistics", "protocols"))]
    ok &= check(not gaps, f"health, statistics and protocols records in every minute (gaps in minutes {gaps})")
    age = r["last_health_age"]
    gap = r["health_max_gap"]
    ok &= check(age is not None and age <= 2 * L4_INTERVAL + 3 and gap is not None and gap <= 2 * L4_INTERVAL + 2,
                f"health records to the end: the last one before the stop {age:.1f} s before it, at most {gap} s"
                f" between two (FlushOutL4Interval {L4_INTERVAL})")
    ok &= check(bad == 0, f"every record line is JSON ({bad} not)")
    r["ok"] = ok
    return r


def write_report(args, r):
    t0 = r["t0"]
    mib = lambda kib: f"{kib / 1024:.1f}"  # noqa: E731
    L = [
        "# wirelens soak",
        "",
        f"`bench/soak.py --minutes {args.minutes:g} --reload-every {args.reload_every:g}"
        f" --daemon {args.daemon}` on this machine ({os.cpu_count()} cores),"
        f" {time.strftime('%Y-%m-%d %H:%M', time.localtime(t0))},"
        f" {(r['t_end'] - t0) / 60:.1f} min. Load: pgbench -R 20 (one connection throughout), a testproto client"
        " (2 exchanges per connection, a connection every 0.5 s), and in rotation, one per"
        f" {args.slot:g} s slot: redis-benchmark (6 tests, -n 2000, 2 clients), pgbench -M prepared -R 100 for 5 s,"
        " wrk -t1 -c2 for 2 s against nginx, 10 curl requests. Reloads every"
        f" {args.reload_every:g} s, alternately testproto.wasm v1<->v2 (atomic rename) and the config file"
        " (new Tags value, FlushOutL7Interval 2<->3). Daemon: all protocols, loopback kept, FlushOutL4Interval"
        f" {L4_INTERVAL}, records to a file.",
        "",
        "## Verdicts",
        "",
    ]
    L += [f"- {line}" for line in r["verdicts"]]
    L += [
        "",
        "## Memory and CPU",
        "",
        f"- RSS after warm-up ({r['warmup']:.0f} s, median of samples within 15 s): {mib(r['rss_warm'])} MiB;"
        f" at the end (median of the last 30 s): {mib(r['rss_end'])} MiB; growth {r['growth_end']:+.1f}%",
        f"- RSS max after warm-up {mib(r['rss_max_after_warm'])} MiB ({r['growth_max']:+.1f}%), max overall"
        f" {mib(r['rss_max'])} MiB, VmHWM {mib(r['hwm_end'])} MiB; least-squares slope after warm-up"
        f" {r['slope_kib_min']:+.0f} KiB/min, over the last third {r['slope_last_third']:+.0f} KiB/min; largest rise"
        f" between two samples {r['largest_step'][0] / 1024:+.1f} MiB at {r['largest_step'][1]:.0f} s",
        f"- events captured on the whole host (health `events`): peak {r['events_peak'][0]:.0f}/s at"
        f" {r['events_peak'][1]:.0f} s; per minute in the table (the daemon sees every process: other users of"
        " the machine add to the soak's own load)",
        f"- open files after warm-up / end / max: {r['fds'][0]:.0f} / {r['fds'][1]} / {r['fds'][2]};"
        f" threads: {r['threads'][0]:.0f} / {r['threads'][1]} / {r['threads'][2]}",
        f"- daemon CPU: {r['cpu_avg']:.1f}% of one core on average, {r['cpu_max']:.1f}% max over a"
        f" {args.sample_every:g} s sample",
        "",
        "| minute | RSS (MiB) | VmHWM (MiB) | CPU last minute (% of a core) | host events/s that minute | threads |"
        " open fds |"
        " health / statistics / protocols records that minute | L7 calls to the soak's servers that minute"
        " (client side) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        m = row["min"]
        pm = r["per_min"].get(m, {}) if m != "end" else {}
        pp = r["per_proto"].get(m, {}) if m != "end" else {}
        cpu = f"{row['cpu']:.1f}" if row["cpu"] is not None and m != 0 else "-"
        ev = r["events_per_min"].get(m) if m != "end" else None
        ev = f"{ev:.0f}" if ev is not None else "-"
        L.append(f"| {m} | {mib(row['rss'])} | {mib(row['hwm'])} | {cpu} | {ev} | {row['threads']} | {row['fds']} |"
                 f" {pm.get('health', 0)} / {pm.get('statistics', 0)} / {pm.get('protocols', 0)} |"
                 f" {', '.join(f'{k} {v}' for k, v in sorted(pp.items())) or '-'} |")
    L += ["", "(Row m: the sample nearest m minutes after the daemon was ready; records by their `__time__`.)", "",
          "## Reloads", ""]
    plug = [x for x in r["reloads"] if x["kind"] == "plugin"]
    conf = [x for x in r["reloads"] if x["kind"] == "config"]
    delays = [x["log_delay"] for x in r["reloads"] if x["log_delay"] is not None]
    L.append(f"- {len(r['reloads'])} reloads: {len(plug)} plugin swaps (logged `plugin loaded` with the expected"
             f" `replaces`: {sum(1 for x in plug if x['logged'])}), {len(conf)} config edits (logged `config reloaded`:"
             f" {sum(1 for x in conf if x['logged'])}; new tag seen in records:"
             f" {sum(1 for x in conf if x['in_records'])})")
    if delays:
        L.append(f"- from the write to the daemon's log line: {min(delays) * 1000:.0f} / "
                 f"{statistics.median(delays) * 1000:.0f} / {max(delays) * 1000:.0f} ms (min/median/max)")
    multi = [x for x in r["reloads"] if x["logged"] > 1]
    if multi:
        L.append(f"- {len(multi)} reloads were logged more than once (one write, several reloads)")
    L += ["", "## Daemon log", "", f"{r['log_lines']} lines. ERROR/WARN by message:", ""]
    if r["log_groups"]:
        L += [f"- {n} x `{k}`" for k, n in r["log_groups"].items()]
    else:
        L.append("- none")
    L += ["", "INFO by message:", ""]
    L += [f"- {n} x `{k}`" for k, n in r["info_groups"].items()]
    L += ["", "## Health records", "",
          f"{r['health_count']} health records; the last one before the stop {r['last_health_age']:.1f} s before it,"
          f" at most {r['health_max_gap']} s between two. `last` is the record written at shutdown (after the"
          " capture is detached, so its `rss_bytes` is lower).", "",
          "| counter | last | max |", "|---|---|---|"]
    for k in HEALTH_KEYS:
        L.append(f"| {k} | {r['health_last'].get(k, 0)} | {r['health_max'].get(k, 0)} |")
    if r["decreasing"]:
        L += ["", "Counters that went down between two health records: "
              + ", ".join(f"`{k}` ({n} times)" for k, n in r["decreasing"].items())]
    L += ["", "## Records and load", "",
          f"- {r['records_total']} records ({r['bad_lines']} lines not JSON, {r['dup_key_records']} with a key twice,"
          f" longest line {r['max_line_bytes']} bytes)",
          "- L7 calls to the soak's servers over the run (client side): "
          + ", ".join(f"{k} {v}" for k, v in sorted(r["calls"].items())),
          "- L7 calls of every process on the host, both sides (other users of the machine included): "
          + ", ".join(f"{k} {v}" for k, v in sorted(r["calls_all"].items())),
          "- failed calls to the soak's servers (success 0, client side): "
          + (", ".join(f"{k} {v}" for k, v in sorted(r["failed_calls"].items())) or "none"),
          "- load done: " + ", ".join(f"{k} {v}" for k, v in r["counts"].items())]
    tp_calls, tp_ex = r["calls"].get("testproto", 0), r["counts"]["testproto answers"]
    if tp_ex:
        L.append(f"- testproto calls reported (client side) per exchange answered: {tp_calls / tp_ex:.3f} (1.0 ="
                 " every exchange, across the plugin swaps)")
    L.append("")
    with open(args.report, "w") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
