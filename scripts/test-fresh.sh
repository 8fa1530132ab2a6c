#!/usr/bin/env bash
# make test-fresh: the whole of `make test` as a new machine runs it. A clean clone of the committed
# HEAD (no .tower/, no panel build, no Kafka jars), an empty TOWER_CACHE_DIR of its own (no venvs,
# no ComfyUI, no llama.cpp build), and its own ports, so that nothing already running is reused
# (and nothing of yours is touched). Package downloads still come from pip's, npm's and Maven's
# own caches when they have them. Not part of CI: it takes most of an hour on 2 cores.
#
# Environment:
#   TOWER_FRESH_DIR     where the clone and the cache go, default a new /var/tmp/tower-fresh.XXXXXX;
#                       removed after a pass, kept after a failure for a look
#   TOWER_FRESH_PORT    the first of its ports, default 29092: Kafka PORT, controller PORT+1,
#                       PostgreSQL PORT+2, ComfyUI PORT+10..PORT+12
#   PYTEST_ARGS         passed on to make test
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

ROOT="${TOWER_FRESH_DIR:-$(mktemp -d /var/tmp/tower-fresh.XXXXXX)}"
BASE="${TOWER_FRESH_PORT:-29092}"
[[ "$BASE" =~ ^[0-9]+$ ]] || { echo "test-fresh: TOWER_FRESH_PORT must be a number" >&2; exit 2; }
CLONE="$ROOT/tower"
CACHE="$ROOT/cache"

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$BASE" $((BASE + 1)) $((BASE + 2)) $((BASE + 10)) $((BASE + 11)) $((BASE + 12)); do
  if port_taken "$port"; then
    echo "test-fresh: 127.0.0.1:$port is in use; set TOWER_FRESH_PORT to a free range" >&2
    exit 2
  fi
done

[[ -z "$(git status --porcelain --untracked-files=no)" ]] ||
  echo "test-fresh: note: uncommitted changes are not in the clone; it tests HEAD $(git rev-parse --short HEAD)" >&2
rm -rf "$CLONE" "$CACHE"
mkdir -p "$ROOT" "$CACHE"
# PostgreSQL runs as its own OS user when we are root: it must be able to reach the clone.
chmod 755 "$ROOT"
git clone -q --no-hardlinks "$REPO" "$CLONE"
# CI runs with ../shared beside the checkout: give the clone the same neighbour.
[[ -d "$REPO/../shared" && ! -e "$ROOT/shared" ]] && ln -s "$(realpath "$REPO/../shared")" "$ROOT/shared"

export TOWER_CACHE_DIR="$CACHE"
export TOWER_KAFKA_PORT="$BASE" TOWER_KAFKA_CONTROLLER_PORT=$((BASE + 1)) TOWER_PG_PORT=$((BASE + 2))
export TOWER_COMFY_PORT=$((BASE + 10))
# The clone's own paths, not the ones this shell may have exported for the main checkout.
unset VENV LLAMA_VENV TOWER_LLAMA_PYTHON TOWER_COMFY_VENV TOWER_KAFKA_BOOTSTRAP TOWER_DATABASE_URL \
  TOWER_KAFKA_DATA TOWER_PG_DATA TOWER_COMFY_DATA PYTHONPATH

stop_services() {
  (cd "$CLONE" && { infra/comfyui/comfyctl stop; make -s stop; }) >/dev/null 2>&1 || true
  for port in $((BASE + 10)) $((BASE + 11)) $((BASE + 12)); do
    (cd "$CLONE" && TOWER_COMFY_PORT=$port infra/comfyui/comfyctl stop) >/dev/null 2>&1 || true
  done
}

echo "test-fresh: make test in $CLONE with TOWER_CACHE_DIR=$CACHE, Kafka :$BASE, PostgreSQL :$((BASE + 2)), ComfyUI :$((BASE + 10))-$((BASE + 12))"
start=$SECONDS
rc=0
(cd "$CLONE" && make test PYTEST_ARGS="${PYTEST_ARGS:-}") || rc=$?
wall=$((SECONDS - start))
stop_services
printf 'test-fresh: make test from an empty cache %s in %dm%02ds (HEAD %s)\n' \
  "$([[ $rc -eq 0 ]] && echo passed || echo FAILED)" $((wall / 60)) $((wall % 60)) "$(git -C "$CLONE" rev-parse --short HEAD)"
if [[ $rc -eq 0 ]]; then
  rm -rf "$ROOT"
else
  echo "test-fresh: kept $ROOT for a look (the clone, its cache and its .tower/ logs)" >&2
fi
exit "$rc"
