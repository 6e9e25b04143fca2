//! Collections and `lake ingest` (issue 5): the shipped example config run by the `lake` binary
//! against local stand-ins for GEO, UniProt and E-utilities that serve the recorded upstream files;
//! lineage from every parsed table back to the raw bytes and the components' SHA-256; collections
//! as jobs over HTTP (unchanged content recognised, changed content a new linked version, a refused
//! host in provenance, bad requests answered 4xx); scheduled sources once across replicas.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{Method, StatusCode};
use lake_host::catalog::{Catalog, DatasetId, JobStatus};
use lake_host::config::{PluginOverride, PluginsConfig, SourceConfig};
use lake_host::lake::Lake;
use lake_host::provenance::Action;
use serde_json::{Value, json};

use crate::plugins::{shared, shared_cache};
use crate::sources::{eutils_upstream, geo_upstream, serve, uniprot_upstream};

fn lake_cli(config: &Path, args: &[&str]) -> (bool, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lake"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("LAKE_CONFIG")
        .env("LAKE_LOG", "warn")
        .output()
        .expect("run lake");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    lake_host::blob::Sha256::of(bytes).to_hex()
}

async fn bytes_of(lake: &Lake, id: DatasetId, name: &str) -> Vec<u8> {
    use futures::TryStreamExt;
    match lake.download(id, name).await.expect("download") {
        lake_host::lake::Download::Stream { body, .. } => body
            .try_fold(Vec::new(), |mut acc, b| async move {
                acc.extend_from_slice(&b);
                Ok(acc)
            })
            .await
            .expect("read"),
        other => panic!("expected a stream, got {other:?}"),
    }
}

/// The strings of column `name` over every batch of a stored table.
async fn column(lake: &Lake, table: DatasetId, name: &str) -> Vec<String> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    let bytes = bytes_of(lake, table, "table.parquet").await;
    let t = lake_host::tables::read_parquet(bytes.into()).expect("parquet");
    let i = t.schema.index_of(name).expect("column");
    let mut out = Vec::new();
    for b in &t.batches {
        let col = b.column(i);
        if let Some(s) = col.as_string_opt::<i32>() {
            out.extend(s.iter().map(|v| v.unwrap_or_default().to_owned()));
        } else if let Some(l) = col.as_list_opt::<i32>() {
            for r in 0..l.len() {
                let v = l.value(r);
                out.extend(
                    v.as_string::<i32>()
                        .iter()
                        .map(|v| v.unwrap_or_default().to_owned()),
                );
            }
        } else {
            panic!("column {name} is neither text nor a list of text");
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_ingests_and_traces_every_table_to_its_raw_bytes() {
    let (geo, geo_seen) = geo_upstream().await;
    let (uniprot, uniprot_seen) = uniprot_upstream().await;
    let (eutils, eutils_seen) = eutils_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");

    // The shipped example, pointed at the stand-ins and a scratch lake; nothing else changes.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ingest.toml");
    let mut cfg: toml::Table = std::fs::read_to_string(example)
        .expect("example")
        .parse()
        .expect("the example is TOML");
    let overrides = cfg["plugins"]["overrides"]
        .as_table()
        .expect("overrides")
        .clone();
    assert_eq!(
        overrides.keys().collect::<Vec<_>>(),
        ["geo", "ncbi", "uniprot"]
    );
    let local = |plugin: &str| match plugin {
        "geo" => (format!("http://{geo}"), format!("http://{geo}/geo")),
        "uniprot" => (format!("http://{uniprot}"), format!("http://{uniprot}")),
        "ncbi" => (
            format!("http://{eutils}"),
            format!("http://{eutils}/entrez/eutils"),
        ),
        other => panic!("unexpected plugin {other}"),
    };
    let plugins = cfg["plugins"].as_table_mut().expect("plugins");
    for (name, rules) in plugins["overrides"]
        .as_table_mut()
        .expect("overrides")
        .iter_mut()
    {
        rules["hosts"] = toml::Value::Array(vec![local(name).0.into()]);
    }
    plugins.insert(
        "cache_dir".into(),
        shared_cache().to_string_lossy().into_owned().into(),
    );
    plugins.insert(
        "dir".into(),
        dir.path()
            .join("plugins")
            .to_string_lossy()
            .into_owned()
            .into(),
    );
    for src in cfg["sources"].as_array_mut().expect("sources") {
        let plugin = src["plugin"].as_str().expect("plugin").to_owned();
        let params = src["params"].as_table_mut().expect("params");
        params.insert("base_url".into(), local(&plugin).1.into());
        if plugin == "geo" {
            params.insert("download_url".into(), local(&plugin).1.into());
        }
    }
    let mut catalog = toml::Table::new();
    catalog.insert(
        "url".into(),
        format!("sqlite:{}", dir.path().join("catalog.db").display()).into(),
    );
    cfg.insert("catalog".into(), catalog.into());
    let mut storage = toml::Table::new();
    let mut local_store = toml::Table::new();
    local_store.insert(
        "root".into(),
        dir.path()
            .join("objects")
            .to_string_lossy()
            .into_owned()
            .into(),
    );
    storage.insert("local".into(), local_store.into());
    cfg.insert("storage".into(), storage.into());
    let config = dir.path().join("lake.toml");
    std::fs::write(&config, toml::to_string(&cfg).expect("toml")).expect("write");

    // A dry run plans every source and asks no upstream anything.
    let (ok, plans, err) = lake_cli(&config, &["ingest", "--dry-run"]);
    assert!(ok, "{err}");
    let names: Vec<&str> = plans.iter().filter_map(|p| p["source"].as_str()).collect();
    assert_eq!(
        names,
        [
            "gse105845",
            "gsm804",
            "gse285754-matrix",
            "ptprc-family",
            "covid19-papers"
        ]
    );
    assert_eq!(plans[4]["params"]["term"], "covid-19");
    assert_eq!(plans[0]["hosts_granted"], json!([format!("http://{geo}")]));
    assert!(geo_seen.lock().expect("lock").is_empty());
    assert!(uniprot_seen.lock().expect("lock").is_empty());
    assert!(eutils_seen.lock().expect("lock").is_empty());

    let (ok, lines, err) = lake_cli(&config, &["ingest"]);
    assert!(ok, "{lines:?}\n{err}");
    assert_eq!(lines.len(), 5, "{lines:?}");
    for l in &lines {
        assert_eq!(l["status"], "succeeded", "{l}");
        assert_eq!(l["result"]["outcome"], "new", "{l}");
        assert_eq!(l["result"]["version"], 1, "{l}");
        for p in l["result"]["parsed"].as_array().expect("parsed") {
            assert_eq!(p["status"], "succeeded", "{p}");
        }
    }
    let parsed = |i: usize| {
        lines[i]["result"]["parsed"]
            .as_array()
            .expect("parsed")
            .clone()
    };
    assert_eq!(parsed(0).len(), 1, "the family SOFT's attributes");
    assert_eq!(parsed(1).len(), 1, "the old record's data table");
    assert_eq!(parsed(2).len(), 2, "the matrix's samples and values");
    assert_eq!(parsed(3).len(), 2, "one table per search page");
    assert_eq!(parsed(4).len(), 1, "one efetch batch");
    // NCBI's credentials were added by the host, not the plugin, and are on the wire only.
    let wire = eutils_seen.lock().expect("lock").clone();
    assert!(
        wire.iter().all(|r| r.contains("tool=our-lab-lake")),
        "{wire:?}"
    );

    // Lineage, in-process over the same catalog and store.
    let mut loaded = lake_host::config::load(Some(&config), &[], &Default::default())
        .expect("the written config loads");
    loaded.catalog.auto_migrate = false;
    let lake = Lake::open(&loaded).await.expect("open");
    let plugins = lake_host::plugins::Plugins::open(&loaded.plugins).expect("plugins");
    let lake = lake.with_plugins(plugins.clone());
    let sha_of = |name: &str| plugins.get(name).expect("bundled").sha256;

    let fixtures = [
        (
            0,
            "GSE105845.soft",
            "geo/GSE105845_family.soft",
            "geo",
            "geo-soft",
        ),
        (1, "GSM804.soft", "geo/GSE16.txt", "geo", "geo-soft"),
        (
            2,
            "GSE285754_series_matrix.txt.gz",
            "../main/plugins/geo-matrix/fixtures/GSE285754_series_matrix.txt.gz",
            "geo",
            "geo-matrix",
        ),
        (4, "efetch-0001.xml", "pubmed/pubmed1.xml", "ncbi", "pubmed"),
    ];
    for (line, file, fixture, connector, parser) in fixtures {
        let raw: DatasetId = lines[line]["result"]["dataset_id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid");
        // The raw bytes are the upstream's, untouched, with their SHA-256 in the catalog.
        let upstream = if let Some(in_repo) = fixture.strip_prefix("../main/") {
            std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(in_repo),
            )
        } else {
            std::fs::read(shared().join("fixtures").join(fixture))
        }
        .expect("fixture");
        let files = lake.dataset_files(raw).await.expect("files");
        let rec = files
            .iter()
            .find(|f| f.name == file)
            .expect("collected file");
        assert_eq!(rec.sha256, sha256_hex(&upstream));
        assert_eq!(bytes_of(&lake, raw, file).await, upstream);
        let d = lake.get_dataset(raw).await.expect("raw");
        assert_eq!(d.layer, lake_host::layers::Layer::Raw);
        assert!(d.prefix.starts_with(&format!(
            "{connector}/{}/",
            d.external_id.as_deref().unwrap_or_default()
        )));

        for p in parsed(line) {
            if p["file"] != file {
                continue;
            }
            let table: DatasetId = p["dataset_id"]
                .as_str()
                .expect("table")
                .parse()
                .expect("uuid");
            let lineage = lake
                .lineage(table, lake_host::identity::Visibility::ALL)
                .await
                .expect("lineage");
            assert_eq!(
                lineage.ancestors,
                vec![raw],
                "the table comes from the raw dataset"
            );
            let pipeline = lineage
                .entries
                .iter()
                .find(|e| e.action == Action::Pipeline && e.outputs == vec![table])
                .expect("pipeline entry");
            assert_eq!(pipeline.inputs, vec![raw]);
            assert_eq!(pipeline.parameters["plugin"], parser);
            assert_eq!(pipeline.parameters["component_sha256"], sha_of(parser));
            assert_eq!(pipeline.parameters["input_file"], file);
            let collection = lineage
                .entries
                .iter()
                .find(|e| e.action == Action::Collection && e.outputs == vec![raw])
                .expect("collection entry");
            assert_eq!(collection.parameters["plugin"], connector);
            assert_eq!(collection.parameters["component_sha256"], sha_of(connector));
            let requests = collection.parameters["requests"]
                .as_array()
                .expect("requests");
            assert!(!requests.is_empty());
            assert!(requests.iter().all(|r| r["status"] == 200), "{requests:?}");
            let files = d.metadata["files"].as_array().expect("files in metadata");
            assert!(files.iter().any(|f| f["sha256"] == rec.sha256));
        }
    }

    // The tables hold what the files say (read by hand from the fixtures).
    let table_of = |line: usize, which: usize| -> DatasetId {
        parsed(line)[which]["dataset_id"]
            .as_str()
            .expect("table")
            .parse()
            .expect("uuid")
    };
    let values = column(&lake, table_of(0, 0), "values").await;
    assert!(
        values.iter().any(|v| v == "GSM2828511") && values.iter().any(|v| v == "GSM2828512"),
        "the series' sample ids"
    );
    let spots = column(&lake, table_of(1, 0), "ID_REF").await;
    assert_eq!(spots.first().map(String::as_str), Some("1"));
    assert_eq!(spots.get(19).map(String::as_str), Some("20"));
    assert!(
        column(&lake, table_of(1, 0), "id")
            .await
            .iter()
            .all(|i| i == "GSM804")
    );
    let samples = column(&lake, table_of(2, 0), "sample").await;
    assert_eq!(samples.len(), 18);
    assert_eq!(samples[0], "GSM8708195");
    assert_eq!(
        column(&lake, table_of(2, 0), "title").await[0],
        "AD-Veh-rep1"
    );
    let matrix_ids = column(&lake, table_of(2, 1), "ID_REF").await;
    assert_eq!(matrix_ids.len(), 757);
    let mut accessions = column(&lake, table_of(3, 0), "accession").await;
    accessions.extend(column(&lake, table_of(3, 1), "accession").await);
    assert_eq!(accessions.len(), 8, "eight entries over two pages");
    assert_eq!(
        column(&lake, table_of(4, 0), "pmid").await,
        ["12091962", "9997"]
    );

    // Ingesting again: the same bytes are recognised, nothing new is stored or parsed.
    let before = lake.stats().await.expect("stats").total_datasets;
    let (ok, again, err) = lake_cli(&config, &["ingest"]);
    assert!(ok, "{again:?}\n{err}");
    for (l, first) in again.iter().zip(&lines) {
        assert_eq!(l["result"]["outcome"], "unchanged", "{l}");
        assert_eq!(l["result"]["dataset_id"], first["result"]["dataset_id"]);
        for p in l["result"]["parsed"].as_array().expect("parsed") {
            assert_eq!(p["status"], "skipped", "{p}");
        }
    }
    assert_eq!(lake.stats().await.expect("stats").total_datasets, before);

    // One source by name; an unknown one is refused with the list.
    let (ok, one, _) = lake_cli(&config, &["ingest", "--source", "covid19-papers"]);
    assert!(ok);
    assert_eq!(one.len(), 1);
    let (ok, _, err) = lake_cli(&config, &["ingest", "--source", "nope"]);
    assert!(!ok);
    assert!(err.contains("gse105845"), "{err}");
}

/// A stand-in for rest.uniprot.org whose one entry changes when `version` does.
async fn changing_upstream(version: Arc<AtomicUsize>) -> std::net::SocketAddr {
    use axum::extract::State;
    use axum::http::header;
    use axum::response::IntoResponse;
    async fn entry(State(v): State<Arc<AtomicUsize>>) -> axum::response::Response {
        let v = v.load(Ordering::SeqCst);
        (
            [
                (
                    header::CONTENT_TYPE,
                    "text/plain;format=flatfile".to_owned(),
                ),
                (header::ETAG, format!("\"p99999-v{v}\"")),
            ],
            format!("ID   TEST_HUMAN              Reviewed;         {v} AA.\nAC   P99999;\n//\n"),
        )
            .into_response()
    }
    serve(
        axum::Router::new()
            .route("/uniprotkb/P99999.txt", axum::routing::get(entry))
            .with_state(version),
    )
    .await
}

async fn finished(t: &crate::http_api::TestLake, id: &str) -> Value {
    for _ in 0..600 {
        let (s, job) = t
            .call(Method::GET, &format!("/collections/{id}"), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{job}");
        if job["status"] == "succeeded" || job["status"] == "failed" {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("collection {id} did not finish");
}

async fn start(t: &crate::http_api::TestLake, body: Value) -> Value {
    let (s, job) = t.call(Method::POST, "/collections", Some(body)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert!(
        job["status"] == "queued" || job["status"] == "running",
        "{job}"
    );
    finished(t, job["id"].as_str().expect("id")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_are_jobs_that_version_changes_and_record_refusals() {
    let version = Arc::new(AtomicUsize::new(1));
    let addr = changing_upstream(version.clone()).await;
    let cfg = PluginsConfig {
        cache_dir: shared_cache(),
        dir: shared_cache().join("none"),
        overrides: [(
            "uniprot".to_owned(),
            PluginOverride {
                hosts: vec![format!("http://{addr}")],
                ..Default::default()
            },
        )]
        .into(),
        ..PluginsConfig::default()
    };
    let plugins = lake_host::plugins::Plugins::open(&cfg).expect("plugins");
    let t = crate::http_api::embedded_with(1 << 30, Some(plugins)).await;
    let body = json!({
        "source": "uniprot",
        "external_id": "P99999",
        "params": {"accessions": ["P99999"], "base_url": format!("http://{addr}")},
        "tags": ["test"],
    });

    let first = start(&t, body.clone()).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let r1 = &first["result"];
    assert_eq!(r1["outcome"], "new");
    assert_eq!(r1["version"], 1);
    assert_eq!(r1["files"][0]["name"], "P99999.txt");
    assert_eq!(r1["files"][0]["facts"]["etag"], "\"p99999-v1\"");
    let id1 = r1["dataset_id"].as_str().expect("id").to_owned();
    let (_, d1) = t.call(Method::GET, &format!("/catalog/{id1}"), None).await;
    assert_eq!(d1["layer"], "raw");
    assert_eq!(d1["source"], "uniprot");
    assert_eq!(d1["external_id"], "P99999");
    assert_eq!(d1["tags"], json!(["test"]));
    assert_eq!(d1["metadata"]["upstream"]["etag"], "\"p99999-v1\"");
    assert!(
        d1["prefix"]
            .as_str()
            .expect("prefix")
            .starts_with("uniprot/P99999/")
    );

    // The same bytes again: recognised, recorded, nothing new stored.
    let same = start(&t, body.clone()).await;
    assert_eq!(same["result"]["outcome"], "unchanged", "{same}");
    assert_eq!(same["result"]["dataset_id"], id1.as_str());
    let (_, page) = t.call(Method::GET, "/catalog?source=uniprot", None).await;
    assert_eq!(page["items"].as_array().expect("items").len(), 1);

    // Changed upstream: a new dataset, version 2, linked to the first.
    version.store(2, Ordering::SeqCst);
    let changed = start(&t, body.clone()).await;
    let r2 = &changed["result"];
    assert_eq!(r2["outcome"], "changed", "{changed}");
    assert_eq!(r2["version"], 2);
    assert_eq!(r2["previous"], id1.as_str());
    let id2 = r2["dataset_id"].as_str().expect("id");
    assert_ne!(id2, id1);
    let (_, d2) = t.call(Method::GET, &format!("/catalog/{id2}"), None).await;
    assert_eq!(
        d2["metadata"]["previous_version"]["dataset_id"],
        id1.as_str()
    );
    assert_eq!(d2["metadata"]["version"], "2");
    // The first version is untouched.
    let (_, files1) = t
        .call(Method::GET, &format!("/catalog/{id1}/files"), None)
        .await;
    assert_eq!(files1[0]["sha256"], r1["files"][0]["sha256"]);
    assert_ne!(files1[0]["sha256"], r2["files"][0]["sha256"]);
    // Three collections of P99999 in provenance: new, unchanged, new version.
    let (_, prov) = t
        .call(Method::GET, &format!("/provenance/{id1}"), None)
        .await;
    let statuses: Vec<&str> = prov["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "collection")
        .filter_map(|e| e["parameters"]["status"].as_str())
        .collect();
    assert_eq!(statuses, ["succeeded", "unchanged"], "{prov}");

    // A connector asking for a host it was not granted: refused, and the refusal is recorded.
    let refused = start(
        &t,
        json!({"source": "ncbi", "external_id": "refused",
               "params": {"db": "pubmed", "ids": ["1"], "base_url": format!("http://{addr}/eutils")}}),
    )
    .await;
    assert_eq!(refused["status"], "failed", "{refused}");
    assert_eq!(refused["result"]["code"], "capability_denied", "{refused}");
    let entry: uuid::Uuid = refused["result"]["entry_id"]
        .as_str()
        .expect("entry")
        .parse()
        .expect("uuid");
    let e = t.lake.catalog().entry(entry).await.expect("recorded");
    assert_eq!(e.action, Action::Collection);
    assert_eq!(e.parameters["status"], "failed");
    assert!(e.outputs.is_empty());
    let req = &e.parameters["requests"][0];
    assert!(
        req["url"].as_str().expect("url").contains("esearch.fcgi")
            || req["url"].as_str().expect("url").contains("efetch.fcgi"),
        "{req}"
    );
    assert!(
        req["error"].as_str().expect("error").starts_with("denied"),
        "{req}"
    );
    let (_, page) = t.call(Method::GET, "/catalog?source=ncbi", None).await;
    assert!(
        page["items"].as_array().expect("items").is_empty(),
        "nothing stored"
    );

    // Jobs are listed newest first.
    let (s, jobs) = t.call(Method::GET, "/collections?limit=10", None).await;
    assert_eq!(s, StatusCode::OK);
    let jobs = jobs.as_array().expect("jobs");
    assert_eq!(jobs.len(), 4);
    assert_eq!(jobs[0]["id"], refused["id"]);

    // Bad requests: clear 4xx, nothing recorded.
    for (body, status, needle) in [
        (
            json!({"source": "nope", "external_id": "x"}),
            StatusCode::NOT_FOUND,
            "no source or connector",
        ),
        (
            json!({"source": "uniprot"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "external_id",
        ),
        (
            json!({"source": "uniprot", "external_id": "../etc"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "external id",
        ),
        (
            json!({"source": "uniprot", "external_id": "x", "params": [1]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "params",
        ),
        (
            json!({"source": "csv", "external_id": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a connector",
        ),
        (
            json!({"source": "uniprot", "external_id": "x", "parse": [{"files": "*", "plugin": "select"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a parser",
        ),
        (
            json!({"source": "uniprot", "external_id": "x", "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
        ),
    ] {
        let (s, v) = t
            .call(Method::POST, "/collections", Some(body.clone()))
            .await;
        assert_eq!(s, status, "{body} -> {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .expect("message")
                .contains(needle),
            "{body} -> {v}"
        );
    }
    let (s, _) = t.call(Method::GET, "/collections/not-a-uuid", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = t
        .call(
            Method::GET,
            &format!("/collections/{}", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, jobs) = t.call(Method::GET, "/collections", None).await;
    assert_eq!(jobs.as_array().expect("jobs").len(), 4);
}

/// Two replicas on one PostgreSQL tick the same schedule at once: each slot runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_source_runs_once_per_slot_across_replicas() {
    let Some(url) = crate::scratch_pg().await else {
        return;
    };
    let plugins = crate::plugins::open(&shared_cache());
    let source = SourceConfig {
        name: "nightly".into(),
        plugin: "ncbi".into(),
        external_id: None,
        // Not granted: the job fails fast without leaving the machine; what counts is how many run.
        params: [("ids".to_owned(), json!(["1"]))].into(),
        parse: vec![],
        tags: vec![],
        schedule: Some("daily".into()),
    };
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let c = lake_host::catalog::postgres::PostgresCatalog::connect(&url, 4)
            .await
            .expect("connect");
        c.migrate().await.expect("migrate");
        let mut s = crate::http_api::settings(1 << 30);
        s.sources = vec![source.clone()];
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = lake_host::blob::local::LocalStore::open(dir.path())
            .await
            .expect("store");
        let lake = Lake::new(Arc::new(c), Arc::new(blobs), s).with_plugins(plugins.clone());
        lake.prepare_buckets().await.expect("buckets");
        replicas.push((lake, dir));
    }
    let now = chrono::Utc::now();
    let (c0, c1) = (replicas[0].0.collections(), replicas[1].0.collections());
    let (a, b) = tokio::join!(c0.run_due(now), c1.run_due(now));
    assert_eq!(a.len() + b.len(), 1, "one replica runs the slot");
    // Later ticks in the same slot start nothing; the next slot runs once.
    assert!(replicas[0].0.collections().run_due(now).await.is_empty());
    assert!(replicas[1].0.collections().run_due(now).await.is_empty());
    let tomorrow = now + chrono::Duration::days(1);
    let (c1, c0) = (replicas[1].0.collections(), replicas[0].0.collections());
    let (a, b) = tokio::join!(c1.run_due(tomorrow), c0.run_due(tomorrow));
    assert_eq!(a.len() + b.len(), 1);
    let catalog = replicas[0].0.catalog().clone();
    let mut jobs = Vec::new();
    for _ in 0..200 {
        jobs = catalog.list_jobs("collection", 10).await.expect("jobs");
        if jobs.iter().all(|j| j.status.is_finished()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Failed),
        "{jobs:?}"
    );
    let keys: Vec<&str> = jobs
        .iter()
        .filter_map(|j| j.schedule_key.as_deref())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1]);
}
