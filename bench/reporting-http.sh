#!/usr/bin/env bash
# Reporting role over HTTP on PostgreSQL: MS-VAPR SetReport requests per second
# at 64 connections (wrk), every 200 checked against the rows stored, beside
# App-V 5.1's published 139 requests/s and the goal of 5 000/s.
# See bench/README.md ("Reporting role over HTTP").
set -euo pipefail
shopt -s inherit_errexit

DURATION=${DURATION:-10}          # seconds per wrk round
ROUNDS=${ROUNDS:-5}               # timed rounds; the median is reported
WARMUP=${WARMUP:-3}               # seconds of untimed wrk first
THREADS=${THREADS:-2}             # wrk -t
CONNECTIONS=${CONNECTIONS:-64}    # wrk -c
HOSTS=${HOSTS:-1000}              # clients the reports come from
ENCODING=${ENCODING:-utf16}       # bodies: utf16 (as Windows clients send them) or utf8
PG_CONF=${PG_CONF:-}              # extra PostgreSQL settings, "name=value;name=value"
APPV_RPS=139                      # App-V 5.1: one reporting server and database, maximum
GOAL_RPS=5000                     # the goal on PostgreSQL on a 2-core machine

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lua="$repo/bench/reporting-setreport.lua"

command -v wrk >/dev/null || {
    echo "installing wrk" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
}
pg_bin=${AVAIL_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$pg_bin/postgres" ] || {
    echo "error: no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)" >&2
    exit 1
}

echo "building avail (release)" >&2
(cd "$repo" && cargo build --release -q -p avail-cli)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
[[ $target_dir == /* ]] || target_dir=$repo/$target_dir

work=$(mktemp -d "${TMPDIR:-/tmp}/avail-bench-reporting.XXXXXX")
avail_pid=""
# PostgreSQL refuses to run as root: as root, its files belong to `postgres`
# and its programs run through runuser.
as_pg() {
    if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
cleanup() {
    if [ -n "$avail_pid" ]; then kill "$avail_pid" 2>/dev/null || true; wait "$avail_pid" 2>/dev/null || true; fi
    if [ -f "$work/pg/data/postmaster.pid" ]; then
        as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# A free loopback port (one nothing answers on) in $port.
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
wait_for() { # PORT NAME LOG
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$2 did not start on port $1" >&2
    tail -20 "$3" >&2
    return 1
}

# The binary is copied, so that a build into the same target directory during
# the run cannot swap it.
cp "$target_dir/release/avail" "$work/avail"
mkdir -p "$work/pg/socket" "$work/data"
chmod 755 "$work"
[ "$(id -u)" != 0 ] || chown -R postgres: "$work/pg"

# A throwaway PostgreSQL with durable settings: fsync, full_page_writes and
# synchronous_commit on (the defaults), as avail-testkit starts it, but with
# PostgreSQL's default shared_buffers (128MB) rather than the tests' 32MB.
free_port; pg_port=$port
echo "starting PostgreSQL ($("$pg_bin/postgres" --version)) on port $pg_port" >&2
as_pg "$pg_bin/initdb" -D "$work/pg/data" -A trust -U postgres -E UTF8 --locale=C --no-sync >/dev/null
{
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $pg_port"
    echo "unix_socket_directories = '$work/pg/socket'"
    echo "max_connections = 100"
    echo "shared_buffers = 128MB"
    echo "fsync = on"
    echo "full_page_writes = on"
    echo "synchronous_commit = on"
    echo "logging_collector = off"
    tr ';' '\n' <<<"$PG_CONF" | sed '/^[[:space:]]*$/d'
} | as_pg tee -a "$work/pg/data/postgresql.conf" >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/server.log" -w -t 60 start >/dev/null
psql() { as_pg "$pg_bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$work/pg/socket" -p "$pg_port" -U postgres "$@"; }
psql -d postgres -c "CREATE DATABASE avail_reporting"
db_url="postgres://postgres@127.0.0.1:$pg_port/avail_reporting"
"$work/avail" db install --reporting-url "$db_url" >&2
settings=$(psql -d avail_reporting -c "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
    WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'wal_level', 'max_wal_size')")

free_port; avail_port=$port
echo "starting avail server --roles reporting on port $avail_port" >&2
# stdout to /dev/null: a background server must not hold a pipe that the
# caller of this script reads (`bench/reporting-http.sh | tee …`).
AVAIL_REPORTING_DATABASE_URL=$db_url AVAIL_REPORTING_LISTEN=127.0.0.1:$avail_port \
    "$work/avail" server --roles reporting --data-dir "$work/data" >/dev/null 2>"$work/avail.log" &
avail_pid=$!
wait_for "$avail_port" "avail" "$work/avail.log"

stored() { psql -d avail_reporting -c "SELECT count(*) FROM raw_reports"; }

# CPU time, in clock ticks: the avail process (all its threads), and the
# PostgreSQL server (the postmaster with its exited children, and its live
# children: the backends avail holds open, the WAL writer, the checkpointer…).
clk_tck=$(getconf CLK_TCK)
pg_pid=$(head -1 "$work/pg/data/postmaster.pid")
ticks() { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$1/stat"; }
avail_ticks() { ticks "$avail_pid"; }
pg_ticks() {
    local total pid
    total=$(ticks "$pg_pid")
    for pid in $(pgrep -P "$pg_pid"); do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; } # busy idle

export REPORT_HOSTS=$HOSTS REPORT_ENCODING=$ENCODING
# One round: SECONDS → "reports/s p50_us p99_us avail_us pg_us busy_cores ok stored" on stdout.
run() {
    local seconds=$1 before after out a0 a1 p0 p1 m0 m1
    before=$(stored)
    a0=$(avail_ticks); p0=$(pg_ticks); m0=$(machine_ticks)
    out=$(REPORT_NONCE=$(printf '%04x%04x' $RANDOM $RANDOM) \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --timeout 30s -s "$lua" "http://127.0.0.1:$avail_port/")
    a1=$(avail_ticks); p1=$(pg_ticks); m1=$(machine_ticks)
    # Requests cut off by wrk's stop may still commit: let them.
    sleep 1
    after=$(stored)
    printf '%s\n' "$out" | grep -E 'Requests/sec|Latency|Non-2xx|Socket errors' | sed 's/^/    /' >&2
    printf '%s\n' "$out" | awk -v stored=$((after - before)) -v a=$((a1 - a0)) -v p=$((p1 - p0)) \
        -v m0="$m0" -v m1="$m1" -v hz="$clk_tck" -v conns="$CONNECTIONS" '
      /^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
      END {
        if (v["requests"] == "") { print "no RESULT line from wrk" > "/dev/stderr"; exit 1 }
        ok = v["requests"] - v["status"]
        if (v["status"] > 0 || v["socket"] > 0)
          printf "    %d answers other than 200, %d socket errors\n", v["status"], v["socket"] > "/dev/stderr"
        # Every 200 must be stored; a report whose answer wrk cut off at its
        # stop may be stored too, at most one per connection.
        if (stored < ok || stored > ok + conns) {
          printf "    MISMATCH: %d answered 200, %d rows stored\n", ok, stored > "/dev/stderr"; exit 1 }
        split(m0, x); split(m1, y)
        s = v["duration_us"] / 1e6
        printf "%.0f %d %d %.1f %.1f %.2f %d %d\n", ok / s, v["p50_us"], v["p99_us"],
          a * 1e6 / hz / ok, p * 1e6 / hz / ok, (y[1] - x[1]) / hz / s, ok, stored }'
}

# Nothing is timed before the service stores a report and answers 200.
check=$(REPORT_NONCE=0000c0de wrk -t1 -c1 -d1s -s "$lua" "http://127.0.0.1:$avail_port/" | grep "^RESULT" || true)
case "$check" in *" status=0 socket=0 "*) ;; *)
    echo "the reporting role did not store the test reports: $check" >&2; tail -20 "$work/avail.log" >&2; exit 1 ;;
esac

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, SetReport ($ENCODING) from $HOSTS clients, $ROUNDS round(s); PostgreSQL: $settings" >&2
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "warm-up (${WARMUP}s)" >&2
run "$WARMUP" >/dev/null
results=()
for round in $(seq "$ROUNDS"); do
    echo "round $round" >&2
    results+=("$round $(run "$DURATION")")
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
total=$(stored)
body_kb=$(psql -d avail_reporting -c "SELECT round(avg(octet_length(body)) / 1024.0, 1) FROM raw_reports")

# Fields: round reports/s p50 p99 avail_us pg_us busy_cores ok stored
printf '%s\n' "${results[@]}" | sort -k2,2n | awk -v appv=$APPV_RPS -v goal=$GOAL_RPS -v total="$total" -v kb="$body_kb" -v c="$CONNECTIONS" '
    { r[NR] = $2; line[$1] = $0; n = NR; ok += $8; st += $9; au += $5; pu += $6 }
    END {
      for (i = 1; i <= n; i++) {
        split(line[i], f, " ")
        printf "round %d: %6.0f reports/s  p50 %6.1f ms  p99 %6.1f ms  CPU/report: avail %5.1f us, PostgreSQL %5.1f us  busy %.2f cores  (%d answered 200, %d stored)\n",
          f[1], f[2], f[3] / 1000, f[4] / 1000, f[5], f[6], f[7], f[8], f[9]
      }
      med = (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
      printf "\nmedian %.0f reports/s over %d rounds (min %.0f, max %.0f, spread %.0f%%)\n", med, n, r[1], r[n], (r[n] - r[1]) * 100 / med
      printf "CPU per report (mean): avail %.1f us, PostgreSQL %.1f us\n", au / n, pu / n
      printf "ratio vs App-V 5.1 (%d requests/s): %.1fx; vs the goal (%d/s): %.2fx (%s)\n", appv, med / appv, goal, med / goal, (med >= goal ? "met" : "missed")
      printf "reports stored in all: %d (body %s KB on average, as text)\n", total, kb
      printf "SUMMARY reporting_http_rps=%.0f min_rps=%.0f max_rps=%.0f rounds=%d connections=%d avail_cpu_us=%.1f pg_cpu_us=%.1f appv_rps=%d ratio_vs_appv=%.1f goal_rps=%d ratio_vs_goal=%.2f goal=%s\n",
        med, r[1], r[n], n, c, au / n, pu / n, appv, med / appv, goal, med / goal, (med >= goal ? "met" : "missed") }'
