//! The Iceberg REST catalog read by engines no one here wrote: PyIceberg loads every layer's
//! tables from a running `lake serve` (local store through `file://`, Garage through S3), its
//! scans equal the tables the lake serves, time travel to a version's tag returns that version's
//! rows, and DuckDB reads the files PyIceberg plans. The catalog's refusals are checked in the
//! spec's error shape.

use serde_json::{Value, json};

/// Reads the catalog with PyIceberg and reports what a user would see: namespaces, tables, and
/// for each expected table its scan compared with the bytes the lake serves for that version;
/// time travel by tag; DuckDB over PyIceberg's plan (local files) or through PyIceberg (S3).
const PYICEBERG_READ: &str = r#"
import json, os, sys, urllib.request, urllib.parse
import pyarrow as pa, pyarrow.parquet as pq
import duckdb
from pyiceberg.catalog import load_catalog

url, expected = sys.argv[1], json.loads(sys.argv[2])
props = {"type": "rest", "uri": url + "/iceberg"}
if os.environ.get("S3_KEY"):
    props["s3.access-key-id"] = os.environ["S3_KEY"]
    props["s3.secret-access-key"] = os.environ["S3_SECRET"]
catalog = load_catalog("lake", **props)

def served(dataset, name):
    with urllib.request.urlopen(f"{url}/catalog/{dataset}/download/{name}") as r:
        return pq.read_table(pa.BufferReader(r.read())).to_pylist()

out = {"namespaces": sorted(".".join(n) for n in catalog.list_namespaces()), "tables": {}, "scans": {}}
for ns in out["namespaces"]:
    out["tables"][ns] = sorted(t[-1] for t in catalog.list_tables(ns))
for ident, want in expected.items():
    table = catalog.load_table(ident)
    rows = table.scan().to_arrow().to_pylist()
    scan = {
        "rows": len(rows),
        "columns": [f.name for f in table.schema().fields],
        "equal": rows == served(want["dataset"], want["file"]),
        "snapshots": len(table.snapshots()),
        "location": table.metadata_location.split("://")[0],
    }
    if "v1" in want:
        snap = table.snapshot_by_name("version-1")
        old = table.scan(snapshot_id=snap.snapshot_id).to_arrow().to_pylist()
        scan["v1_rows"] = len(old)
        scan["v1_equal"] = old == served(want["v1"]["dataset"], want["v1"]["file"])
    files = [t.file.file_path for t in table.scan().plan_files()]
    if all(f.startswith("file://") for f in files):
        paths = [urllib.parse.unquote(f[len("file://"):]) for f in files]
        con = duckdb.connect()
        got = con.execute("SELECT count(*) FROM read_parquet(?)", [paths]).fetchone()[0]
        scan["duckdb"] = {"how": "read_parquet over the plan", "rows": got}
    else:
        con = table.scan().to_duckdb("t")
        got = con.execute("SELECT count(*) FROM t").fetchone()[0]
        scan["duckdb"] = {"how": "through PyIceberg", "rows": got}
    out["scans"][ident] = scan
print(json.dumps(out))
"#;

/// A Parquet file of plate readings, as an instrument's export would be.
fn plates_parquet() -> Vec<u8> {
    use arrow_array::{Float64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let batch = RecordBatch::try_from_iter([
        (
            "well",
            Arc::new(StringArray::from(vec!["A1", "A2", "B1"])) as _,
        ),
        (
            "od600",
            Arc::new(Float64Array::from(vec![0.12, 0.5, 0.93])) as _,
        ),
    ])
    .expect("batch");
    let table = lake_host::plugins::Table {
        schema: batch.schema(),
        batches: vec![batch],
    };
    lake_host::tables::write_parquet(&table).expect("parquet").0
}

struct Lake {
    url: String,
    http: reqwest::Client,
}

impl Lake {
    async fn json(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    async fn upload(&self, name: &str, body: &str) -> String {
        let v: Value = self
            .http
            .post(format!("{}/files/upload?filename={name}", self.url))
            .body(body.to_owned())
            .send()
            .await
            .expect("upload")
            .json()
            .await
            .expect("json");
        v["dataset_ids"]["table"]
            .as_str()
            .unwrap_or_else(|| panic!("a table: {v}"))
            .to_owned()
    }

    async fn promote(&self, id: &str, layer: &str) -> String {
        let v = self
            .json(
                reqwest::Method::POST,
                "/layers/promote",
                Some(json!({"dataset_id": id, "target_layer": layer, "reason": "checked by hand"})),
            )
            .await;
        v["dataset"]["id"].as_str().expect("promoted id").to_owned()
    }

    /// The Parquet file's name of a table dataset.
    async fn table_file(&self, id: &str) -> String {
        let files = self
            .json(reqwest::Method::GET, &format!("/catalog/{id}/files"), None)
            .await;
        files[0]["name"].as_str().expect("file").to_owned()
    }
}

/// Every layer holds a table; PyIceberg finds them all and reads what the lake serves.
async fn every_layer_read_by_pyiceberg(url: String, s3: Option<(String, String)>) {
    let lake = Lake {
        url,
        http: reqwest::Client::new(),
    };
    // raw: an instrument's Parquet export, cataloged as it came.
    let raw = lake
        .json(
            reqwest::Method::POST,
            "/catalog",
            Some(json!({"name": "assay plates", "source": "plate-reader", "layer": "raw"})),
        )
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let put = lake
        .http
        .put(format!("{}/catalog/{raw}/files/plates.parquet", lake.url))
        .body(plates_parquet())
        .send()
        .await
        .expect("put");
    assert!(put.status().is_success(), "{}", put.status());
    // processed: two versions of one upload, and another table.
    let v1 = lake
        .upload("samples.csv", "sample_id,tissue\nS1,liver\nS2,lung\n")
        .await;
    let v2 = lake
        .upload(
            "samples.csv",
            "sample_id,tissue,age\nS1,liver,40\nS2,lung,51\nS3,brain,62\n",
        )
        .await;
    let expression = lake
        .upload("expression.csv", "sample_id,gene,tpm\nS1,TP53,1.5\n")
        .await;
    // curated and archive: the newest version promoted twice.
    let curated = lake.promote(&v2, "curated").await;
    let archived = lake.promote(&curated, "archive").await;

    let file = |id: &String| {
        let (lake, id) = (&lake, id.clone());
        async move { json!({"dataset": id, "file": lake.table_file(&id).await}) }
    };
    let mut samples = file(&v2).await;
    samples["v1"] = file(&v1).await;
    let expected = json!({
        "raw.assay_plates": file(&raw).await,
        "processed.samples": samples,
        "processed.expression": file(&expression).await,
        "curated.samples": file(&curated).await,
        "archive.samples": file(&archived).await,
    });

    // The spec's refusals, in its error shape.
    let missing = lake
        .http
        .get(format!(
            "{}/iceberg/v1/namespaces/processed/tables/nothing_here",
            lake.url
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(body["error"]["type"], "NoSuchTableException", "{body}");
    assert_eq!(body["error"]["code"], 404, "{body}");
    let ns = lake
        .http
        .get(format!("{}/iceberg/v1/namespaces/bronze/tables", lake.url))
        .send()
        .await
        .expect("get");
    assert_eq!(ns.status(), 404);
    let body: Value = ns.json().await.expect("json");
    assert_eq!(body["error"]["type"], "NoSuchNamespaceException", "{body}");
    let config = lake
        .json(reqwest::Method::GET, "/iceberg/v1/config", None)
        .await;
    assert!(
        config["endpoints"]
            .as_array()
            .expect("endpoints")
            .contains(&json!(
                "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}"
            )),
        "{config}"
    );
    let page = lake
        .json(
            reqwest::Method::GET,
            "/iceberg/v1/namespaces/processed/tables?pageSize=1",
            None,
        )
        .await;
    assert_eq!(
        page["identifiers"].as_array().map(Vec::len),
        Some(1),
        "{page}"
    );
    let token = page["next-page-token"].as_str().expect("a next page");
    let rest = lake
        .json(
            reqwest::Method::GET,
            &format!("/iceberg/v1/namespaces/processed/tables?pageSize=1&pageToken={token}"),
            None,
        )
        .await;
    assert_ne!(rest["identifiers"][0], page["identifiers"][0], "{rest}");

    let Some(python) = crate::service_var("LAKE_TEST_PYTHON") else {
        return;
    };
    let mut cmd = std::process::Command::new(python);
    cmd.args(["-c", PYICEBERG_READ, &lake.url, &expected.to_string()]);
    if let Some((key, secret)) = &s3 {
        cmd.env("S3_KEY", key).env("S3_SECRET", secret);
    }
    let out = cmd.output().expect("python");
    assert!(
        out.status.success(),
        "PyIceberg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        seen["namespaces"],
        json!(["archive", "curated", "processed", "raw"]),
        "{seen}"
    );
    assert_eq!(
        seen["tables"]["processed"],
        json!(["expression", "samples"])
    );
    assert_eq!(seen["tables"]["raw"], json!(["assay_plates"]));
    assert_eq!(seen["tables"]["curated"], json!(["samples"]));
    assert_eq!(seen["tables"]["archive"], json!(["samples"]));
    let scheme = if s3.is_some() { "s3" } else { "file" };
    for (ident, rows) in [
        ("raw.assay_plates", 3),
        ("processed.samples", 3),
        ("processed.expression", 1),
        ("curated.samples", 3),
        ("archive.samples", 3),
    ] {
        let scan = &seen["scans"][ident];
        assert_eq!(scan["rows"], rows, "{ident}: {scan}");
        assert_eq!(scan["equal"], true, "{ident}: {scan}");
        assert_eq!(scan["duckdb"]["rows"], rows, "{ident}: {scan}");
        assert_eq!(scan["location"], scheme, "{ident}: {scan}");
    }
    let samples = &seen["scans"]["processed.samples"];
    assert_eq!(samples["snapshots"], 2, "{samples}");
    assert_eq!(samples["columns"], json!(["sample_id", "tissue", "age"]));
    assert_eq!(
        (&samples["v1_rows"], &samples["v1_equal"]),
        (&json!(2), &json!(true)),
        "{samples}"
    );
    assert_eq!(seen["scans"]["curated.samples"]["snapshots"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiceberg_reads_every_layer_on_the_local_store() {
    let (_server, url, _dir) = crate::walkthrough::start(&[]);
    every_layer_read_by_pyiceberg(url, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiceberg_reads_every_layer_on_postgres_and_garage() {
    let Some(envs) = tokio::task::spawn_blocking(crate::walkthrough::production_envs)
        .await
        .expect("envs")
    else {
        return;
    };
    let key = envs
        .iter()
        .find(|(k, _)| k == "LAKE_STORAGE__S3__ACCESS_KEY_ID")
        .map(|(_, v)| v.clone())
        .expect("key");
    let secret = envs
        .iter()
        .find(|(k, _)| k == "LAKE_STORAGE__S3__SECRET_ACCESS_KEY")
        .map(|(_, v)| v.clone())
        .expect("secret");
    let (_server, url, _dir) = crate::walkthrough::start(&envs);
    every_layer_read_by_pyiceberg(url, Some((key, secret))).await;
}

/// A new table version is described for engines when it is made, before any engine asks; a
/// scan report is taken (204) and anything else is refused in the spec's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_is_described_when_it_is_made() {
    use axum::http::Method;
    let plugins = crate::plugins::open(&crate::plugins::shared_cache());
    let t = crate::http_api::embedded_with(1 << 30, Some(plugins)).await;
    let (s, v) = t
        .call(
            Method::POST,
            "/catalog",
            Some(json!({"name": "plates", "source": "reader", "layer": "processed"})),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let id: lake_host::catalog::DatasetId = v["id"].as_str().expect("id").parse().expect("id");
    let req = axum::http::Request::builder()
        .method(Method::PUT)
        .uri(format!("/catalog/{id}/files/plates.parquet"))
        .body(axum::body::Body::from(plates_parquet()))
        .expect("request");
    let (s, v) = t.send(req).await;
    assert!(s.is_success(), "{v}");
    // A registered file is a version too once the catalog names its chain; an upload's table is
    // described without any load.
    let req = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/files/upload?filename=samples.csv")
        .body(axum::body::Body::from("sample_id,tissue\nS1,liver\n"))
        .expect("request");
    let (s, v) = t.send(req).await;
    assert!(s.is_success(), "{v}");
    let table: lake_host::catalog::DatasetId = v["dataset_ids"]["table"]
        .as_str()
        .expect("table")
        .parse()
        .expect("id");
    let d = t.lake.catalog().get_dataset(table).await.expect("dataset");
    let mut described = Vec::new();
    for _ in 0..100 {
        described = t
            .lake
            .blobs()
            .list(&d.bucket, &format!("{}metadata/", d.prefix))
            .await
            .expect("list");
        if described.iter().any(|o| o.key.ends_with(".metadata.json")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let keys: Vec<&str> = described.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        (
            keys.iter().filter(|k| k.ends_with("-m0.avro")).count(),
            keys.iter().filter(|k| k.contains("/snap-")).count(),
            keys.iter()
                .filter(|k| k.ends_with(".metadata.json"))
                .count(),
        ),
        (1, 1, 1),
        "{keys:?}"
    );
    // The load answers with the metadata written then.
    let (s, v) = t
        .call(
            Method::GET,
            "/iceberg/v1/namespaces/processed/tables/samples",
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let location = v["metadata-location"].as_str().expect("location");
    assert!(
        keys.iter().any(|k| location.ends_with(k)),
        "{location} is not one of {keys:?}"
    );
    assert_eq!(v["metadata"]["format-version"], 2);
    assert_eq!(v["metadata"]["refs"]["version-1"]["type"], "tag");
    // Deleting the version deletes its description.
    let (s, v) = t
        .call(
            Method::DELETE,
            &format!("/catalog/{table}?reason=superseded"),
            None,
        )
        .await;
    assert!(s.is_success(), "{v}");
    let left = t
        .lake
        .blobs()
        .list(&d.bucket, &format!("{}metadata/", d.prefix))
        .await
        .expect("list");
    assert!(left.is_empty(), "{left:?}");
    let (s, v) = t
        .call(
            Method::GET,
            "/iceberg/v1/namespaces/processed/tables/samples",
            None,
        )
        .await;
    assert_eq!(
        (s.as_u16(), &v["error"]["type"]),
        (404, &json!("NoSuchTableException")),
        "{v}"
    );

    // Scan reports.
    let metrics = "/iceberg/v1/namespaces/processed/tables/plates/metrics";
    let report = json!({"report-type": "scan-report", "table-name": "processed.plates",
        "snapshot-id": 1, "filter": true, "schema-id": 0, "projected-field-ids": [1],
        "projected-field-names": ["well"], "metrics": {}});
    let (s, v) = t.call(Method::POST, metrics, Some(report)).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = t.call(Method::POST, metrics, Some(json!({"x": 1}))).await;
    assert_eq!(
        (s.as_u16(), &v["error"]["type"]),
        (400, &json!("BadRequestException")),
        "{v}"
    );
    let (s, v) = t
        .call(
            Method::POST,
            "/iceberg/v1/namespaces/processed/tables/nothing/metrics",
            Some(json!({"report-type": "scan-report"})),
        )
        .await;
    assert_eq!(s, 404, "{v}");
}
