#!/usr/bin/env python3
"""Client read benchmarks, run by bench/client-read.sh (see bench/README.md).

Usage: client_read.py AVAIL_BIN NGINX_BIN WORK_DIR

Everything runs on loopback in WORK_DIR (bash made it and removes it; it also
unmounts whatever is left mounted under it and kills the pids listed in
WORK_DIR/pids): an `avail server` (management and publishing on the embedded
SQLite), nginx serving the server's content store, an `avail client daemon`
mounting the packages with FUSE, and squashfuse mounting a squashfs image of
the same tree.

(a) warm sequential and (b) warm random 4 KiB reads, avail against squashfuse,
    each "first read after a fresh mount" (avail: every block in its block
    cache; squashfuse: the image in the page cache) and "repeat read" (the same
    reads again on the same mount: kernel page cache where the mount keeps it);
(c) a cold sequential read of the whole tree through a fresh mount with an
    empty block cache, blocks from nginx, against `curl -o /dev/null` of the
    package file from the same nginx;
(d) bytes nginx sent for an upgrade: v1 of a ~100 MB package read fully, then
    v2 with one 1 MiB file changed, read fully.

Every ratio is avail / reference (> 1: avail is faster), per round, then the
median and the spread (min–max).
"""

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid


def env_int(name, default):
    return int(os.environ.get(name, default))


def env_list(name, default):
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


ROUNDS = env_int("ROUNDS", 5)
RANDOM_READS = env_int("RANDOM_READS", 20000)
# Repeat reads come from the page cache and take a few ms a pass: time several passes.
SEQ_REPEAT_PASSES = env_int("SEQ_REPEAT_PASSES", 5)
RANDOM_REPEAT_PASSES = env_int("RANDOM_REPEAT_PASSES", 20)
LARGE_MIB = env_list("LARGE_MIB", "20,30,40,50")
SMALL_FILES = env_int("SMALL_FILES", 300)
UPGRADE_LARGE_MIB = env_list("UPGRADE_LARGE_MIB", "20,30")
UPGRADE_SMALL_FILES = env_int("UPGRADE_SMALL_FILES", 250)
SEED = env_int("SEED", 11)
NGINX_TCP_NOPUSH = os.environ.get("NGINX_TCP_NOPUSH", "on")  # Debian's nginx.conf: on
# COLD_ONLY=1: only (c), for working on the streaming path (no warm rounds, no upgrade).
COLD_ONLY = os.environ.get("COLD_ONLY", "") not in ("", "0")
READ_SIZE = 1 << 20
PAGE = 4096
MB = 1e6


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run(*cmd, env=None, quiet=True):
    out = subprocess.run(
        [str(c) for c in cmd], env=env, check=False, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))}: exit {out.returncode}\n{out.stdout}{out.stderr}"
        )
    if not quiet:
        log(out.stdout.strip())
    return out.stdout


class Work:
    """The temporary directory and everything started in it, torn down in reverse."""

    def __init__(self, path):
        self.path = path
        self.cleanups = []

    def p(self, *parts):
        return os.path.join(self.path, *parts)

    def record_pid(self, pid):
        # bash's trap kills these if this process dies before its own cleanup.
        with open(self.p("pids"), "a") as f:
            f.write(f"{pid}\n")

    def at_exit(self, fn):
        self.cleanups.append(fn)

    def close(self):
        while self.cleanups:
            fn = self.cleanups.pop()
            try:
                fn()
            except Exception as e:  # keep cleaning up
                log(f"cleanup: {e}")


def stop_process(process, sig=signal.SIGTERM, timeout=20):
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def process_cpu(pid):
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


# --------------------------------------------------------------------------
# Test trees


class Tree:
    """A deterministic tree: a few large random files and many small ones."""

    def __init__(self, root, files):
        self.root = root
        self.files = files  # [(relative path, size, sha256 hex)]
        self.bytes = sum(f[1] for f in files)


def text_pool(rng, size):
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
        for _ in range(3000)
    ]
    out, n = [], 0
    while n < size:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + "\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def write_file(root, rel, data, files):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    files.append((rel, len(data), hashlib.sha256(data).hexdigest()))


def make_tree(root, seed, large_mib, small_files, extra=None):
    """Large files: random bytes. Small files: 4 KiB–1 MiB (log-uniform), half
    random bytes, half text-like (compressible ~2.5x), over 10 directories."""
    rng = random.Random(seed)
    files = []
    write_file(root, "opt/app/bin/app", b"#!/bin/sh\necho app\n", files)
    os.chmod(os.path.join(root, "opt/app/bin/app"), 0o755)
    for i, mib in enumerate(large_mib):
        write_file(root, f"opt/app/data/large/big{i:02}.bin", rng.randbytes(mib << 20), files)
    pool = text_pool(rng, 4 << 20)
    for i in range(small_files):
        size = int(2 ** rng.uniform(12, 20))
        if i % 2:
            start = rng.randrange(len(pool) - size)
            data = pool[start : start + size]
            name = f"opt/app/data/d{i % 10}/f{i:04}.txt"
        else:
            data = rng.randbytes(size)
            name = f"opt/app/data/d{i % 10}/f{i:04}.bin"
        write_file(root, name, data, files)
    for rel, data in (extra or {}).items():
        write_file(root, rel, data, files)
    return Tree(root, files)


# --------------------------------------------------------------------------
# Reads


def seq_read(mount, tree, verify=False):
    """Read every file whole with 1 MiB reads; returns seconds."""
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    started = time.perf_counter()
    total = 0
    for rel, size, digest in tree.files:
        h = hashlib.sha256() if verify else None
        fd = os.open(os.path.join(mount, rel), os.O_RDONLY)
        try:
            n_file = 0
            while True:
                n = os.readv(fd, [buf])
                if n == 0:
                    break
                n_file += n
                if h:
                    h.update(view[:n])
        finally:
            os.close(fd)
        if n_file != size or (h and h.hexdigest() != digest):
            raise RuntimeError(f"{mount}/{rel}: wrong content ({n_file} bytes, expected {size})")
        total += n_file
    return time.perf_counter() - started


def random_plan(tree, count, seed):
    """`count` (file index, offset) pairs: a uniformly random 4 KiB page of the
    whole tree each (so files are picked in proportion to their size)."""
    rng = random.Random(seed)
    pages = [(size + PAGE - 1) // PAGE for _, size, _ in tree.files]
    cumulative, acc = [], 0
    for p in pages:
        acc += p
        cumulative.append(acc)
    import bisect

    plan = []
    for _ in range(count):
        k = rng.randrange(acc)
        i = bisect.bisect_right(cumulative, k)
        page = k - (cumulative[i - 1] if i else 0)
        plan.append((i, page * PAGE))
    return plan


def random_read(mount, tree, plan, passes=1):
    """os.pread of 4 KiB at every planned offset, `passes` times; returns seconds
    per pass (opens excluded)."""
    fds = [os.open(os.path.join(mount, rel), os.O_RDONLY) for rel, _, _ in tree.files]
    try:
        pread = os.pread
        ops = [(fds[i], off) for i, off in plan]
        started = time.perf_counter()
        for _ in range(passes):
            for fd, off in ops:
                if not pread(fd, PAGE, off):
                    raise RuntimeError(f"{mount}: empty read at {off}")
        return (time.perf_counter() - started) / passes
    finally:
        for fd in fds:
            os.close(fd)


# --------------------------------------------------------------------------
# Servers


class Server:
    """`avail server` (management, publishing) with its admin CLI."""

    def __init__(self, avail, work):
        self.avail = avail
        self.data = work.p("server")
        os.makedirs(self.data)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AVAIL_")}
        env.update(
            {
                "AVAIL_DATA_DIR": self.data,
                "AVAIL_ROLES": "management,publishing",
                "AVAIL_MANAGEMENT_LISTEN": "127.0.0.1:0",
                "AVAIL_PUBLISHING_LISTEN": "127.0.0.1:0",
                "AVAIL_LOG": "warn",
            }
        )
        self.log = open(work.p("server.log"), "wb")
        self.process = subprocess.Popen(
            [avail, "server"], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self.log,
        )
        work.record_pid(self.process.pid)
        work.at_exit(lambda: stop_process(self.process))
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"avail server exited: see {self.log.name}")
            try:
                with open(os.path.join(self.data, "listen.json")) as f:
                    self.listen = json.load(f)
                with open(os.path.join(self.data, "admin-token")) as f:
                    token = f.read().strip()
                if token and "publishing" in self.listen and "management" in self.listen:
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"avail server did not start: see {self.log.name}")
            time.sleep(0.05)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AVAIL_")}
        self.env.update(
            {"AVAIL_SERVER": f"http://{self.listen['management']}", "AVAIL_TOKEN": token}
        )
        for _ in range(200):
            try:
                self.admin("group", "list")
                break
            except RuntimeError:
                time.sleep(0.05)

    def admin(self, *args):
        return run(self.avail, "admin", *args, env=self.env)

    def content_file(self, package_id, version_id):
        path = os.path.join(self.data, "content", "packages", package_id, f"{version_id}.appv")
        if not os.path.exists(path):
            raise RuntimeError(f"{path}: not in the content store after import")
        return path


class Nginx:
    def __init__(self, nginx, work, root):
        self.port = free_port()
        self.dir = work.p("nginx")
        os.makedirs(os.path.join(self.dir, "logs"))
        self.access_log = os.path.join(self.dir, "logs", "access.log")
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(
                f"""user root;
worker_processes auto;
pid {self.dir}/nginx.pid;
error_log {self.dir}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format bench '$request_uri $status $bytes_sent $request_time $connection "$http_range"';
    access_log {self.access_log} bench;
    sendfile on;
    tcp_nopush {NGINX_TCP_NOPUSH};
    keepalive_requests 100000000;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{self.port};
        root {root};
    }}
}}
"""
            )
        self.process = subprocess.Popen(
            [nginx, "-p", self.dir, "-e", f"{self.dir}/logs/error.log", "-c", conf,
             "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
        )
        work.record_pid(self.process.pid)
        work.at_exit(lambda: stop_process(self.process, signal.SIGQUIT))
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def cpu(self):
        """CPU seconds of the master and its workers."""
        pids = [self.process.pid]
        try:
            with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        return sum(process_cpu(p) for p in pids)

    def log_size(self):
        return os.path.getsize(self.access_log)

    def bytes_sent(self, since, path_part):
        """Bytes sent (headers included) for requests whose URI holds path_part."""
        with open(self.access_log) as f:
            f.seek(since)
            total = requests = 0
            connections = set()
            for line in f:
                uri, status, sent, _, connection = line.split()[:5]
                if path_part in uri:
                    total += int(sent)
                    requests += 1
                    connections.add(connection)
        self.connections = len(connections)
        return total, requests

    def curl(self, rel):
        out = run("curl", "-s", "-f", "-o", "/dev/null", "-w", "%{size_download} %{time_total}",
                  f"{self.base}/{rel}")
        size, seconds = out.split()
        return int(size), float(seconds)

    def curl_sha256(self, rel):
        """Seconds to download the file and hash it in a pipe (`curl | openssl
        dgst -sha256`, SHA-NI where the CPU has it): the least a verified
        download costs, with nothing stored, inflated or served."""
        started = time.perf_counter()
        subprocess.run(f"curl -s -f '{self.base}/{rel}' | openssl dgst -sha256 >/dev/null",
                       shell=True, check=True)
        return time.perf_counter() - started


class Client:
    """`avail client daemon` and the `avail client` commands."""

    def __init__(self, avail, work):
        self.avail = avail
        self.work = work
        self.state = work.p("client-state")
        self.mounts = work.p("mnt-avail")
        os.makedirs(self.mounts, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AVAIL_")}
        self.env["AVAIL_CLIENT_SOCKET"] = work.p("client.sock")
        # Desktop entries of what is published to the machine: not into /usr/local/share.
        self.env["AVAIL_CLIENT_DESKTOP_DIR"] = work.p("desktop")
        self.process = None
        self.sync_failures = []
        work.at_exit(self.stop)

    def start(self):
        self.log = open(self.work.p("client.log"), "ab")
        self.process = subprocess.Popen(
            [self.avail, "client", "daemon", "--state-dir", self.state,
             "--mount-root", self.mounts],
            env=dict(self.env, AVAIL_LOG="warn"), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self.log,
        )
        self.work.record_pid(self.process.pid)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"avail client daemon exited: see {self.log.name}")
            try:
                self.cli("status")
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self):
        """SIGTERM: the daemon unmounts everything before it exits."""
        if self.process is not None:
            stop_process(self.process, signal.SIGTERM, 30)
            self.process = None

    def cli(self, *args):
        return run(self.avail, "client", *args, env=self.env)

    def package(self, name, version=None):
        rows = json.loads(self.cli("--json", "package", "list"))
        if isinstance(rows, dict):
            rows = rows.get("packages", rows.get("versions", []))
        for row in rows:
            if row["name"] == name and (version is None or row["version"].startswith(version)):
                return row
        return None

    def mounted(self, name, version=None, timeout=60):
        """Sync until NAME (VERSION) is mounted; returns its row."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.cli("sync")
            except RuntimeError as e:
                # A product failure: counted, printed at the end, and retried.
                self.sync_failures.append(str(e).strip().splitlines()[-1])
                log(f"  sync failed (retrying): {self.sync_failures[-1]}")
                if self.process.poll() is not None:
                    raise RuntimeError(f"the client daemon died (exit status "
                                       f"{self.process.returncode}): see {self.log.name}")
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            row = self.package(name, version)
            if row and row.get("mount") and is_mounted(row["mount"]):
                return row
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} {version or ''} not mounted: {row}")
            time.sleep(0.2)

    def remount(self, name):
        """Unmount and mount again: a fresh FUSE page cache, same block cache.

        The daemon is restarted (SIGTERM unmounts; the new one mounts what
        was added): `package remove` would also free the version's blocks
        (since e971a4a), which made this "first read" a cold one."""
        self.stop()
        self.start()
        return self.mounted(name)["mount"]

    def restart_empty(self):
        """Stop, delete the block cache, start again."""
        self.stop()
        shutil.rmtree(os.path.join(self.state, "cache"), ignore_errors=True)
        self.start()


class Squashfuse:
    def __init__(self, work, image):
        self.work = work
        self.image = image
        self.mount = work.p("mnt-squashfuse")
        os.makedirs(self.mount, exist_ok=True)
        self.process = None
        work.at_exit(self.unmount)

    def remount(self):
        self.unmount()
        self.process = subprocess.Popen(
            ["squashfuse", "-f", self.image, self.mount],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.work.p("squashfuse.log"), "ab"),
        )
        self.work.record_pid(self.process.pid)
        for _ in range(400):
            if is_mounted(self.mount):
                return self.mount
            if self.process.poll() is not None:
                break
            time.sleep(0.025)
        raise RuntimeError("squashfuse did not mount: see squashfuse.log")

    def unmount(self):
        if is_mounted(self.mount):
            subprocess.run(["umount", self.mount], check=False)
        if self.process is not None:
            stop_process(self.process, signal.SIGTERM, 10)
            self.process = None


# --------------------------------------------------------------------------
# Reporting


def spread(values, fmt="{:.2f}x"):
    return (f"{fmt.format(statistics.median(values))} "
            f"({fmt.format(min(values))}–{fmt.format(max(values))})")


def mbps(nbytes, seconds):
    return nbytes / seconds / MB


def pack(avail, tree, out, *args, package_id=None):
    """Pack with a fresh VersionId (and PackageId unless given); returns both."""
    package_id = package_id or str(uuid.uuid4())
    version_id = str(uuid.uuid4())
    ids = [] if "--update-of" in args else ["--package-id", package_id]
    run(avail, "package", "pack", tree.root, "-o", out, *args, *ids, "--version-id", version_id)
    return package_id, version_id


def main():
    avail, nginx_bin, work_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    work = Work(work_dir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    try:
        bench(avail, nginx_bin, work)
    except BaseException:
        # What the client daemon said last (the whole logs are kept by bash).
        try:
            with open(work.p("client.log"), errors="replace") as f:
                tail = [line for line in f if not line.startswith(" ")][-15:]
            log("client daemon log, last lines:\n" + "".join(tail))
        except OSError:
            pass
        raise
    finally:
        work.close()


def bench(avail_src, nginx_bin, work):
    avail = work.p("avail")
    shutil.copy(avail_src, avail)  # a build during the run cannot swap it
    os.chmod(avail, 0o755)

    log("making the test tree")
    tree = make_tree(work.p("tree"), SEED, LARGE_MIB, SMALL_FILES)
    log(f"  {len(tree.files)} files, {tree.bytes / MB:.1f} MB")
    log("packing (avail package pack) and mksquashfs (gzip, 128 KiB blocks)")
    pid, vid = pack(avail, tree, work.p("bench.appv"), "--name", "bench", "--version", "1.0",
                    "--app", "app=/opt/app/bin/app")
    image = work.p("bench.squashfs")
    run("mksquashfs", tree.root, image, "-noappend", "-no-progress", "-all-root")
    log(f"  bench.appv {os.path.getsize(work.p('bench.appv')) / MB:.1f} MB, "
        f"squashfs image {os.path.getsize(image) / MB:.1f} MB")

    server = Server(avail, work)
    server.admin("package", "import", work.p("bench.appv"))
    server.admin("group", "create", "lab")
    machine = json.loads(server.admin("--json", "machine", "create", "m1", "--group", "lab"))
    server.admin("package", "grant", "bench", "lab")
    server.admin("package", "publish", "bench")
    appv = server.content_file(pid, vid)
    appv_rel = os.path.relpath(appv, os.path.join(server.data, "content"))
    appv_bytes = os.path.getsize(appv)

    nginx = Nginx(nginx_bin, work, os.path.join(server.data, "content"))
    size, _ = nginx.curl(appv_rel)  # also warms nginx's page cache
    if size != appv_bytes:
        raise RuntimeError(f"nginx served {size} bytes of {appv_rel}, the file has {appv_bytes}")

    client = Client(avail, work)
    client.start()
    client.cli("server", "add", f"http://{server.listen['publishing']}",
               "--credential", machine["credential"])
    client.cli("config", "set", "AutoLoad", "0")
    client.cli("config", "set", "PackageSourceRoot", nginx.base)
    since = nginx.log_size()
    mount = client.mounted("bench")["mount"]
    opened, requests = nginx.bytes_sent(since, vid)
    log(f"  added and mounted: nginx sent {opened} bytes in {requests} requests for the add "
        f"({opened / appv_bytes:.3f}x the package file)")
    squash = Squashfuse(work, image)

    # Fill avail's block cache (and check every byte); read the image once.
    log("first read of both mounts (fills avail's block cache; checks every file's SHA-256)")
    since = nginx.log_size()
    t = seq_read(mount, tree, verify=True)
    fetched, requests = nginx.bytes_sent(since, vid)
    log(f"  avail, cold: {mbps(tree.bytes, t):.0f} MB/s of tree; nginx sent {fetched} bytes "
        f"in {requests} requests ({fetched / appv_bytes:.3f}x the package file)")
    row = client.package("bench")
    log(f"  cached: {row.get('cached_percent')} % ({row.get('cached_bytes')} of "
        f"{row.get('size_bytes')} bytes)")
    t = seq_read(squash.remount(), tree, verify=True)
    log(f"  squashfuse: {mbps(tree.bytes, t):.0f} MB/s")

    plan = random_plan(tree, RANDOM_READS, SEED)
    names = ["seq_first", "seq_repeat", "rand_first", "rand_repeat"]
    results = {"avail": {n: [] for n in names}, "squashfuse": {n: [] for n in names}}

    def warm_round(which):
        def fresh():
            return client.remount("bench") if which == "avail" else squash.remount()

        m = fresh()
        r = results[which]
        r["seq_first"].append(seq_read(m, tree))
        r["seq_repeat"].append(
            sum(seq_read(m, tree) for _ in range(SEQ_REPEAT_PASSES)) / SEQ_REPEAT_PASSES)
        m = fresh()
        r["rand_first"].append(random_read(m, tree, plan))
        r["rand_repeat"].append(random_read(m, tree, plan, RANDOM_REPEAT_PASSES))

    os.system("uptime >&2")
    print(f"nginx {NGINX_TCP_NOPUSH and 'tcp_nopush ' + NGINX_TCP_NOPUSH}, sendfile on; "
          f"squashfuse defaults; avail client defaults (AutoLoad 0)")
    print(f"tree: {len(tree.files)} files, {tree.bytes / MB:.1f} MB; bench.appv "
          f"{appv_bytes / MB:.1f} MB; squashfs image {os.path.getsize(image) / MB:.1f} MB")
    print(f"(a), (b) warm reads, {ROUNDS} round(s); random: {RANDOM_READS} x 4 KiB preads; "
          f"repeat reads: mean of {SEQ_REPEAT_PASSES} (sequential) and {RANDOM_REPEAT_PASSES} "
          f"(random) passes")
    ratios = {n: [] for n in names}
    for rnd in range(0 if COLD_ONLY else ROUNDS):
        order = ["squashfuse", "avail"] if rnd % 2 == 0 else ["avail", "squashfuse"]
        for which in order:
            warm_round(which)
        line = []
        for n in names:
            a, s = results["avail"][n][-1], results["squashfuse"][n][-1]
            ratios[n].append(s / a)
            if n.startswith("seq"):
                line.append(f"{n} avail {mbps(tree.bytes, a):6.0f} / squashfuse "
                            f"{mbps(tree.bytes, s):6.0f} MB/s {s / a:5.2f}x")
            else:
                line.append(f"{n} avail {RANDOM_READS / a:7.0f} / squashfuse "
                            f"{RANDOM_READS / s:7.0f} reads/s {s / a:5.2f}x")
        print(f"round {rnd + 1}: " + " | ".join(line), flush=True)
    squash.unmount()

    # (c) cold: empty block cache, fresh mount, blocks from nginx.
    print(f"(c) cold sequential read, {ROUNDS} round(s)")
    cold = {"avail": [], "curl": [], "ratio": [], "fetched": [], "mount": [], "cpu": [],
            "requests": [], "reader_cpu": [], "nginx_cpu": [], "hashed": []}
    for rnd in range(ROUNDS):
        def avail_cold():
            client.restart_empty()
            started = time.perf_counter()
            row = client.mounted("bench")
            cold["mount"].append(time.perf_counter() - started)
            since = nginx.log_size()
            cpu = process_cpu(client.process.pid)
            reader_cpu = process_cpu(os.getpid())
            nginx_cpu = nginx.cpu()
            t = seq_read(row["mount"], tree)
            cold["cpu"].append(process_cpu(client.process.pid) - cpu)
            cold["reader_cpu"].append(process_cpu(os.getpid()) - reader_cpu)
            cold["nginx_cpu"].append(nginx.cpu() - nginx_cpu)
            cold["fetched"].append(nginx.bytes_sent(since, vid)[0])
            cold["requests"].append(nginx.bytes_sent(since, vid)[1])
            return t

        def curl_cold():
            size, seconds = nginx.curl(appv_rel)
            assert size == appv_bytes
            return seconds

        if rnd % 2 == 0:
            c, a = curl_cold(), avail_cold()
        else:
            a, c = avail_cold(), curl_cold()
        cold["avail"].append(a)
        cold["curl"].append(c)
        cold["ratio"].append(c / a)
        cold["hashed"].append(nginx.curl_sha256(appv_rel))
        print(f"round {rnd + 1}: avail {mbps(appv_bytes, a):6.0f} MB/s of package "
              f"({mbps(tree.bytes, a):.0f} MB/s of tree; mount {cold['mount'][-1]:.2f} s; "
              f"fetched {cold['fetched'][-1] / appv_bytes:.3f}x the file in {cold['requests'][-1]} "
              f"requests; CPU: daemon {cold['cpu'][-1]:.2f} s, reader {cold['reader_cpu'][-1]:.2f} s, "
              f"nginx {cold['nginx_cpu'][-1]:.2f} s) | curl "
              f"{mbps(appv_bytes, c):6.0f} MB/s | {c / a:.2f}x | curl | openssl dgst -sha256 "
              f"{mbps(appv_bytes, cold['hashed'][-1]):.0f} MB/s, "
              f"{c / cold['hashed'][-1]:.2f}x of curl", flush=True)
    hashed = spread([c / h for c, h in zip(cold["curl"], cold["hashed"])])
    if COLD_ONLY:
        print(f"(c) cold sequential via nginx: {spread(cold['ratio'])} (goal >= 0.70x); "
              f"curl | openssl dgst -sha256: {hashed} of curl")
        print(f"SUMMARY cold={statistics.median(cold['ratio']):.2f}")
        return

    # (d) upgrade.
    log("(d) making the upgrade package (v1, and v2 with one 1 MiB file changed)")
    rng = random.Random(SEED + 2)
    changed = "opt/app/data/changed.bin"
    v1 = make_tree(work.p("up1"), SEED + 1, UPGRADE_LARGE_MIB, UPGRADE_SMALL_FILES,
                   {changed: rng.randbytes(1 << 20)})
    up2 = work.p("up2")
    shutil.copytree(v1.root, up2, copy_function=os.link)
    os.unlink(os.path.join(up2, changed))
    new = rng.randbytes(1 << 20)
    with open(os.path.join(up2, changed), "wb") as f:
        f.write(new)
    v2 = Tree(up2, [(r, s, d) if r != changed else (r, len(new), hashlib.sha256(new).hexdigest())
                    for r, s, d in v1.files])
    pid1, vid1 = pack(avail, v1, work.p("up1.appv"), "--name", "upgrade", "--version", "1.0",
                      "--app", "app=/opt/app/bin/app")
    _, vid2 = pack(avail, v2, work.p("up2.appv"), "--update-of", work.p("up1.appv"),
                   "--version", "2.0", package_id=pid1)
    server.admin("package", "import", work.p("up1.appv"))
    server.admin("package", "grant", "upgrade", "lab")
    server.admin("package", "publish", "upgrade")
    since = nginx.log_size()
    row = client.mounted("upgrade", "1")
    v1_add = nginx.bytes_sent(since, vid1)
    since = nginx.log_size()
    seq_read(row["mount"], v1, verify=True)
    v1_read = nginx.bytes_sent(since, vid1)
    server.admin("package", "upgrade", "upgrade", work.p("up2.appv"), "--transfer", "--publish")
    since = nginx.log_size()
    row = client.mounted("upgrade", "2")
    v2_add = nginx.bytes_sent(since, vid2)
    since = nginx.log_size()
    seq_read(row["mount"], v2, verify=True)
    v2_read = nginx.bytes_sent(since, vid2)
    v1_sent, v1_requests = v1_add[0] + v1_read[0], v1_add[1] + v1_read[1]
    v2_sent, v2_requests = v2_add[0] + v2_read[0], v2_add[1] + v2_read[1]
    up1_bytes = os.path.getsize(work.p("up1.appv"))
    up2_bytes = os.path.getsize(work.p("up2.appv"))
    os.system("uptime >&2")

    print()
    print(f"tree {tree.bytes / MB:.1f} MB ({len(tree.files)} files), package {appv_bytes / MB:.1f} MB, "
          f"{ROUNDS} rounds; ratio = avail / reference, median (min–max)")
    labels = {
        "seq_first": "(a) warm sequential, first read after mount",
        "seq_repeat": "(a) warm sequential, repeat read (page cache)",
        "rand_first": "(b) warm random 4 KiB, first read after mount",
        "rand_repeat": "(b) warm random 4 KiB, repeat read (page cache)",
    }
    for n in names:
        if n.startswith("seq"):
            fig = (f"avail {spread([mbps(tree.bytes, t) for t in results['avail'][n]], '{:.0f}')} "
                   f"MB/s, squashfuse {spread([mbps(tree.bytes, t) for t in results['squashfuse'][n]], '{:.0f}')} MB/s")
        else:
            fig = (f"avail {spread([RANDOM_READS / t for t in results['avail'][n]], '{:.0f}')} "
                   f"reads/s, squashfuse {spread([RANDOM_READS / t for t in results['squashfuse'][n]], '{:.0f}')} reads/s")
        print(f"{labels[n]}: {spread(ratios[n])} (goal >= 0.80x) | {fig}")
    print(f"(c) cold sequential via nginx: {spread(cold['ratio'])} (goal >= 0.70x) | avail "
          f"{spread([mbps(appv_bytes, t) for t in cold['avail']], '{:.0f}')} MB/s of package, curl "
          f"{spread([mbps(appv_bytes, t) for t in cold['curl']], '{:.0f}')} MB/s; nginx sent "
          f"{spread([b / appv_bytes for b in cold['fetched']], '{:.3f}x')} the package file per cold read; "
          f"curl | openssl dgst -sha256 of the same file: {hashed} of curl")
    print(f"(d) upgrade: v1 {up1_bytes} bytes, added and read fully: nginx sent {v1_sent} bytes "
          f"in {v1_requests} requests ({v1_sent / up1_bytes:.3f}x; add {v1_add[0]}, read {v1_read[0]})")
    print(f"(d) upgrade: v2 {up2_bytes} bytes (one 1 MiB file changed), added and read fully: "
          f"nginx sent {v2_sent} bytes in {v2_requests} requests = {v2_sent / up2_bytes:.4f}x the "
          f"package ({v2_sent / (1 << 20):.2f} MiB): add {v2_add[0]} bytes in {v2_add[1]} requests, "
          f"read {v2_read[0]} bytes in {v2_read[1]} requests ({v2_read[0] / up2_bytes:.4f}x)")
    if client.sync_failures:
        panics = open(work.p("client.log"), errors="replace").read().count("panicked at")
        print(f"PRODUCT FAILURE: `avail client sync` failed {len(client.sync_failures)} time(s) "
              f"(each retried; the client log has {panics} panic(s)): {client.sync_failures[0]}")
    summary = " ".join(
        [f"{n}={statistics.median(ratios[n]):.2f}" for n in names]
        + [f"cold={statistics.median(cold['ratio']):.2f}",
           f"upgrade_bytes={v2_sent}", f"upgrade_ratio={v2_sent / up2_bytes:.4f}",
           f"upgrade_read_bytes={v2_read[0]}"]
    )
    print(f"SUMMARY {summary}")


if __name__ == "__main__":
    main()
