# once.sh — first-run set-up steps that survive concurrency and interruption (sourced, not run).
#
# Every first-run step of Tower (the Python environments, the ComfyUI environment, the llama.cpp
# build, the Kafka jars, the PostgreSQL cluster, the DirectorPanel build, Debian packages) goes
# through `once`, which guarantees:
#   - two runs at the same time build once: the second waits on an flock and then reuses the result;
#   - a step is marked complete only after it succeeded: a run killed halfway leaves a marker, and
#     the next run throws the half-built target away and builds it again from scratch.
#
# Beside a target T (a file or folder) live:
#   T.lock        the flock; held for the whole build
#   T.complete    the fingerprint of what was built (written last, atomically)
#   T.incomplete  present while a build runs; left behind by a killed one
#
# The caller defines `log` (and usually `die`) before sourcing this file.

TOWER_CACHE_DIR="${TOWER_CACHE_DIR:-$HOME/.cache/tower}"

# once NAME TARGET FINGERPRINT BUILD [ARGS...]
#   Runs `BUILD ARGS...` unless TARGET is complete with FINGERPRINT. BUILD sees ONCE_MODE:
#   "fresh" (TARGET does not exist: build it from nothing) or "update" (TARGET is a complete build
#   of another fingerprint: bring it up to date in place). A target that exists with no marks at all
#   (built before these marks existed, or by hand) is adopted when ONCE_ADOPT names a function that
#   says it is whole, and rebuilt otherwise.
once() {
  local name="$1" target="${2%/}" want="$3"
  shift 3
  local stamp="$target.complete" marker="$target.incomplete" fd
  if [[ -f "$stamp" && ! -e "$marker" && "$(<"$stamp")" == "$want" ]]; then
    return 0
  fi
  mkdir -p "$(dirname "$target")"
  exec {fd}>"$target.lock"
  if ! flock -n "$fd"; then
    log "waiting for another set-up of $name ($target) to finish"
    flock "$fd"
  fi
  if [[ -f "$stamp" && ! -e "$marker" && "$(<"$stamp")" == "$want" ]]; then
    log "$name: set up meanwhile by another run; reusing it"
    exec {fd}>&-
    return 0
  fi
  ONCE_MODE=update
  if [[ -e "$marker" ]]; then
    log "$name: an earlier set-up of $target was interrupted; rebuilding it from scratch"
    rm -rf "$target" "$stamp"
    ONCE_MODE=fresh
  elif [[ ! -f "$stamp" ]] && [[ -e "$target" || -L "$target" ]]; then
    if [[ -n "${ONCE_ADOPT:-}" ]] && "$ONCE_ADOPT" "$target"; then
      log "$name: adopting $target (built before set-up marks existed)"
    else
      log "$name: $target has no completion mark; rebuilding it from scratch"
      rm -rf "$target"
      ONCE_MODE=fresh
    fi
  elif [[ ! -e "$target" ]]; then
    rm -f "$stamp"
    ONCE_MODE=fresh
  fi
  : >"$marker"
  rm -f "$stamp"
  log "$name: building $target ($ONCE_MODE)"
  # The build runs in a subshell with errexit on, so that a failing command inside it comes back
  # here as a status: the marker stays and no stamp is written. (Not `( ... ) || rc=$?`: bash
  # ignores errexit everywhere inside the left side of `||`.)
  local rc errexit=0
  [[ $- == *e* ]] && errexit=1
  set +e
  ( set -e; "$@" ) {fd}>&-
  rc=$?
  ((errexit)) && set -e
  if ((rc != 0)); then
    exec {fd}>&-
    log "$name: set-up failed (exit $rc); the next run starts it again from scratch"
    return "$rc"
  fi
  printf '%s' "$want" >"$stamp.tmp"
  mv "$stamp.tmp" "$stamp"
  rm -f "$marker"
  exec {fd}>&-
  log "$name: done ($target)"
}

# apt_install PACKAGE...: install Debian packages as root, one apt at a time across every Tower
# script (dpkg refuses a second concurrent run). Fails when not root.
apt_install() {
  [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1 || return 1
  local fd
  mkdir -p "$TOWER_CACHE_DIR"
  exec {fd}>"$TOWER_CACHE_DIR/apt.lock"
  flock "$fd"
  export DEBIAN_FRONTEND=noninteractive
  local rc=0
  local apt=(apt-get -y -qq -o DPkg::Lock::Timeout=600)
  # The package lists may be stale or absent on a fresh image, and an install killed halfway leaves
  # dpkg asking to be configured: on a first failure, finish that and update, then try once more.
  "${apt[@]}" install --no-install-recommends "$@" >/dev/null 2>&1 || {
    dpkg --configure -a >/dev/null 2>&1 || true
    "${apt[@]}" update && "${apt[@]}" install --no-install-recommends "$@" >/dev/null
  } || rc=$?
  exec {fd}>&-
  return "$rc"
}

# fingerprint FILE... : one sha256 over the files' contents (and a missing file's name).
fingerprint() {
  local f
  for f in "$@"; do
    if [[ -f "$f" ]]; then sha256sum "$f"; else echo "missing $f"; fi
  done | sha256sum | cut -d' ' -f1
}
