//! Connector components and the host's policing of their HTTP: only granted origins, credentials
//! added by the host (never seen by the plugin, never in provenance), `Retry-After` honoured, rate
//! limits, the time limit covering requests, and objects streamed in parts. The upstream is a local
//! server on a loopback address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use lake_host::config::{Credentials, PluginOverride, PluginsConfig, Secret};
use lake_host::plugins::{Fetch, Invocation, InvokeError, Part, Plugins};

/// What the upstream saw: one line per request, `path?query token-header`.
#[derive(Clone, Default)]
struct Upstream {
    seen: Arc<Mutex<Vec<String>>>,
    busy_once: Arc<Mutex<bool>>,
}

fn body_of(name: &str) -> Vec<u8> {
    let n = if name.starts_with("big") {
        300_000
    } else {
        1_000
    };
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

async fn serve() -> (SocketAddr, Upstream) {
    async fn data(
        State(u): State<Upstream>,
        Path(name): Path<String>,
        RawQuery(q): RawQuery,
        headers: HeaderMap,
    ) -> impl IntoResponse {
        let token = headers
            .get("x-api-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        u.seen
            .lock()
            .expect("lock")
            .push(format!("/data/{name}?{} {token}", q.unwrap_or_default()));
        (
            [
                (header::ETAG, "\"v1\""),
                (header::CONTENT_TYPE, "application/octet-stream"),
            ],
            body_of(&name),
        )
    }
    async fn busy(State(u): State<Upstream>) -> impl IntoResponse {
        u.seen.lock().expect("lock").push("/busy".into());
        let mut first = u.busy_once.lock().expect("lock");
        if !*first {
            *first = true;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                "slow down",
            )
                .into_response();
        }
        "fine now".into_response()
    }
    async fn hang() -> &'static str {
        tokio::time::sleep(Duration::from_secs(30)).await;
        "too late"
    }
    let upstream = Upstream::default();
    let app = axum::Router::new()
        .route("/data/{name}", get(data))
        .route("/busy", get(busy))
        .route("/hang", get(hang))
        .with_state(upstream.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, upstream)
}

fn registry(o: Option<PluginOverride>) -> (Plugins, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        crate::hostile::components().join("fetch.wasm"),
        dir.path().join("fetch.wasm"),
    )
    .expect("copy");
    let mut overrides = BTreeMap::new();
    if let Some(o) = o {
        overrides.insert("fetch".to_owned(), o);
    }
    let cfg = PluginsConfig {
        dir: dir.path().to_path_buf(),
        cache_dir: crate::plugins::shared_cache(),
        overrides,
        ..PluginsConfig::default()
    };
    let p = Plugins::open(&cfg).expect("runtime");
    assert!(p.rejected().is_empty(), "{:?}", p.rejected());
    (p, dir)
}

fn grant(addr: SocketAddr) -> PluginOverride {
    PluginOverride {
        hosts: vec![format!("http://{addr}")],
        ..Default::default()
    }
}

/// Runs connector `name` with `params`, gathering the parts it hands over.
pub async fn collect_from(
    p: &Plugins,
    name: &str,
    params: serde_json::Value,
) -> (Invocation<Vec<Fetch>>, Vec<Part>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let drain = tokio::spawn(async move {
        let mut parts = Vec::new();
        while let Some(p) = rx.recv().await {
            parts.push(p);
        }
        parts
    });
    let params = lake_host::plugins::params_from_json(&params).expect("params");
    let inv = p.collect(name, params, tx).await;
    (inv, drain.await.expect("drain"))
}

async fn collect(p: &Plugins, params: serde_json::Value) -> (Invocation<Vec<Fetch>>, Vec<Part>) {
    collect_from(p, "fetch", params).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_stream_from_granted_hosts_with_credentials_the_plugin_never_sees() {
    let (addr, upstream) = serve().await;
    let (p, _dir) = registry(Some(PluginOverride {
        credentials: Credentials {
            query: [("api_key".to_owned(), Secret::new("k3y"))].into(),
            headers: [("X-Api-Token".to_owned(), Secret::new("tok"))].into(),
        },
        ..grant(addr)
    }));
    let m = p.get("fetch").expect("loaded");
    assert_eq!(m.kind.to_string(), "connector");
    assert!(
        m.imports
            .iter()
            .any(|i| i.starts_with("wasi:http/outgoing-handler"))
    );

    let urls = [
        format!("http://{addr}/data/big.bin?db=gene"),
        format!("http://{addr}/data/small.txt"),
    ];
    let (inv, parts) = collect(&p, serde_json::json!({"urls": urls, "piece_bytes": 65536})).await;
    let fetches = inv.result.expect("collected");

    // Objects arrive in pieces, in order, each complete and byte-identical.
    let big: Vec<&Part> = parts
        .iter()
        .filter(|x| x.name == "big.bin?db=gene")
        .collect();
    assert!(big.len() >= 5, "300 kB in 64 KiB pieces, got {}", big.len());
    assert!(big.iter().all(|x| x.bytes.len() <= 65536));
    let joined: Vec<u8> = big.iter().flat_map(|x| x.bytes.clone()).collect();
    assert_eq!(joined, body_of("big.bin"));
    let last = big.last().expect("last");
    assert!(last.last);
    assert!(
        last.facts.contains(&("etag".into(), "\"v1\"".into())),
        "{:?}",
        last.facts
    );
    assert_eq!(
        last.content_type.as_deref(),
        Some("application/octet-stream")
    );
    let small: Vec<u8> = parts
        .iter()
        .filter(|x| x.name == "small.txt")
        .flat_map(|x| x.bytes.clone())
        .collect();
    assert_eq!(small, body_of("small.txt"));

    // The host added the credentials; the plugin's requests (as recorded) never carried them.
    let seen = upstream.seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![
            "/data/big.bin?db=gene&api_key=k3y tok".to_owned(),
            "/data/small.txt?api_key=k3y tok".to_owned(),
        ]
    );
    assert_eq!(fetches.len(), 2);
    assert_eq!(fetches[0].url, urls[0]);
    assert_eq!(fetches[0].status, Some(200));
    assert!(fetches.iter().all(|f| !f.url.contains("k3y")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_other_hosts_are_refused_before_leaving_the_machine() {
    let (addr, upstream) = serve().await;
    // Granted 127.0.0.1:port, asked for localhost:port: same server, different origin.
    let (p, _dir) = registry(Some(grant(addr)));
    let url = format!("http://localhost:{}/data/x", addr.port());
    let (inv, parts) = collect(&p, serde_json::json!({ "urls": [url] })).await;
    let err = inv.result.expect_err("denied");
    assert!(matches!(err, InvokeError::Denied(_)), "{err}");
    assert_eq!(err.code(), "capability_denied");
    assert!(err.to_string().contains("not among the hosts"), "{err}");
    assert!(parts.is_empty());
    assert!(upstream.seen.lock().expect("lock").is_empty());

    // No hosts granted at all.
    let (p, _dir2) = registry(None);
    let (inv, _) = collect(
        &p,
        serde_json::json!({ "urls": [format!("http://{addr}/data/x")] }),
    )
    .await;
    let err = inv.result.expect_err("denied");
    assert!(err.to_string().contains("grants fetch no hosts"), "{err}");
    assert!(upstream.seen.lock().expect("lock").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_waited_out_and_requests_are_spaced() {
    let (addr, upstream) = serve().await;
    let (p, _dir) = registry(Some(PluginOverride {
        requests_per_sec: Some(4.0),
        ..grant(addr)
    }));
    let t = Instant::now();
    let (inv, parts) = collect(
        &p,
        serde_json::json!({ "urls": [format!("http://{addr}/busy")] }),
    )
    .await;
    let fetches = inv.result.expect("collected after the retry");
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(fetches[0].retries, 1);
    assert_eq!(fetches[0].status, Some(200));
    let body: Vec<u8> = parts.iter().flat_map(|x| x.bytes.clone()).collect();
    assert_eq!(body, b"fine now");
    assert_eq!(upstream.seen.lock().expect("lock").len(), 2);

    // Four requests at four per second take at least three gaps of 250 ms.
    let t = Instant::now();
    let urls: Vec<String> = (0..4).map(|i| format!("http://{addr}/data/s{i}")).collect();
    let (inv, _) = collect(&p, serde_json::json!({ "urls": urls })).await;
    assert_eq!(inv.result.expect("collected").len(), 4);
    assert!(
        t.elapsed() >= Duration::from_millis(740),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_ends_at_the_time_limit() {
    let (addr, _upstream) = serve().await;
    let (p, _dir) = registry(Some(PluginOverride {
        timeout_secs: Some(1.0),
        ..grant(addr)
    }));
    let t = Instant::now();
    let (inv, _) = collect(
        &p,
        serde_json::json!({ "urls": [format!("http://{addr}/hang")] }),
    )
    .await;
    let err = inv.result.expect_err("timed out");
    assert!(matches!(err, InvokeError::Timeout(_)), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // Bad parameters are the caller's fault, refused by the plugin.
    let (inv, _) = collect(&p, serde_json::json!({ "urlz": [] })).await;
    let err = inv.result.expect_err("bad params");
    assert_eq!(err.code(), "invalid_params");
    assert!(err.is_caller_fault());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_run_writes_collected_objects_to_a_directory() {
    let (addr, _upstream) = serve().await;
    let (p, _dir) = registry(Some(grant(addr)));
    let out = tempfile::tempdir().expect("tempdir");
    let (summary, err) = p
        .run_local(
            "fetch",
            &[],
            &serde_json::json!({"urls": [format!("http://{addr}/data/big.bin")], "piece_bytes": 10000}),
            Some(out.path()),
        )
        .await
        .expect("run");
    assert!(err.is_none(), "{summary}");
    assert_eq!(
        std::fs::read(out.path().join("big.bin")).expect("object"),
        body_of("big.bin")
    );
    let objects = &summary["result"]["objects"];
    assert_eq!(objects[0]["bytes"], 300_000);
    assert_eq!(objects[0]["facts"]["etag"], "\"v1\"");
    assert_eq!(summary["result"]["fetches"][0]["status"], 200);
}

/// A collection stops at `plugins.max_collect_bytes`: the connector is cut off, what it stored is
/// deleted, and the failure says which bound it met.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_past_its_byte_bound_stores_nothing() {
    use std::sync::Arc as StdArc;
    let (addr, _upstream) = serve().await;
    let (plugins, _dir) = registry(Some(grant(addr)));
    let mut s = crate::http_api::settings(1 << 30);
    // Each /data/big-* object is 300 kB; two exceed a bound of 512 KiB.
    s.max_collect_bytes = 512 << 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = lake_host::catalog::sqlite::SqliteCatalog::connect(
        &format!("sqlite:{}", dir.path().join("c.db").display()),
        2,
    )
    .await
    .expect("sqlite");
    use lake_host::catalog::Catalog as _;
    catalog.migrate().await.expect("migrate");
    let blobs = lake_host::blob::local::LocalStore::open(dir.path().join("objects"))
        .await
        .expect("store");
    let lake = lake_host::lake::Lake::new(StdArc::new(catalog), StdArc::new(blobs), s)
        .with_plugins(plugins);
    lake.prepare_buckets().await.expect("buckets");
    let req: lake_host::collect::CollectRequest = serde_json::from_value(serde_json::json!({
        "source": "fetch",
        "external_id": "bounded",
        "params": { "urls": [
            format!("http://{addr}/data/big-a.bin"),
            format!("http://{addr}/data/big-b.bin"),
            format!("http://{addr}/data/big-c.bin"),
        ] },
    }))
    .expect("request");
    let plan = lake.collections().plan(&req).await.expect("plan");
    let failed = lake
        .collections()
        .collect(&plan, None)
        .await
        .expect_err("past the bound the collection fails");
    assert!(
        failed.message.contains("plugins.max_collect_bytes"),
        "{failed:?}"
    );
    let raw = lake.bucket(lake_host::layers::Layer::Raw).to_owned();
    let left = lake.blobs().list(&raw, "").await.expect("list");
    assert!(
        left.is_empty(),
        "what the connector stored is deleted: {left:?}"
    );
}
