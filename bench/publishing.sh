#!/usr/bin/env bash
# Publishing role benchmarks (see bench/README.md, "Publishing role"):
#  1. requests/s of publishing documents at 200 connections (wrk) for a catalog
#     of 1,000 packages, 100 connection groups and 10,000 users in 1,000 nested
#     groups, against nginx serving the same document as a static file;
#  2. the time a publish takes to reach a second, publishing-only node.
# Builds `avail` (release), installs wrk and nginx when missing, and runs
# bench/publishing.py, which starts and stops everything it needs in a
# temporary directory.
#
# Environment: ROUNDS (default 5), DURATION (seconds per wrk run, 10),
# CONNECTIONS (200), THREADS (2), PACKAGES (1000), CONNECTION_GROUPS (100),
# USERS (10000), DIRECTORY_GROUPS (1000), PROPAGATIONS (20), TMPDIR; cargo builds into
# CARGO_TARGET_DIR when it is set.
set -euo pipefail
shopt -s inherit_errexit
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
fi

echo "building avail (release)" >&2
(cd "$repo" && cargo build --release -q --locked -p avail-cli)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
[[ $target_dir == /* ]] || target_dir=$repo/$target_dir

exec python3 "$repo/bench/publishing.py" "$target_dir/release/avail" \
    "$(command -v nginx || echo /usr/sbin/nginx)"
