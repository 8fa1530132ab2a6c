#!/usr/bin/env bash
# make demo: start Kafka and PostgreSQL (unless up), the five workers and the HTTP API (with the
# DirectorPanel), submit the seed's scene, follow it to the end, print the result, then stop
# whatever this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
STATE=.tower
mkdir -p "$STATE"

started=()
cleanup() {
  local rc=$?
  if [[ -n "${api_pid:-}" ]] && kill -0 "$api_pid" 2>/dev/null; then
    kill -TERM "$api_pid" 2>/dev/null || true
    wait "$api_pid" 2>/dev/null || true
  fi
  if [[ -n "${workers_pid:-}" ]] && kill -0 "$workers_pid" 2>/dev/null; then
    echo "demo: stopping the workers"
    kill -TERM "$workers_pid" 2>/dev/null || true
    wait "$workers_pid" 2>/dev/null || true
  fi
  for service in "${started[@]}"; do
    echo "demo: stopping $service (the demo started it)"
    if [[ $service == kafka ]]; then infra/kafka/kafkactl stop; else infra/postgres/pgctl stop; fi >/dev/null 2>&1 || true
  done
  [[ $rc -eq 0 ]] || echo "demo: failed (exit $rc); worker log: $STATE/demo-workers.log" >&2
  exit $rc
}
trap cleanup EXIT

if ! infra/kafka/kafkactl status >/dev/null 2>&1; then infra/kafka/kafkactl start; started+=(kafka); fi
if ! infra/postgres/pgctl status >/dev/null 2>&1; then infra/postgres/pgctl start; started+=(postgres); fi

"$PY" -m tower topics create
"$PY" -m tower db migrate
echo "demo: starting the workers (log: $STATE/demo-workers.log)"
"$PY" -m tower worker all >"$STATE/demo-workers.log" 2>&1 &
workers_pid=$!

PORT="${TOWER_API_PORT:-8328}"
if "$PY" -c "import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $PORT)) != 0)"; then
  echo "demo: port $PORT is taken (is \`make up\` running?); the demo runs without its own API"
else
  echo "demo: starting the HTTP API (log: $STATE/demo-api.log)"
  "$PY" -m tower api --port "$PORT" >"$STATE/demo-api.log" 2>&1 &
  api_pid=$!
  echo "demo: watch it in the DirectorPanel while it runs: http://127.0.0.1:$PORT/ (API docs at /docs)"
fi

"$PY" -m tower submit "Create a scene where Kai fights the dragon" --characters Kai,Dragon --follow --timeout 600
