"""Every Parquet object the test suite's lakes wrote to S3 opens in pyarrow, Polars and DuckDB.

Run by tests/run.sh after the Rust tests, with the suite's services still up: each test on
PostgreSQL + Garage leaves its scratch database (lake_test_*) and its buckets behind, so this walks
every ready dataset's `.parquet` files there, reads each object with the three readers, and checks
they agree with each other and with the row count the catalog records (`metadata.rows`). Objects
that are gone (a test deleted them, or a catalog test named files it never wrote) are counted, not
read. Prints one summary line; exits non-zero naming every object a reader could not open.
"""

import json
import os
import subprocess
import sys
import tempfile

import boto3
import duckdb
import polars as pl
import pyarrow.parquet as pq
from botocore.config import Config
from botocore.exceptions import ClientError

PG = os.environ["LAKE_TEST_PG_URL"]
BASE = PG.rsplit("/", 1)[0]


def psql(url, sql):
    out = subprocess.run(
        ["psql", url, "-Atqc", sql], check=True, capture_output=True, text=True
    ).stdout
    return out.strip()


def main():
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["LAKE_TEST_S3_ENDPOINT"],
        region_name=os.environ.get("LAKE_TEST_S3_REGION", "garage"),
        aws_access_key_id=os.environ["LAKE_TEST_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["LAKE_TEST_S3_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}),
    )
    databases = psql(
        PG, "SELECT datname FROM pg_database WHERE datname LIKE 'lake\\_test\\_%'"
    ).split()
    read, gone, failures = 0, 0, []
    with tempfile.TemporaryDirectory() as tmp:
        for db in databases:
            url = f"{BASE}/{db}"
            try:
                has_files = psql(url, "SELECT to_regclass('files') IS NOT NULL") == "t"
            except subprocess.CalledProcessError:
                continue
            if not has_files:
                continue
            rows = psql(
                url,
                "SELECT coalesce(json_agg(json_build_object('bucket', d.bucket, 'key', d.prefix || f.name,"
                " 'rows', d.metadata->'rows', 'dataset', d.id)), '[]') FROM files f JOIN datasets d ON d.id = f.dataset_id"
                " WHERE d.status = 'ready' AND f.name LIKE '%.parquet'",
            )
            for obj in json.loads(rows or "[]"):
                path = os.path.join(tmp, "t.parquet")
                try:
                    s3.download_file(obj["bucket"], obj["key"], path)
                except ClientError:
                    gone += 1
                    continue
                counts = {}
                for reader, count in (
                    ("pyarrow", lambda p: pq.read_table(p).num_rows),
                    ("polars", lambda p: pl.read_parquet(p).height),
                    (
                        "duckdb",
                        lambda p: duckdb.connect()
                        .execute("SELECT count(*) FROM read_parquet(?)", [p])
                        .fetchall()[0][0],
                    ),
                ):
                    try:
                        counts[reader] = count(path)
                    except Exception as e:  # noqa: BLE001 - every reader error is a finding
                        counts[reader] = f"error: {e}"
                want = obj["rows"]
                values = set(map(str, counts.values()))
                if len(values) != 1 or (want is not None and values != {str(want)}):
                    failures.append(f"{db} {obj['bucket']}/{obj['key']}: catalog {want}, read {counts}")
                read += 1
    print(
        f"parquet sweep: {read} objects read in pyarrow, Polars and DuckDB from {len(databases)} "
        f"scratch databases ({gone} gone), {len(failures)} failed"
    )
    for f in failures:
        print(f"  {f}")
    if failures:
        sys.exit(1)
    if read == 0:
        print("parquet sweep: no Parquet object was found; the production tests wrote none?")
        sys.exit(1)


if __name__ == "__main__":
    main()
