#!/usr/bin/env python3
"""Time from `avail run` to an application's first output, against running
the same application from a local directory (issue 12, requirement 9).

The application is a shell script that, like a real program loading its
libraries, reads LIB_MIB of files beside it (hashing them with sha256sum) and
then prints one line. Packed with its primary feature block recorded from a
launch (`avail package pack --record-fb1`), published, synced by the client
daemon with content from nginx over loopback (PackageSourceRoot).

Per round:
  cold  avail: the daemon restarted with an empty block cache (the package is
        added again: its publishing feature block only), the kernel's page
        cache dropped; local: the page cache dropped.
  warm  the same command again at once (blocks cached, pages cached).
The ratio is avail / local per round; the median and spread (min-max) over
ROUNDS are printed. Goals: warm <= 1.2x, cold <= 3x.

Reuses bench/client_read.py's Server, Nginx and Client harness.
Run through bench/run-startup.sh (as root).
"""

import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client_read as cr  # noqa: E402

ROUNDS = cr.env_int("ROUNDS", 5)
LIB_MIB = cr.env_int("LIB_MIB", 32)
LIB_FILES = cr.env_int("LIB_FILES", 16)
SEED = cr.env_int("SEED", 12)

APP = """#!/bin/sh
# A program that loads its libraries, then says it is ready.
here=$(cd "$(dirname "$0")/.." && pwd)
sha256sum "$here"/lib/* > /dev/null
echo ready
"""


def make_app(root):
    """The application's tree: /opt/startup/bin/app and its "libraries"."""
    import random

    rng = random.Random(SEED)
    os.makedirs(os.path.join(root, "opt/startup/bin"))
    os.makedirs(os.path.join(root, "opt/startup/lib"))
    app = os.path.join(root, "opt/startup/bin/app")
    with open(app, "w") as f:
        f.write(APP)
    os.chmod(app, 0o755)
    size = LIB_MIB * (1 << 20) // LIB_FILES
    for i in range(LIB_FILES):
        with open(os.path.join(root, f"opt/startup/lib/lib{i:02}.so"), "wb") as f:
            f.write(rng.randbytes(size))
    return app


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def first_output(cmd, env=None):
    """Seconds from starting `cmd` to its first byte on stdout (then waits)."""
    start = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    first = p.stdout.read(1)
    elapsed = time.perf_counter() - start
    rest = p.stdout.read()
    if p.wait() != 0 or (first + rest).strip() != b"ready":
        raise RuntimeError(f"{cmd}: exit {p.returncode}, output {first + rest!r}")
    return elapsed


def main():
    avail, nginx_bin, work_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    work = cr.Work(work_dir)
    try:
        bench(avail, nginx_bin, work)
    finally:
        work.close()


def bench(avail, nginx_bin, work):
    tree = work.p("tree")
    local_app = make_app(tree)
    package = work.p("startup.appv")
    cr.log(f"packing {LIB_MIB} MiB in {LIB_FILES} files, recording FB1 from a launch")
    cr.run(avail, "package", "pack", tree, "-o", package, "--name", "Startup",
           "--app", "startup=/opt/startup/bin/app", "--record-fb1")
    server = cr.Server(avail, work)
    server.admin("package", "import", package)
    server.admin("group", "create", "bench")
    credential = server.admin("machine", "create", "bench-client", "--group", "bench")
    credential = credential.strip().splitlines()[-1]
    server.admin("package", "grant", "Startup", "bench")
    server.admin("package", "publish", "Startup")
    nginx = cr.Nginx(nginx_bin, work, os.path.join(server.data, "content"))
    client = cr.Client(avail, work)
    client.start()
    client.cli("server", "add", f"http://{server.listen['publishing']}",
               "--credential", credential)
    client.cli("config", "set", "AutoLoad", "0")
    client.cli("config", "set", "PackageSourceRoot", nginx.base)
    client.mounted("Startup")
    run_cmd = [avail, "run", "startup"]
    env = dict(client.env, AVAIL_LOG="warn")

    rows = []
    for r in range(ROUNDS):
        client.restart_empty()
        client.mounted("Startup")
        drop_caches()
        avail_cold = first_output(run_cmd, env)
        avail_warm = first_output(run_cmd, env)
        drop_caches()
        local_cold = first_output([local_app])
        local_warm = first_output([local_app])
        rows.append((avail_cold, local_cold, avail_warm, local_warm))
        cr.log(f"round {r + 1}: cold avail {avail_cold * 1e3:.0f} ms, local "
               f"{local_cold * 1e3:.0f} ms; warm avail {avail_warm * 1e3:.0f} ms, "
               f"local {local_warm * 1e3:.0f} ms")

    def line(name, i, j, goal):
        ratios = [row[i] / row[j] for row in rows]
        a = statistics.median(row[i] for row in rows) * 1e3
        b = statistics.median(row[j] for row in rows) * 1e3
        print(f"{name:<6} avail {a:7.1f} ms  local {b:7.1f} ms  ratio "
              f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}), "
              f"goal <= {goal}")

    print(f"time to first output, {LIB_MIB} MiB read at start, {ROUNDS} rounds "
          f"(median, spread min-max)")
    line("cold", 0, 1, "3x")
    line("warm", 2, 3, "1.2x")


if __name__ == "__main__":
    main()
