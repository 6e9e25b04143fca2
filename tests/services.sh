# shellcheck shell=bash
#
# Real services for the test suite: PostgreSQL, Garage (S3) and moto_server (S3 with Object Lock),
# plus the Python venv of real clients and Chromium.
#
# Source this file, then start everything:
#
#     source tests/services.sh
#     lake_services_up          # idempotent; non-zero with a message (and a log tail) on failure
#     cargo test ...
#     lake_services_down        # optional: an EXIT trap calls it too
#
# `lake_services_up` exports:
#     LAKE_TEST_PG_URL                  postgres://postgres@127.0.0.1:5432/postgres (trust auth)
#     LAKE_TEST_S3_ENDPOINT             http://127.0.0.1:<port> of a fresh single-node Garage
#     LAKE_TEST_S3_REGION               garage
#     LAKE_TEST_S3_ACCESS_KEY_ID        a key allowed to create buckets
#     LAKE_TEST_S3_SECRET_ACCESS_KEY
#     LAKE_TEST_MOTO_ENDPOINT           http://127.0.0.1:<port> of moto_server (any credentials,
#                                       region us-east-1); only for the Object Lock path, which
#                                       Garage does not implement
#     LAKE_TEST_PYTHON                  the venv's python (tests/requirements.txt: pyarrow, Polars,
#                                       DuckDB, moto), for tests that read the lake's output with
#                                       real clients
#     LAKE_TEST_REQUIRE_SERVICES=1      tests must fail, not skip, when a service is missing
#
# It also installs Debian's chromium and chromium-driver when missing (the browser tests).
#
# Garage wants path-style addressing and region "garage".
#
# Cleanup: `lake_services_down` stops only the processes this file started (by PID) and removes
# their temp dir; PostgreSQL is shared with the machine and is left running. `lake_services_up`
# installs an EXIT trap that calls it and then runs whatever EXIT trap was there before, with the
# original exit status. A caller that sets its own EXIT trap *after* `lake_services_up` replaces
# ours and must call `lake_services_down` itself. Call `lake_services_up` in the shell that will run
# the tests, not in `$(...)` or a pipeline: a subshell would forget the PIDs.
#
# This file does not change shell options: it works with or without `set -euo pipefail`, so every
# step checks its own result instead of relying on errexit.
#
# Knobs (all optional):
#     LAKE_GARAGE_BIN                   use this garage binary instead of looking for one
#     LAKE_SERVICES_TIMEOUT             seconds to wait for each service to answer (default 60)
#     LAKE_GARAGE_INSTALL_TIMEOUT       seconds to wait for someone else's `cargo install garage`
#                                       (default 2400)

_LAKE_GARAGE_VERSION=2.5.0

_lake_log() { printf 'services: %s\n' "$*" >&2; }

_lake_fail() {
  _lake_log "ERROR: $*"
  return 1
}

# Prints the end of a service log, so a CI failure explains itself without the temp dir.
_lake_show_log() {
  local file=$1
  [ -f "$file" ] || return 0
  if ! [ -s "$file" ]; then
    _lake_log "$file is empty"
    return 0
  fi
  _lake_log "last lines of $file:"
  tail -n 40 "$file" | sed 's/^/    | /' >&2
}

# Runs a command as root: directly when we are root, else through sudo without a prompt
# (CI has no stdin to type a password into).
_lake_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    _lake_fail "need root for: $*"
  fi
}

# Polls a command until it succeeds, at most $1 seconds. If $2 is a PID, gives up at once when that
# process has exited, because then the command can never succeed.
_lake_wait_for() {
  local timeout=$1 pid=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  while :; do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      return 2
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      return 1
    fi
    sleep 0.2
  done
}

# Succeeds when the URL answers HTTP at all (any status), or with 2xx when $2 is "2xx".
_lake_http_ok() {
  local url=$1 want=${2:-any}
  if command -v curl >/dev/null 2>&1; then
    if [ "$want" = 2xx ]; then
      curl -fsS -o /dev/null --max-time 2 "$url"
    else
      curl -sS -o /dev/null --max-time 2 "$url"
    fi
  else
    python3 - "$url" "$want" <<'PY'
import sys, urllib.request, urllib.error
url, want = sys.argv[1], sys.argv[2]
try:
    urllib.request.urlopen(url, timeout=2)
except urllib.error.HTTPError:
    sys.exit(1 if want == "2xx" else 0)
PY
  fi
}

# Prints $1 distinct loopback ports that are free right now. The sockets stay open until all are
# chosen so that the kernel cannot hand out the same port twice. Another process may still take one
# before our service binds it; the start functions retry with fresh ports when that happens.
_lake_free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

_lake_random_hex() {
  python3 -c 'import secrets; print(secrets.token_hex(32))'
}

_lake_cache_dir() {
  printf '%s\n' "${XDG_CACHE_HOME:-$HOME/.cache}/lake"
}

# --- Rust ------------------------------------------------------------------------------------------

_lake_ensure_wasm_target() {
  command -v rustup >/dev/null 2>&1 || _lake_fail "rustup not found; install Rust with rustup" || return 1
  # Run in the caller's directory so a rust-toolchain.toml there gets the target.
  if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    return 0
  fi
  _lake_log "adding rust target wasm32-wasip2"
  rustup target add wasm32-wasip2 >/dev/null || _lake_fail "rustup target add wasm32-wasip2 failed"
}

# --- PostgreSQL ------------------------------------------------------------------------------------

_lake_pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432; }

_lake_pg_start_clusters() {
  local version started=1
  [ -d /etc/postgresql ] || return 1
  for version in /etc/postgresql/*/; do
    version=$(basename "$version")
    [ -d "/etc/postgresql/$version/main" ] || continue
    _lake_log "starting PostgreSQL $version/main"
    if _lake_as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start; then
      started=0
    fi
  done
  return "$started"
}

# A fresh Debian install asks for passwords on TCP; the tests connect without one.
_lake_pg_trust_localhost() {
  local hba
  for hba in /etc/postgresql/*/main/pg_hba.conf; do
    [ -f "$hba" ] || continue
    _lake_log "setting trust auth for localhost in $hba"
    _lake_as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba" || return 1
  done
  local version
  for version in /etc/postgresql/*/; do
    _lake_as_root pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main reload || true
  done
}

_lake_ensure_postgres() {
  local installed_now=0 timeout=${LAKE_SERVICES_TIMEOUT:-60}
  export LAKE_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/postgres

  # A server that already answers (this machine's, or a CI service container) is used as it is.
  if ! { command -v pg_isready >/dev/null 2>&1 && _lake_pg_ready; }; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
      _lake_log "PostgreSQL is not installed; installing it with apt-get"
      _lake_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 &&
        _lake_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 ||
        _lake_fail "apt-get install postgresql failed" || return 1
      installed_now=1
    fi
    # The package's own start-up may already have brought it up (outside containers).
    if ! _lake_pg_ready; then
      _lake_pg_start_clusters || _lake_fail "could not start any PostgreSQL cluster (ls /etc/postgresql)" || return 1
      if ! _lake_wait_for "$timeout" "" _lake_pg_ready; then
        _lake_fail "PostgreSQL did not answer on 127.0.0.1:5432 within ${timeout}s"
        local log
        for log in /var/log/postgresql/*.log; do _lake_show_log "$log"; done
        return 1
      fi
    fi
  fi

  if [ "$installed_now" = 1 ]; then
    _lake_pg_trust_localhost || _lake_fail "could not set trust auth for PostgreSQL" || return 1
  fi
  if command -v psql >/dev/null 2>&1; then
    # Reload is asynchronous, so allow a moment for new auth rules to apply.
    _lake_wait_for 10 "" env PGCONNECT_TIMEOUT=5 psql -w "$LAKE_TEST_PG_URL" -Atqc 'select 1' ||
      _lake_fail "PostgreSQL answers but '$LAKE_TEST_PG_URL' cannot log in without a password (need trust auth)" ||
      return 1
  fi
}

# --- Garage ----------------------------------------------------------------------------------------

# Finds a garage binary; prints its path or nothing.
_lake_find_garage() {
  local candidate
  for candidate in "${LAKE_GARAGE_BIN-}" "$(command -v garage 2>/dev/null || true)" \
    "${CARGO_HOME:-$HOME/.cargo}/bin/garage"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
}

# PIDs of `cargo install ... garage` runs already under way (anchored on the command so that a
# shell whose script merely mentions the words does not match).
_lake_other_garage_installs() {
  pgrep -f '^[^ ]*cargo install .*garage' 2>/dev/null || true
}

_lake_ensure_garage() {
  local bin pids limit=${LAKE_GARAGE_INSTALL_TIMEOUT:-2400}
  bin=$(_lake_find_garage)

  # A second `cargo install` would compile everything again in its own temp dir, so wait for one
  # that is already running (another test run, or a machine set-up script).
  if [ -z "$bin" ]; then
    pids=$(_lake_other_garage_installs)
    if [ -n "$pids" ]; then
      local start=$SECONDS next_note=$((SECONDS + 60))
      _lake_log "waiting for the running 'cargo install garage' (pid ${pids//$'\n'/ }) to finish"
      while [ -n "$(_lake_other_garage_installs)" ]; do
        if [ $((SECONDS - start)) -ge "$limit" ]; then
          _lake_fail "gave up after ${limit}s waiting for 'cargo install garage'"
          return 1
        fi
        if [ "$SECONDS" -ge "$next_note" ]; then
          _lake_log "still waiting for 'cargo install garage' ($((SECONDS - start))s)"
          next_note=$((SECONDS + 60))
        fi
        sleep 2
      done
      bin=$(_lake_find_garage)
    fi
  fi

  if [ -z "$bin" ]; then
    local cache lock_fd
    cache=$(_lake_cache_dir)
    mkdir -p "$cache" || return 1
    # Two test runs starting together on a new machine should build garage once.
    exec {lock_fd}>"$cache/garage-install.lock"
    flock -w "$limit" "$lock_fd" || { exec {lock_fd}>&-; _lake_fail "timed out on $cache/garage-install.lock"; return 1; }
    bin=$(_lake_find_garage)
    if [ -z "$bin" ]; then
      _lake_log "installing garage $_LAKE_GARAGE_VERSION with cargo install (about 11 minutes on 2 cores)"
      if ! cargo install garage --locked --version "$_LAKE_GARAGE_VERSION" >&2; then
        exec {lock_fd}>&-
        _lake_fail "cargo install garage failed"
        return 1
      fi
      bin=$(_lake_find_garage)
    fi
    exec {lock_fd}>&-
  fi

  [ -n "$bin" ] || _lake_fail "no garage binary after install" || return 1
  local version
  version=$("$bin" --version 2>/dev/null | head -n 1 || true)
  case "$version" in
    *"$_LAKE_GARAGE_VERSION"*) ;;
    *) _lake_log "warning: $bin reports '$version', tests were written against $_LAKE_GARAGE_VERSION" ;;
  esac
  _LAKE_GARAGE_BIN=$bin
}

_lake_garage() { timeout 20 "$_LAKE_GARAGE_BIN" -c "$_LAKE_SVC_DIR/garage/garage.toml" "$@"; }

# Starts one Garage node; returns 2 when the process died (most likely a port taken between choosing
# and binding it), 1 on any other failure.
_lake_start_garage_once() {
  local dir=$_LAKE_SVC_DIR/garage timeout=${LAKE_SERVICES_TIMEOUT:-60}
  local log=$dir/garage.log rpc_port s3_port admin_port rc
  rm -rf "$dir" && mkdir -p "$dir" || return 1
  read -r rpc_port s3_port admin_port <<<"$(_lake_free_ports 3)"
  [ -n "$admin_port" ] || _lake_fail "could not pick free ports" || return 1

  cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(_lake_random_hex)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$(_lake_random_hex)"
EOF

  "$_LAKE_GARAGE_BIN" -c "$dir/garage.toml" server </dev/null >"$log" 2>&1 &
  _LAKE_GARAGE_PID=$!
  _lake_disown "$_LAKE_GARAGE_PID"

  # The CLI talks to the node over RPC, so `node id` succeeding means the node is up.
  local node_id
  rc=0
  _lake_wait_for "$timeout" "$_LAKE_GARAGE_PID" _lake_garage node id -q || rc=$?
  if [ "$rc" -eq 2 ]; then
    _lake_fail "garage exited during start-up (rpc 127.0.0.1:$rpc_port)"
    _lake_show_log "$log"
    return 2
  elif [ "$rc" -ne 0 ]; then
    _lake_fail "garage did not answer on rpc 127.0.0.1:$rpc_port within ${timeout}s"
    _lake_show_log "$log"
    return "$rc"
  fi
  node_id=$(_lake_garage node id -q 2>/dev/null) || true
  node_id=${node_id%%@*}
  [ -n "$node_id" ] || _lake_fail "garage node id printed nothing" || return 1

  # A node that answers `node id` may still be settling (seen once in CI: `layout assign` hung
  # until its 20 s timeout), so each layout step gets a few tries. Assigning the same role again
  # and re-applying version 1 are harmless; a step that keeps failing restarts the whole node
  # with fresh ports (return 2).
  local step try ok
  for step in "layout assign -z dc1 -c 1G $node_id" "layout apply --version 1"; do
    ok=0
    for try in 1 2 3 4; do
      # shellcheck disable=SC2086 # the steps are word lists on purpose
      if _lake_garage $step >>"$dir/setup.log" 2>&1; then
        ok=1
        break
      fi
      if [ "$step" != "${step#layout apply}" ] && _lake_garage layout show 2>/dev/null | grep -q "Current cluster layout version: 1"; then
        ok=1
        break
      fi
      echo "(attempt $try of garage $step failed; retrying)" >>"$dir/setup.log"
      sleep 2
    done
    if [ "$ok" -ne 1 ]; then
      _lake_fail "garage $step failed"
      _lake_show_log "$dir/setup.log"
      _lake_show_log "$log"
      return 2
    fi
  done

  # /health answers 200 only once the layout is applied and every partition has quorum; before that
  # S3 requests fail with 503.
  rc=0
  _lake_wait_for "$timeout" "$_LAKE_GARAGE_PID" _lake_http_ok "http://127.0.0.1:$admin_port/health" 2xx || rc=$?
  if [ "$rc" -ne 0 ]; then
    _lake_fail "garage did not become healthy within ${timeout}s"
    _lake_show_log "$log"
    return "$rc"
  fi

  local key_out key_id secret
  if ! key_out=$(_lake_garage key create lake-test 2>&1); then
    _lake_fail "garage key create failed: $key_out"
    return 1
  fi
  # The CLI prints an aligned table ("Key ID:   GK...", "Secret key:   ..."); take the value after
  # the label and then check its shape, so a format change fails loudly instead of exporting junk.
  key_id=$(printf '%s\n' "$key_out" | sed -n 's/^[[:space:]]*Key ID:[[:space:]]*\([^[:space:]]*\).*/\1/p' | head -n 1)
  secret=$(printf '%s\n' "$key_out" | sed -n 's/^[[:space:]]*Secret key:[[:space:]]*\([^[:space:]]*\).*/\1/p' | head -n 1)
  if ! [[ "$key_id" =~ ^GK[0-9a-f]{24}$ && "$secret" =~ ^[0-9a-f]{64}$ ]]; then
    _lake_fail "could not parse the key from 'garage key create' output:"
    printf '%s\n' "$key_out" | sed 's/^/    | /' >&2
    return 1
  fi
  if ! _lake_garage key allow --create-bucket "$key_id" >>"$dir/setup.log" 2>&1; then
    _lake_fail "garage key allow --create-bucket failed"
    _lake_show_log "$dir/setup.log"
    return 1
  fi

  _lake_wait_for "$timeout" "$_LAKE_GARAGE_PID" _lake_http_ok "http://127.0.0.1:$s3_port/" any || {
    _lake_fail "garage S3 API did not answer on 127.0.0.1:$s3_port"
    _lake_show_log "$log"
    return 1
  }

  export LAKE_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port
  export LAKE_TEST_S3_REGION=garage
  export LAKE_TEST_S3_ACCESS_KEY_ID=$key_id
  export LAKE_TEST_S3_SECRET_ACCESS_KEY=$secret
}

# --- Python venv (moto and the real clients the tests read the lake's output with) -----------------

# One venv per machine for tests/requirements.txt; its marker names the requirements' hash, so a
# changed file rebuilds it and an unchanged one costs nothing.
_lake_ensure_venv() {
  local venv lock_fd cache req hash
  cache=$(_lake_cache_dir)
  venv=$cache/venv
  req=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/requirements.txt
  hash=$(sha256sum "$req" | cut -c1-16) || return 1
  _LAKE_MOTO_BIN=$venv/bin/moto_server
  export LAKE_TEST_PYTHON=$venv/bin/python
  # The marker is written last, so a venv whose pip install was interrupted is rebuilt.
  [ -f "$venv/.lake-ready-$hash" ] && [ -x "$_LAKE_MOTO_BIN" ] && return 0

  mkdir -p "$cache" || return 1
  exec {lock_fd}>"$cache/venv.lock"
  flock -w 1800 "$lock_fd" || { exec {lock_fd}>&-; _lake_fail "timed out on $cache/venv.lock"; return 1; }
  if ! { [ -f "$venv/.lake-ready-$hash" ] && [ -x "$_LAKE_MOTO_BIN" ]; }; then
    _lake_log "creating the test venv in $venv from $req"
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >&2; then
      # Debian splits ensurepip into python3-venv.
      _lake_log "python3 -m venv failed; installing python3-venv"
      rm -rf "$venv"
      { _lake_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 &&
        _lake_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >&2 &&
        python3 -m venv "$venv" >&2; } ||
        { exec {lock_fd}>&-; _lake_fail "could not create a python venv at $venv"; return 1; }
    fi
    if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2; then
      exec {lock_fd}>&-
      _lake_fail "pip install -r $req failed"
      return 1
    fi
    touch "$venv/.lake-ready-$hash"
  fi
  exec {lock_fd}>&-
}

# --- Chromium (the browser tests) ------------------------------------------------------------------

_lake_ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    return 0
  fi
  _lake_log "installing Debian's chromium and chromium-driver"
  { _lake_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 &&
    _lake_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >&2; } ||
    _lake_fail "apt-get install chromium chromium-driver failed"
}

_lake_start_moto_once() {
  local timeout=${LAKE_SERVICES_TIMEOUT:-60} log=$_LAKE_SVC_DIR/moto.log port rc
  port=$(_lake_free_ports 1) || return 1
  "$_LAKE_MOTO_BIN" -H 127.0.0.1 -p "$port" </dev/null >"$log" 2>&1 &
  _LAKE_MOTO_PID=$!
  _lake_disown "$_LAKE_MOTO_PID"
  rc=0
  _lake_wait_for "$timeout" "$_LAKE_MOTO_PID" _lake_http_ok "http://127.0.0.1:$port/moto-api/" any || rc=$?
  if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 2 ]; then
      _lake_fail "moto_server exited during start-up (port $port)"
    else
      _lake_fail "moto_server did not answer on 127.0.0.1:$port within ${timeout}s"
    fi
    _lake_show_log "$log"
    return "$rc"
  fi
  export LAKE_TEST_MOTO_ENDPOINT=http://127.0.0.1:$port
}

# Runs a start function up to three times while its process dies at start-up, which is what losing
# a port race looks like. Other failures are real and are not retried.
_lake_start_with_retry() {
  local start=$1 pid_var=$2 attempt rc
  for attempt in 1 2 3; do
    rc=0
    "$start" || rc=$?
    [ "$rc" -eq 0 ] && return 0
    _lake_kill_pid "${!pid_var-}"
    printf -v "$pid_var" '%s' ""
    [ "$rc" -eq 2 ] || return 1
    [ "$attempt" -lt 3 ] && _lake_log "retrying with fresh ports"
  done
  return 1
}

# Takes a service out of this shell's job table, so that a caller's bare `wait` (for its own
# background jobs) does not block on it. Bash still reaps it when it exits.
_lake_disown() { disown "$1" 2>/dev/null || true; }

# --- cleanup ---------------------------------------------------------------------------------------

# Stops one process we started: TERM, a few seconds' grace, then KILL.
_lake_kill_pid() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

lake_services_down() {
  _lake_kill_pid "${_LAKE_MOTO_PID-}"
  _lake_kill_pid "${_LAKE_GARAGE_PID-}"
  _LAKE_MOTO_PID=
  _LAKE_GARAGE_PID=
  case "${_LAKE_SVC_DIR-}" in
    */lake-services.*) rm -rf "$_LAKE_SVC_DIR" ;;
  esac
  _LAKE_SVC_DIR=
  unset LAKE_TEST_S3_ENDPOINT LAKE_TEST_S3_REGION LAKE_TEST_S3_ACCESS_KEY_ID \
    LAKE_TEST_S3_SECRET_ACCESS_KEY LAKE_TEST_MOTO_ENDPOINT LAKE_TEST_REQUIRE_SERVICES
  return 0
}

_lake_return() { return "$1"; }

_lake_on_exit() {
  local status=$?
  lake_services_down || true
  # Hand the previous trap the exit status it would have seen without us.
  if _lake_return "$status"; then
    eval "${_LAKE_PREV_EXIT_TRAP-}"
  else
    eval "${_LAKE_PREV_EXIT_TRAP-}"
  fi
}

# shellcheck disable=SC2120 # the positional parameters come from re-parsing `trap -p`, not callers
_lake_install_exit_trap() {
  [ "${_LAKE_TRAP_INSTALLED-}" = 1 ] && return 0
  # `trap -p EXIT` prints `trap -- '<command>' EXIT`; re-parsing it with `set --` unquotes the command.
  local existing
  existing=$(trap -p EXIT)
  if [ -n "$existing" ]; then
    eval "set -- $existing"
    _LAKE_PREV_EXIT_TRAP=$3
  else
    _LAKE_PREV_EXIT_TRAP=
  fi
  trap _lake_on_exit EXIT
  _LAKE_TRAP_INSTALLED=1
}

# --- entry point -----------------------------------------------------------------------------------

lake_services_up() {
  local started=$SECONDS

  # Called twice in one shell: keep the running services.
  if [ -n "${_LAKE_GARAGE_PID-}" ] && kill -0 "$_LAKE_GARAGE_PID" 2>/dev/null &&
    [ -n "${_LAKE_MOTO_PID-}" ] && kill -0 "$_LAKE_MOTO_PID" 2>/dev/null &&
    [ -n "${LAKE_TEST_S3_ENDPOINT-}" ] && [ -n "${LAKE_TEST_MOTO_ENDPOINT-}" ]; then
    _lake_log "already up"
    return 0
  fi
  lake_services_down

  command -v python3 >/dev/null 2>&1 || _lake_fail "python3 is required" || return 1
  _lake_ensure_wasm_target || return 1
  _lake_ensure_postgres || return 1
  _lake_ensure_garage || return 1
  _lake_ensure_venv || return 1
  _lake_ensure_chromium || return 1

  _lake_install_exit_trap
  _LAKE_SVC_DIR=$(mktemp -d "${TMPDIR:-/tmp}/lake-services.XXXXXX") || _lake_fail "mktemp failed" || return 1

  if ! _lake_start_with_retry _lake_start_garage_once _LAKE_GARAGE_PID ||
    ! _lake_start_with_retry _lake_start_moto_once _LAKE_MOTO_PID; then
    lake_services_down
    return 1
  fi

  export LAKE_TEST_REQUIRE_SERVICES=1
  _lake_log "up in $((SECONDS - started))s: postgres 127.0.0.1:5432, garage $LAKE_TEST_S3_ENDPOINT (pid $_LAKE_GARAGE_PID), moto $LAKE_TEST_MOTO_ENDPOINT (pid $_LAKE_MOTO_PID); logs in $_LAKE_SVC_DIR"
}
