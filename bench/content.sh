#!/usr/bin/env bash
# Content role vs nginx: random 64 KiB ranges of one large file, served from the
# same directory by both, measured with wrk in the same invocation.
# See bench/README.md ("Content role").
set -euo pipefail

DURATION=${DURATION:-10}          # seconds per wrk run
THREADS=${THREADS:-2}             # wrk -t
CONNECTIONS=${CONNECTIONS:-32}    # wrk -c
FILE_MB=${FILE_MB:-1024}          # size of the test file
ROUNDS=${ROUNDS:-2}               # nginx, avail, nginx, avail, … ; the mean is reported
BLOCK=65536

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lua="$repo/bench/content-ranges.lua"

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; }
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
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
"$server_bin" "$work/data" "$avail_port" 2>/dev/null &
pids+=($!)
wait_for "$nginx_port" nginx
wait_for "$avail_port" avail

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

export CONTENT_PATH=/big.bin CONTENT_BLOCKS=$blocks CONTENT_BLOCK=$BLOCK
run() { # NAME PORT → "req/s MB/s p50_us p99_us"
    local out
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -s "$lua" "http://127.0.0.1:$2/")
    echo "$out" | sed "s/^/  [$1] /" >&2
    echo "$out" | awk '/^RESULT/ {
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        if (v["errors"] > 0) { print "errors=" v["errors"] > "/dev/stderr"; exit 1 }
        s = v["duration_us"] / 1e6
        printf "%.0f %.1f %d %d\n", v["requests"] / s, v["bytes"] / s / 1e6, v["p50_us"], v["p99_us"] }'
}

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, random ${BLOCK}-byte ranges of a ${FILE_MB} MiB file, $ROUNDS round(s)" >&2
run nginx "$nginx_port" >/dev/null # warm-up, untimed: connections, caches, CPU clocks
run avail "$avail_port" >/dev/null
results=()
for round in $(seq "$ROUNDS"); do
    n=$(run nginx "$nginx_port")
    a=$(run avail "$avail_port")
    results+=("$round $n $a")
done

printf '%s\n' "${results[@]}" | awk -v t="$THREADS" -v c="$CONNECTIONS" '
    { nr += $2; nm += $3; ar += $6; am += $7; n++
      printf "round %d: nginx %8.0f req/s %7.1f MB/s (p50 %d us, p99 %d us) | avail %8.0f req/s %7.1f MB/s (p50 %d us, p99 %d us) | %.2fx\n",
             $1, $2, $3, $4, $5, $6, $7, $8, $9, $6 / $2 }
    END {
      printf "\n%-6s %12s %10s\n", "", "req/s", "MB/s"
      printf "%-6s %12.0f %10.1f\n", "nginx", nr / n, nm / n
      printf "%-6s %12.0f %10.1f\n", "avail", ar / n, am / n
      printf "\nratio avail/nginx: %.2fx (goal >= 0.80x)\n", ar / nr
      printf "SUMMARY nginx_rps=%.0f avail_rps=%.0f nginx_MBps=%.1f avail_MBps=%.1f ratio=%.3f threads=%d connections=%d\n",
             nr / n, ar / n, nm / n, am / n, ar / nr, t, c }'
