#!/usr/bin/env bash
# The API benchmark (not a test): PostgreSQL with 100,000 datasets and a 10,000-node lineage,
# GET /catalog at a fixed 500 req/s, and the lineage-graph time. Figures go to BENCHMARKS.md.
#
#     bash host/benches/run.sh            # knobs: see host/benches/api.rs
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
cargo bench -p lake-host --bench api
