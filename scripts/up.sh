#!/usr/bin/env bash
# make up: start Kafka and PostgreSQL (unless up), the five workers and the HTTP API in the
# background, wait until the API answers, and print the DirectorPanel's URL. Logs and pids live
# under .tower/. `scripts/up.sh stop` (make down) stops the workers and the API it started.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
STATE=.tower
mkdir -p "$STATE"
PORT="${TOWER_API_PORT:-8328}"
HOST="${TOWER_API_HOST:-127.0.0.1}"
[[ $HOST == 0.0.0.0 || $HOST == "::" ]] && SHOWN=127.0.0.1 || SHOWN=$HOST

running() { [[ -f $STATE/$1.pid ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

stop() {  # stop NAME: SIGTERM the process `up` recorded, SIGKILL after 20 s
  local name=$1 pid
  if ! running "$name"; then rm -f "$STATE/$name.pid"; return 0; fi
  pid=$(cat "$STATE/$name.pid")
  echo "up: stopping the $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$STATE/$name.pid"
}

if [[ ${1:-} == stop ]]; then
  stop api
  stop workers
  exit 0
fi

health() { "$PY" -c "import sys, urllib.request; urllib.request.urlopen('http://$SHOWN:$PORT/health', timeout=1); sys.exit(0)" 2>/dev/null; }

infra/kafka/kafkactl start
infra/postgres/pgctl start
"$PY" -m tower topics create >/dev/null
"$PY" -m tower db migrate >/dev/null
[[ -f panel/dist/index.html ]] || echo "up: no built panel (make panel): / will redirect to /docs" >&2

if running workers; then
  echo "up: the workers are already running (pid $(cat "$STATE/workers.pid"))"
else
  echo "up: starting the workers (log: $STATE/up-workers.log)"
  # One worker process on this machine: a stable name makes it a static group member, so a
  # restart (`make down up`, or after a crash) resumes at once instead of after the session timeout.
  TOWER_WORKER_ID="${TOWER_WORKER_ID:-$(hostname -s 2>/dev/null || echo local)}" \
    nohup "$PY" -m tower worker all >"$STATE/up-workers.log" 2>&1 &
  echo $! >"$STATE/workers.pid"
fi

if running api; then
  echo "up: the API is already running (pid $(cat "$STATE/api.pid"))"
elif health; then
  echo "up: something else already answers on http://$SHOWN:$PORT/ (stop it or set TOWER_API_PORT)" >&2
  exit 1
else
  echo "up: starting the API (log: $STATE/up-api.log)"
  nohup "$PY" -m tower api >"$STATE/up-api.log" 2>&1 &
  echo $! >"$STATE/api.pid"
fi

for _ in $(seq 1 600); do
  health && break
  for name in api workers; do
    if ! running "$name"; then
      echo "up: the $name exited; last lines of $STATE/up-$name.log:" >&2
      tail -n 20 "$STATE/up-$name.log" >&2
      exit 1
    fi
  done
  sleep 0.1
done
health || { echo "up: the API did not answer /health within 60 s; see $STATE/up-api.log" >&2; exit 1; }
running workers || { echo "up: the workers exited; see $STATE/up-workers.log" >&2; exit 1; }
echo "Tower is up: http://$SHOWN:$PORT/ (DirectorPanel), API docs at /docs; stop with make down"
