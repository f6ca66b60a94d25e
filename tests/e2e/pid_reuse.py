"""Two processes with the same pid, one after the other.

Usage: pid_reuse.py PORT. A child named by its arguments `first-life` makes
3 HTTP GETs to 127.0.0.1:PORT and exits; then the next pid the kernel hands
out is set to the first child's (/proc/sys/kernel/ns_last_pid, root only)
and a second child, `second-life`, makes 3 GETs too. The first exits
as soon as its calls are made, usually before the daemon tells the kernel to
deny it: the denial lands on a pid already free. Prints "pid P" for
each child. Retries (up to 50 times) when another process takes the pid in
between; exits 1 if the pid could not be reused.
"""
import os
import subprocess
import sys
import time

if sys.argv[1] == "--child":
    # A life: python3 pid_reuse.py --child NAME PORT (a short command line,
    # so the kernel's copy of it is whole).
    import urllib.request

    name, port = sys.argv[2], sys.argv[3]
    for i in range(3):
        urllib.request.urlopen("http://127.0.0.1:%s/index.html?n=%d" % (port, i)).read()
    if name == "second-life":
        time.sleep(0.2)
    sys.exit(0)

port = sys.argv[1]


def life(name):
    p = subprocess.Popen([sys.executable, __file__, "--child", name, port])
    p.wait()
    assert p.returncode == 0, name
    return p.pid


first = life("first-life")
print("pid", first, flush=True)
time.sleep(0.5)
for attempt in range(50):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(first - 1))
    p = subprocess.Popen([sys.executable, __file__, "--child", "second-life", port])
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
