#!/usr/bin/env python3
"""Where the CPU per observed call goes, and what each structural change
left could save at most: sampled with `perf` across the whole machine at
a fixed rate, with everything on.

    sudo python3 bench/cost_breakdown.py [--rounds 3] [--seconds 6] [--only TEXT]
                                         [--before BINARY [--before-name TEXT]] [--report PATH]
    python3 bench/cost_breakdown.py --render bench/cost_breakdown.json

For each load (those of run.py but the pipelined one; its limits are
worked out in the README), its maximum without the daemon is measured
(the median of three flat-out runs) and the load runs at 75% of it with
the daemon. `perf record -a -g` samples every CPU's time (cpu-clock, one
sample per 250 us of CPU) while the load runs; each sample of the kernel
programs or of the daemon is put in one part by its stack:

- kernel programs, by the helper under way: the copy of user bytes
  (bpf_probe_read_user), the clock (bpf_ktime_get_ns), the ring buffer
  (reserve, submit, query), socket and task storage, the programs' own
  instructions, other helpers, and the tracepoints' dispatch to them;
- the daemon, by the function running (its frames are not unwound):
  plugin code in the sandbox, wasmtime (entering the sandbox, lifting
  results), libc memory copies, the reader (ring buffer, decoding),
  layer 7 in the host (batching, detection, parsed messages), stitching,
  aggregation, connections, the allocator, hash maps, the kernel on the
  daemon's behalf (system calls, wake-ups) and the rest.

Samples times 250 us over the calls observed in the window (2 per request:
client and server) give ns per observed call. The programs' own samples
are also put on source lines of ebpf/capture.bpf.c, through the loaded
programs' line info (JIT address to line, read while they are loaded).

Then the structural changes that are left, each given the most it could
save, generously:
- pairing request and response in the kernel (one record per call): half
  of the ring buffer's and the programs' own time, and half the reader's;
- the SDK emitting calls instead of messages: all of the stitching;
- no copy into the sandbox: all of the daemon's libc memory copies.

With --before BINARY (e.g. the build before issue 16), that build runs in
the same rounds and its kernel programs + daemon per observed call, halved,
is the target: the report says what is left of this build once every
change above saved its most, against that target.

Writes bench/cost_breakdown.md, and every round's figures beside it
(cost_breakdown.json: `--render` writes the report again from them).
Needs root, perf, and what scripts/setup.sh installs.
"""
import argparse
import bisect
import ctypes
import json
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time

from common import ROOT, Daemon, config_text
from run import FIXED_SHARE, HttpLoad, PgbenchLoad, RedisLoad, bpf_prog_stats, build_and_serve, mmm

PERIOD_NS = 250_000  # one cpu-clock sample per 250 us of a CPU's time

KERNEL_PARTS = [
    # (part, a frame whose name starts with one of these, between the leaf and the program)
    ("kernel: user bytes copied", ("bpf_probe_read_user", "copy_from_user_nofault")),
    ("kernel: clock", ("bpf_ktime_get_ns", "ktime_get_mono_fast_ns")),
    ("kernel: ring buffer", ("bpf_ringbuf_", "__bpf_ringbuf_")),
    ("kernel: socket storage", ("bpf_sk_storage_get",)),
    ("kernel: task storage", ("bpf_task_storage_get",)),
]
KERNEL_OWN, KERNEL_OTHER, DISPATCH = "kernel: programs' own", "kernel: other helpers", "kernel: dispatch"

DAEMON_PARTS = [
    # (part, a test of the leaf frame's symbol and object)
    ("daemon: plugin code (sandbox)", lambda sym, dso: dso.endswith(".cwasm")),
    ("daemon: wasmtime", lambda sym, dso: sym.startswith(("wasmtime", "<wasmtime", "<(A1,) as wasmtime"))),
    ("daemon: memory copies", lambda sym, dso: "libc" in dso and re.match(r"__mem(move|cpy|set)", sym)),
    ("daemon: reader", lambda sym, dso: sym.startswith(("wirelens::capture::", "aya::", "<aya::"))),
    ("daemon: stitching", lambda sym, dso: "wirelens::stitch::" in sym),
    ("daemon: aggregation", lambda sym, dso: "wirelens::aggregate::" in sym),
    ("daemon: layer 7 host", lambda sym, dso: sym.startswith(("wirelens::layer7", "wirelens::protocols",
                                                              "<wirelens::protocols"))),
    ("daemon: connections", lambda sym, dso: "wirelens::connections::" in sym),
    ("daemon: allocator", lambda sym, dso: sym.startswith(("mi_", "_mi_"))),
    ("daemon: hash maps", lambda sym, dso: "hashbrown" in sym),
    ("daemon: kernel for it", lambda sym, dso: dso == "[kernel.kallsyms]"),
]
DAEMON_OTHER = "daemon: rest"
PARTS = ([p for p, _ in KERNEL_PARTS] + [KERNEL_OWN, KERNEL_OTHER, DISPATCH]
         + [p for p, _ in DAEMON_PARTS] + [DAEMON_OTHER])


def classify(frames, daemon_pid, pid):
    """The part one sample belongs to, or None (the applications, the
    kernel's own work). frames: (symbol, object) from the leaf up."""
    if not frames:
        return None
    leaf, dso = frames[0]
    if pid == daemon_pid:
        for part, test in DAEMON_PARTS:
            if test(leaf, dso):
                return part
        return DAEMON_OTHER
    for i, (sym, _) in enumerate(frames):
        if sym.startswith("bpf_prog_"):
            if i == 0:
                return KERNEL_OWN
            for part, names in KERNEL_PARTS:
                if any(s.startswith(names) for s, _ in frames[:i]):
                    return part
            return KERNEL_OTHER
    if leaf.startswith(("bpf_trace_run", "__bpf_trace_")):
        return DISPATCH
    return None


# --- the programs' own samples by source line ------------------------------------

NR_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD = 13, 15
# struct bpf_prog_info (uapi/linux/bpf.h): the offsets of the fields read here.
INFO_SIZE, NR_LINE_INFO, LINE_INFO, JITED_LINE_INFO, NR_JITED_LINE_INFO = 232, 148, 152, 160, 168
LINE_INFO_REC_SIZE, JITED_LINE_INFO_REC_SIZE = 172, 176


LIBC = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    fd = LIBC.syscall(NR_BPF, cmd, buf, 128)
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"bpf({cmd})")
    return fd


def prog_info(fd, fields=()):
    info = ctypes.create_string_buffer(INFO_SIZE)
    for offset, fmt, value in fields:
        struct.pack_into(fmt, info, offset, value)
    bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", fd, INFO_SIZE, ctypes.addressof(info)))
    return info


def jited_lines(prog_id):
    """(JIT address, source line) of one loaded program and its functions,
    from its line info (what `bpftool prog dump jited linum` reads, without
    the disassembler)."""
    fd = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("<III", prog_id, 0, 0))
    try:
        info = prog_info(fd)
        n = struct.unpack_from("<I", info, NR_JITED_LINE_INFO)[0]
        line_size, jited_size = struct.unpack_from("<II", info, LINE_INFO_REC_SIZE)
        if not n:
            return []
        lines, jited = ctypes.create_string_buffer(n * line_size), ctypes.create_string_buffer(n * jited_size)
        prog_info(fd, [(NR_LINE_INFO, "<I", n), (LINE_INFO, "<Q", ctypes.addressof(lines)),
                       (JITED_LINE_INFO, "<Q", ctypes.addressof(jited)), (NR_JITED_LINE_INFO, "<I", n),
                       (LINE_INFO_REC_SIZE, "<I", line_size), (JITED_LINE_INFO_REC_SIZE, "<I", jited_size)])
        # struct bpf_line_info: insn_off, file_name_off, line_off, line_col (line << 10 | column).
        return [(struct.unpack_from("<Q", jited, i * jited_size)[0],
                 struct.unpack_from("<I", lines, i * line_size + 12)[0] >> 10) for i in range(n)]
    finally:
        os.close(fd)


def line_table(pid):
    """Every program the daemon holds, as sorted (JIT address, line)."""
    table = []
    for prog_id in bpf_prog_stats(pid):
        try:
            table += jited_lines(prog_id)
        except OSError:
            continue
    return sorted(table)


def own_by_line(ips, table):
    """The programs' own samples per source line of ebpf/capture.bpf.c (the
    line info's file is not read: the headers hold no functions, so every
    line is that file's)."""
    addrs = [a for a, _ in table]
    counts = {}
    for ip in ips:
        i = bisect.bisect_right(addrs, ip) - 1
        if i >= 0:
            counts[table[i][1]] = counts.get(table[i][1], 0) + 1
    return counts


# --- samples into parts -----------------------------------------------------------

def perf_parts(path, daemon_pid):
    """Samples per part in a perf.data file, and the addresses of the
    programs' own samples."""
    out = subprocess.run(["perf", "script", "-i", path, "-F", "pid,ip,sym,dso"], capture_output=True, text=True,
                         check=True).stdout
    counts, own_ips = {p: 0 for p in PARTS}, []
    for block in out.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if not lines or not lines[0].strip():
            continue
        head = lines[0].split()
        try:
            pid = int(head[0])
        except (IndexError, ValueError):
            continue
        frames, leaf_ip = [], None
        for line in lines[1:]:
            m = re.match(r"\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$", line)
            if m:
                leaf_ip = int(m.group(1), 16) if leaf_ip is None else leaf_ip
                frames.append((re.sub(r"\+0x[0-9a-f]+$", "", m.group(2)), os.path.basename(m.group(3))
                               if m.group(3).startswith("/") else m.group(3)))
        part = classify(frames, daemon_pid, pid)
        if part:
            counts[part] += 1
        if part == KERNEL_OWN:
            own_ips.append(leaf_ip)
    return counts, own_ips


def one_round(load, binary, rate, seconds, tmp):
    """ns per observed call of each part, with `binary` running everything,
    and the programs' own samples per source line."""
    records = os.path.join(tmp, f"records-{time.time_ns()}.jsonl")
    daemon = Daemon(binary, tmp, config=config_text(records), records=records)
    if not daemon.ready:
        sys.exit(f"{binary} did not start: see {daemon.err.name}")
    data = os.path.join(tmp, "perf.data")
    try:
        running = load.fixed(rate, seconds + 3)
        time.sleep(1.5)
        subprocess.run(["perf", "record", "-a", "-g", "-e", "cpu-clock", "-c", str(PERIOD_NS), "-o", data,
                        "--", "sleep", str(seconds)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        per_second = running.result(timeout=seconds * 10)[0]
        counts, own_ips = perf_parts(data, daemon.proc.pid)
        # Read while the programs are loaded: their addresses are this run's.
        own_lines = own_by_line(own_ips, line_table(daemon.proc.pid))
    finally:
        daemon.terminate()
        if os.path.exists(records):
            os.unlink(records)
    calls = per_second * seconds * 2  # each request is observed at both ends
    return {p: n * PERIOD_NS / calls for p, n in counts.items()}, own_lines


def total(row, prefix=("kernel", "daemon")):
    return sum(v for p, v in row.items() if p.startswith(prefix))


# Parts that none of the changes below touches: each message's head copied
# and timestamped, the socket's storage, the tracepoints' dispatch, and the
# parse itself in the sandbox.
UNTOUCHED = ["kernel: user bytes copied", "kernel: clock", "kernel: socket storage", DISPATCH,
             "daemon: plugin code (sandbox)"]


def bounds(row):
    """The most each structural change left could save, ns per observed call."""
    return {
        "pairing in the kernel": (row["kernel: ring buffer"] + row[KERNEL_OWN] + row["daemon: reader"]) / 2,
        "the SDK emitting calls": row["daemon: stitching"],
        "no copy into the sandbox": row["daemon: memory copies"],
    }


def report(args, results):
    lines = [
        "# wirelens: where the CPU per observed call goes",
        "",
        f"`bench/cost_breakdown.py` on this machine ({args.date}): {args.rounds} rounds of "
        f"{args.seconds} s of `perf record -a -g` (cpu-clock, a sample per 250 us) per load, at 75% of its "
        "maximum with everything on. Each figure is ns of CPU per observed call (2 per request), median (min-max) "
        "over the rounds. Kernel parts are the helpers under way inside the kernel programs; the daemon's parts "
        "are the function running when sampled. See the script's header for what each part holds.",
        "",
    ]
    source = open(os.path.join(ROOT, "ebpf", "capture.bpf.c")).read().split("\n")
    for name, rate, rows, before, own_lines in results:
        lines += [f"## {name}, {rate:.0f} requests/s", "", "| part | ns per observed call |", "|---|---|"]
        lines += [f"| {p} | {mmm([r[p] for r in rows])} |" for p in PARTS]
        this = [total(r) for r in rows]
        lines += [f"| **kernel programs + daemon** | **{mmm(this)}** |", ""]
        lines += ["The most each structural change left could save (generous bounds, see the header):", "",
                  "| change | at most (ns per observed call) |", "|---|---|"]
        per_change = [bounds(r) for r in rows]
        for change in per_change[0]:
            lines.append(f"| {change} | {mmm([b[change] for b in per_change])} |")
        left = [t - sum(b.values()) for t, b in zip(this, per_change)]
        lines.append(f"| **this build, were all of them to save their most** | **{mmm(left)}** |")
        untouched = [sum(r[p] for p in UNTOUCHED) for r in rows]
        lines.append(f"| of which no change above touches ({', '.join(UNTOUCHED)}) | {mmm(untouched)} |")
        if before:
            target = [total(b) / 2 for b in before]
            lines += [f"| the --before build ({args.before_name}), same rounds | {mmm([total(b) for b in before])} |",
                      f"| this build over it, paired per round | "
                      f"{mmm([t / total(b) for t, b in zip(this, before)], '{:.3f}')} |",
                      f"| the target: half of it | {mmm(target)} |",
                      f"| this build were all changes to save their most, over the target | "
                      f"{mmm([l / t for l, t in zip(left, target)], '{:.2f}')} |",
                      f"| what no change touches, over the target | "
                      f"{mmm([u / t for u, t in zip(untouched, target)], '{:.2f}')} |"]
        own = sum(own_lines.values())
        if own:
            lines += ["", "The programs' own samples by source line (`ebpf/capture.bpf.c`, this build, all rounds; a"
                      " line in a macro stands for the macro's whole body; 0: no line):", "",
                      "| line | share of the programs' own samples | source |", "|---|---|---|"]
            for line, n in sorted(own_lines.items(), key=lambda kv: -kv[1])[:10]:
                text = source[int(line) - 1].strip() if 0 < int(line) <= len(source) else ""
                text = text[:90].replace("|", "\\|")  # not a column of the table
                lines.append(f"| {line} | {100 * n / own:.1f}% | `{text}` |")
        lines.append("")
    with open(args.report, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--only", metavar="TEXT", help="only the loads whose name contains TEXT")
    ap.add_argument("--before", metavar="BINARY", help="another build run in the same rounds; half its cost is"
                                                       " the target")
    ap.add_argument("--before-name", metavar="TEXT", help="what the report calls the --before build (default: its"
                                                            " path)")
    ap.add_argument("--report", default=os.path.join(ROOT, "bench", "cost_breakdown.md"))
    ap.add_argument("--render", metavar="JSON", help="run nothing: write the report again from a run's figures"
                                                    " (cost_breakdown.json)")
    args = ap.parse_args()
    args.before_name = args.before_name or args.before
    args.date = time.strftime("%Y-%m-%d")  # the run's, kept in the figures for --render
    if args.render:
        with open(args.render) as f:
            saved = json.load(f)
        ran = argparse.Namespace(**saved["args"])
        ran.report = args.report
        report(ran, saved["results"])
        return
    if os.geteuid() != 0:
        sys.exit("run as root (the daemon loads eBPF programs; perf samples the kernel)")
    if args.before and not os.access(args.before, os.X_OK):
        sys.exit(f"--before {args.before}: not an executable")
    binary, tmp, servers = build_and_serve(["perf"], "wirelens-breakdown-")
    loads = [RedisLoad("redis GET", servers.redis, 1), PgbenchLoad("pgbench select-only", servers.pg, tmp),
             HttpLoad("HTTP GET, nginx", servers.nginx)]
    loads = [l for l in loads if not args.only or args.only in l.name]
    if not loads:
        sys.exit(f"--only {args.only}: no load has that in its name")
    results = []
    try:
        for load in loads:
            rate = statistics.median(load.flat_out(args.seconds)[0] for _ in range(3)) * FIXED_SHARE
            rows, before, own_lines = [], [], {}
            for r in range(args.rounds):
                # Alternate which build goes first.
                builds = [(binary, rows)] + ([(args.before, before)] if args.before else [])
                for b, into in builds if r % 2 == 0 else builds[::-1]:
                    parts, lines = one_round(load, b, rate, args.seconds, tmp)
                    into.append(parts)
                    if into is rows:
                        for line, n in lines.items():
                            own_lines[line] = own_lines.get(line, 0) + n
                    print(f"{load.name} round {r + 1} {os.path.basename(b)}: kernel programs + daemon "
                          f"{total(parts):.0f} ns per observed call", flush=True)
            results.append((load.name, rate, rows, before, own_lines))
    finally:
        servers.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    # Every round's figures beside the report, to compute from again.
    with open(os.path.splitext(args.report)[0] + ".json", "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)
    report(args, results)


if __name__ == "__main__":
    main()
