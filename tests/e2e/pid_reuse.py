"""Two processes with the same pid, one after the other.

Usage: pid_reuse.py PORT. A child named by its arguments `first-life` makes
3 HTTP GETs to 127.0.0.1:PORT and exits; then the next pid the kernel hands
out is set to the first child's (/proc/sys/kernel/ns_last_pid, root only)
and a second child, `second-life`, makes 3 GETs too. Prints "pid P" for
each child. Retries (up to 50 times) when another process takes the pid in
between; exits 1 if the pid could not be reused.
"""
import os
import subprocess
import sys
import time

port = sys.argv[1]
child_code = (
    "import sys, urllib.request, time\n"
    "for i in range(3):\n"
    "    urllib.request.urlopen('http://127.0.0.1:%s/index.html?n=%d' % (sys.argv[1], i)).read()\n"
    "time.sleep(0.2)\n"
)


def life(name):
    p = subprocess.Popen([sys.executable, "-c", child_code, port, name])
    p.wait()
    assert p.returncode == 0, name
    return p.pid


first = life("first-life")
print("pid", first, flush=True)
time.sleep(0.5)
for attempt in range(50):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(first - 1))
    p = subprocess.Popen([sys.executable, "-c", child_code, port, "second-life"])
    if p.pid == first:
        p.wait()
        assert p.returncode == 0
        print("pid", p.pid, flush=True)
        sys.exit(0)
    p.kill()
    p.wait()
    time.sleep(0.05)
print("could not reuse pid", first, file=sys.stderr)
sys.exit(1)
