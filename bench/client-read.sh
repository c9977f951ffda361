#!/usr/bin/env bash
# Client read benchmarks (see bench/README.md, "Client reads"):
#  (a) warm sequential and (b) warm random 4 KiB reads of a package mounted by
#      the Avail client (FUSE), against squashfuse mounting a squashfs image of
#      the same tree;
#  (c) a cold sequential read through a fresh mount with an empty block cache,
#      blocks from nginx over loopback, against curl of the package file;
#  (d) the bytes nginx sends for an upgrade with one 1 MiB file changed.
# Runs as root (FUSE mounts, the client daemon). Builds `avail` (release),
# installs squashfuse, squashfs-tools, nginx, curl, openssl and fuse3 when
# missing, and
# runs bench/client_read.py in a temporary directory, which this script
# unmounts, kills and removes on exit, failure included.
#
# BENCH_SCRIPT (client_read.py) picks another benchmark on the same harness:
# bench/run-startup.sh runs run_startup.py.
#
# Environment: ROUNDS (5), RANDOM_READS (20000), LARGE_MIB (20,30,40,50),
# SMALL_FILES (300), UPGRADE_LARGE_MIB (20,30), UPGRADE_SMALL_FILES (250),
# SEQ_REPEAT_PASSES (5), RANDOM_REPEAT_PASSES (20), SEED (11), COLD_ONLY (1: only
# (c)), NGINX_TCP_NOPUSH
# (on, as in Debian's nginx.conf), TMPDIR; cargo
# builds into CARGO_TARGET_DIR when it is set.
set -euo pipefail
shopt -s inherit_errexit
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "bench/client-read.sh: run as root (FUSE mounts and the client daemon)" >&2
    exit 1
fi

need=()
command -v squashfuse >/dev/null || need+=(squashfuse)
command -v mksquashfs >/dev/null || need+=(squashfs-tools)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
[ -e /dev/fuse ] || { echo "bench/client-read.sh: no /dev/fuse" >&2; exit 1; }

echo "building avail (release)" >&2
(cd "$repo" && cargo build --release -q --locked -p avail-cli)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
[[ $target_dir == /* ]] || target_dir=$repo/$target_dir

if pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null || pgrep -x clippy-driver >/dev/null; then
    echo "warning: rustc/cargo running (another build): figures will be noisy" >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/avail-bench-client-read.XXXXXX")
chmod 755 "$work"
cleanup() {
    local status=$? pid mnt keep
    # What client_read.py started and could not stop itself (it was killed):
    # only pids still running a command line inside $work (not a reused pid).
    ours() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF -- "$work"; }
    if [ -f "$work/pids" ]; then
        while read -r pid; do
            if ours "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
        done <"$work/pids"
        sleep 1
        while read -r pid; do
            if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
        done <"$work/pids"
    fi
    # On failure, keep the logs (server, client daemon, nginx, squashfuse).
    if [ "$status" != 0 ] && [ -d "$work" ]; then
        keep=$(mktemp -d "${TMPDIR:-/tmp}/avail-bench-client-read-logs.XXXXXX")
        cp "$work"/*.log "$keep"/ 2>/dev/null || true
        cp -r "$work"/nginx/logs "$keep"/nginx 2>/dev/null || true
        echo "bench/client-read.sh: failed (exit $status); logs kept in $keep" >&2
    fi
    # Anything still mounted under the directory, deepest first.
    awk -v w="$work" 'index($2, w "/") == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r mnt; do
            umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
        done
    if awk -v w="$work" 'index($2, w "/") == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
        echo "bench/client-read.sh: mounts left under $work, not removing it" >&2
    else
        rm -rf --one-file-system "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

uptime >&2
python3 "$repo/bench/${BENCH_SCRIPT:-client_read.py}" "$target_dir/release/avail" \
    "$(command -v nginx || echo /usr/sbin/nginx)" "$work"
