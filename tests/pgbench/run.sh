#!/usr/bin/env bash
# The PostgreSQL baseline for `taskyard bench`: pgbench running cycle.sql (claim with FOR UPDATE
# SKIP LOCKED, its event, a fenced complete, its event) on the taskyard schema.
#   tests/pgbench/run.sh URL [TASKS] [CLIENTS] [SECONDS]
# URL names a server and a database its user may create databases from; a fresh database
# `taskyard_pgbench` is made (dropped first if there), migrated and filled with TASKS available
# tasks. Prints pgbench's report; cycles/s = its "tps".
set -euo pipefail
cd "$(dirname "$0")/../.."
URL="${1:?usage: tests/pgbench/run.sh URL [TASKS] [CLIENTS] [SECONDS]}"
TASKS="${2:-100000}"
CLIENTS="${3:-64}"
SECONDS_="${4:-20}"
DB=taskyard_pgbench
TARGET="$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p._replace(path="/"+sys.argv[2]).geturl())' "$URL" "$DB")"
psql -q "$URL" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
for migration in migrations/postgres/*.sql; do
    psql -q -v ON_ERROR_STOP=1 "$TARGET" -f "$migration"
done
psql -q -v ON_ERROR_STOP=1 "$TARGET" -c "
    INSERT INTO tasks (title, priority, status, created_at, updated_at)
    SELECT 'bench ' || n, 2 + n % 2, 'available', taskyard_now_ms(), taskyard_now_ms()
      FROM generate_series(1, $TASKS) AS n;"
psql -q "$TARGET" -c "VACUUM ANALYZE tasks"
pgbench -n -c "$CLIENTS" -j 2 -T "$SECONDS_" -P 5 -r -f tests/pgbench/cycle.sql "$TARGET"
