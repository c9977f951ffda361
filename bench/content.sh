#!/usr/bin/env bash
# Content role vs nginx: random 64 KiB ranges of one large file, served from the
# same directory by both, measured with wrk in the same invocation.
# See bench/README.md ("Content role").
set -euo pipefail

DURATION=${DURATION:-10}          # seconds per wrk run
THREADS=${THREADS:-2}             # wrk -t
CONNECTIONS=${CONNECTIONS:-32}    # wrk -c
FILE_MB=${FILE_MB:-1024}          # size of the test file
ROUNDS=${ROUNDS:-4}               # nginx, avail[, baseline], nginx, avail, … ; the mean is reported
WARMUP=${WARMUP:-3}               # seconds of untimed wrk against each first
BASELINE=${BASELINE:-}            # another content-server binary to race too (an A/B of a change)
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
# Where cargo put it: CARGO_TARGET_DIR if set (relative to the repository,
# where cargo ran), else the repository's target/.
target_dir=${CARGO_TARGET_DIR:-$repo/target}
[[ $target_dir == /* ]] || target_dir=$repo/$target_dir
server_bin="$target_dir/release/examples/content-server"
if [ -n "$BASELINE" ]; then
    [ -x "$BASELINE" ] || { echo "BASELINE=$BASELINE is not an executable" >&2; exit 1; }
fi

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

wait_for() { # PORT NAME [LOG]
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$2 did not start on port $1" >&2
    [ -z "${3:-}" ] || tail -5 "$3" >&2
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
free_port; base_port=$port
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
# Both binaries are copied, so that a build into the same target directory
# during the run (another checkout, a colleague) cannot swap them.
cp "$server_bin" "$work/content-server"
"$work/content-server" "$work/data" "$avail_port" >/dev/null 2>"$work/avail.log" &
avail_pid=$!
pids+=("$avail_pid")
ports=("$nginx_port" "$avail_port")
if [ -n "$BASELINE" ]; then
    cp "$BASELINE" "$work/baseline-server"
    "$work/baseline-server" "$work/data" "$base_port" >/dev/null 2>"$work/baseline.log" &
    base_pid=$!
    pids+=("$base_pid")
    ports+=("$base_port")
    wait_for "$base_port" baseline "$work/baseline.log"
fi
wait_for "$nginx_port" nginx
wait_for "$avail_port" avail "$work/avail.log"
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
for port in "${ports[@]}"; do
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
run() { # SECONDS NAME PORT PID… → "req/s MB/s p50_us p99_us server_cpu_us wrk_cpu_us" (CPU per request)
    local seconds=$1 name=$2 port=$3 out before after
    shift 3
    before=$(cpu_ticks "$@")
    # `times`, run by the same subshell as wrk, prints the subshell's own CPU
    # time and then its children's, i.e. wrk's.
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" -s "$lua" "http://127.0.0.1:$port/"
        echo WRKCPU
        times)
    after=$(cpu_ticks "$@")
    printf '%s\n' "$out" | sed '/^WRKCPU/,$d' | awk -v name="$name" '{ print "  [" name "] " $0 }' >&2
    echo "$out" | awk -v cpu_us=$(((after - before) * 1000000 / clk_tck)) '
      function secs(t, m) { m = t; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", t); sub(/s$/, "", t); return m * 60 + t }
      /^WRKCPU/ { at = NR }
      at && NR == at + 2 { wrk_us = (secs($1) + secs($2)) * 1e6 }
      /^RESULT/ {
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        if (v["errors"] > 0) { print "errors=" v["errors"] > "/dev/stderr"; failed = 1; exit 1 } }
      END {
        if (failed || !v["requests"]) exit 1
        s = v["duration_us"] / 1e6
        printf "%.0f %.1f %d %d %.1f %.1f\n", v["requests"] / s, v["bytes"] / s / 1e6, v["p50_us"], v["p99_us"], cpu_us / v["requests"], wrk_us / v["requests"] }'
}

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, random ${BLOCK}-byte ranges of a ${FILE_MB} MiB file, $ROUNDS round(s)" >&2
# Warm-up, untimed: connections, the runtime's threads, CPU frequency.
run "$WARMUP" nginx "$nginx_port" "${nginx_workers[@]}" >/dev/null
run "$WARMUP" avail "$avail_port" "$avail_pid" >/dev/null
[ -z "$BASELINE" ] || run "$WARMUP" baseline "$base_port" "$base_pid" >/dev/null
results=()
for round in $(seq "$ROUNDS"); do
    n=$(run "$DURATION" nginx "$nginx_port" "${nginx_workers[@]}")
    a=$(run "$DURATION" avail "$avail_port" "$avail_pid")
    b=""
    [ -z "$BASELINE" ] || b=$(run "$DURATION" baseline "$base_port" "$base_pid")
    results+=("$round $n $a $b")
done

# Fields: round, then nginx, avail (and the baseline) each: req/s MB/s p50 p99
# server_cpu_us wrk_cpu_us (per request).
printf '%s\n' "${results[@]}" | awk -v t="$THREADS" -v c="$CONNECTIONS" '
    { nr += $2; nm += $3; nc += $6; nw += $7; ar += $8; am += $9; ac += $12; aw += $13; n++
      printf "round %d: nginx %6.0f req/s %7.1f MB/s p50 %5d us p99 %6d us %5.1f us CPU/req (wrk %5.1f) | avail %6.0f req/s %7.1f MB/s p50 %5d us p99 %6d us %5.1f us CPU/req (wrk %5.1f) | %.2fx",
             $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $8 / $2
      if (NF >= 19) {
          base = 1; br += $14; bm += $15; bc += $18; bw += $19
          printf " | baseline %6.0f req/s %5.1f us CPU/req (wrk %5.1f) | avail/baseline %.2fx", $14, $18, $19, $8 / $14
      }
      printf "\n" }
    END {
      printf "\n%-8s %10s %10s %16s %16s %22s\n", "", "req/s", "MB/s", "server CPU/req", "wrk CPU/req", "req per CPU-s (both)"
      printf "%-8s %10.0f %10.1f %13.1f us %13.1f us %22.0f\n", "nginx", nr / n, nm / n, nc / n, nw / n, 1e6 / ((nc + nw) / n)
      printf "%-8s %10.0f %10.1f %13.1f us %13.1f us %22.0f\n", "avail", ar / n, am / n, ac / n, aw / n, 1e6 / ((ac + aw) / n)
      if (base) printf "%-8s %10.0f %10.1f %13.1f us %13.1f us %22.0f\n", "baseline", br / n, bm / n, bc / n, bw / n, 1e6 / ((bc + bw) / n)
      printf "\nratio avail/nginx: %.2fx req/s (goal >= 0.90x); %.2fx CPU efficiency; %.2fx requests per CPU-second of server and wrk\n",
             ar / nr, nc / ac, (nc + nw) / (ac + aw)
      if (base) printf "ratio avail/baseline: %.2fx req/s; %.2fx CPU efficiency; %.2fx requests per CPU-second of server and wrk\n",
             ar / br, bc / ac, (bc + bw) / (ac + aw)
      printf "SUMMARY nginx_rps=%.0f avail_rps=%.0f nginx_MBps=%.1f avail_MBps=%.1f ratio=%.3f nginx_cpu_us=%.1f avail_cpu_us=%.1f cpu_ratio=%.3f nginx_wrk_cpu_us=%.1f avail_wrk_cpu_us=%.1f total_cpu_ratio=%.3f threads=%d connections=%d",
             nr / n, ar / n, nm / n, am / n, ar / nr, nc / n, ac / n, nc / ac, nw / n, aw / n, (nc + nw) / (ac + aw), t, c
      if (base) printf " baseline_rps=%.0f baseline_cpu_us=%.1f ratio_vs_baseline=%.3f cpu_ratio_vs_baseline=%.3f",
             br / n, bc / n, ar / br, bc / ac
      printf "\n" }'
