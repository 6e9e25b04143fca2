"""The Iceberg catalog's benchmark (not a test): LoadTable latency over 10,000 tables on
PostgreSQL, and PyIceberg's scan planning on a table of 100 versions.

Run with `bash host/benches/run.sh iceberg`: the release `lake` binary serves a fresh PostgreSQL
database and a local store in a temporary directory; this script (in the test suite's venv, which
has PyIceberg) seeds it through the API and measures, one client at a time so the figures are
latencies, not queueing:

* ListTables the first time (every chain gets its name) and a full listing in pages of 1000;
* LoadTable the first time for 1,000 tables (the metadata, manifest and manifest list written);
* LoadTable again, 5,000 times over those tables (read back from the store);
* for a table of 100 versions: LoadTable the first time and again, PyIceberg's `load_table`,
  `scan().plan_files()` (newest version) and a plan of version 1, and `to_arrow()`.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def request(url, method="GET", body=None, data=None):
    headers = {}
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"null")


def timed(f, *args):
    t = time.perf_counter()
    out = f(*args)
    return (time.perf_counter() - t) * 1000, out


def start(lake, pg_url, workdir):
    env = dict(os.environ, LAKE_CATALOG__URL=pg_url, LAKE_LOG="warn")
    env.pop("LAKE_CONFIG", None)
    proc = subprocess.Popen(
        [lake, "serve", "--listen", "127.0.0.1:0"],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    for line in proc.stderr:
        if line.startswith("lake listening on "):
            url = line.split()[3]
            break
    else:
        raise SystemExit("lake serve exited before listening")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, url


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", required=True, help="the release lake binary")
    ap.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--tables", type=int, default=10_000)
    ap.add_argument("--loads", type=int, default=5_000)
    ap.add_argument("--versions", type=int, default=100)
    a = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyiceberg.catalog import load_catalog

    db = f"lake_bench_iceberg_{uuid.uuid4().hex[:10]}"
    subprocess.run(["psql", a.pg, "-qc", f"CREATE DATABASE {db}"], check=True)
    pg_url = a.pg.rsplit("/", 1)[0] + "/" + db
    work = tempfile.mkdtemp(prefix="lake-bench-iceberg-")
    proc, url = start(a.lake, pg_url, work)
    out = {"tables": a.tables, "versions": a.versions}
    try:
        # Every plugin loaded, so nothing else runs while requests are timed.
        while not request(f"{url}/plugins")["loading"]["done"]:
            time.sleep(0.25)
        # Seed: one small Parquet file per table, registered where it lies.
        bucket = os.path.join(work, "lake-data", "objects", "lake-processed")
        table = pa.table({"sample_id": [f"S{i}" for i in range(100)], "tpm": [i / 3 for i in range(100)]})
        t0 = time.perf_counter()
        for i in range(a.tables):
            d = os.path.join(bucket, "bench", f"t{i:05}")
            os.makedirs(d, exist_ok=True)
            pq.write_table(table, os.path.join(d, "data.parquet"))

        def register(i):
            request(f"{url}/catalog", "POST", {
                "name": f"assay {i:05}.parquet", "source": "bench", "layer": "processed",
                "object_path": f"bench/t{i:05}",
            })

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(register, range(a.tables)))
        out["seed_s"] = round(time.perf_counter() - t0, 1)

        ns = f"{url}/iceberg/v1/namespaces/processed"
        ms, first = timed(request, f"{ns}/tables?pageSize=1000")
        out["list_first_ms"] = round(ms, 1)
        names, token, t0 = [], None, time.perf_counter()
        while True:
            page = request(f"{ns}/tables?pageSize=1000" + (f"&pageToken={token}" if token else ""))
            names += [t["name"] for t in page["identifiers"]]
            token = page.get("next-page-token")
            if not token:
                break
        out["list_all_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        out["listed"] = len(names)

        rng = random.Random(7)
        sample = rng.sample(names, min(1000, len(names)))
        cold = [timed(request, f"{ns}/tables/{n}")[0] for n in sample]
        warm = [timed(request, f"{ns}/tables/{rng.choice(sample)}")[0] for _ in range(a.loads)]
        for label, xs in (("load_first", cold), ("load", warm)):
            out[f"{label}_p50_ms"] = round(percentile(xs, 50), 2)
            out[f"{label}_p99_ms"] = round(percentile(xs, 99), 2)

        # One table of many versions: the same file name uploaded again and again.
        t0 = time.perf_counter()
        for v in range(a.versions):
            rows = "".join(f"S{i},{v},{i * v}\n" for i in range(50))
            request(f"{url}/files/upload?filename=versions.csv", "POST",
                    data=f"sample_id,version,value\n{rows}".encode())
        out["versions_seed_s"] = round(time.perf_counter() - t0, 1)
        out["versions_load_first_ms"] = round(timed(request, f"{ns}/tables/versions")[0], 1)
        out["versions_load_ms"] = round(statistics.median(
            timed(request, f"{ns}/tables/versions")[0] for _ in range(20)), 2)
        catalog = load_catalog("lake", type="rest", uri=f"{url}/iceberg")
        loads, plans, old_plans, reads = [], [], [], []
        for _ in range(5):
            ms, t = timed(catalog.load_table, "processed.versions")
            loads.append(ms)
            ms, files = timed(lambda: list(t.scan().plan_files()))
            plans.append(ms)
            assert len(files) == 1, files
            v1 = t.snapshot_by_name("version-1").snapshot_id
            old_plans.append(timed(lambda: list(t.scan(snapshot_id=v1).plan_files()))[0])
            ms, arrow = timed(lambda: t.scan().to_arrow())
            reads.append(ms)
            assert arrow.num_rows == 50, arrow.num_rows
        out["snapshots"] = len(t.snapshots())
        out["pyiceberg_load_table_ms"] = round(statistics.median(loads), 1)
        out["pyiceberg_plan_ms"] = round(statistics.median(plans), 1)
        out["pyiceberg_plan_version_1_ms"] = round(statistics.median(old_plans), 1)
        out["pyiceberg_to_arrow_ms"] = round(statistics.median(reads), 1)
    finally:
        proc.terminate()
        proc.wait()
        subprocess.run(["psql", a.pg, "-qc", f"DROP DATABASE IF EXISTS {db}"], check=False)
    print(json.dumps(out, indent=1))
    print(f"""
| Iceberg catalog, {a.tables:,} tables on PostgreSQL | ms |
|---|---|
| ListTables, first (names every table) | {out['list_first_ms']} |
| ListTables, all {out['listed']:,} in pages of 1000 | {out['list_all_ms']} |
| LoadTable first time (writes metadata), p50 / p99 | {out['load_first_p50_ms']} / {out['load_first_p99_ms']} |
| LoadTable, p50 / p99 ({a.loads:,} loads) | {out['load_p50_ms']} / {out['load_p99_ms']} |
| {out['snapshots']}-version table: LoadTable first / again | {out['versions_load_first_ms']} / {out['versions_load_ms']} |
| PyIceberg load_table / plan_files (newest) / plan_files (version 1) / to_arrow | {out['pyiceberg_load_table_ms']} / {out['pyiceberg_plan_ms']} / {out['pyiceberg_plan_version_1_ms']} / {out['pyiceberg_to_arrow_ms']} |
""")


if __name__ == "__main__":
    sys.exit(main())
