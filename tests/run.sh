#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: installs and starts what the tests need
# (the wasm32-wasip2 target, PostgreSQL, Garage, moto, a venv of pinned Python clients, Chromium,
# jq/curl for the README walkthrough, compressors for fixtures), then runs every test in the
# workspace against those real services.
#
#     bash tests/run.sh [extra arguments for cargo nextest / cargo test]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "tools"
missing=()
# jq and curl for the README blocks; the compressors make the compressed-upload fixtures.
for tool in jq curl psql gzip bzip2 xz zstd; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
    pkgs=()
    for t in "${missing[@]}"; do
        case $t in
            psql) pkgs+=(postgresql-client) ;;
            xz) pkgs+=(xz-utils) ;;
            *) pkgs+=("$t") ;;
        esac
    done
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
fi

step "services"
# shellcheck source=tests/services.sh
source tests/services.sh
lake_services_up

# Scratch databases of earlier runs (tests keep theirs for inspection after a failure).
psql "$LAKE_TEST_PG_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'lake\_test\_%'" |
    while read -r db; do psql "$LAKE_TEST_PG_URL" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null || true; done

step "format"
# Formatting is checked before anything builds: a diff here is a minute to fix, not a CI run.
cargo fmt --all --check
cargo fmt --manifest-path plugins/Cargo.toml --all --check

# One group of `-p` flags per kind, from the one list of bundled plugins.
plugin_groups=()
for kind in parser connector step; do
    plugin_groups+=("$(awk -v k="$kind" '!/^#/ && NF == 4 && $3 == k { printf "-p %s ", $2 }' plugins/bundled.txt)")
done

step "clippy"
# Lints are errors. The plugins are linted one kind at a time, as they build (each kind builds the
# SDK with its own world), and the SDK once per world with its optional helpers.
cargo clippy --workspace --all-targets --quiet -- -D warnings
for world in parser step connector; do
    cargo clippy -p lake-sdk --features "$world,xml,gzip,decompress" --all-targets --quiet -- -D warnings
done
for group in "${plugin_groups[@]}"; do
    # shellcheck disable=SC2086
    cargo clippy --manifest-path plugins/Cargo.toml $group --all-targets --quiet -- -D warnings
done

step "tests"
# The benchmarks are not run here, but they must keep compiling.
cargo test --workspace --benches --no-run --quiet
# Every Parquet object the tests wrote to Garage must open in pyarrow, Polars and DuckDB.
sweep() { "$LAKE_TEST_PYTHON" tests/parquet_sweep.py; }
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
    sweep
    # The bundled plugins' own logic, natively (their separate workspace), parsers, steps and connectors apart:
    # each kind builds the SDK with its own exports, which cannot share one build.
    for group in "${plugin_groups[@]}"; do
        # shellcheck disable=SC2086
        cargo nextest run --manifest-path plugins/Cargo.toml $group --no-fail-fast --no-tests=pass "$@"
    done
else
    cargo test --workspace --no-fail-fast "$@"
    sweep
    for group in "${plugin_groups[@]}"; do
        # shellcheck disable=SC2086
        cargo test --manifest-path plugins/Cargo.toml $group --no-fail-fast "$@"
    done
fi
# The SDK's connector, XML, gzip and decompress helpers compile only with their features.
cargo test -p lake-sdk --features connector,xml,gzip,decompress --lib --quiet
