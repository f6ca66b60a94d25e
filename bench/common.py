"""Helpers shared by the bench scripts (run.py, soak.py, hostile_load.py).

Servers on loopback (redis-server, nginx, PostgreSQL), the daemon with a
config writing records to a file, /proc sampling, and readers for the
daemon's records and logs. Python 3 standard library only.
"""
import calendar
import glob
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/wirelens/target"))
# cargo run from the scripts builds where they look for the binary (and
# reuses .ci/run's build instead of starting a new one in the clone).
CARGO_ENV = dict(os.environ, CARGO_TARGET_DIR=TARGET)
PG_BIN = "/usr/lib/postgresql/15/bin"
DEFAULT_DAEMON = os.path.join(TARGET, "release", "wirelens")


def add_scenario_args(ap, report):
    """--daemon, --keep and --report, as every scenario takes them."""
    ap.add_argument("--daemon", default=DEFAULT_DAEMON, help=f"wirelens binary (default {DEFAULT_DAEMON})")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, records)")
    ap.add_argument("--report", default=os.path.join(ROOT, "bench", report))


def require(paths, hint):
    """Root (the daemon loads eBPF programs) and these files, or exit saying what to do."""
    if os.geteuid() != 0:
        sys.exit("run as root (the daemon loads eBPF programs)")
    for path in paths:
        if not os.path.isfile(path):
            sys.exit(f"missing {path} ({hint})")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_port(port, what, limit=30):
    start = time.time()
    while time.time() - start < limit:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not listen on {port}")


class Servers:
    """redis-server, nginx and PostgreSQL on loopback, in one temp dir
    (`which` picks a subset: "redis", "nginx", "pg")."""

    def __init__(self, tmp, which=("redis", "nginx", "pg")):
        self.procs = []
        self.redis = self.nginx = self.pg = self.redis_pid = self.pgdata = None
        try:
            self.start(tmp, which)
        except BaseException:
            self.stop()
            raise

    def start(self, tmp, which=("redis", "nginx", "pg")):
        if "redis" in which:
            self.redis = free_port()
            self.procs.append(subprocess.Popen(
                ["redis-server", "--port", str(self.redis), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL))
            self.redis_pid = self.procs[-1].pid
            wait_port(self.redis, "redis-server")

        if "nginx" in which:
            self.nginx = free_port()
            root = os.path.join(tmp, "www")
            os.makedirs(root)
            with open(os.path.join(root, "index.html"), "w") as f:
                f.write("x" * 612)
            conf = os.path.join(tmp, "nginx.conf")
            with open(conf, "w") as f:
                f.write(f"daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;\n"
                        f"events {{ worker_connections 1024; }}\n"
                        f"http {{ access_log off; keepalive_requests 10000000; client_body_temp_path {tmp};"
                        f" proxy_temp_path {tmp};"
                        f" fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n"
                        f" server {{ listen 127.0.0.1:{self.nginx}; root {root}; }} }}\n")
            self.procs.append(subprocess.Popen(["nginx", "-c", conf, "-p", tmp]))
            wait_port(self.nginx, "nginx")

        if "pg" in which:
            self.pg = free_port()
            pgdir = os.path.join(tmp, "pg")
            os.makedirs(pgdir)
            shutil.chown(pgdir, "postgres")
            as_pg = ["runuser", "-u", "postgres", "--"]
            subprocess.run(as_pg + [f"{PG_BIN}/initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-D",
                                    f"{pgdir}/data"], check=True, stdout=subprocess.DEVNULL)
            self.pgdata = f"{pgdir}/data"
            self.procs.append(subprocess.Popen(
                as_pg + [f"{PG_BIN}/postgres", "-D", f"{pgdir}/data", "-p", str(self.pg), "-k", pgdir,
                         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "ssl=off"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(self.pg, "postgres")
            time.sleep(1)
            subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(self.pg), "-U", "postgres", "-i", "-s", "2", "-q",
                            "postgres"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        # runuser does not pass SIGINT on to PostgreSQL (which then outlived
        # the bench once runuser was killed): stop it with pg_ctl first.
        if self.pgdata:
            subprocess.run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", self.pgdata, "-m", "fast",
                            "-w", "-t", "30", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        for p in self.procs:
            p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def config_text(records, l4=1, l7=1, tags=None, plugin_dir=None, pids=None, protocols=True):
    """A config capturing everything (all protocols, loopback kept), records
    to the file `records`. Without tags, plugin_dir and pids it is the
    config run.py always used; `pids` limits the capture to those
    processes (EBPF.Pid); `protocols=False` keeps layer 4 only
    (ProtocolProcess: false)."""
    text = ("inputs:\n  - Type: observer_ilogtail_network_v1\n    Common:\n"
            f"      FlushOutL4Interval: {l4}\n      FlushOutL7Interval: {l7}\n      DropLocalConnections: false\n")
    if not protocols:
        text += "      ProtocolProcess: false\n"
    if tags:
        text += "      Tags:\n" + "".join(f"        {k}: {json.dumps(str(v))}\n" for k, v in tags.items())
    text += "    EBPF:\n      Enabled: true\n"
    if pids:
        text += f"      Pid: {json.dumps(pids)}\n"
    if plugin_dir:
        text += f"    Wirelens:\n      PluginDir: {plugin_dir}\n"
    text += f"flushers:\n  - Type: flusher_file\n    FilePath: {records}\n"
    return text


def write_atomically(path, data, mode="w"):
    """Write to a hidden temporary name in the same directory, then rename
    (what the README asks for plugin files; also how editors save)."""
    d, name = os.path.split(path)
    tmp = os.path.join(d, f".{name}.tmp")
    with open(tmp, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


class Daemon:
    """wirelens capturing everything, records to a file.

    Default (run.py): config `tmp/bench.yaml`, records in `tmp`. `config`,
    `records` and `config_path` override the text and the paths; `env` is
    added to the environment (e.g. NO_COLOR=1 for plain logs).
    """

    def __init__(self, binary, tmp, config=None, records=None, config_path=None, env=None, ready_timeout=30):
        self.records = records or os.path.join(tmp, f"records-{time.time_ns()}.jsonl")
        self.config = config_path or os.path.join(tmp, "bench.yaml")
        with open(self.config, "w") as f:
            f.write(config if config is not None else config_text(self.records))
        self.err = open(os.path.join(tmp, f"daemon-{time.time_ns()}.log"), "w")
        self.proc = subprocess.Popen([binary, "run", "-c", self.config], stdout=subprocess.DEVNULL, stderr=self.err,
                                     env=dict(os.environ, **(env or {})))
        self.ready = self.wait_ready(ready_timeout)
        self.cpu0, self.t0 = self.cpu(), time.time()

    def wait_ready(self, limit):
        start = time.time()
        while time.time() - start < limit:
            with open(self.err.name) as f:
                if "running" in f.read():
                    return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def alive(self):
        return self.proc.poll() is None

    def cpu(self):
        return proc_cpu_seconds(self.proc.pid)

    def stop(self, load_seconds):
        """Stop; layer-7 calls per second are over the load's own duration."""
        cpu = (self.cpu() - self.cpu0) / (time.time() - self.t0) * 100
        with open(f"/proc/{self.proc.pid}/status") as f:
            rss = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        calls, lost = 0, 0
        with open(self.records) as f:
            for line in f:
                r = json.loads(line)
                if r["type"] == "protocols":
                    calls += int(r["total_count"])
                elif r["type"] == "health":
                    lost = int(r["kernel_lost"])
        with open(self.err.name) as f:
            failures = f.read().count("plugin call failed")
        return {"cpu": cpu, "rss": rss, "calls_per_s": calls / load_seconds, "lost": lost, "plugin_failures": failures}

    def terminate(self, timeout=60):
        """SIGINT (the daemon flushes its windows); the exit code, or None
        if it had to be killed."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None
        finally:
            self.err.flush()


# --- /proc sampling ---------------------------------------------------------

def proc_cpu_seconds(pid):
    """User plus system CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid):
    """VmRSS, VmHWM (KiB) and Threads from /proc/PID/status, and open fds."""
    with open(f"/proc/{pid}/status") as f:
        text = f.read()
    out = {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) for k in ("VmRSS", "VmHWM", "Threads")}
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


# --- records and logs -------------------------------------------------------

def record_files(path):
    """The records file and its rotated predecessors, oldest first."""
    rotated = [p for p in glob.glob(glob.escape(path) + ".*") if p.rsplit(".", 1)[1].isdigit()]
    rotated.sort(key=lambda p: -int(p.rsplit(".", 1)[1]))
    return rotated + ([path] if os.path.exists(path) else [])


def read_records(path):
    """Every record (dict) of the records file and its rotations; a line
    that is not JSON (cut by a rotation or a kill) is counted, not fatal.
    Each record gets `_line_bytes` and `_dup_keys` (keys seen twice)."""
    records, bad = [], 0
    for p in record_files(path):
        with open(p, errors="replace") as f:
            for line in f:
                try:
                    pairs = json.loads(line, object_pairs_hook=list)
                except ValueError:
                    bad += 1
                    continue
                r, dups = {}, set()
                for k, v in pairs:
                    if k in r:
                        dups.add(k)
                    r[k] = v
                r["_line_bytes"] = len(line)
                r["_dup_keys"] = sorted(dups)
                records.append(r)
    return records, bad


def num(record, key):
    try:
        return int(record.get(key, 0))
    except (TypeError, ValueError):
        return 0


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT[0-9:.]+Z)\s+(ERROR|WARN|INFO|DEBUG|TRACE)\s+([\w:]+): (.*)$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
FIELD_AT_END = re.compile(r'\s+([a-z_][\w.]*)=("(?:[^"\\]|\\.)*"|\S*)$')


def parse_log(path):
    """The daemon's log lines as dicts: time (epoch s), level, target,
    message (fields stripped; a message spanning several lines, such as a
    wasm backtrace, is its first line plus `[+N lines]`), fields (dict,
    from the end of the last line), text (the whole entry)."""
    raw_entries = []
    with open(path, errors="replace") as f:
        for raw in f:
            line = ANSI.sub("", raw.rstrip("\n"))
            m = LOG_LINE.match(line)
            if m:
                raw_entries.append([m.groups(), [line]])
            elif raw_entries:
                raw_entries[-1][1].append(line)
    entries = []
    for (ts, level, target, rest), lines in raw_entries:
        extra = lines[1:]
        last = extra[-1] if extra else rest
        fields = {}
        while True:
            fm = FIELD_AT_END.search(last)
            if not fm:
                break
            fields[fm.group(1)] = fm.group(2).strip('"')
            last = last[:fm.start()]
        message = (last if not extra else rest).strip()
        if extra:
            message += f" [+{len(extra)} lines]"
        t = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + ts[19:-1])
        entries.append({"time": t, "level": level, "target": target, "message": message, "fields": fields,
                        "text": "\n".join(lines), "continuation": bool(extra)})
    return entries


def remote_port(record):
    """remote_info's remote_port (0 if absent)."""
    try:
        return int(json.loads(record.get("remote_info", "{}")).get("remote_port", 0))
    except (ValueError, AttributeError):
        return 0


def group_log(entries, levels=("ERROR", "WARN")):
    """Count of entries per (level, message, plugin field if any)."""
    groups = {}
    for e in entries:
        if e["level"] in levels:
            key = f'{e["level"]} {e["target"]}: {e["message"]}'
            if "plugin" in e["fields"]:
                key += f' [plugin={e["fields"]["plugin"]}]'
            groups[key] = groups.get(key, 0) + 1
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


# --- the test protocol's peer -------------------------------------------------

class _TestprotoHandler(socketserver.StreamRequestHandler):
    timeout = 30

    def handle(self):
        for _ in range(100000):
            try:
                line = self.rfile.readline(65536)
            except OSError:
                return
            if not line:
                return
            text = line.rstrip(b"\r\n")
            reply = b"RES " + text[4:] if text.startswith(b"REQ ") else b"RES ERR " + text
            try:
                self.wfile.write(reply + b"\n")
            except OSError:
                return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_testproto(port, limit_seconds):
    """Answer `RES <text>` for each `REQ <text>` line, on 127.0.0.1:port,
    for at most limit_seconds."""
    with _Server(("127.0.0.1", port), _TestprotoHandler) as srv:
        srv.timeout = 0.5
        end = time.time() + limit_seconds
        print("ready", flush=True)
        while time.time() < end:
            srv.handle_request()


def start_testproto_server(port, limit_seconds):
    """The testproto server in its own process (so it has its own pid in
    the records); returns the Popen once it listens."""
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import common; "
            f"common.serve_testproto({port}, {limit_seconds})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    wait_port(port, "testproto server")
    return proc


def testproto_exchange(port, texts, timeout=5.0):
    """One connection: send `REQ <text>` for each text, read each answer.
    Returns the answers received (fewer on error)."""
    answers = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            f = s.makefile("rwb")
            for t in texts:
                f.write(b"REQ " + t.encode() + b"\n")
                f.flush()
                line = f.readline(65536)
                if not line:
                    break
                answers.append(line.rstrip(b"\n").decode(errors="replace"))
    except OSError:
        pass
    return answers
