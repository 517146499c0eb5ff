#!/usr/bin/env bash
# Measures the agent work cycle (claim-next → complete) of a release build with wrk, the way an
# outside load generator sees it, next to the same server's rate of plain 404 answers:
#   tests/wrk/run.sh [TASKS=60000] [AGENTS=64] [SECONDS=5] [DURABILITY=normal]
# Needs wrk, curl and jq. Starts `target/release/taskyard serve` (or $BIN) on a temporary data folder,
# seeds TASKS P2/P3 tasks, registers AGENTS agents, then runs wrk twice with the same threads and
# connections (THREADS, default 2; AGENTS connections): plain 404s, then cycles; and checks that no
# task was completed twice. The per-token rate limit is off: at 10,000 cycles/s each of 64 agents
# makes ~310 changes a second, over the default limit of 200.
set -euo pipefail
cd "$(dirname "$0")/../.."
TASKS=${1:-60000} AGENTS=${2:-64} SECONDS_=${3:-5} DURABILITY=${4:-normal}
BIN=${BIN:-target/release/taskyard} THREADS=${THREADS:-2}
DIR=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
ADMIN=wrk-admin-token-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '[server]\ndurability = "%s"\nbuiltin_loops = false\nrate_limit_per_second = 0\n' "$DURABILITY" > "$DIR/taskyard.toml"
TASKYARD_ADMIN_TOKEN=$ADMIN RUST_LOG=error "$BIN" serve --config "$DIR/taskyard.toml" \
  --data-dir "$DIR/data" --bind "127.0.0.1:$PORT" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DIR"' EXIT
until curl -sf "$URL/healthz" > /dev/null; do sleep 0.05; done

for ((from = 0; from < TASKS; from += 1000)); do
  n=$(( TASKS - from < 1000 ? TASKS - from : 1000 ))
  jq -nc --argjson from "$from" --argjson n "$n" \
    '{tasks: [range($from; $from + $n) | {title: "wrk task \(.)", priority: (if . % 2 == 0 then "P2" else "P3" end)}]}' \
    | curl -sf -X POST "$URL/api/v1/tasks/batch" -H "Authorization: Bearer $ADMIN" --data-binary @- > /dev/null
done
for ((i = 0; i < AGENTS; i++)); do
  curl -sf -X POST "$URL/api/v1/agents" -H "Authorization: Bearer $ADMIN" \
    -d "{\"name\": \"wrk-$i\", \"kind\": \"script\"}" | jq -r .token
done > "$DIR/tokens"

rate() { awk '/Requests\/sec/ {print $2}' "$1"; }
echo "== plain 404s (the HTTP stack alone), $THREADS threads, $AGENTS connections"
wrk -t"$THREADS" -c"$AGENTS" -d"${SECONDS_}s" "$URL/no-such-page" | tee "$DIR/404" | grep -E "Requests/sec|Latency"
echo "== claim-next → complete, $AGENTS agents on $THREADS threads, $AGENTS connections, $TASKS-task backlog, durability $DURABILITY"
TOKENS="$DIR/tokens" THREADS=$THREADS wrk -t"$THREADS" -c"$AGENTS" -d"${SECONDS_}s" --latency -s tests/wrk/cycle.lua "$URL" \
  | tee "$DIR/cycles" | grep -E "Requests/sec|cycles|latency per request"
awk -v cycles="$(rate "$DIR/cycles")" -v plain="$(rate "$DIR/404")" \
  'BEGIN { printf "cycle requests at %.3f× the 404 rate\n", cycles / plain }'
echo "server RSS: $(awk '/VmRSS/ {print $2 / 1024 " MiB"}' /proc/$SERVER/status)"

# Exactly once: every completed task was claimed once and completed once.
twice=0 completed=0 cursor=""
while :; do
  page=$(curl -sf "$URL/api/v1/tasks?status=completed&limit=500${cursor:+&cursor=$cursor}" -H "Authorization: Bearer $ADMIN")
  completed=$(( completed + $(jq '.items | length' <<< "$page") ))
  twice=$(( twice + $(jq '[.items[] | select(.attempts != 1)] | length' <<< "$page") ))
  cursor=$(jq -r '.next_cursor // empty' <<< "$page")
  [ -n "$cursor" ] || break
done
events=$(curl -sf "$URL/api/v1/stats" -H "Authorization: Bearer $ADMIN" | jq '[.per_minute[].completed] | add')
echo "exactly once: $completed tasks completed ($events task.completed events), $twice claimed more than once"
