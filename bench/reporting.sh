#!/usr/bin/env bash
# Reporting DB ingest benchmark (see bench/README.md): reports per second into
# the Reporting DB on PostgreSQL and on SQLite, with batch sizes 1, 100 and 1000
# and concurrent ingest on PostgreSQL, beside App-V 5.1's published capacity of
# one reporting server (139 requests/s). Runs
#   cargo bench -p avail-store --bench ingest
# (crates/store/benches/ingest.rs), which starts its own throwaway PostgreSQL
# server (avail-testkit: the machine's /usr/lib/postgresql/*/bin, durable
# defaults) and uses a temporary SQLite file. ~2 minutes on 2 cores.
#
# Environment (passed through to the benchmark): REPORTS (per batched run,
# default 20000), REPORTS_UNBATCHED (per batch-size-1 run, default 2000),
# MAX_SECS (cap per run, default 30), BACKENDS (postgres,sqlite), ONLY (run keys
# as in the SUMMARY line, e.g. pg_b1000,sqlite_b1000); for experiments PG_CONF
# ("name=value;..." set with ALTER SYSTEM), PG_AFTER_INSTALL (SQL run on each
# fresh database after the schema) and PG_LOG (keep a copy of the server log).
# cargo builds into CARGO_TARGET_DIR when it is set, as everywhere.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ",${BACKENDS:-postgres}," == *,postgres,* ]] &&
  ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
  echo "error: no PostgreSQL server binaries in /usr/lib/postgresql/*/bin" >&2
  echo "       (apt-get install postgresql, or BACKENDS=sqlite $0)" >&2
  exit 1
fi

# Other work on the machine lowers every figure; the benchmark prints the load
# average at its start and end so that a busy run can be recognised.
echo "==> cargo bench -p avail-store --bench ingest"
exec cargo bench -p avail-store --bench ingest
