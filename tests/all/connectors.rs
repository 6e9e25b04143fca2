//! Connector components and the host's policing of their HTTP: only granted origins, credentials
//! added by the host (never seen by the plugin, never in provenance), `Retry-After` honoured, rate
//! limits, the time limit covering requests, and objects streamed in parts. The upstream is a local
//! server on a loopback address. Through the collection a user starts (`POST /collections`): a
//! connector's object names never reach outside its dataset's prefix, a redirect is followed only
//! to a granted origin (checked again at every hop, never to a link-local or metadata address),
//! and credentials an upstream sends back are never stored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;
use lake_host::config::{Credentials, PluginOverride, PluginsConfig, Secret};
use lake_host::plugins::{Fetch, Invocation, InvokeError, Part, Plugins};
use serde_json::{Value, json};

use crate::http_api::TestLake;

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
    assert_eq!(failed.code, "too_large", "{failed:?}");
    let raw = lake.bucket(lake_host::layers::Layer::Raw).to_owned();
    let left = lake.blobs().list(&raw, "").await.expect("list");
    assert!(
        left.is_empty(),
        "what the connector stored is deleted: {left:?}"
    );
}

/// An embedded lake (SQLite and a local store, both in its temporary directory) whose registry
/// holds `fetch` with the grants `o`; the registry's directory must live as long as the lake.
async fn lake_with(o: PluginOverride) -> (TestLake, tempfile::TempDir) {
    let (plugins, dir) = registry(Some(o));
    (
        crate::http_api::embedded_with(1 << 30, Some(plugins)).await,
        dir,
    )
}

/// The lake's own directory: its catalog database and, under `objects/`, its store.
fn lake_dir(t: &TestLake) -> PathBuf {
    t.dir
        .as_ref()
        .expect("an embedded lake")
        .path()
        .to_path_buf()
}

/// Every file under `root` (temporary files and databases included), relative to it, sorted.
fn files_under(root: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = e.path();
            if e.file_type().expect("file type").is_dir() {
                dirs.push(path);
            } else {
                out.push(path.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Starts a collection of `fetch` as a user does (`POST /collections`) and follows it
/// (`GET /collections/{id}`) until it ends; the ended job.
async fn run_collection(t: &TestLake, external_id: &str, params: Value) -> Value {
    let (status, job) = t
        .call(
            Method::POST,
            "/collections",
            Some(json!({"source": "fetch", "external_id": external_id, "params": params})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().expect("job id").to_owned();
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, job) = t
            .call(Method::GET, &format!("/collections/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if job["status"] == "succeeded" || job["status"] == "failed" {
            return job;
        }
        assert!(
            Instant::now() < give_up,
            "the collection never ended: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `collection` entry an ended job names, and what it records.
async fn recorded(
    t: &TestLake,
    job: &Value,
) -> (
    lake_host::provenance::ProvenanceEntry,
    lake_host::provenance::CollectionRecord,
) {
    let entry: uuid::Uuid = job["result"]["entry_id"]
        .as_str()
        .expect("entry id")
        .parse()
        .expect("a uuid");
    t.lake
        .collections()
        .recorded(entry)
        .await
        .expect("the collection is recorded")
}

/// What `lake fsck --verify` finds, with no grace period (nothing is in flight).
async fn fsck_findings(lake: &lake_host::lake::Lake) -> Vec<lake_host::fsck::Finding> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let gather = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(f) = rx.recv().await {
            all.push(f);
        }
        all
    });
    let opts = lake_host::fsck::FsckOptions {
        verify: true,
        repair: false,
        grace: Duration::ZERO,
    };
    lake.fsck().run(&opts, &tx).await.expect("fsck runs");
    drop(tx);
    gather.await.expect("gather")
}

/// A connector cannot write outside its dataset's prefix whatever names it gives its objects.
/// Through `POST /collections`, after a good object went first, each hostile name (a path climbing
/// out, an absolute path, `..` inside, `..` alone, an empty name, NUL, a bidirectional control, a
/// zero-width character, backslashes, a nested path, 300 and 600 bytes) fails the collection as
/// the connector's invalid output (`invalid_output`, not an outage), naming the object and why;
/// the good object is deleted, no file at all is left in the store (temporary files included),
/// the failure is recorded with no output, the catalog holds no dataset, and `fsck --verify` finds
/// nothing. Names that only look like paths (`%2F..%2Fx`, `...`) and a 255-byte name are plain
/// names, stored as they are inside the new dataset's own prefix and nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_object_names_never_reach_outside_the_datasets_prefix() {
    let (addr, _upstream) = serve().await;
    let (t, _plugins) = lake_with(grant(addr)).await;
    let objects = lake_dir(&t).join("objects");
    const SEGMENTS: &str = "an object name must be a relative path without . or .. segments";
    const NOT_A_PATH: &str = "must be a plain name, not a path";
    const INVISIBLE: &str = "invisible or bidirectional formatting characters";
    let refused: Vec<(String, &str)> = vec![
        ("../other/x.csv".into(), SEGMENTS),
        ("/etc/passwd".into(), SEGMENTS),
        ("a/../../b".into(), SEGMENTS),
        ("..".into(), SEGMENTS),
        (String::new(), SEGMENTS),
        ("x\0y.csv".into(), SEGMENTS),
        ("evil\u{202e}vsc.csv".into(), INVISIBLE),
        ("zero\u{200b}width.csv".into(), INVISIBLE),
        ("..\\..\\x.csv".into(), NOT_A_PATH),
        ("sub/x.csv".into(), NOT_A_PATH),
        ("n".repeat(300), "must be 1 to 255 bytes"),
        ("n".repeat(600), SEGMENTS),
    ];
    for (i, (name, why)) in refused.iter().enumerate() {
        let job = run_collection(
            &t,
            &format!("hostile-{i}"),
            json!({
                "urls": [format!("http://{addr}/data/good.csv"), format!("http://{addr}/data/h{i}.bin")],
                "names": ["good.csv", name],
            }),
        )
        .await;
        assert_eq!(job["status"], "failed", "{name:?}: {job}");
        assert_eq!(job["result"]["code"], "invalid_output", "{name:?}: {job}");
        let error = job["error"].as_str().expect("error");
        assert!(
            error.contains(&format!("{name:?}")) && error.contains(why),
            "{name:?}: {error}"
        );
        let (entry, record) = recorded(&t, &job).await;
        assert!(entry.outputs.is_empty(), "{name:?}: {entry:?}");
        assert_eq!(
            record.error.as_ref().map(|e| e.code.as_str()),
            Some("invalid_output"),
            "{name:?}"
        );
        let left = files_under(&objects);
        assert!(left.is_empty(), "{name:?} left objects behind: {left:?}");
    }
    let dump = t.lake.catalog().export().await.expect("export");
    assert!(dump.datasets.is_empty(), "{:?}", dump.datasets);
    assert!(dump.files.is_empty(), "{:?}", dump.files);

    let accepted = [
        "%2F..%2Fx".to_owned(),
        "..%2F..%2Fetc%2Fpasswd".to_owned(),
        "...".to_owned(),
        "n".repeat(255),
    ];
    let urls: Vec<String> = (0..accepted.len())
        .map(|i| format!("http://{addr}/data/ok{i}.bin"))
        .collect();
    let job = run_collection(&t, "literal", json!({"urls": urls, "names": accepted})).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let dump = t.lake.catalog().export().await.expect("export");
    assert_eq!(dump.datasets.len(), 1, "{:?}", dump.datasets);
    let d = &dump.datasets[0];
    assert_eq!(
        job["result"]["dataset_id"].as_str(),
        Some(d.id.to_string().as_str())
    );
    assert!(d.prefix.starts_with("fetch/literal/"), "{}", d.prefix);
    let mut want: Vec<PathBuf> = accepted
        .iter()
        .map(|n| PathBuf::from(&d.bucket).join(format!("{}{n}", d.prefix)))
        .collect();
    want.sort();
    assert_eq!(
        files_under(&objects),
        want,
        "each object is one file inside the dataset's prefix, and nothing else is stored"
    );
    assert_eq!(
        std::fs::read(
            objects
                .join(&d.bucket)
                .join(format!("{}%2F..%2Fx", d.prefix))
        )
        .expect("the object"),
        body_of("ok0.bin")
    );
    let mut names: Vec<&str> = dump.files.iter().map(|f| f.file.name.as_str()).collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = accepted.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
    let found = fsck_findings(&t.lake).await;
    assert!(found.is_empty(), "nothing half-written: {found:?}");
}

/// An upstream that counts what it is asked (`path?query`, one line per request) and answers each
/// path in its routes with a redirect, any other with 200 and `object`.
#[derive(Clone, Default)]
struct Hops {
    seen: Arc<Mutex<Vec<String>>>,
    routes: Arc<Mutex<BTreeMap<String, (StatusCode, String)>>>,
}

impl Hops {
    /// `path` answers `status` with `location`.
    fn route(&self, path: &str, status: StatusCode, location: String) {
        self.routes
            .lock()
            .expect("lock")
            .insert(path.to_owned(), (status, location));
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn hops() -> (SocketAddr, Hops) {
    async fn answer(State(h): State<Hops>, uri: Uri) -> axum::response::Response {
        h.seen.lock().expect("lock").push(uri.to_string());
        let route = h.routes.lock().expect("lock").get(uri.path()).cloned();
        match route {
            Some((status, location)) => {
                (status, [(header::LOCATION, location)], "moved").into_response()
            }
            None => "object".into_response(),
        }
    }
    let h = Hops::default();
    let app = axum::Router::new().fallback(answer).with_state(h.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, h)
}

/// The host never follows a redirect itself, and a connector that follows one makes a new request
/// the grants are checked against again, hop by hop. Upstreams A and B are granted, C (another
/// port of 127.0.0.1) is not; the link-local and metadata hosts are granted too, to no effect.
/// A's 301, 302, 307 and 308 to C, its 302 to `localhost` (another name for itself) and to a
/// scheme-relative `//C/...`, its redirects to 169.254.169.254 and metadata.google.internal, and
/// the chain A -> B -> C each fail the collection as `capability_denied` naming the refused
/// origin; the recorded requests end with the refusal after the granted hops' 3xx; C (and A under
/// another name) receives no request; nothing is stored and `fsck --verify` finds nothing. A
/// connector that does not follow gets the 302 itself (C still untouched), and A -> B, both
/// granted, is followed and stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_reach_only_granted_origins_checked_at_every_hop() {
    let (a, ha) = hops().await;
    let (b, hb) = hops().await;
    let (c, hc) = hops().await;
    let (t, _plugins) = lake_with(PluginOverride {
        hosts: vec![
            format!("http://{a}"),
            format!("http://{b}"),
            "http://169.254.169.254".into(),
            "http://metadata.google.internal".into(),
        ],
        ..Default::default()
    })
    .await;
    let objects = lake_dir(&t).join("objects");
    for status in [301u16, 302, 307, 308] {
        ha.route(
            &format!("/{status}"),
            StatusCode::from_u16(status).expect("status"),
            format!("http://{c}/x{status}"),
        );
    }
    let localhost = format!("http://localhost:{}", a.port());
    ha.route("/other-name", StatusCode::FOUND, format!("{localhost}/x"));
    ha.route("/scheme-relative", StatusCode::FOUND, format!("//{c}/x"));
    let meta = "http://169.254.169.254/latest/meta-data/";
    let gce = "http://metadata.google.internal/computeMetadata/v1/";
    ha.route("/meta", StatusCode::MOVED_PERMANENTLY, meta.into());
    ha.route("/gce", StatusCode::TEMPORARY_REDIRECT, gce.into());
    ha.route("/chain", StatusCode::FOUND, format!("http://{b}/hop"));
    hb.route(
        "/hop",
        StatusCode::TEMPORARY_REDIRECT,
        format!("http://{c}/x"),
    );
    ha.route("/granted", StatusCode::FOUND, format!("http://{b}/fine"));

    const NOT_GRANTED: &str = "is not among the hosts lake.toml grants fetch";
    const NEVER: &str = "link-local and cloud metadata addresses are never reachable";
    let c_origin = format!("http://{c}");
    let refused: Vec<(&str, String, &str)> = vec![
        ("/301", c_origin.clone(), NOT_GRANTED),
        ("/302", c_origin.clone(), NOT_GRANTED),
        ("/307", c_origin.clone(), NOT_GRANTED),
        ("/308", c_origin.clone(), NOT_GRANTED),
        ("/other-name", localhost.clone(), NOT_GRANTED),
        ("/scheme-relative", c_origin.clone(), NOT_GRANTED),
        ("/meta", meta.to_owned(), NEVER),
        ("/gce", gce.to_owned(), NEVER),
        ("/chain", c_origin.clone(), NOT_GRANTED),
    ];
    for (path, origin, why) in &refused {
        let job = run_collection(
            &t,
            &format!("redirect{}", path.replace('/', "-")),
            json!({"urls": [format!("http://{a}{path}")], "follow": 5}),
        )
        .await;
        assert_eq!(job["status"], "failed", "{path}: {job}");
        assert_eq!(job["result"]["code"], "capability_denied", "{path}: {job}");
        let error = job["error"].as_str().expect("error");
        assert!(
            error.contains(origin.as_str()) && error.contains(why),
            "{path}: {error}"
        );
        let (entry, record) = recorded(&t, &job).await;
        assert!(entry.outputs.is_empty(), "{path}: {entry:?}");
        let requests = record.requests.as_array().expect("requests").clone();
        let asked = if *path == "/chain" { 3 } else { 2 };
        assert_eq!(requests.len(), asked, "{path}: {requests:?}");
        let (refusal, followed) = requests.split_last().expect("a request");
        assert!(
            refusal["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("denied: ") && e.contains(origin.as_str())),
            "{path}: {requests:?}"
        );
        assert!(refusal["status"].is_null(), "{path}: {requests:?}");
        assert!(
            followed.iter().all(|r| r["status"]
                .as_u64()
                .is_some_and(|s| (300..400).contains(&s))),
            "{path}: {requests:?}"
        );
        let left = files_under(&objects);
        assert!(left.is_empty(), "{path} stored {left:?}");
    }
    assert!(hc.seen().is_empty(), "C was reached: {:?}", hc.seen());
    assert!(
        !ha.seen().iter().any(|s| s.starts_with("/x")),
        "A was reached as localhost: {:?}",
        ha.seen()
    );
    assert_eq!(hb.seen(), vec!["/hop".to_owned()]);

    // Not followed by the connector, the 302 is its answer: the host did not follow it either.
    let job = run_collection(
        &t,
        "no-follow",
        json!({"urls": [format!("http://{a}/302")]}),
    )
    .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["result"]["code"], "invalid_input", "{job}");
    assert!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("answered 302")),
        "{job}"
    );
    let (_, record) = recorded(&t, &job).await;
    let requests = record.requests.as_array().expect("requests").clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["status"], 302, "{requests:?}");
    assert!(hc.seen().is_empty(), "C was reached: {:?}", hc.seen());
    assert!(files_under(&objects).is_empty());
    let dump = t.lake.catalog().export().await.expect("export");
    assert!(dump.datasets.is_empty(), "{:?}", dump.datasets);

    // Granted to granted is followed, and stored.
    let job = run_collection(
        &t,
        "granted-hop",
        json!({"urls": [format!("http://{a}/granted")], "follow": 5}),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        job["result"]["files"][0]["facts"]["location:0"],
        format!("http://{b}/fine")
    );
    assert_eq!(hb.seen(), vec!["/hop".to_owned(), "/fine".to_owned()]);
    let stored = files_under(&objects);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        std::fs::read(objects.join(&stored[0])).expect("object"),
        b"object"
    );
    assert!(hc.seen().is_empty(), "C was reached: {:?}", hc.seen());
    let found = fsck_findings(&t.lake).await;
    assert!(found.is_empty(), "nothing half-written: {found:?}");
}

/// The query credential `fetch` is granted in the tests below, as given and as the host sends it.
const QUERY_SECRET: &str = "qs3cr3t/K+42";
const QUERY_SECRET_SENT: &str = "qs3cr3t%2FK%2B42";
/// The header credential.
const HEADER_SECRET: &str = "hdr-T0KEN-77";

/// How Python's `quote` escapes (`/` left as it is): how an upstream may write a key back.
const PYTHON_QUOTE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` with the hex digits of its `%XX` escapes in lowercase, as a server that normalises URLs
/// writes them.
fn lowercase_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut hex = 0;
    for ch in text.chars() {
        if hex > 0 {
            out.push(ch.to_ascii_lowercase());
            hex -= 1;
        } else {
            if ch == '%' {
                hex = 2;
            }
            out.push(ch);
        }
    }
    out
}

/// An upstream that hands back what it was sent: `/moved` redirects (301) to `/echo` with the
/// query it got, the host's `api_key` included, quoting the new URL in its body; `/moved-lower`
/// does the same with the escapes in lowercase; `/moved-python` (302) writes the key back escaped
/// its own way (`/` unescaped), in its body too; any other path answers 200 with the request
/// line, the token header and the decoded key in its body and in `x-echo-*` headers.
#[derive(Clone)]
struct Echo {
    addr: SocketAddr,
    /// One line per request: `path?query token`.
    seen: Arc<Mutex<Vec<String>>>,
}

async fn echo_upstream() -> Echo {
    async fn answer(
        State(e): State<Echo>,
        uri: Uri,
        headers: HeaderMap,
    ) -> axum::response::Response {
        let token = headers
            .get("x-api-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let query = uri.query().unwrap_or_default().to_owned();
        e.seen.lock().expect("lock").push(format!("{uri} {token}"));
        let mut keys: Vec<String> = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("api_key="))
            .map(|v| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .filter(|v| v != "REDACTED")
            .collect();
        let key = keys.pop().unwrap_or_default();
        let base = format!("http://{}", e.addr);
        let moved = |status: StatusCode, to: String, body: String| {
            (status, [(header::LOCATION, to)], body).into_response()
        };
        match uri.path() {
            "/moved" => {
                let to = format!("{base}/echo?{query}");
                let body = format!("Moved Permanently to {to}\n");
                moved(StatusCode::MOVED_PERMANENTLY, to, body)
            }
            "/moved-lower" => {
                let to = format!("{base}/echo?{}", lowercase_escapes(&query));
                let body = format!("Moved Permanently to {to}\n");
                moved(StatusCode::MOVED_PERMANENTLY, to, body)
            }
            "/moved-python" => {
                let to = format!(
                    "{base}/echo?api_key={}",
                    percent_encoding::utf8_percent_encode(&key, PYTHON_QUOTE)
                );
                let body = format!("Found at {to}\n");
                moved(StatusCode::FOUND, to, body)
            }
            _ => {
                let body = format!("GET {uri}\nx-api-token: {token}\napi_key: {key}\n");
                (
                    [
                        ("x-echo-token", token),
                        ("x-echo-key", key),
                        ("x-echo-query", query),
                    ],
                    body,
                )
                    .into_response()
            }
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let echo = Echo {
        addr: listener.local_addr().expect("addr"),
        seen: Arc::default(),
    };
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(echo.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    echo
}

/// Credentials the host adds never end up stored, whatever the upstream does with them (issue 22,
/// found 8). `fetch` is granted the echoing upstream with an `api_key` query credential and an
/// `X-Api-Token` header. Through `POST /collections` it follows the upstream's 301s, whose
/// `Location` repeats the key as sent and with lowercase escapes, to a page that echoes the
/// request line, the token and the key in its body and headers, keeping every header and each
/// `Location` as facts; and, in a second collection, stores the redirects themselves (bodies
/// quoting the `Location`, the `Location` as a fact, one with the key escaped its own way). The
/// upstream received both credentials on every request, yet what was stored (objects, facts,
/// provenance, jobs: every byte of the lake's directory, database files included) holds neither,
/// only `REDACTED` where they were, and `fsck --verify` finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_an_upstream_sends_back_are_never_stored() {
    let echo = echo_upstream().await;
    let e = echo.addr;
    let (t, _plugins) = lake_with(PluginOverride {
        credentials: Credentials {
            query: [("api_key".to_owned(), Secret::new(QUERY_SECRET))].into(),
            headers: [("X-Api-Token".to_owned(), Secret::new(HEADER_SECRET))].into(),
        },
        ..grant(e)
    })
    .await;
    let followed = run_collection(
        &t,
        "followed",
        json!({
            "urls": [format!("http://{e}/moved?db=gene"), format!("http://{e}/moved-lower")],
            "names": ["a.txt", "b.txt"],
            "follow": 3,
            "header_facts": true,
        }),
    )
    .await;
    assert_eq!(followed["status"], "succeeded", "{followed}");
    let kept = run_collection(
        &t,
        "kept",
        json!({
            "urls": [
                format!("http://{e}/moved"),
                format!("http://{e}/moved-lower"),
                format!("http://{e}/moved-python"),
            ],
            "names": ["m1.txt", "m2.txt", "m3.txt"],
            "any_status": true,
            "header_facts": true,
        }),
    )
    .await;
    assert_eq!(kept["status"], "succeeded", "{kept}");

    // The upstream got both credentials on every request: their absence below means something.
    let seen = echo.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| s.contains(&format!("api_key={QUERY_SECRET_SENT}"))
                && s.ends_with(&format!(" {HEADER_SECRET}"))),
        "{seen:?}"
    );

    // What the connector kept says `REDACTED` where the credentials were.
    let facts = |job: &Value| -> BTreeMap<String, Value> {
        job["result"]["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().expect("name").to_owned(),
                    f["facts"].clone(),
                )
            })
            .collect()
    };
    let got = facts(&followed);
    assert_eq!(
        got["a.txt"]["location:0"],
        format!("http://{e}/echo?db=gene&api_key=REDACTED")
    );
    assert_eq!(
        got["b.txt"]["location:0"],
        format!("http://{e}/echo?api_key=REDACTED")
    );
    for f in ["a.txt", "b.txt"] {
        assert_eq!(got[f]["header:x-echo-token"], "REDACTED", "{f}: {}", got[f]);
        assert_eq!(got[f]["header:x-echo-key"], "REDACTED", "{f}: {}", got[f]);
        assert!(
            got[f]["header:x-echo-query"]
                .as_str()
                .is_some_and(|q| q.ends_with("api_key=REDACTED&api_key=REDACTED")),
            "{f}: {}",
            got[f]
        );
    }
    let got = facts(&kept);
    let moved_to = format!("http://{e}/echo?api_key=REDACTED");
    assert_eq!(got["m1.txt"]["header:location"], moved_to.as_str());
    assert_eq!(got["m2.txt"]["header:location"], moved_to.as_str());
    // Written back as Python's `quote` would (`/` left as it is): replaced where it stands.
    assert_eq!(got["m3.txt"]["header:location"], moved_to.as_str());

    let root = lake_dir(&t);
    let objects = root.join("objects");
    let body = |name: &str| -> String {
        let path = files_under(&objects)
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n == name))
            .expect("stored");
        String::from_utf8(std::fs::read(objects.join(path)).expect("read")).expect("text")
    };
    for f in ["a.txt", "b.txt"] {
        let text = body(f);
        assert!(
            text.starts_with("GET /echo?")
                && text.contains("api_key=REDACTED&api_key=REDACTED\n")
                && text.contains("x-api-token: REDACTED\n")
                && text.contains("api_key: REDACTED\n"),
            "{f}: {text}"
        );
    }
    for f in ["m1.txt", "m2.txt"] {
        assert_eq!(body(f), format!("Moved Permanently to {moved_to}\n"));
    }

    // Nowhere in the lake: every byte of its directory (objects, catalog database and its log),
    // the catalog as exported, the jobs.
    let needles = ["qs3cr3t", "T0KEN"];
    for path in files_under(&root) {
        let bytes = std::fs::read(root.join(&path)).expect("read");
        for n in needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                "{} holds {n}",
                path.display()
            );
        }
    }
    let dump = t.lake.catalog().export().await.expect("export");
    let text = format!(
        "{}{followed}{kept}",
        serde_json::to_string(&dump).expect("json")
    );
    for n in needles {
        assert!(!text.contains(n), "the catalog holds {n}: {text}");
    }
    let found = fsck_findings(&t.lake).await;
    assert!(found.is_empty(), "nothing half-written: {found:?}");
}
