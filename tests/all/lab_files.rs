//! Lab files as peers read them, through the real `lake` binary: compressed (gzip, bzip2, xz, zstd)
//! and UTF-16 CSVs give the same table as the plain file; headers with empty or repeated names are
//! stored under unique names, with the renames recorded; CSV errors name their line on both upload
//! routes; and every Parquet object written here opens in pyarrow, Polars and DuckDB with the row
//! count the catalog records.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use arrow_array::RecordBatch;
use serde_json::{Value, json};

use crate::walkthrough::repo_root;

/// Every CSV fixture under `../shared/fixtures/csv`, recursively, sorted.
fn csv_fixtures() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "csv") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo_root().join("../shared/fixtures/csv"), &mut out);
    out.sort();
    assert!(out.len() > 10, "the CSV fixtures are beside the repository");
    out
}

/// `bytes` through a command-line compressor (`gzip -c`, ...).
fn compress(tool: &str, bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(tool)
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool} is needed (tests/run.sh installs it): {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("compressor output");
    writer
        .join()
        .expect("writer")
        .expect("write to the compressor");
    assert!(out.status.success(), "{tool} failed");
    out.stdout
}

/// The file's text: UTF-8 (a BOM dropped), or Latin-1 when it is not UTF-8.
fn text_of(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
    let mut out = if big_endian {
        vec![0xFE, 0xFF]
    } else {
        vec![0xFF, 0xFE]
    };
    for unit in text.encode_utf16() {
        out.extend_from_slice(&if big_endian {
            unit.to_be_bytes()
        } else {
            unit.to_le_bytes()
        });
    }
    out
}

struct Lake {
    url: String,
    dir: tempfile::TempDir,
    _server: crate::walkthrough::Server,
    http: reqwest::Client,
}

impl Lake {
    fn start() -> Self {
        let (server, url, dir) = crate::walkthrough::start(&[]);
        Self {
            url,
            dir,
            _server: server,
            http: reqwest::Client::new(),
        }
    }

    async fn upload(&self, name: &str, bytes: Vec<u8>) -> Value {
        let r = self
            .http
            .post(format!("{}/files/upload", self.url))
            .query(&[("filename", name)])
            .body(bytes)
            .send()
            .await
            .expect("upload");
        let status = r.status();
        let v: Value = r.json().await.expect("json");
        assert!(status.is_success(), "{name}: {status} {v}");
        v
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    async fn post(&self, path: &str, body: Value) -> (reqwest::StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("post");
        (r.status(), r.json().await.expect("json"))
    }

    /// The path of a table dataset's one Parquet object on the local store.
    async fn table_file(&self, table_id: &str) -> PathBuf {
        let d = self.get(&format!("/catalog/{table_id}")).await;
        let files = self.get(&format!("/catalog/{table_id}/files")).await;
        let name = files[0]["name"].as_str().expect("file name");
        assert!(name.ends_with(".parquet"), "{files}");
        let bucket = d["bucket"].as_str().unwrap_or("lake-processed");
        let prefix = d["prefix"].as_str().expect("prefix");
        self.dir
            .path()
            .join("lake-data/objects")
            .join(bucket)
            .join(format!("{prefix}{name}"))
    }

    async fn table(&self, table_id: &str) -> Vec<RecordBatch> {
        let path = self.table_file(table_id).await;
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        lake_host::tables::read_parquet(bytes::Bytes::from(bytes))
            .expect("read the table")
            .batches
    }
}

/// The batches as one, so tables cut into batches differently compare equal.
fn concat(batches: &[RecordBatch]) -> Option<RecordBatch> {
    let first = batches.first()?;
    Some(arrow_select::concat::concat_batches(&first.schema(), batches).expect("concat"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_and_utf16_csvs_give_the_plain_files_table() {
    let lake = Lake::start();
    let forms: [(&str, &str); 6] = [
        ("gz", "gzip"),
        ("bz2", "bzip2"),
        ("xz", "xz"),
        ("zst", "zstd"),
        ("utf16le", ""),
        ("utf16be", ""),
    ];
    let mut checked = 0;
    for path in csv_fixtures() {
        let plain = std::fs::read(&path).expect("fixture");
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        let want = lake.upload(name, plain.clone()).await;
        let want_table = match want["dataset_ids"]["table"].as_str() {
            Some(t) => Some(lake.table(t).await),
            None => None,
        };
        for (ext, tool) in forms {
            let (form_name, bytes) = match ext {
                "utf16le" => (name.to_owned(), utf16(&text_of(&plain), false)),
                "utf16be" => (name.to_owned(), utf16(&text_of(&plain), true)),
                _ => (format!("{name}.{ext}"), compress(tool, &plain)),
            };
            let got = lake.upload(&form_name, bytes).await;
            let what = format!("{} as {ext}", path.display());
            let encoding = if tool.is_empty() { "utf-16" } else { tool };
            assert_eq!(got["encoding"], encoding, "{what}: {got}");
            assert_eq!(got["rows"], want["rows"], "{what}: {got}");
            assert_eq!(got["schema"], want["schema"], "{what}: {got}");
            assert_eq!(
                got["parse_error"]["message"], want["parse_error"]["message"],
                "{what}: {got}"
            );
            if let Some(want_table) = &want_table {
                let t = got["dataset_ids"]["table"].as_str().expect("a table");
                let table = lake.table(t).await;
                assert_eq!(concat(&table), concat(want_table), "{what}");
                let files = lake.get(&format!("/catalog/{t}/files")).await;
                assert!(
                    !files[0]["name"].as_str().unwrap_or("").contains(".csv"),
                    "the table of {form_name} is named after its stem: {files}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 6 * 10, "{checked} forms checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_repeated_headers_are_stored_under_unique_names() {
    let lake = Lake::start();
    let v = lake
        .upload(
            "plate.csv",
            b"well,,od,od,\nA1,x,0.5,0.7,1\nA2,y,0.6,0.8,2\n".to_vec(),
        )
        .await;
    let names: Vec<&str> = v["schema"]
        .as_array()
        .expect("schema")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["well", "column_2", "od", "od_2", "column_5"], "{v}");
    assert_eq!(
        v["renamed_columns"],
        json!([
            {"position": 2, "from": "", "to": "column_2"},
            {"position": 4, "from": "od", "to": "od_2"},
            {"position": 5, "from": "", "to": "column_5"}
        ]),
        "{v}"
    );
    let file = lake
        .get(&format!("/files/{}", v["file_id"].as_str().expect("id")))
        .await;
    assert_eq!(
        file["renamed_columns"], v["renamed_columns"],
        "kept in the file record"
    );

    // The same through a pipeline run: the output dataset's metadata names the renames.
    let raw = v["dataset_ids"]["raw"].as_str().expect("raw");
    let (status, run) = lake
        .post("/pipelines/run", json!({"plugin": "csv", "inputs": [raw]}))
        .await;
    assert!(status.is_success(), "{run}");
    let out = lake
        .get(&format!(
            "/catalog/{}",
            run["output"].as_str().expect("output")
        ))
        .await;
    assert_eq!(
        out["metadata"]["renamed_columns"], v["renamed_columns"],
        "{out}"
    );
    let stored: Vec<&str> = out["metadata"]["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(stored, ["well", "column_2", "od", "od_2", "column_5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_errors_name_their_line_on_both_routes() {
    let lake = Lake::start();
    // Invalid UTF-8 early in a file makes the upload read it as Latin-1 (what such files usually
    // are), so the bad bytes come after a head of valid lines.
    let mut late_bad_utf8 = b"id,name\n".to_vec();
    for i in 0..3000 {
        late_bad_utf8.extend_from_slice(format!("{i},a valid name of some length\n").as_bytes());
    }
    late_bad_utf8.extend_from_slice(b"3000,caf\xC3\x28\n3001,fine\n");
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("utf8.csv", late_bad_utf8, "line 3002, field 2"),
        (
            "fields.csv",
            b"id,name\n1,ok\n2,two,extra\n".to_vec(),
            "line 3",
        ),
        ("quote.csv", b"id,name\n1,ok\n2,\"open\n".to_vec(), "line 3"),
    ];
    for (name, bytes, line) in cases {
        let v = lake.upload(name, bytes.clone()).await;
        let message = v["parse_error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(line), "upload of {name}: {v}");

        let (_, d) = lake
            .post("/catalog", json!({"name": name, "source": "upload"}))
            .await;
        let id = d["id"].as_str().expect("id");
        let put = lake
            .http
            .put(format!("{}/catalog/{id}/files/{name}", lake.url))
            .body(bytes)
            .send()
            .await
            .expect("put");
        assert!(put.status().is_success());
        let (status, run) = lake
            .post(
                "/pipelines/run",
                json!({"plugin": "csv", "inputs": [id], "params": {"encoding": "utf-8"}}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{run}");
        let message = run["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(line), "pipeline run of {name}: {run}");
    }
}

/// Reads each Parquet file with pyarrow, Polars and DuckDB; prints one JSON line per file.
const READ_WITH_PEERS: &str = r#"
import json, sys
import pyarrow.parquet as pq, polars as pl, duckdb
for path in sys.argv[1:]:
    out = {"path": path}
    try:
        out["pyarrow"] = pq.read_table(path).num_rows
    except Exception as e:
        out["pyarrow"] = "error: %s" % e
    try:
        out["polars"] = pl.read_parquet(path).height
    except Exception as e:
        out["polars"] = "error: %s" % e
    try:
        out["duckdb"] = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [path]).fetchall()[0][0]
    except Exception as e:
        out["duckdb"] = "error: %s" % e
    print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_parquet_object_reads_in_pyarrow_polars_and_duckdb() {
    let Some(python) = crate::service_var("LAKE_TEST_PYTHON") else {
        return;
    };
    let lake = Lake::start();
    // (table dataset, rows the catalog records)
    let mut tables: Vec<(String, u64)> = Vec::new();
    let mut uploads = Vec::new();
    for path in csv_fixtures() {
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        uploads.push((name.to_owned(), std::fs::read(&path).expect("fixture")));
    }
    let xlsx_dir = repo_root().join("../shared/fixtures/xlsx");
    for e in std::fs::read_dir(&xlsx_dir)
        .expect("xlsx fixtures")
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "xlsx") {
            let name = p.file_name().and_then(|n| n.to_str()).expect("name");
            uploads.push((name.to_owned(), std::fs::read(&p).expect("fixture")));
        }
    }
    uploads.push((
        "plate.csv".into(),
        b"well,,od,od\nA1,x,0.5,0.7\nA2,y,0.6,0.8\n".to_vec(),
    ));
    uploads.push((
        "samples.csv.gz".into(),
        compress(
            "gzip",
            &std::fs::read(repo_root().join("tests/fixtures/samples.csv")).expect("fixture"),
        ),
    ));
    uploads.push((
        "expression.csv".into(),
        std::fs::read(repo_root().join("tests/fixtures/expression.csv")).expect("fixture"),
    ));
    let mut ids = std::collections::BTreeMap::new();
    for (name, bytes) in uploads {
        let v = lake.upload(&name, bytes).await;
        if let (Some(t), Some(rows)) = (v["dataset_ids"]["table"].as_str(), v["rows"].as_u64()) {
            tables.push((t.to_owned(), rows));
            ids.insert(name, v["file_id"].as_str().expect("id").to_owned());
        }
    }
    // A merge saved as Parquet, and a step's output.
    let merge = lake
        .get(&format!(
            "/files/merge?file_id_1={}&file_id_2={}&on=sample_id&how=left",
            ids["expression.csv"], ids["samples.csv.gz"]
        ))
        .await;
    let (status, saved) = lake
        .post(
            "/files/save_merged",
            json!({"cache_key": merge["cache_key"], "name": "expression with samples"}),
        )
        .await;
    assert!(status.is_success(), "{saved}");
    tables.push((
        saved["dataset_id"].as_str().expect("saved").to_owned(),
        merge["rows"].as_u64().expect("rows"),
    ));
    let saved_id = saved["dataset_id"].as_str().expect("saved");
    let (status, run) = lake
        .post(
            "/pipelines/run",
            json!({"plugin": "select", "inputs": [saved_id], "params": {"columns": ["sample_id", "gene"]}}),
        )
        .await;
    assert!(status.is_success(), "{run}");
    tables.push((
        run["output"].as_str().expect("output").to_owned(),
        run["details"]["rows"].as_u64().expect("rows"),
    ));

    let mut paths = Vec::new();
    for (t, _) in &tables {
        paths.push(lake.table_file(t).await);
    }
    let out = Command::new(&python)
        .arg("-c")
        .arg(READ_WITH_PEERS)
        .args(&paths)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), tables.len());
    for ((t, rows), line) in tables.iter().zip(&lines) {
        for reader in ["pyarrow", "polars", "duckdb"] {
            assert_eq!(
                line[reader].as_u64(),
                Some(*rows),
                "table {t}: {reader} read {line}"
            );
        }
    }
    assert!(tables.len() > 20, "{} tables checked", tables.len());
}
