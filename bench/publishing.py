#!/usr/bin/env python3
"""Publishing role benchmarks, run by bench/publishing.sh (see bench/README.md).

Usage: publishing.py AVAIL_BIN NGINX_BIN

1. Throughput. One `avail server` (every role, embedded SQLite, in a temporary
   directory) is filled through its management API with GROUPS groups nested
   as a tree (group i is a member of group i // 10, so g0000 holds everything),
   USERS users spread over the leaf groups (DIRECTORY_GROUPS: bash reserves GROUPS), PACKAGES packages (each a real
   `avail package pack` of a small tree, imported, published and granted to two
   groups), CONNECTION_GROUPS connection groups of two member packages each,
   granted and published, and one machine in the root group. One user in a leaf
   group, four levels deep, receives about 30 packages and 3 connection groups.
   Its publishing document (`GET /?ClientVersion=…&ClientOS=…` with the
   machine's Bearer credential and `Avail-User`) is saved to a file that nginx
   serves as a static file; then wrk (THREADS threads, CONNECTIONS
   connections, DURATION seconds) runs against nginx and the publishing role in
   turn, ROUNDS times, after an untimed warm-up of each. A second run against
   avail spreads the requests over 100 users (different documents, each from
   the cache of rendered documents).
2. Propagation. A second node runs only the publishing role and follows the
   first through `[publishing] management_urls` with a registered publishing
   server's credential. PROPAGATIONS times, a package granted to the root group
   is unpublished and published again through the first node's API; the time
   from the API's answer to the first document of the second node that shows
   the change (polled every 2 ms) is recorded.

Every figure is printed per round, then the median and the spread (min–max).
"""

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse


def env_int(name, default):
    return int(os.environ.get(name, default))


ROUNDS = env_int("ROUNDS", 5)
DURATION = env_int("DURATION", 10)
WARMUP = env_int("WARMUP", 3)
CONNECTIONS = env_int("CONNECTIONS", 200)
THREADS = env_int("THREADS", 2)
PACKAGES = env_int("PACKAGES", 1000)
CONNECTION_GROUPS = env_int("CONNECTION_GROUPS", 100)
USERS = env_int("USERS", 10000)
GROUPS = env_int("DIRECTORY_GROUPS", 1000)
PROPAGATIONS = env_int("PROPAGATIONS", 20)
QUERY = "/?ClientVersion=5.1.0.0&ClientOS=WindowsClient_10.0_x64"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


class Api:
    """A keep-alive HTTP/1.1 connection to one role, with an optional Bearer token."""

    def __init__(self, addr, token=None):
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.token = token
        self.conn = None

    def request(self, method, path, body=None, headers=None, expect=(200, 201, 204)):
        all_headers = {"Accept": "application/json"}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request(method, path, body=body, headers=all_headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        if response.status not in expect:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return response.status, data


class Node:
    """An `avail server` with some roles, in its own data directory."""

    def __init__(self, avail, work, name, roles, env=None):
        self.data = os.path.join(work, name)
        os.makedirs(self.data)
        full_env = dict(os.environ)
        # Every setting at its default (logs at info, as installed) but the
        # addresses and the data directory.
        for key in list(full_env):
            if key.startswith("AVAIL_"):
                del full_env[key]
        full_env.update(
            {
                "AVAIL_DATA_DIR": self.data,
                "AVAIL_ROLES": roles,
                "AVAIL_MANAGEMENT_LISTEN": "127.0.0.1:0",
                "AVAIL_PUBLISHING_LISTEN": "127.0.0.1:0",
                "AVAIL_REPORTING_LISTEN": "127.0.0.1:0",
                "AVAIL_CONTENT_LISTEN": "127.0.0.1:0",
            }
        )
        full_env.update(env or {})
        self.log = open(os.path.join(work, f"{name}.log"), "wb")
        self.process = subprocess.Popen(
            [avail, "server"],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self.listen = self._wait_ready("management" in roles)
        self.token = None
        if "management" in roles:
            with open(os.path.join(self.data, "admin-token")) as f:
                self.token = f.read().strip()

    def _wait_ready(self, with_token):
        path = os.path.join(self.data, "listen.json")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"avail server exited: see {self.log.name}")
            try:
                with open(path) as f:
                    listen = json.load(f)
                if with_token and not os.path.exists(os.path.join(self.data, "admin-token")):
                    raise FileNotFoundError
                if all(Api(a).request("GET", "/readyz")[0] == 200 for a in listen.values()):
                    return listen
            except (OSError, ValueError, RuntimeError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"avail server did not start in 60 s: see {self.log.name}")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def pack(avail, work, i):
    tree = os.path.join(work, "tree")
    os.makedirs(os.path.join(tree, "opt/app/bin"), exist_ok=True)
    with open(os.path.join(tree, "opt/app/bin/app"), "w") as f:
        f.write(f"#!/bin/sh\necho app {i}\n")
    out = os.path.join(work, "app.appv")
    subprocess.run(
        [avail, "package", "pack", tree, "-o", out, "--name", f"app{i:04}", "--app",
         f"app{i:04}=/opt/app/bin/app"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with open(out, "rb") as f:
        return f.read()


def populate(avail, work, api):
    """Fill the Management DB through the API; returns (machine credential, users)."""
    started = time.monotonic()
    group = [f"g{i:04}" for i in range(GROUPS)]
    for i, name in enumerate(group):
        api.request("POST", "/api/v1/groups", {"name": name})
        if i:
            api.request("PUT", f"/api/v1/groups/{group[i // 10]}/members/groups/{name}")
    leaves = group[GROUPS // 10:] or group
    users = [f"u{k:05}" for k in range(USERS)]
    for k, name in enumerate(users):
        api.request("POST", "/api/v1/users", {"name": name, "groups": [leaves[k % len(leaves)]]})
    log(f"  {GROUPS} groups, {USERS} users in {time.monotonic() - started:.0f} s")
    versions = []
    for j in range(PACKAGES):
        body = pack(avail, work, j)
        _, answer = api.request(
            "POST", "/api/v1/packages", body, {"Content-Type": "application/octet-stream"}
        )
        vid = json.loads(answer)["version"]["version_id"]
        versions.append(vid)
        api.request("PUT", f"/api/v1/packages/{vid}/entitlements/{group[j % GROUPS]}", {})
        api.request("PUT", f"/api/v1/packages/{vid}/entitlements/{group[j % min(100, GROUPS)]}", {})
        api.request("POST", f"/api/v1/packages/{vid}/publish")
        if j % 200 == 199:
            log(f"  {j + 1} packages in {time.monotonic() - started:.0f} s")
    for k in range(CONNECTION_GROUPS):
        _, answer = api.request("POST", "/api/v1/connection-groups", {"name": f"cg{k:03}", "priority": k})
        cg = json.loads(answer)["id"]
        for j in (k, k + CONNECTION_GROUPS):
            vid = versions[j % PACKAGES]
            api.request("PUT", f"/api/v1/connection-groups/{cg}/members/{vid}", {"version_id": vid})
        api.request("PUT", f"/api/v1/connection-groups/{cg}/entitlements/{group[k % min(100, GROUPS)]}")
        api.request("POST", f"/api/v1/connection-groups/{cg}/publish")
    _, answer = api.request("POST", "/api/v1/machines", {"name": "pc0001", "groups": [group[0]]})
    credential = json.loads(answer)["credential"]
    log(f"  populated in {time.monotonic() - started:.0f} s")
    return credential, users, versions


def document(addr, credential, user, accept="text/xml"):
    api = Api(addr)
    headers = {"Authorization": f"Bearer {credential}", "Accept": accept}
    if user:
        headers["Avail-User"] = user
    return api.request("GET", QUERY, headers=headers, expect=(200,))[1]


def wait_for_sequence(addr, credential, sequence, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = json.loads(document(addr, credential, None, "application/json"))
        if answer["sequence"] >= sequence:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{addr} did not reach catalog sequence {sequence}")


def settle(addr, credential):
    """Wait until the publishing role's catalog sequence stays put for 2 s."""
    last = None
    headers = {"Authorization": f"Bearer {credential}", "Accept": "application/json"}
    while True:
        # 401 until the catalog holds the machine.
        status, body = Api(addr).request("GET", QUERY, headers=headers, expect=(200, 401))
        sequence = json.loads(body)["sequence"] if status == 200 else None
        if sequence is not None and sequence == last:
            return
        last = sequence
        time.sleep(2)


def start_nginx(nginx, work, doc):
    root = os.path.join(work, "www")
    os.makedirs(os.path.join(work, "nginx/logs"))
    os.makedirs(root)
    os.chmod(work, 0o755)
    os.chmod(root, 0o755)
    with open(os.path.join(root, "doc.xml"), "wb") as f:
        f.write(doc)
    os.chmod(os.path.join(root, "doc.xml"), 0o644)
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    conf = os.path.join(work, "nginx/nginx.conf")
    with open(conf, "w") as f:
        f.write(
            f"""worker_processes auto;
pid {work}/nginx/nginx.pid;
error_log {work}/nginx/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path {work}/nginx/body;
    proxy_temp_path {work}/nginx/proxy;
    fastcgi_temp_path {work}/nginx/fastcgi;
    uwsgi_temp_path {work}/nginx/uwsgi;
    scgi_temp_path {work}/nginx/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ default_type text/xml; add_header Cache-Control no-cache; try_files /doc.xml =404; }}
    }}
}}
"""
        )
    process = subprocess.Popen(
        [nginx, "-p", f"{work}/nginx", "-e", f"{work}/nginx/logs/error.log", "-c", conf,
         "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
    )
    addr = f"127.0.0.1:{port}"
    for _ in range(300):
        try:
            if Api(addr).request("GET", QUERY, expect=(200,))[1] == doc:
                return process, addr
        except (OSError, RuntimeError):
            pass
        time.sleep(0.05)
    raise RuntimeError("nginx did not start")


def wrk(work, addr, seconds, credential, users):
    """Requests/s of one wrk run; every answer must be a 200."""
    script = os.path.join(work, "publishing.lua")
    with open(script, "w") as f:
        names = ", ".join(f'"{u}"' for u in users)
        f.write(
            f"""local users = {{ {names} }}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "{QUERY}", {{
    ["Authorization"] = "Bearer {credential}",
    ["Avail-User"] = users[(n % #users) + 1],
  }})
end
local statuses = 0
response = function(status, headers, body)
  if status ~= 200 then statuses = statuses + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d errors=%d p50_us=%d p99_us=%d\\n",
    summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
        )
    out = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", script,
         f"http://{addr}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fields = {}
    rps = None
    for line in out.splitlines():
        if line.startswith("RESULT"):
            fields = dict(kv.split("=") for kv in line.split()[1:])
        if line.startswith("Requests/sec:"):
            rps = float(line.split()[1])
    if rps is None or not fields or int(fields["errors"]) > 0:
        raise RuntimeError(f"wrk against {addr} failed or saw errors:\n{out}")
    return rps, int(fields["p50_us"]), int(fields["p99_us"])


def spread(values, fmt):
    return (f"median {fmt.format(statistics.median(values))}, "
            f"min {fmt.format(min(values))}, max {fmt.format(max(values))}")


def throughput(nginx_bin, work, node, credential, users):
    user = users[GROUPS // 10 * 3 + 5] if len(users) > GROUPS // 10 * 3 + 5 else users[0]
    doc = document(node.listen["publishing"], credential, user)
    log(f"document for {user}: {len(doc)} bytes, {doc.count(b'PackageUrl=')} packages, "
        f"{doc.count(b'<Group ')} connection groups")
    nginx, nginx_addr = start_nginx(nginx_bin, work, doc)
    try:
        avail_addr = node.listen["publishing"]
        spread_users = users[:: max(1, len(users) // 100)][:100]
        log(f"wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION}s, {ROUNDS} round(s) (warm-up {WARMUP} s each)")
        wrk(work, nginx_addr, WARMUP, credential, [user])
        wrk(work, avail_addr, WARMUP, credential, [user])
        wrk(work, avail_addr, WARMUP, credential, spread_users)
        ratios, rows = [], []
        for round_no in range(1, ROUNDS + 1):
            n = wrk(work, nginx_addr, DURATION, credential, [user])
            a = wrk(work, avail_addr, DURATION, credential, [user])
            s = wrk(work, avail_addr, DURATION, credential, spread_users)
            ratios.append(a[0] / n[0])
            rows.append((n, a, s))
            print(f"round {round_no}: nginx {n[0]:8.0f} req/s (p50 {n[1]} us, p99 {n[2]} us) | "
                  f"avail {a[0]:8.0f} req/s (p50 {a[1]} us, p99 {a[2]} us) | {a[0] / n[0]:.2f}x | "
                  f"avail, 100 users {s[0]:8.0f} req/s (p99 {s[2]} us) | {s[0] / n[0]:.2f}x",
                  flush=True)
        print()
        print(f"nginx, static document:    {spread([r[0][0] for r in rows], '{:.0f}')} req/s")
        print(f"avail, the same user:      {spread([r[1][0] for r in rows], '{:.0f}')} req/s")
        print(f"avail, 100 users:          {spread([r[2][0] for r in rows], '{:.0f}')} req/s")
        print(f"ratio avail/nginx:         {spread(ratios, '{:.2f}x')} (goal >= 0.80x)")
        spread_ratios = [r[2][0] / r[0][0] for r in rows]
        print(f"ratio avail 100 users/nginx: {spread(spread_ratios, '{:.2f}x')}")
        print(f"App-V 5.1, published: ~1,500 req/s on four cores; avail here: "
              f"{statistics.median([r[1][0] for r in rows]) / 1500:.1f}x that on {os.cpu_count()} cores")
        return statistics.median(ratios)
    finally:
        nginx.terminate()
        nginx.wait()


def propagation(avail, work, node, credential, versions):
    api = Api(node.listen["management"], node.token)
    _, answer = api.request("POST", "/api/v1/publishing-servers", {"name": "bench-pub"})
    server_credential = json.loads(answer)["credential"]
    follower = Node(
        avail, work, "follower", "publishing",
        {
            "AVAIL_PUBLISHING_MANAGEMENT_URLS": f"http://{node.listen['management']}",
            "AVAIL_PUBLISHING_CREDENTIAL": server_credential,
        },
    )
    try:
        pub = follower.listen["publishing"]
        sequence = json.loads(document(node.listen["publishing"], credential, None, "application/json"))["sequence"]
        wait_for_sequence(pub, credential, sequence)
        vid = versions[0]
        times = []
        poll = Api(pub)
        headers = {"Authorization": f"Bearer {credential}", "Accept": "text/xml"}
        for i in range(PROPAGATIONS * 2):
            action = "unpublish" if i % 2 == 0 else "publish"
            api.request("POST", f"/api/v1/packages/{vid}/{action}")
            acknowledged = time.monotonic()
            while True:
                body = poll.request("GET", QUERY, headers=headers, expect=(200,))[1]
                if (vid.encode() in body) == (action == "publish"):
                    break
                if time.monotonic() - acknowledged > 30:
                    raise RuntimeError(f"{action} of {vid} did not reach the second node in 30 s")
                time.sleep(0.002)
            elapsed = time.monotonic() - acknowledged
            if action == "publish":
                times.append(elapsed)
                print(f"publish {len(times)}: {elapsed * 1000:.0f} ms", flush=True)
            time.sleep(0.2)
        print()
        print(f"publish -> second publishing node: {spread([t * 1000 for t in times], '{:.0f} ms')} "
              f"(goal < 1,000 ms; App-V 5.1 syncs every 600 s by default: "
              f"{600 / statistics.median(times):.0f}x sooner)")
    finally:
        follower.stop()


def main():
    avail, nginx = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="avail-bench-publishing.") as work:
        # The binary is copied: a build during the run cannot swap it.
        copy = os.path.join(work, "avail")
        with open(avail, "rb") as src, open(copy, "wb") as dst:
            dst.write(src.read())
        os.chmod(copy, 0o755)
        node = Node(copy, work, "node", "management,publishing,content")
        try:
            log(f"populating: {GROUPS} groups, {USERS} users, {PACKAGES} packages, "
                f"{CONNECTION_GROUPS} connection groups")
            api = Api(node.listen["management"], node.token)
            credential, users, versions = populate(copy, work, api)
            settle(node.listen["publishing"], credential)
            os.system("uptime >&2")
            throughput(nginx, work, node, credential, users)
            print()
            propagation(copy, work, node, credential, versions)
            os.system("uptime >&2")
        finally:
            node.stop()


if __name__ == "__main__":
    main()
