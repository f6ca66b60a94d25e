#!/usr/bin/env python3
"""A hostile plugin under load: are the other protocols unaffected?

    sudo python3 bench/hostile_load.py [--seconds 60] [--daemon PATH]

Two runs of the same length, each with a fresh daemon (all protocols,
loopback kept, records to a file) whose plugin directory holds testproto
(v1) next to the built-in plugins: a control run, then a hostile run. Both
run redis-benchmark SET/GET at a steady bounded rate (--rate operations per
second, in one-second batches of bounded -n) against redis-server, and a
testproto client doing normal exchanges (`REQ hello` / `RES hello`) against
a small line server on loopback (port 7777 when free). The hostile run adds
a client that opens a connection every --hostile-every seconds and sends
`REQ hello` then one of `REQ LOOP`, `REQ BOMB`, `REQ TRAP`, `REQ HUGE` in
turn (the plugin loops, allocates without bound, panics, returns an
oversized result).

Compared and checked (exit status 1 if broken):
- redis SET/GET calls the daemon reported per redis-benchmark operation
  (2.0: the client's and the server's side) within 5% between the runs, and
  within 5% of 2.0 in the control run; no more failed redis calls in the
  hostile run than in the control;
- both daemons alive at the end, exit code 0 on SIGINT, no kernel loss;
- control: no plugin failure, no ERROR/WARN line;
- hostile: plugin failures counted in the health records (> 0) and each
  logged naming testproto, at least one quarantine, quarantines doubling
  (backoff), fewer failures than hostile requests (the quarantine holds them
  off), every ERROR/WARN line naming testproto.
Writes bench/hostile_load.md (--report). Needs root (eBPF), redis-server and
redis-benchmark; builds nothing.
"""
import argparse
import csv
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Daemon, Servers, config_text, free_port, group_log, num, add_scenario_args, require,  # noqa: E402
                    parse_log, port_is_free, proc_cpu_seconds, proc_status, read_records, remote_port,
                    start_testproto_server, testproto_exchange, write_atomically)

HOSTILE = ["LOOP", "BOMB", "TRAP", "HUGE"]
HEALTH_KEYS = ["events", "kernel_lost", "truncated", "malformed", "plugin_failures", "plugins_quarantined",
               "l7_connections", "l7_messages", "l7_dropped_connections", "l7_orphan_responses", "l7_overflow",
               "flusher_dropped", "flusher_failures", "rss_bytes"]


class Run:
    """One daemon and its traffic for `seconds`."""

    def __init__(self, name, args, tmp, servers, tp_port, tp_pid, hostile):
        self.name, self.args, self.tp_port, self.tp_pid, self.hostile = name, args, tp_port, tp_pid, hostile
        self.redis_port, self.redis_pid = servers.redis, servers.redis_pid
        self.dir = os.path.join(tmp, name)
        self.plugin_dir = os.path.join(self.dir, "plugins")
        os.makedirs(self.plugin_dir)
        with open(args.plugin, "rb") as f:
            write_atomically(os.path.join(self.plugin_dir, "testproto.wasm"), f.read(), "wb")
        self.records = os.path.join(self.dir, "records.jsonl")
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.redis_ops, self.redis_runs, self.redis_failed_runs, self.redis_rps = 0, 0, 0, []
        self.normal = {"sent": 0, "answered": 0}
        self.hostile_sent = {k: 0 for k in HOSTILE}
        self.hostile_answered = 0
        self.samples = []

    def redis_load(self, deadline):
        n = max(1, int(self.args.rate / 2))  # per test, SET and GET: `rate` operations per second
        for i in range(100000):
            tick = time.time()
            if self.stop.is_set() or tick + 1 > deadline:
                return
            try:
                out = subprocess.run(["redis-benchmark", "-p", str(self.redis_port), "-t", "set,get", "-n", str(n),
                                      "-c", "2", "--csv"], capture_output=True, text=True, timeout=30).stdout
                rows = [r for r in csv.DictReader(io.StringIO(out)) if r.get("test") in ("SET", "GET")]
            except (subprocess.TimeoutExpired, OSError):
                rows = []
            with self.lock:
                self.redis_runs += 1
                if len(rows) == 2:
                    self.redis_ops += 2 * n
                    self.redis_rps.append(statistics.fmean(float(r["rps"]) for r in rows))
                else:
                    self.redis_failed_runs += 1
            self.stop.wait(max(0.0, tick + 1 - time.time()))

    def normal_client(self, deadline):
        for i in range(1000000):
            if self.stop.is_set() or time.time() > deadline:
                return
            answers = testproto_exchange(self.tp_port, ["hello", "hello"])
            with self.lock:
                self.normal["sent"] += 2
                self.normal["answered"] += len(answers)
            self.stop.wait(0.25)

    def hostile_client(self, deadline):
        for i in range(1000000):
            if self.stop.is_set() or time.time() > deadline:
                return
            kind = HOSTILE[i % len(HOSTILE)]
            answers = testproto_exchange(self.tp_port, ["hello", kind])
            with self.lock:
                self.hostile_sent[kind] += 1
                self.hostile_answered += len(answers) == 2
            self.stop.wait(self.args.hostile_every)

    def sample(self, pid):
        try:
            st = proc_status(pid)
            st["cpu_s"], st["t"] = proc_cpu_seconds(pid), time.time()
            self.samples.append(st)
        except OSError:
            pass

    def go(self):
        a = self.args
        self.daemon = Daemon(a.daemon, self.dir, config=config_text(self.records, l4=1, l7=1,
                                                                   plugin_dir=self.plugin_dir),
                             records=self.records, config_path=os.path.join(self.dir, "config.yaml"),
                             env={"NO_COLOR": "1"})
        if not self.daemon.ready:
            sys.exit(f"{self.name}: the daemon did not start; its log: {self.daemon.err.name}")
        print(f"{self.name}: {a.seconds} s, daemon pid {self.daemon.proc.pid}, log {self.daemon.err.name}",
              flush=True)
        self.t0 = time.time()
        deadline = self.t0 + a.seconds
        targets = [self.redis_load, self.normal_client] + ([self.hostile_client] if self.hostile else [])
        threads = [threading.Thread(target=t, args=(deadline,), daemon=True) for t in targets]
        try:
            for t in threads:
                t.start()
            for _ in range(100000):
                if time.time() >= deadline:
                    break
                self.sample(self.daemon.proc.pid)
                time.sleep(min(2.0, max(0.0, deadline - time.time())))
            self.stop.set()
            for t in threads:
                t.join(timeout=60)
            self.t_load_end = time.time()
            time.sleep(3)  # the last one-second windows flush
            self.sample(self.daemon.proc.pid)
            self.alive = self.daemon.alive()
            self.exit_code = self.daemon.terminate()
        finally:
            self.stop.set()
            if self.daemon.alive():
                self.daemon.terminate()
        self.analyse()

    def analyse(self):
        recs, self.bad_lines = read_records(self.records)
        self.dup_key_records = sum(1 for x in recs if x["_dup_keys"])
        self.max_line = max((x["_line_bytes"] for x in recs), default=0)
        # Only the calls of this bench's servers count (other processes on the
        # host are captured too): client side by the server's port, server
        # side by the server's pid.
        ours = {self.redis_port: self.redis_pid, self.tp_port: self.tp_pid}

        def mine(x):
            if x["role"] == "client":
                return remote_port(x) in ours
            return num(x, "_process_pid_") in ours.values()

        self.calls, self.calls_all, self.failed, self.redis_commands = {}, {}, {}, {}
        self.redis_sides = {"client": 0, "server": 0}
        self.hello = {"client": 0, "server": 0}
        for x in recs:
            if x["type"] != "protocols":
                continue
            p, n = x["protocol"], num(x, "total_count")
            self.calls_all[p] = self.calls_all.get(p, 0) + n
            if not mine(x):
                continue
            self.calls[p] = self.calls.get(p, 0) + n
            if x.get("success") == "0":
                self.failed[p] = self.failed.get(p, 0) + n
            if p == "redis":
                c = x.get("command", "?")
                self.redis_commands[c] = self.redis_commands.get(c, 0) + n
                if c in ("SET", "GET") and x["role"] in self.redis_sides:
                    self.redis_sides[x["role"]] += n
            if p == "testproto" and x.get("text") == "hello" and x["role"] in self.hello:
                self.hello[x["role"]] += n
        self.redis_setget = self.redis_commands.get("SET", 0) + self.redis_commands.get("GET", 0)
        self.ratio = self.redis_setget / self.redis_ops if self.redis_ops else 0.0
        self.huge_records = [x for x in recs if x["type"] == "protocols" and x["_line_bytes"] > 100_000]
        health = [x for x in recs if x["type"] == "health"]
        self.health_last = {k: num(health[-1], k) for k in HEALTH_KEYS} if health else {}
        self.health_max = {k: max(num(h, k) for h in health) for k in HEALTH_KEYS} if health else {}
        # Timeline: when the failure and quarantine figures changed.
        self.timeline, prev = [], None
        for h in health:
            cur = (num(h, "plugin_failures"), num(h, "plugins_quarantined"))
            if cur != prev:
                self.timeline.append((num(h, "__time__") - int(self.t0), *cur))
                prev = cur
        log = parse_log(self.daemon.err.name)
        self.log_groups = group_log(log)
        named = [e for e in log if "testproto" in e["text"]]
        self.testproto_groups = group_log(named, levels=("ERROR", "WARN", "INFO"))
        failed_lines = [e for e in log if e["message"].startswith("plugin call failed")]
        self.failures_logged = len(failed_lines)
        self.failures_logged_testproto = sum(1 for e in failed_lines if "testproto" in e["fields"].get("plugin", ""))
        self.failure_kinds = {}
        for e in failed_lines:
            kind = e["message"].split(":", 1)[1].strip() if ":" in e["message"] else e["message"]
            kind = re.sub(r" \[\+\d+ lines\]", "", kind)[:60]
            kind = f'{e["fields"].get("plugin", "?")}: {kind}'
            self.failure_kinds[kind] = self.failure_kinds.get(kind, 0) + 1
        self.quarantines = []
        for e in named:
            m = re.match(r"plugin quarantined for ([0-9.]+)(ms|s) after", e["message"])
            if m:
                secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
                self.quarantines.append((e["time"] - self.t0, secs))
        # testproto failures logged before each quarantine (since the previous one)
        self.per_quarantine, since = [], float("-inf")
        tp_fail_times = [e["time"] - self.t0 for e in failed_lines if "testproto" in e["fields"].get("plugin", "")]
        for t, _ in self.quarantines:
            self.per_quarantine.append(sum(1 for x in tp_fail_times if since < x <= t))
            since = t
        self.after_last = sum(1 for x in tp_fail_times if x > since)
        self.unnamed_errors = {k: n for k, n in self.log_groups.items() if "testproto" not in k}
        self.continuations = sum(1 for e in log if e.get("continuation"))
        s = self.samples
        self.cpu = (s[-1]["cpu_s"] - s[0]["cpu_s"]) / (s[-1]["t"] - s[0]["t"]) * 100 if len(s) > 1 else 0.0
        self.rss_max = max(x["VmRSS"] for x in s) / 1024
        self.hwm = s[-1]["VmHWM"] / 1024
        self.hostile_total = sum(self.hostile_sent.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--plugin", help="testproto v1 component (default: testproto-v1.wasm next to the daemon)")
    ap.add_argument("--rate", type=int, default=4000, help="redis-benchmark operations per second (SET+GET)")
    ap.add_argument("--hostile-every", type=float, default=0.25, help="seconds between hostile connections")
    add_scenario_args(ap, "hostile_load.md")
    args = ap.parse_args()
    args.plugin = args.plugin or os.path.join(os.path.dirname(os.path.abspath(args.daemon)), "testproto-v1.wasm")
    require((args.daemon, args.plugin), "build the daemon, and testproto with `wirelens plugins build"
            " tests/plugins/testproto`, or pass --daemon/--plugin")
    tmp = tempfile.mkdtemp(prefix="wirelens-hostile-")
    servers = Servers(tmp, which=("redis",))
    tp_port = 7777 if port_is_free(7777) else free_port()
    tp_server = start_testproto_server(tp_port, 2 * args.seconds + 300)
    try:
        control = Run("control", args, tmp, servers, tp_port, tp_server.pid, hostile=False)
        control.go()
        hostile = Run("hostile", args, tmp, servers, tp_port, tp_server.pid, hostile=True)
        hostile.go()
    finally:
        tp_server.terminate()
        servers.stop()
    ok, verdicts = judge(control, hostile)
    write_report(args, control, hostile, verdicts, tp_port)
    print(f"wrote {args.report}")
    print("\n".join(verdicts))
    if not ok or args.keep:
        print(f"kept for inspection: {tmp}")
    if not ok:
        sys.exit(1)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


def judge(c, h):
    verdicts = []

    def check(good, text):
        verdicts.append(("ok     " if good else "BROKEN ") + text)
        return good

    ok = True
    rel = h.ratio / c.ratio - 1 if c.ratio else float("inf")
    ok &= check(abs(rel) <= 0.05, f"redis SET/GET calls reported per operation: hostile {h.ratio:.4f} vs control"
                f" {c.ratio:.4f} ({rel * 100:+.2f}%, bound 5%)")
    ok &= check(abs(c.ratio / 2 - 1) <= 0.05, f"control: {c.ratio:.4f} calls per operation, within 5% of 2.0"
                " (both ends of each call)")
    # redis-benchmark now and then closes a connection with a request unanswered
    # at the end of a batch: a failed call in any run. Allow that much noise.
    slack = max(5, int(0.0001 * h.redis_ops))
    ok &= check(h.failed.get("redis", 0) <= c.failed.get("redis", 0) + slack,
                f"failed redis calls: hostile {h.failed.get('redis', 0)}, control {c.failed.get('redis', 0)}"
                f" (bound: control + {slack}, 0.01% of the operations or 5)")
    ok &= check(c.redis_failed_runs == 0 and h.redis_failed_runs == 0,
                f"redis-benchmark runs that failed: control {c.redis_failed_runs}, hostile {h.redis_failed_runs}")
    for r in (c, h):
        ok &= check(r.alive and r.exit_code == 0, f"{r.name}: daemon alive at the end ({r.alive}),"
                    f" exit code {r.exit_code} on SIGINT")
        ok &= check(r.health_max.get("kernel_lost", 1) == 0, f"{r.name}: kernel_lost {r.health_max.get('kernel_lost')}")
        ok &= check(r.health_max.get("flusher_dropped", 1) == 0 and r.health_max.get("flusher_failures", 1) == 0,
                    f"{r.name}: flusher_dropped {r.health_max.get('flusher_dropped')}, flusher_failures"
                    f" {r.health_max.get('flusher_failures')}")
        ok &= check(r.bad_lines == 0, f"{r.name}: every record line is JSON ({r.bad_lines} not)")
    ok &= check(c.health_max.get("plugin_failures", 1) == 0 and not c.log_groups,
                f"control: plugin_failures {c.health_max.get('plugin_failures')}, ERROR/WARN lines"
                f" {sum(c.log_groups.values())}")
    hf = h.health_last.get("plugin_failures", 0)
    ok &= check(hf > 0, f"hostile: plugin failures counted in the health records: {hf} (max"
                f" {h.health_max.get('plugin_failures', 0)})")
    ok &= check(h.failures_logged == hf, f"hostile: `plugin call failed` lines ({h.failures_logged}, of which"
                f" {h.failures_logged_testproto} testproto) = failures counted in the health records ({hf})")
    ok &= check(len(h.quarantines) >= 1 and h.health_max.get("plugins_quarantined", 0) >= 1,
                f"hostile: quarantined {len(h.quarantines)} times (logged), plugins_quarantined max"
                f" {h.health_max.get('plugins_quarantined', 0)} in the health records")
    spans = [s for _, s in h.quarantines]
    ok &= check(all(b >= a for a, b in zip(spans, spans[1:])) and (len(spans) < 2 or spans[1] > spans[0]),
                f"hostile: quarantine backoff {', '.join(f'{s:g} s' for s in spans)}")
    tf = h.failures_logged_testproto
    ok &= check(0 < tf < 0.5 * max(1, h.hostile_total), f"hostile: {tf} testproto failures for {h.hostile_total}"
                " hostile requests (the quarantine holds most off)")
    ok &= check(not h.unnamed_errors, f"hostile: every ERROR/WARN line names testproto ({len(h.unnamed_errors)}"
                f" other messages: {list(h.unnamed_errors)[:3]})")
    return ok, verdicts


def write_report(args, c, h, verdicts, tp_port):
    def fmt(d):
        return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

    rps = lambda r: f"{statistics.median(r.redis_rps):.0f}" if r.redis_rps else "-"  # noqa: E731
    others = lambda r: {k: v for k, v in r.redis_commands.items() if k not in ("SET", "GET")}  # noqa: E731
    L = [
        "# wirelens: a hostile plugin under load",
        "",
        f"`bench/hostile_load.py --seconds {args.seconds} --daemon {args.daemon}` on this machine"
        f" ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d %H:%M')}. Two runs of {args.seconds} s, each with a fresh"
        " daemon (all protocols, loopback kept, FlushOutL4Interval and FlushOutL7Interval 1, records to a file,"
        " default sandbox limits: 10 ms deadline, 64 MiB memory, 4 MiB output per call) whose plugin directory holds"
        f" testproto v1. Both: redis-benchmark SET/GET at {args.rate} operations/s (one-second batches, -c 2) and a"
        f" testproto client (a connection every 0.25 s, two `REQ hello`), server on port {tp_port}. The hostile"
        f" run adds a connection every {args.hostile_every:g} s sending `REQ hello` then one of"
        " LOOP, BOMB, TRAP, HUGE in turn.",
        "",
        "## Verdicts",
        "",
    ] + [f"- {v}" for v in verdicts] + [
        "",
        "## Figures",
        "",
        "| | control | hostile |",
        "|---|---|---|",
        f"| redis-benchmark operations (SET+GET) | {c.redis_ops} | {h.redis_ops} |",
        f"| redis-benchmark rps per batch (median) | {rps(c)} | {rps(h)} |",
        f"| redis SET/GET calls reported (client side + server side) | {c.redis_setget} ({c.redis_sides['client']}"
        f" + {c.redis_sides['server']}) | {h.redis_setget} ({h.redis_sides['client']} + {h.redis_sides['server']}) |",
        f"| calls reported per operation | {c.ratio:.4f} | {h.ratio:.4f} |",
        f"| other redis commands reported | {fmt(others(c))} | {fmt(others(h))} |",
        f"| failed calls (success 0) by protocol | {fmt(c.failed)} | {fmt(h.failed)} |",
        f"| L7 calls of this bench's servers by protocol | {fmt(c.calls)} | {fmt(h.calls)} |",
        f"| L7 calls of every process on the host (other users included) | {fmt(c.calls_all)} | {fmt(h.calls_all)} |",
        f"| testproto `hello` exchanges answered (normal client + first exchange of hostile connections) |"
        f" {c.normal['answered']} | {h.normal['answered']} + {h.hostile_answered} |",
        f"| testproto `hello` calls reported, client side + server side, per `hello` exchange |"
        f" {c.hello['client']} + {c.hello['server']}, {sum(c.hello.values()) / max(1, c.normal['answered']):.3f} |"
        f" {h.hello['client']} + {h.hello['server']},"
        f" {sum(h.hello.values()) / max(1, h.normal['answered'] + h.hostile_answered):.3f} |",
        f"| hostile requests sent | - | {fmt(h.hostile_sent)} ({h.hostile_answered} connections answered) |",
    ]
    for k in HEALTH_KEYS:
        L.append(f"| health `{k}` (last / max) | {c.health_last.get(k, 0)} / {c.health_max.get(k, 0)} |"
                 f" {h.health_last.get(k, 0)} / {h.health_max.get(k, 0)} |")
    L += [
        f"| daemon CPU (% of a core, average) | {c.cpu:.1f} | {h.cpu:.1f} |",
        f"| daemon RSS max / VmHWM (MiB) | {c.rss_max:.1f} / {c.hwm:.1f} | {h.rss_max:.1f} / {h.hwm:.1f} |",
        f"| records with a key twice / longest record line (bytes) | {c.dup_key_records} / {c.max_line} |"
        f" {h.dup_key_records} / {h.max_line} |",
        f"| protocols records over 100 kB | {len(c.huge_records)} | {len(h.huge_records)} |",
        "",
        "## Hostile run: the daemon's log about testproto",
        "",
        f"Failures logged by kind: {fmt(h.failure_kinds)}.",
        "",
        "Quarantines (seconds after the start: span): "
        + (", ".join(f"{t:.1f} s: {s:g} s" for t, s in h.quarantines) or "none") + ".",
        "",
        "testproto failures logged before each quarantine (since the previous one): "
        + (", ".join(str(n) for n in h.per_quarantine) or "none") + f"; after the last one: {h.after_last}.",
        "",
        "Health records, when `plugin_failures` / `plugins_quarantined` changed (seconds after the start): "
        + ", ".join(f"{t} s: {f} / {q}" for t, f, q in h.timeline) + ".",
        "",
        "Lines naming testproto, by message:",
        "",
    ]
    L += [f"- {n} x `{k}`" for k, n in h.testproto_groups.items()]
    L += ["", "ERROR/WARN lines not naming testproto: " + (fmt(h.unnamed_errors) if h.unnamed_errors else "none")
          + f"; control run ERROR/WARN: {fmt(c.log_groups) if c.log_groups else 'none'}.", ""]
    if h.huge_records:
        x = h.huge_records[0]
        L += [f"A `REQ HUGE` call was reported, not stopped: {len(h.huge_records)} protocols records over 100 kB,"
              f" the largest {h.max_line} bytes, keys repeated in one record: {x['_dup_keys']}.", ""]
    with open(args.report, "w") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
