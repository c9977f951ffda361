#!/usr/bin/env bash
# Benchmarks for the package format (see bench/README.md). Each one prints a
# ratio against a reference measured in the same invocation, on the same input:
#   1. pack:   `avail package pack TREE -o X.appv`  vs  `zip -r -6 -q X.zip TREE`
#   2. verify: `avail package verify X.appv`        vs  `unzip -tq X.appv`
#   3. random single-block reads (crates/format/benches/read_block.rs):
#      Package::read_block vs a raw pread of the block's range and vs inflating
#      the zip member from its start up to the block.
# Ratio = avail speed / reference speed (> 1 means avail is faster).
#
# Environment: RUNS (timed runs per command, default 3), WARMUP (default 1),
# SYSTEM_MB (system files copied into the tree, default 360), RANDOM_MB
# (incompressible files, default 48), TMPDIR (where the tree and packages go).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS=${RUNS:-3}
WARMUP=${WARMUP:-1}
SYSTEM_MB=${SYSTEM_MB:-360}
RANDOM_MB=${RANDOM_MB:-48}
# Sources of realistic content: shared libraries, and /usr/share's mix of docs,
# locales, icons, data files. Each gets a share of SYSTEM_MB (in percent).
SOURCES=(/usr/lib/x86_64-linux-gnu:60 /usr/share:40)
# Larger system files are skipped so that no single file dominates the tree.
MAX_FILE_BYTES=$((32 << 20))

# --- tools -------------------------------------------------------------------
# command → Debian package that provides it; hyperfine is optional (a bash
# timing loop is the fallback when it cannot be installed).
declare -A wanted=([zip]=zip [unzip]=unzip [hyperfine]=hyperfine [openssl]=openssl)
missing=()
for cmd in "${!wanted[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done
if ((${#missing[@]})); then
  echo "==> installing ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"; then
    $sudo apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" || true
  fi
fi
for cmd in zip unzip; do
  command -v "$cmd" >/dev/null || { echo "error: $cmd is required" >&2; exit 1; }
done

echo "==> cargo build --release -p avail-cli"
cargo build --release -p avail-cli
# Where cargo put it: CARGO_TARGET_DIR if set (relative to the repository,
# where cargo ran), else target/.
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$PWD/$TARGET_DIR
AVAIL=$TARGET_DIR/release/avail
echo "==> cargo bench --no-run -p avail-format --bench read_block"
cargo bench --no-run -p avail-format --bench read_block

WORK=$(mktemp -d "${TMPDIR:-/tmp}/avail-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
TREE=$WORK/tree
mkdir -p "$TREE"

# --- the test tree -----------------------------------------------------------
# From each source, a deterministic sample spread evenly over the whole source
# (files in C-locale path order, each taken when the running share of the
# budget says so), copied with tar. Same machine, same tree.
echo "==> building the test tree in $TREE"
list=$WORK/files.txt
: >"$list"
for entry in "${SOURCES[@]}"; do
  src=${entry%:*}
  pct=${entry##*:}
  [ -d "$src" ] || continue
  budget=$((SYSTEM_MB * pct / 100 * 1000000))
  find "$src" -xdev -type f -readable -size -"$((MAX_FILE_BYTES / 1024))"k -printf '%s\t%P\n' 2>/dev/null |
    grep -E $'^[0-9]+\t[^\t\\\\]+$' | LC_ALL=C sort -t $'\t' -k2,2 >"$WORK/candidates.txt" || true
  total=$(awk -F'\t' '{ s += $1 } END { printf "%d", s }' "$WORK/candidates.txt")
  ((total > 0)) || continue
  awk -F'\t' -v budget="$budget" -v total="$total" -v prefix="${src#/}/" '
    { due += $1 * budget / total; if (due >= taken + $1 / 2 && taken + $1 <= budget) { taken += $1; print prefix $2 } }
  ' "$WORK/candidates.txt" >>"$list"
done
tar -C / --ignore-failed-read --no-recursion --verbatim-files-from -T "$list" -cf - 2>/dev/null | tar -C "$TREE" -xf -
# Incompressible files (AES-CTR keystream: random-looking, but the same every run).
mkdir -p "$TREE/opt/random"
for ((i = 0; i < RANDOM_MB / 8; i++)); do
  head -c $((8 << 20)) /dev/zero |
    openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' "$i")" -iv 0 -out "$TREE/opt/random/blob-$i.bin" 2>/dev/null ||
    head -c $((8 << 20)) /dev/urandom >"$TREE/opt/random/blob-$i.bin"
done
TREE_BYTES=$(find "$TREE" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s }')
TREE_FILES=$(find "$TREE" -type f | wc -l)
echo "    $TREE_FILES files, $((TREE_BYTES / 1000000)) MB"

# --- timing ------------------------------------------------------------------
# time_cmd PREPARE CMD → prints "mean stddev" in seconds (the command's own
# output is discarded; a failing command stops the script).
time_cmd() {
  local prepare=$1 cmd=$2
  if command -v hyperfine >/dev/null; then
    local csv=$WORK/hyperfine.csv
    hyperfine --style basic --warmup "$WARMUP" --runs "$RUNS" --prepare "$prepare" \
      --export-csv "$csv" "$cmd" >&2
    awk -F, 'NR == 2 { printf "%.4f %.4f\n", $2, $3 }' "$csv"
  else
    local i t0 t1 times=()
    for ((i = 0; i < WARMUP + RUNS; i++)); do
      bash -c "$prepare"
      t0=$(date +%s.%N)
      bash -c "$cmd" >/dev/null 2>&1
      t1=$(date +%s.%N)
      ((i < WARMUP)) || times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    done
    echo "  $cmd: ${times[*]} s" >&2
    printf '%s\n' "${times[@]}" |
      awk '{ s += $1; ss += $1 * $1; n++ } END { m = s / n; v = ss / n - m * m; printf "%.4f %.4f\n", m, sqrt(v < 0 ? 0 : v) }'
  fi
}

q() { printf '%q' "$1"; }
APPV=$WORK/bench.appv
ZIPF=$WORK/bench.zip

echo "==> 1. pack: avail package pack vs zip -r -6"
t=$(time_cmd "rm -f $(q "$APPV")" "$(q "$AVAIL") package pack $(q "$TREE") -o $(q "$APPV")")
read -r pack_avail pack_avail_sd <<<"$t"
t=$(time_cmd "rm -f $(q "$ZIPF")" "cd $(q "$WORK") && zip -r -6 -q $(q "$ZIPF") tree")
read -r pack_zip pack_zip_sd <<<"$t"
[ -s "$APPV" ] || "$AVAIL" package pack "$TREE" -o "$APPV" >/dev/null
APPV_BYTES=$(stat -c %s "$APPV")
ZIP_BYTES=$(stat -c %s "$ZIPF")

echo "==> 2. verify: avail package verify vs unzip -tq (same .appv)"
t=$(time_cmd true "$(q "$AVAIL") package verify $(q "$APPV")")
read -r verify_avail verify_avail_sd <<<"$t"
t=$(time_cmd true "unzip -tq $(q "$APPV")")
read -r verify_unzip verify_unzip_sd <<<"$t"

echo "==> 3. random single-block reads: cargo bench -p avail-format --bench read_block"
cargo bench -q -p avail-format --bench read_block | tee "$WORK/read_block.txt"
summary=$(grep '^SUMMARY ' "$WORK/read_block.txt")
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$summary"; }

# --- the table ---------------------------------------------------------------
echo
echo "==> results ($(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1))"
echo "    tree: $TREE_FILES files, $TREE_BYTES bytes; MB = 10^6 bytes of uncompressed payload"
echo "    package sizes: .appv $APPV_BYTES bytes, .zip $ZIP_BYTES bytes"
row() { # benchmark tool mean stddev bytes ratio
  awk -v b="$1" -v t="$2" -v m="$3" -v sd="$4" -v n="$5" -v r="$6" 'BEGIN {
    printf "%-8s %-34s %9.3f ± %-7.3f %9.1f %9s\n", b, t, m, sd, n / 1e6 / m, r }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", b / a }'; }
printf '%-8s %-34s %19s %9s %9s\n' benchmark tool seconds MB/s ratio
row pack "avail package pack" "$pack_avail" "$pack_avail_sd" "$TREE_BYTES" "$(ratio "$pack_avail" "$pack_zip")"
row pack "zip -r -6 -q (reference)" "$pack_zip" "$pack_zip_sd" "$TREE_BYTES" "1.00x"
row verify "avail package verify" "$verify_avail" "$verify_avail_sd" "$TREE_BYTES" "$(ratio "$verify_avail" "$verify_unzip")"
row verify "unzip -tq (reference)" "$verify_unzip" "$verify_unzip_sd" "$TREE_BYTES" "1.00x"
echo
printf '%-8s %-42s %12s %9s %9s\n' benchmark tool "µs/op" "MB/s" ratio
lat() { # tool ns ratio  (MB/s of 64 KiB blocks delivered)
  awk -v t="$1" -v ns="$2" -v r="$3" 'BEGIN {
    printf "%-8s %-42s %12.1f %9.1f %9s\n", "read", t, ns / 1000, 65536 / ns * 1000, r }'
}
lat "Package::read_block (pread+inflate+sha256)" "$(field read_block_ns)" "1.00x"
lat "raw pread of the range (I/O floor)" "$(field pread_ns)" "$(field ratio_vs_pread)x"
lat "zip reader: inflate member up to block" "$(field zip_inflate_ns)" "$(field ratio_vs_zip_inflate)x"
echo "(read ratios: reference ns / read_block ns, i.e. read_block speed / reference speed)"
