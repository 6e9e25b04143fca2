//! The HTTP API through the real router (`tower::ServiceExt::oneshot`), on the embedded backends
//! and, where it matters, on PostgreSQL + Garage.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use lake_host::blob::BlobStore;
use lake_host::catalog::Catalog;
use lake_host::http::{AppState, router};
use lake_host::lake::{Lake, Settings};
use serde_json::{Value, json};
use tower::ServiceExt;

pub struct TestLake {
    pub app: Router,
    pub lake: Lake,
    pub dir: Option<tempfile::TempDir>,
}

pub fn settings(max_upload: u64) -> Settings {
    let cfg = lake_host::config::Config::default();
    let mut s = Settings::from_config(&cfg);
    s.max_upload_bytes = max_upload;
    s
}

pub(crate) async fn assemble(
    catalog: Arc<dyn Catalog>,
    blobs: Arc<dyn BlobStore>,
    mut s: Settings,
    dir: Option<tempfile::TempDir>,
) -> TestLake {
    if blobs.kind() == "s3" {
        // Unique buckets per test so tests on one Garage never see each other's objects.
        let tag = crate::unique("t");
        s.buckets = ["raw", "processed", "curated", "archive"].map(|l| format!("{tag}-{l}"));
    }
    let lake = Lake::new(catalog, blobs, s);
    lake.prepare_buckets().await.expect("prepare buckets");
    let app = router(AppState::new(
        lake.clone(),
        lake_host::telemetry::init_metrics(),
    ));
    TestLake { app, lake, dir }
}

pub async fn embedded(max_upload: u64) -> TestLake {
    embedded_with(max_upload, None).await
}

/// An embedded lake, with a plugin registry when given.
pub async fn embedded_with(
    max_upload: u64,
    plugins: Option<lake_host::plugins::Plugins>,
) -> TestLake {
    embedded_settings(settings(max_upload), plugins).await
}

/// An embedded lake with these settings, and a plugin registry when given.
pub async fn embedded_settings(
    s: Settings,
    plugins: Option<lake_host::plugins::Plugins>,
) -> TestLake {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("catalog.db").display());
    let catalog = lake_host::catalog::sqlite::SqliteCatalog::connect(&url, 4)
        .await
        .expect("sqlite");
    catalog.migrate().await.expect("migrate");
    let blobs = lake_host::blob::local::LocalStore::open(dir.path().join("objects"))
        .await
        .expect("local store");
    let t = assemble(Arc::new(catalog), Arc::new(blobs), s, Some(dir)).await;
    t.with_plugins(plugins)
}

/// PostgreSQL + Garage with these settings, and a plugin registry when given.
pub async fn production_settings(
    s: Settings,
    plugins: Option<lake_host::plugins::Plugins>,
) -> Option<TestLake> {
    let catalog = crate::pg_catalog().await?;
    let blobs = crate::garage()?;
    let t = assemble(catalog, Arc::new(blobs), s, None).await;
    Some(t.with_plugins(plugins))
}

pub async fn production() -> Option<TestLake> {
    let catalog = crate::pg_catalog().await?;
    let blobs = crate::garage()?;
    Some(assemble(catalog, Arc::new(blobs), settings(1 << 30), None).await)
}

impl TestLake {
    fn with_plugins(mut self, plugins: Option<lake_host::plugins::Plugins>) -> Self {
        if let Some(p) = plugins {
            self.lake = self.lake.clone().with_plugins(p);
            self.app = router(AppState::new(
                self.lake.clone(),
                lake_host::telemetry::init_metrics(),
            ));
        }
        self
    }

    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).expect("request")).await
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, v)
    }

    pub async fn upload(&self, id: &str, name: &str, bytes: &[u8]) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(Method::PUT)
            .uri(format!("/catalog/{id}/files/{name}"))
            .header(header::CONTENT_LENGTH, bytes.len())
            .body(Body::from(bytes.to_vec()))
            .expect("request");
        self.send(req).await
    }

    pub async fn create(&self, body: Value) -> String {
        let (s, v) = self.call(Method::POST, "/catalog", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().expect("id").to_owned()
    }
}

fn assert_error(status: StatusCode, v: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

/// Acceptance 3: after promotion the raw objects' SHA-256 are unchanged and raw is still cataloged;
/// non-adjacent promotion, unknown id and raw delete each get a clear 4xx.
async fn promotion_keeps_raw_untouched(t: TestLake) {
    let id = t
        .create(json!({"name": "GSE16", "source": "geo", "external_id": "GSE16", "layer": "raw"}))
        .await;
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/GSE16.txt"
    ))
    .expect("fixture");
    let (s, v) = t.upload(&id, "GSE16.txt", &bytes).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let expected = lake_host::blob::Sha256::of(&bytes).to_hex();
    let (_, files) = t
        .call(Method::GET, &format!("/catalog/{id}/files"), None)
        .await;
    assert_eq!(files[0]["sha256"], expected.as_str());

    let (s, v) = t
        .call(
            Method::POST,
            "/layers/promote",
            Some(json!({"dataset_id": id, "target_layer": "processed", "notes": "QC passed"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let target = v["dataset"]["id"].as_str().expect("target id").to_owned();
    assert_ne!(target, id);
    assert_eq!(v["dataset"]["layer"], "processed");
    assert_eq!(v["dataset"]["promoted_from"], id.as_str());

    // Raw is still cataloged, and its stored bytes still hash to what was uploaded.
    let (s, raw) = t.call(Method::GET, &format!("/catalog/{id}"), None).await;
    assert_eq!((s, raw["layer"].as_str()), (StatusCode::OK, Some("raw")));
    let d: lake_host::catalog::DatasetId = id.parse().expect("id");
    let ds = t.lake.catalog().get_dataset(d).await.expect("raw row");
    let (sha, _) = lake_host::blob::sha256_of(
        t.lake.blobs().as_ref(),
        &ds.bucket,
        &format!("{}GSE16.txt", ds.prefix),
    )
    .await
    .expect("hash raw");
    assert_eq!(sha.to_hex(), expected);
    let (_, tfiles) = t
        .call(Method::GET, &format!("/catalog/{target}/files"), None)
        .await;
    assert_eq!(tfiles[0]["sha256"], expected.as_str());

    // Retrying returns the same target without copying again.
    let (s, again) = t
        .call(
            Method::POST,
            "/layers/promote",
            Some(json!({"dataset_id": id, "target_layer": "processed"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(
        (again["dataset"]["id"].as_str(), again["created"].as_bool()),
        (Some(target.as_str()), Some(false))
    );

    // The provenance edge carries the notes.
    let (_, lineage) = t
        .call(Method::GET, &format!("/provenance/{target}"), None)
        .await;
    assert_eq!(lineage["ancestors"], json!([id]));
    let promo = lineage["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "promotion")
        .expect("promotion entry")
        .clone();
    assert_eq!(promo["notes"], "QC passed");
    assert_eq!(promo["inputs"], json!([id]));

    let (s, v) = t
        .call(
            Method::POST,
            "/layers/promote",
            Some(json!({"dataset_id": id, "target_layer": "curated"})),
        )
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("adjacent layer processed")),
        "{v}"
    );
    let (s, v) = t
        .call(
            Method::POST,
            "/layers/promote",
            Some(json!({"dataset_id": uuid::Uuid::now_v7(), "target_layer": "processed"})),
        )
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (s, v) = t
        .call(Method::DELETE, &format!("/catalog/{id}"), None)
        .await;
    assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    let (s, _) = t.call(Method::GET, &format!("/catalog/{id}"), None).await;
    assert_eq!(s, StatusCode::OK, "raw survives the refused delete");
}

#[tokio::test]
async fn promotion_keeps_raw_untouched_embedded() {
    promotion_keeps_raw_untouched(embedded(1 << 30).await).await;
}

#[tokio::test]
async fn promotion_keeps_raw_untouched_postgres_garage() {
    let Some(t) = production().await else { return };
    promotion_keeps_raw_untouched(t).await;
}

#[tokio::test]
async fn seed_and_collector_bodies_register_existing_objects() {
    let t = embedded(1 << 30).await;
    // Objects placed in the raw bucket by a collector before it calls POST /catalog.
    let blobs = t.lake.blobs();
    for (k, body) in [
        ("geo/GSE16/GSE16.txt", &b"soft text"[..]),
        ("geo/GSE16/extra.csv", b"a,b\n1,2\n"),
    ] {
        let s: lake_host::blob::ByteStream = Box::pin(futures::stream::once(async move {
            Ok(bytes::Bytes::from_static(body))
        }));
        blobs.put("lake-raw", k, s).await.expect("put");
    }
    let s: lake_host::blob::ByteStream = Box::pin(futures::stream::once(async {
        Ok(bytes::Bytes::from_static(b"soft text"))
    }));
    blobs
        .put("lake-raw", "geo/GSE17/GSE17.txt", s)
        .await
        .expect("put");
    let (s, v) = t.call(Method::POST, "/catalog", Some(json!({"name": "GSE17", "source": "geo", "layer": "raw", "object_path": "geo/GSE17/GSE17.txt", "metadata": {"organism": "human"}}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["file_count"].as_i64(), v["total_size"].as_i64()),
        (Some(1), Some(9))
    );
    assert_eq!(v["metadata"]["source"], "geo");
    assert_eq!(v["metadata"]["version"], "1");
    assert!(
        v["metadata"]["date"]
            .as_str()
            .is_some_and(|d| d.len() == 10)
    );
    let (s, v) = t
        .call(Method::POST, "/catalog", Some(json!({"name": "GSE16 all", "source": "geo", "external_id": "GSE16", "layer": "raw",
            "minio_bucket": "lake-raw", "minio_prefix": "geo/GSE16", "metadata_": {"version": "7"}, "tags": ["geo", "geo", " series "]})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["file_count"], 2);
    assert_eq!(v["metadata"]["version"], "7");
    assert_eq!(v["tags"], json!(["geo", "series"]));
    let (_, files) = t
        .call(
            Method::GET,
            &format!("/catalog/{}/files", v["id"].as_str().expect("id")),
            None,
        )
        .await;
    let extra = files
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["name"] == "extra.csv")
        .expect("extra.csv registered");
    assert_eq!(
        extra["sha256"],
        lake_host::blob::Sha256::of(b"a,b\n1,2\n").to_hex().as_str()
    );
    assert_eq!(extra["content_type"], "text/csv");
    // The prefix is that dataset's now: one of its objects cannot be registered again.
    let (s, v) = t
        .call(
            Method::POST,
            "/catalog",
            Some(json!({"name": "GSE16 again", "source": "geo", "layer": "raw", "object_path": "geo/GSE16/GSE16.txt"})),
        )
        .await;
    assert_error(s, &v, StatusCode::CONFLICT, "conflict");

    let (s, v) = t
        .call(
            Method::POST,
            "/catalog",
            Some(json!({"name": "x", "source": "geo", "minio_bucket": "someone-elses"})),
        )
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
}

#[tokio::test]
async fn bad_requests_get_clear_4xx() {
    let t = embedded(64).await;
    let cases: Vec<(Method, &str, Option<Value>, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/catalog",
            Some(json!({"source": "geo"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            Method::POST,
            "/catalog",
            Some(json!({"name": "x", "source": "geo", "surprise": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            Method::POST,
            "/catalog",
            Some(json!({"name": "x", "source": "geo", "layer": "gold"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            Method::POST,
            "/catalog",
            Some(json!({"name": "x", "source": "geo", "metadata": [1, 2]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            Method::POST,
            "/catalog",
            Some(json!({"name": "", "source": "geo"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            Method::POST,
            "/catalog",
            Some(json!({"name": "x", "source": "geo", "object_path": "../etc/passwd"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            Method::GET,
            "/catalog/not-a-uuid",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/catalog/0193a1b2-0000-7000-8000-000000000000",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/catalog?layer=gold",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            Method::GET,
            "/catalog?limit=0",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            Method::GET,
            "/catalog?cursor=zzz",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            Method::GET,
            "/provenance/0193a1b2-0000-7000-8000-000000000000/graph",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/layers/promote",
            Some(json!({"dataset_id": "x"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            Method::GET,
            "/no/such/route",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (m, uri, body, want, code) in cases {
        let (s, v) = t.call(m.clone(), uri, body.clone()).await;
        assert_eq!(s, want, "{m} {uri} {body:?} -> {v}");
        assert_eq!(v["error"]["code"], code, "{m} {uri} -> {v}");
    }
    let req = Request::builder()
        .method(Method::POST)
        .uri("/catalog")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .expect("req");
    let (s, v) = t.send(req).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "malformed_json");
    let req = Request::builder()
        .method(Method::POST)
        .uri("/catalog")
        .body(Body::from("{}"))
        .expect("req");
    let (s, v) = t.send(req).await;
    assert_error(
        s,
        &v,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    let id = t.create(json!({"name": "x", "source": "lab"})).await;
    let (s, v) = t.upload(&id, "big.csv", &[b'x'; 65]).await;
    assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Without a Content-Length the limit trips while streaming, and nothing is kept.
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/catalog/{id}/files/chunked.csv"))
        .body(Body::from_stream(futures::stream::iter((0..10).map(
            |_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[b'y'; 10])),
        ))))
        .expect("req");
    let (s, v) = t.send(req).await;
    assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let (s, v) = t.upload(&id, "..", b"x").await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let (s, v) = t.upload(&id, "..%2Fescape.csv", b"x").await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let (s, _) = t.upload(&id, "ok.csv", b"a,b\n").await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = t.upload(&id, "ok.csv", b"different").await;
    assert_error(s, &v, StatusCode::CONFLICT, "conflict");
    let (_, files) = t
        .call(Method::GET, &format!("/catalog/{id}/files"), None)
        .await;
    assert_eq!(
        files.as_array().map(Vec::len),
        Some(1),
        "failed uploads left rows: {files}"
    );
    let ds = t
        .lake
        .catalog()
        .get_dataset(id.parse().expect("id"))
        .await
        .expect("row");
    let objects = t
        .lake
        .blobs()
        .list(&ds.bucket, &ds.prefix)
        .await
        .expect("list");
    assert_eq!(objects.len(), 1, "failed uploads left objects: {objects:?}");
    let (s, v) = t
        .call(
            Method::GET,
            &format!("/catalog/{id}/download/missing.csv"),
            None,
        )
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn search_download_delete_and_graph() {
    let t = embedded(1 << 20).await;
    let a = t.create(json!({"name": "UniProt human kinases", "source": "uniprot", "metadata": {"organism": "Homo sapiens"}, "tags": ["kinase", "human"]})).await;
    let b = t
        .create(json!({"name": "PubMed CRISPR", "source": "pubmed", "tags": ["crispr"]}))
        .await;
    let (s, _) = t
        .upload(&a, "entries.tsv", b"acc\tname\nP00533\tEGFR\n")
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let (_, page) = t.call(Method::GET, "/catalog?q=SAPIENS", None).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let (_, page) = t
        .call(
            Method::GET,
            "/catalog?source=pubmed&layer=raw&tags=crispr",
            None,
        )
        .await;
    assert_eq!(page["items"][0]["id"], b.as_str());
    let (_, page) = t.call(Method::GET, "/catalog?limit=1", None).await;
    assert_eq!(page["items"][0]["id"], b.as_str());
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, page2) = t
        .call(
            Method::GET,
            &format!("/catalog?limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(
        (
            page2["items"][0]["id"].as_str(),
            page2["next_cursor"].as_str()
        ),
        (Some(a.as_str()), None)
    );
    let (_, stats) = t.call(Method::GET, "/catalog/stats", None).await;
    assert_eq!(stats["total_datasets"], 2);
    assert_eq!(
        stats["by_layer"][0],
        json!({"key": "raw", "datasets": 2, "bytes": 21})
    );

    // Local store: the download is streamed with its size and type.
    let resp = t
        .app
        .clone()
        .oneshot(
            Request::get(format!("/catalog/{a}/download/entries.tsv"))
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("resp");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], "21");
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/tab-separated-values"
    );
    assert_eq!(
        &resp.into_body().collect().await.expect("body").to_bytes()[..],
        b"acc\tname\nP00533\tEGFR\n"
    );

    // processed -> curated -> archive, then delete the archive copy: its row stays for lineage.
    let mut current = a.clone();
    let mut chain = vec![a.clone()];
    for layer in ["processed", "curated", "archive"] {
        let (s, v) = t
            .call(
                Method::POST,
                "/layers/promote",
                Some(json!({"dataset_id": current, "target_layer": layer, "reason": "reviewed"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        current = v["dataset"]["id"].as_str().expect("id").to_owned();
        chain.push(current.clone());
    }
    let (s, v) = t
        .call(
            Method::POST,
            "/layers/promote",
            Some(json!({"dataset_id": current, "target_layer": "raw"})),
        )
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let (s, v) = t
        .call(Method::DELETE, &format!("/catalog/{current}"), None)
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let (s, _) = t
        .call(
            Method::DELETE,
            &format!("/catalog/{current}?reason=superseded"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = t
        .call(Method::GET, &format!("/catalog/{current}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = t
        .call(Method::DELETE, &format!("/catalog/{current}"), None)
        .await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");

    let (s, g) = t
        .call(
            Method::GET,
            &format!("/provenance/{}/graph?depth=10", chain[1]),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    let ids: Vec<&str> = g["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, chain.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(g["nodes"][3]["status"], "deleted");
    assert_eq!(g["edges"].as_array().map(Vec::len), Some(3));
    let (_, g1) = t
        .call(
            Method::GET,
            &format!(
                "/provenance/{}/graph?depth=1&direction=descendants",
                chain[1]
            ),
            None,
        )
        .await;
    assert_eq!(g1["nodes"].as_array().map(Vec::len), Some(2));
    let (s, v) = t
        .call(
            Method::GET,
            &format!("/provenance/{}/graph?depth=0", chain[1]),
            None,
        )
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");

    let (s, prov) = t
        .call(Method::GET, &format!("/provenance/{}/prov", chain[2]), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        prov["entity"].get(format!("lake:dataset/{a}")).is_some(),
        "{prov}"
    );
    assert_eq!(prov["wasDerivedFrom"].as_object().map(|m| m.len()), Some(3));
    assert!(
        prov["activity"]
            .as_object()
            .is_some_and(|a| a.values().any(|v| v["prov:type"]["$"] == "lake:promotion"))
    );

    let (_, layers) = t.call(Method::GET, "/layers", None).await;
    assert_eq!(layers[0]["layer"], "raw");
    assert_eq!(layers[0]["immutability"], "host");
    assert_eq!(layers[0]["deletes_refused"], true);
    assert_eq!(
        layers[3]["datasets"], 0,
        "the deleted archive copy is not counted"
    );
}

#[tokio::test]
async fn failed_promotion_is_never_ready_and_resumes() {
    let t = embedded(1 << 20).await;
    let id = t.create(json!({"name": "x", "source": "lab"})).await;
    t.upload(&id, "a.csv", b"1,2\n").await;
    t.upload(&id, "b.csv", b"3,4\n").await;
    // Take one object away behind the lake's back so the copy fails part-way.
    let ds = t
        .lake
        .catalog()
        .get_dataset(id.parse().expect("id"))
        .await
        .expect("row");
    let hidden = t
        .dir
        .as_ref()
        .expect("dir")
        .path()
        .join("objects")
        .join(&ds.bucket)
        .join(format!("{}b.csv", ds.prefix));
    let parked = hidden.with_extension("parked");
    std::fs::rename(&hidden, &parked).expect("park object");
    let (s, v) = t
        .call(
            Method::POST,
            "/layers/promote",
            Some(json!({"dataset_id": id, "target_layer": "processed"})),
        )
        .await;
    assert!(s.is_client_error() || s.is_server_error(), "{s} {v}");
    assert!(
        !v.to_string().contains("objects/"),
        "internal paths must not leak: {v}"
    );
    let (_, page) = t.call(Method::GET, "/catalog?layer=processed", None).await;
    assert_eq!(
        page["items"],
        json!([]),
        "a failed promotion must not be visible as ready"
    );
    std::fs::rename(&parked, &hidden).expect("restore object");
    let (s, v) = t
        .call(
            Method::POST,
            "/layers/promote",
            Some(json!({"dataset_id": id, "target_layer": "processed"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["dataset"]["file_count"], 2);
    let (_, page) = t.call(Method::GET, "/catalog?layer=processed", None).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn docs_metrics_and_health() {
    let t = embedded(1 << 20).await;
    let (s, h) = t.call(Method::GET, "/health", None).await;
    assert_eq!(
        (s, h["catalog"].as_str(), h["storage"].as_str()),
        (StatusCode::OK, Some("sqlite"), Some("local"))
    );
    let (s, spec) = t.call(Method::GET, "/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    for p in [
        "/catalog",
        "/catalog/{id}/download/{filename}",
        "/layers/promote",
        "/provenance/{id}/graph",
        "/provenance/{id}/prov",
    ] {
        assert!(
            spec["paths"].get(p).is_some(),
            "{p} missing from the OpenAPI document"
        );
    }
    let resp = t
        .app
        .clone()
        .oneshot(Request::get("/docs").body(Body::empty()).expect("req"))
        .await
        .expect("resp");
    assert_eq!(resp.status(), StatusCode::OK);
    let (s, text) = t.call(Method::GET, "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        text.as_str()
            .is_some_and(|t| t.contains("lake_http_requests_total")),
        "{text}"
    );
}

/// Racing uploads of one name: exactly one wins, and the stored bytes are the winner's.
async fn racing_uploads_of_one_name(t: TestLake) {
    let id = t.create(json!({"name": "race", "source": "lab"})).await;
    let bodies: Vec<Vec<u8>> = (0..6u8)
        .map(|i| vec![b'a' + i; 200_000 + usize::from(i) * 1000])
        .collect();
    let results =
        futures::future::join_all(bodies.iter().map(|b| t.upload(&id, "same.bin", b))).await;
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let conflicts = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 5), "{results:?}");
    let (_, files) = t
        .call(Method::GET, &format!("/catalog/{id}/files"), None)
        .await;
    let sha = files[0]["sha256"].as_str().expect("sha").to_owned();
    let ds = t
        .lake
        .catalog()
        .get_dataset(id.parse().expect("id"))
        .await
        .expect("row");
    let (stored, size) = lake_host::blob::sha256_of(
        t.lake.blobs().as_ref(),
        &ds.bucket,
        &format!("{}same.bin", ds.prefix),
    )
    .await
    .expect("hash");
    assert_eq!(
        stored.to_hex(),
        sha,
        "the object must be the one its row describes"
    );
    assert_eq!(files[0]["size"].as_u64(), Some(size));
    assert!(
        bodies
            .iter()
            .any(|b| lake_host::blob::Sha256::of(b).to_hex() == sha)
    );
}

#[tokio::test]
async fn racing_uploads_of_one_name_embedded() {
    racing_uploads_of_one_name(embedded(1 << 30).await).await;
}

#[tokio::test]
async fn racing_uploads_of_one_name_postgres_garage() {
    let Some(t) = production().await else { return };
    racing_uploads_of_one_name(t).await;
}

#[tokio::test]
async fn nested_objects_are_refused_not_half_registered() {
    let t = embedded(1 << 20).await;
    for k in ["geo/GSE9/a.soft", "geo/GSE9/suppl/b.gz"] {
        let s: lake_host::blob::ByteStream = Box::pin(futures::stream::once(async {
            Ok(bytes::Bytes::from_static(b"x"))
        }));
        t.lake.blobs().put("lake-raw", k, s).await.expect("put");
    }
    let (s, v) = t
        .call(
            Method::POST,
            "/catalog",
            Some(json!({"name": "GSE9", "source": "geo", "object_path": "geo/GSE9/"})),
        )
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("geo/GSE9/suppl/b.gz")),
        "{v}"
    );
    let (_, page) = t.call(Method::GET, "/catalog", None).await;
    assert_eq!(
        page["items"],
        json!([]),
        "nothing is cataloged after the refusal"
    );
    let (s, v) = t
        .call(
            Method::POST,
            "/catalog",
            Some(json!({"name": "GSE9 suppl", "source": "geo", "object_path": "geo/GSE9/suppl"})),
        )
        .await;
    assert_eq!(
        (s, v["file_count"].as_i64()),
        (StatusCode::CREATED, Some(1)),
        "{v}"
    );
}

/// A downstream client writes an object itself and registers it with `object_path` as its MinIO
/// helper returns it (`{bucket}/{key}`), or as `s3://{bucket}/{key}`, or as a bare key; the lake
/// records size and SHA-256, and a path naming nothing is refused rather than cataloged empty.
async fn object_paths_name_what_the_client_wrote(t: &TestLake) {
    let body: &[u8] = b"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n1\t12345\t.\tA\tG\n";
    let bucket = t
        .lake
        .bucket(lake_host::layers::Layer::Processed)
        .to_owned();
    for key in [
        "runs/r1/calls.vcf",
        "runs/r2/calls.vcf",
        "runs/r3/calls.vcf",
        "runs/r4/calls.vcf",
        "runs/r5/calls.vcf",
    ] {
        let s: lake_host::blob::ByteStream = Box::pin(futures::stream::once(async move {
            Ok(bytes::Bytes::from_static(body))
        }));
        t.lake.blobs().put(&bucket, key, s).await.expect("put");
    }
    let sha = lake_host::blob::Sha256::of(body).to_hex();
    for path in [
        "processed/runs/r1/calls.vcf".to_owned(),
        format!("s3://{bucket}/runs/r2/calls.vcf"),
        "s3://processed/runs/r3/calls.vcf".to_owned(),
        format!("{bucket}/runs/r4/"),
        "runs/r5/calls.vcf".to_owned(),
    ] {
        let (s, v) = t
            .call(
                Method::POST,
                "/catalog",
                Some(
                    json!({"name": "variant calls", "source": "genomics", "layer": "processed",
                    "object_path": path, "metadata": {"run": "r1", "caller": "gatk"}}),
                ),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{path}: {v}");
        assert_eq!(v["file_count"], 1, "{path}: {v}");
        let id = v["id"].as_str().expect("id");
        let (_, files) = t
            .call(Method::GET, &format!("/catalog/{id}/files"), None)
            .await;
        assert_eq!(files[0]["name"], "calls.vcf", "{path}: {files}");
        assert_eq!(files[0]["size"], body.len(), "{path}: {files}");
        assert_eq!(files[0]["sha256"], sha.as_str(), "{path}: {files}");
    }
    for (path, named) in [
        (
            "processed/runs/missing/calls.vcf",
            "processed/runs/missing/calls.vcf",
        ),
        ("s3://processed/nothing-here", "nothing-here"),
        ("runs/none/", "runs/none/"),
    ] {
        let (s, v) = t
            .call(
                Method::POST,
                "/catalog",
                Some(json!({"name": "x", "source": "genomics", "layer": "processed", "object_path": path})),
            )
            .await;
        assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{path}: {v}");
    }
    // A registered object is its dataset's: naming it again, by any spelling, is a conflict.
    for path in ["runs/r1/calls.vcf".to_owned(), format!("{bucket}/runs/r4/")] {
        let (s, v) = t
            .call(
                Method::POST,
                "/catalog",
                Some(json!({"name": "again", "source": "genomics", "layer": "processed", "object_path": path})),
            )
            .await;
        assert_error(s, &v, StatusCode::CONFLICT, "conflict");
    }
    // Another layer's bucket is refused by name.
    let (s, v) = t
        .call(
            Method::POST,
            "/catalog",
            Some(json!({"name": "x", "source": "genomics", "layer": "processed", "object_path": "s3://raw/runs/r1/calls.vcf"})),
        )
        .await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"raw\""),
        "{v}"
    );
    let (_, page) = t.call(Method::GET, "/catalog?layer=processed", None).await;
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(5),
        "refused paths catalog nothing: {page}"
    );

    // The first seed's body, verbatim: the layer's name as the bucket, an empty prefix kept.
    let (s, v) = t
        .call(Method::POST, "/catalog", Some(json!({"name": "GSE2034 - Breast Cancer Metastasis", "source": "geo",
            "external_id": "GSE2034", "layer": "raw", "minio_bucket": "raw", "minio_prefix": "geo/GSE2034"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["file_count"], 0, "{v}");
}

#[tokio::test]
async fn object_paths_name_what_the_client_wrote_embedded() {
    object_paths_name_what_the_client_wrote(&embedded(1 << 20).await).await;
}

#[tokio::test]
async fn object_paths_name_what_the_client_wrote_on_garage() {
    let Some(t) = production().await else {
        return;
    };
    object_paths_name_what_the_client_wrote(&t).await;
}

/// An offset past what a page may skip is refused with the way further, never wrapped around to
/// the first page (2^63 was read as a negative offset, which the database took as none).
#[tokio::test]
async fn offsets_past_the_limit_are_refused_not_wrapped() {
    let t = embedded(1 << 20).await;
    let (s, v) = t
        .call(
            Method::POST,
            "/catalog",
            Some(json!({"name": "one", "source": "lab", "layer": "processed"})),
        )
        .await;
    assert!(s.is_success(), "{v}");
    for uri in [
        "/catalog?offset=9223372036854775808",
        "/catalog?offset=18446744073709551615",
        "/catalog?skip=9223372036854775807",
        "/catalog?offset=1000001",
        "/files?offset=9223372036854775808",
    ] {
        let (s, v) = t.call(Method::GET, uri, None).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {v}");
        let m = v["error"]["message"].as_str().unwrap_or("");
        assert!(m.contains("cursor"), "{uri}: {m}");
    }
    // Too large for any integer: refused as a malformed query.
    let (s, v) = t
        .call(Method::GET, "/catalog?offset=99999999999999999999999", None)
        .await;
    assert!(s.is_client_error(), "{v}");
    // At the limit: an empty page, not the first one.
    let (s, v) = t.call(Method::GET, "/catalog?offset=1000000", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["items"], json!([]), "{v}");
    let (s, v) = t.call(Method::GET, "/catalog?offset=0", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1), "{v}");
}

/// A source that cannot name a storage prefix is refused at registration: such a dataset could
/// never hold a file.
#[tokio::test]
async fn a_source_that_cannot_be_a_prefix_is_refused() {
    let t = embedded(1 << 20).await;
    for source in ["..", ".", "a\\b", "tab\there", "nul\u{0}"] {
        let (s, v) = t
            .call(
                Method::POST,
                "/catalog",
                Some(json!({"name": "x", "source": source, "layer": "processed"})),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{source:?}: {v}");
        let m = v["error"]["message"].as_str().unwrap_or("");
        assert!(m.contains("source"), "{source:?}: {m}");
    }
    let (s, v) = t.call(Method::GET, "/catalog?status=ready", None).await;
    assert_eq!(
        (s, &v["items"]),
        (StatusCode::OK, &json!([])),
        "nothing half-made: {v}"
    );
    // A dotted name that is a real segment stays valid.
    let (s, v) = t
        .call(
            Method::POST,
            "/catalog",
            Some(json!({"name": "x", "source": "lab.v2", "layer": "processed"})),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let id = v["id"].as_str().expect("id");
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/catalog/{id}/files/a.csv"))
        .body(Body::from("a\n1\n"))
        .expect("request");
    let (s, v) = t.send(req).await;
    assert!(s.is_success(), "the dataset holds a file: {v}");
}

/// A prefix belongs to one dataset: registering another dataset's objects again (by the prefix a
/// client catalogued, or inside one the lake made) is a 409 naming the owner, and the owner's
/// objects stay its own.
#[tokio::test]
async fn a_registration_may_not_alias_another_datasets_prefix() {
    let t = embedded(1 << 20).await;
    let (s, owner) = t
        .call(
            Method::POST,
            "/catalog",
            Some(json!({"name": "owner", "source": "lab", "layer": "processed"})),
        )
        .await;
    assert!(s.is_success(), "{owner}");
    let id = owner["id"].as_str().expect("id");
    let prefix = owner["prefix"].as_str().expect("prefix");
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/catalog/{id}/files/a.csv"))
        .body(Body::from("a\n1\n"))
        .expect("request");
    let (s, v) = t.send(req).await;
    assert!(s.is_success(), "{v}");
    for body in [
        json!({"name": "alias", "source": "lab", "layer": "processed", "object_path": prefix}),
        json!({"name": "alias", "source": "lab", "layer": "processed", "object_path": format!("{prefix}a.csv")}),
        json!({"name": "alias", "source": "lab", "layer": "processed", "minio_prefix": prefix}),
    ] {
        let (s, v) = t.call(Method::POST, "/catalog", Some(body.clone())).await;
        assert_eq!(s, StatusCode::CONFLICT, "{body}: {v}");
        let m = v["error"]["message"].as_str().unwrap_or("");
        assert!(m.contains(id) && m.contains("belong"), "{m}");
    }
    let (_, listed) = t.call(Method::GET, "/catalog?q=alias", None).await;
    assert_eq!(listed["items"], json!([]), "no alias was made: {listed}");
    // A prefix of its own next to it is fine.
    let (s, v) = t
        .call(
            Method::POST,
            "/catalog",
            Some(json!({"name": "next", "source": "lab", "layer": "processed", "minio_prefix": "lab/shared-plates/"})),
        )
        .await;
    assert!(s.is_success(), "{v}");
}
