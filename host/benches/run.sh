#!/usr/bin/env bash
# Benchmarks (not tests). Figures go to BENCHMARKS.md.
#
#     bash host/benches/run.sh api        # catalog API on PostgreSQL (100k datasets, 10k-node lineage)
#     bash host/benches/run.sh plugins    # plugin runtime: overhead, CSV and XLSX parse, restart
#     bash host/benches/run.sh files      # file service: upload+parse, merge cold/cached, save,
#                                         # 2 GB upload RSS, 5M x 5M, peers (seed, Polars, DuckDB)
#     bash host/benches/run.sh compare    # the lake beside Polars and DuckDB on the same files in one
#                                         # run: upload-to-table of 251 MB (plain, gzip), cold 1M merge;
#                                         # ratios, the machine's load, upload stages
#     bash host/benches/run.sh growth     # how cost grows: uploads 100 MB to 2 GB (time, RSS), two
#                                         # 251 MB uploads at once, merges of 100k, 1M, 5M rows
#     bash host/benches/run.sh auth       # token check: added GET /catalog latency at 500 req/s
#     bash host/benches/run.sh iceberg    # Iceberg catalog: LoadTable over 10k tables on PostgreSQL,
#                                         # PyIceberg's scan planning of a 100-version table
#     bash host/benches/run.sh fsck       # lake fsck (--verify) over 100k objects: time, peak RSS
#     bash host/benches/run.sh load       # two replicas on PostgreSQL + Garage under 60 s of mixed
#                                         # load (uploads, reads, merges, promotions), then fsck
#     bash host/benches/run.sh            # api and plugins
#
# Knobs: see host/benches/api.rs and host/benches/plugins.rs; files and auth take
# LAKE_BENCH_FILES_ARGS / LAKE_BENCH_AUTH_ARGS (extra flags of files.py / auth.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
suites=("${@:-api plugins}")
# The peers' venv (Polars, DuckDB, pandas at ../shared/bench's pinned versions), made once.
peers_venv() {
    venv="${BENCH_VENV:-/tmp/benchvenv}"
    if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import polars, duckdb, pandas' 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q -r ../shared/bench/requirements.txt
    fi
}
for suite in ${suites[*]}; do
    case "$suite" in
        api)
            if ! pg_isready -q -h 127.0.0.1 -p 5432; then
                pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
            fi
            cargo bench -p lake-host --bench api
            ;;
        plugins)
            # The shared generator's data (deterministic; reused when present).
            data="${LAKE_BENCH_DATA:-/tmp/benchdata}"
            if [[ ! -f "$data/left_1M.csv" || ! -f "$data/samples_100k.xlsx" ]]; then
                venv="${BENCH_VENV:-/tmp/benchvenv}"
                [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
                "$venv/bin/pip" install -q numpy==2.4.6 pyarrow==26.0.1 openpyxl==3.1.5
                "$venv/bin/python" ../shared/bench/gen_tables.py --sizes 1000000
            fi
            LAKE_BENCH_DATA="$data" cargo bench -p lake-host --bench plugins
            ;;
        files)
            peers_venv
            cargo build --release -p lake-host
            target="${CARGO_TARGET_DIR:-target}"
            "$venv/bin/python" host/benches/files.py --lake "$target/release/lake" \
                --python "$venv/bin/python" --peers --five-m ${LAKE_BENCH_FILES_ARGS:-}
            ;;
        compare)
            peers_venv
            cargo build --release -p lake-host
            target="${CARGO_TARGET_DIR:-target}"
            "$venv/bin/python" host/benches/files.py --lake "$target/release/lake" \
                --python "$venv/bin/python" --compare ${LAKE_BENCH_FILES_ARGS:-}
            ;;
        growth)
            peers_venv
            cargo build --release -p lake-host
            target="${CARGO_TARGET_DIR:-target}"
            "$venv/bin/python" host/benches/files.py --lake "$target/release/lake" \
                --python "$venv/bin/python" --growth "${LAKE_BENCH_GROWTH_GB:-1,2}"
            ;;
        auth)
            cargo build --release -p lake-host
            target="${CARGO_TARGET_DIR:-target}"
            python3 host/benches/auth.py --lake "$target/release/lake" ${LAKE_BENCH_AUTH_ARGS:-}
            cargo bench -p lake-host --bench auth_check
            ;;
        iceberg)
            # PostgreSQL and the test suite's venv (PyIceberg) from the test command's set-up.
            # shellcheck source=/dev/null
            source tests/services.sh
            lake_services_up >/dev/null
            cargo build --release -p lake-host
            target="${CARGO_TARGET_DIR:-target}"
            "$LAKE_TEST_PYTHON" host/benches/iceberg.py --lake "$target/release/lake" \
                --pg "${LAKE_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}" \
                ${LAKE_BENCH_ICEBERG_ARGS:-}
            ;;
        fsck)
            cargo bench -p lake-host --bench fsck
            ;;
        load)
            # PostgreSQL and Garage from the test command's set-up.
            # shellcheck source=/dev/null
            source tests/services.sh
            lake_services_up >/dev/null
            cargo bench -p lake-host --bench load
            ;;
        *) echo "unknown suite $suite (api, plugins, files, compare, growth, auth, iceberg, fsck, load)" >&2; exit 2 ;;
    esac
done
