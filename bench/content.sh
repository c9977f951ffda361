#!/usr/bin/env bash
# Content role vs nginx: random 64 KiB ranges of one large file, served from the
# same directory by both, measured with wrk in the same invocation.
# See bench/README.md ("Content role").
set -euo pipefail

DURATION=${DURATION:-10}          # seconds per wrk run
THREADS=${THREADS:-2}             # wrk -t
CONNECTIONS=${CONNECTIONS:-32}    # wrk -c
FILE_MB=${FILE_MB:-1024}          # size of the test file
ROUNDS=${ROUNDS:-4}               # nginx, avail, nginx, avail, … ; the mean is reported
WARMUP=${WARMUP:-3}               # seconds of untimed wrk against each first
BLOCK=65536

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lua="$repo/bench/content-ranges.lua"

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

echo "building the content server (release)" >&2
(cd "$repo" && cargo build --release -q -p avail-server --example content-server)
server_bin="$repo/target/release/examples/content-server"

work=$(mktemp -d "${TMPDIR:-/tmp}/avail-bench-content.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# A free loopback port (one nothing answers on, not handed out before) in
# $port; not via $(…), whose subshell would forget the ports handed out.
used_ports=" "
free_port() {
    while :; do
        port=$((20000 + RANDOM % 40000))
        case "$used_ports" in *" $port "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            used_ports+="$port "
            return
        fi
    done
}

wait_for() { # PORT NAME
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$2 did not start on port $1" >&2
    return 1
}

# nginx's workers drop root privileges: the data must be world-readable.
chmod 755 "$work"
mkdir -p "$work/data" "$work/nginx/logs"
echo "writing a ${FILE_MB} MiB test file" >&2
dd if=/dev/urandom of="$work/data/big.bin" bs=1M count="$FILE_MB" status=none
chmod 644 "$work/data/big.bin"
cat "$work/data/big.bin" >/dev/null # into the page cache: both read from memory
blocks=$((FILE_MB * 1024 * 1024 / BLOCK))

free_port; nginx_port=$port
free_port; avail_port=$port
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$nginx_port;
        root $work/data;
        location / { }
    }
}
CONF
# stdout to /dev/null: a background server must not hold a pipe that the
# caller of this script reads (`bench/content.sh | tee …`).
"$nginx_bin" -p "$work/nginx" -e "$work/nginx/logs/error.log" -c "$work/nginx/nginx.conf" -g 'daemon off;' >/dev/null &
nginx_pid=$!
pids+=("$nginx_pid")
"$server_bin" "$work/data" "$avail_port" >/dev/null 2>&1 &
avail_pid=$!
pids+=("$avail_pid")
wait_for "$nginx_port" nginx
wait_for "$avail_port" avail
# CPU time is counted over nginx's workers and over the avail process (all its
# threads); on a shared machine it says more than req/s alone.
clk_tck=$(getconf CLK_TCK)
cpu_ticks() { # PID… → utime + stime, in clock ticks
    local total=0 pid
    for pid in "$@"; do total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
    echo "$total"
}

# Both must answer a range with exactly the right bytes before being timed.
first=$((7 * BLOCK))
expect=$(dd if="$work/data/big.bin" bs=$BLOCK skip=7 count=1 status=none | sha256sum | cut -d' ' -f1)
for port in "$nginx_port" "$avail_port"; do
    got=$(exec 3<>"/dev/tcp/127.0.0.1/$port"
        printf 'GET /big.bin HTTP/1.0\r\nHost: localhost\r\nRange: bytes=%d-%d\r\n\r\n' \
            "$first" $((first + BLOCK - 1)) >&3
        cat <&3 | tee "$work/check-$port" | sed '1,/^\r$/d' | sha256sum | cut -d' ' -f1)
    if ! head -1 "$work/check-$port" | grep -q ' 206 ' || [ "$got" != "$expect" ]; then
        echo "port $port did not serve the range correctly:" >&2
        sed '/^\r$/q' "$work/check-$port" >&2
        exit 1
    fi
done

# nginx listens before its workers are up: wait for all of them
# (worker_processes auto = one per CPU).
nginx_workers=()
for _ in $(seq 100); do
    mapfile -t nginx_workers < <(pgrep -P "$nginx_pid")
    [ "${#nginx_workers[@]}" -ge "$(nproc)" ] && break
    sleep 0.1
done

export CONTENT_PATH=/big.bin CONTENT_BLOCKS=$blocks CONTENT_BLOCK=$BLOCK
run() { # SECONDS NAME PORT PID… → "req/s MB/s p50_us p99_us server_cpu_us_per_request"
    local seconds=$1 name=$2 port=$3 out before after
    shift 3
    before=$(cpu_ticks "$@")
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" -s "$lua" "http://127.0.0.1:$port/")
    after=$(cpu_ticks "$@")
    printf '%s\n' "$out" | awk -v name="$name" '{ print "  [" name "] " $0 }' >&2
    echo "$out" | awk -v cpu_us=$(((after - before) * 1000000 / clk_tck)) '/^RESULT/ {
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        if (v["errors"] > 0) { print "errors=" v["errors"] > "/dev/stderr"; exit 1 }
        s = v["duration_us"] / 1e6
        printf "%.0f %.1f %d %d %.1f\n", v["requests"] / s, v["bytes"] / s / 1e6, v["p50_us"], v["p99_us"], cpu_us / v["requests"] }'
}

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, random ${BLOCK}-byte ranges of a ${FILE_MB} MiB file, $ROUNDS round(s)" >&2
# Warm-up, untimed: connections, the pool's threads, CPU frequency.
run "$WARMUP" nginx "$nginx_port" "${nginx_workers[@]}" >/dev/null
run "$WARMUP" avail "$avail_port" "$avail_pid" >/dev/null
results=()
for round in $(seq "$ROUNDS"); do
    n=$(run "$DURATION" nginx "$nginx_port" "${nginx_workers[@]}")
    a=$(run "$DURATION" avail "$avail_port" "$avail_pid")
    results+=("$round $n $a")
done

# Fields: round, then nginx and avail each: req/s MB/s p50 p99 cpu_us/req.
printf '%s\n' "${results[@]}" | awk -v t="$THREADS" -v c="$CONNECTIONS" '
    { nr += $2; nm += $3; nc += $6; ar += $7; am += $8; ac += $11; n++
      printf "round %d: nginx %6.0f req/s %7.1f MB/s p50 %5d us p99 %6d us %5.1f us CPU/req | avail %6.0f req/s %7.1f MB/s p50 %5d us p99 %6d us %5.1f us CPU/req | %.2fx\n",
             $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $7 / $2 }
    END {
      printf "\n%-6s %10s %10s %16s\n", "", "req/s", "MB/s", "server CPU/req"
      printf "%-6s %10.0f %10.1f %13.1f us\n", "nginx", nr / n, nm / n, nc / n
      printf "%-6s %10.0f %10.1f %13.1f us\n", "avail", ar / n, am / n, ac / n
      printf "\nratio avail/nginx: %.2fx req/s (goal >= 0.80x); %.2fx CPU efficiency\n", ar / nr, nc / ac
      printf "SUMMARY nginx_rps=%.0f avail_rps=%.0f nginx_MBps=%.1f avail_MBps=%.1f ratio=%.3f nginx_cpu_us=%.1f avail_cpu_us=%.1f cpu_ratio=%.3f threads=%d connections=%d\n",
             nr / n, ar / n, nm / n, am / n, ar / nr, nc / n, ac / n, nc / ac, t, c }'
