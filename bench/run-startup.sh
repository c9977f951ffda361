#!/usr/bin/env bash
# Time from `avail run` to an application's first output, cold and warm,
# against the same application run from a local directory (see
# bench/README.md, "Launch time"): bench/run_startup.py on the harness of
# bench/client-read.sh (root, release build, nginx, cleanup on exit).
#
# Environment: ROUNDS (5), LIB_MIB (32), LIB_FILES (16), SEED (12), TMPDIR.
set -euo pipefail
BENCH_SCRIPT=run_startup.py exec "$(dirname "${BASH_SOURCE[0]}")/client-read.sh"
