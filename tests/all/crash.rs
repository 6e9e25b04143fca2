//! Crashes and outages, with real processes: `lake serve` replicas on one PostgreSQL database and
//! one set of Garage buckets, one of them killed with SIGKILL (`Child::kill`) in the middle of an
//! upload, a promotion, a backup, a collection and a save; and the store or the database taken
//! away under a running replica. After each: the surviving (or the same) replica serves, `GET
//! /admin/fsck` finds only what `--repair` reports as safe (repaired, then nothing), and the
//! client's request, retried, completes.
//!
//! Garage and PostgreSQL are shared by the whole suite, so they are not stopped here: a replica
//! reaches them through a TCP proxy this test owns, and "stopping" one closes every connection
//! through the proxy and refuses new ones until it is "started" again. To the lake that is what a
//! stopped store or a restarted database is: connections reset mid-request, then refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lake_host::blob::{BlobStore, body_of};
use serde_json::{Value, json};

use crate::walkthrough::{Server, production_envs, start};

/// The bytes of the upload: 200 MB of CSV, produced as it is sent.
const UPLOAD_BYTES: u64 = 200_000_000;
/// Files of the promoted dataset.
const PROMOTED_FILES: usize = 500;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .expect("client")
}

/// A replica started with `envs` plus `extra`.
fn replica(
    envs: &[(String, String)],
    extra: &[(&str, &str)],
) -> (Server, String, tempfile::TempDir) {
    let mut all = envs.to_vec();
    for (k, v) in extra {
        all.push(((*k).to_owned(), (*v).to_owned()));
    }
    tokio::task::block_in_place(|| start(&all))
}

/// Settings for replicas on a fresh PostgreSQL database and fresh Garage buckets.
async fn shared_envs() -> Option<Vec<(String, String)>> {
    tokio::task::spawn_blocking(production_envs)
        .await
        .expect("envs")
}

fn env<'a>(envs: &'a [(String, String)], key: &str) -> &'a str {
    envs.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} is set"))
}

/// A CSV of `total` bytes, made as it is read; `sent` counts the bytes handed over.
fn csv_body(total: u64, sent: Arc<AtomicU64>) -> reqwest::Body {
    let chunks = futures::stream::unfold(0u64, move |row| {
        let sent = sent.clone();
        async move {
            let done = sent.load(Ordering::SeqCst);
            if done >= total {
                return None;
            }
            let mut chunk = if row == 0 {
                b"sample_id,gene,value,note\n".to_vec()
            } else {
                Vec::new()
            };
            let mut r = row;
            while chunk.len() < 1 << 20 && done + (chunk.len() as u64) < total {
                chunk.extend_from_slice(
                    format!(
                        "S{r},G{},{:.3},note {r} padded for width\n",
                        r % 20_000,
                        r as f64 * 0.37
                    )
                    .as_bytes(),
                );
                r += 1;
            }
            sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            Some((Ok::<_, std::io::Error>(chunk), r))
        }
    });
    reqwest::Body::wrap_stream(chunks)
}

/// Uploads the 200 MB CSV; the response's status and JSON.
async fn upload(url: String, sent: Arc<AtomicU64>) -> Result<(u16, Value), reqwest::Error> {
    let resp = client()
        .post(format!("{url}/files/upload?filename=crash.csv"))
        .body(csv_body(UPLOAD_BYTES, sent))
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// Waits until `ready` holds, polling, or fails after `limit`.
async fn until(limit: Duration, what: &str, mut ready: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !ready().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_json(url: &str) -> (u16, Value) {
    let resp = client().get(url).send().await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post_json(url: &str, body: Value) -> (u16, Value) {
    let resp = client().post(url).json(&body).send().await.expect("POST");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The lines of a `/admin/fsck` answer: findings, then the summary.
async fn fsck_lines(url: &str, repair: bool) -> (Vec<Value>, Value) {
    let resp = if repair {
        client()
            .post(format!("{url}/admin/fsck/repair"))
            .json(&json!({ "grace_secs": 0 }))
            .send()
            .await
    } else {
        client()
            .get(format!("{url}/admin/fsck?grace_secs=0"))
            .send()
            .await
    }
    .expect("fsck");
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.expect("body");
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let last = lines.pop().expect("a summary line");
    assert!(last.get("error").is_none(), "the check failed: {last}");
    (lines, last["summary"].clone())
}

/// The check after a crash: every problem is one `--repair` fixes, and after the repair there is
/// none. Returns the problems found, for the test to look at.
async fn fsck_repairs_only_safe_problems(url: &str) -> Vec<Value> {
    let (found, _) = fsck_lines(url, false).await;
    for f in &found {
        assert_eq!(
            f["safe_to_repair"], true,
            "an unsafe problem after a crash: {f}"
        );
    }
    if !found.is_empty() {
        let (repaired, summary) = fsck_lines(url, true).await;
        assert_eq!(
            summary["problems"], summary["repaired"],
            "every problem repaired: {repaired:#?}"
        );
    }
    let (left, summary) = fsck_lines(url, false).await;
    assert!(
        left.is_empty(),
        "nothing is left after the repair: {left:#?}"
    );
    assert!(summary["files"].as_u64().is_some(), "{summary}");
    found
}

/// The problems of `found` by kind.
fn kinds(found: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = found
        .iter()
        .map(|f| f["problem"].as_str().unwrap_or_default().to_owned())
        .collect();
    k.sort();
    k.dedup();
    k
}

async fn healthy(url: &str) {
    let (status, body) = get_json(&format!("{url}/health")).await;
    assert_eq!(status, 200, "{body}");
}

fn garage_for(envs: &[(String, String)]) -> lake_host::blob::s3::S3Store {
    let mut cfg = crate::garage_config().expect("garage");
    cfg.endpoint = Some(env(envs, "LAKE_STORAGE__S3__ENDPOINT").to_owned());
    lake_host::blob::s3::S3Store::new(&cfg).expect("client")
}

/// A raw dataset of [`PROMOTED_FILES`] objects, put into the raw bucket and registered.
async fn many_files_dataset(url: &str, envs: &[(String, String)]) -> String {
    let store = garage_for(envs);
    let raw = env(envs, "LAKE_STORAGE__BUCKETS__RAW");
    let prefix = format!("plates/{}/", crate::unique("p"));
    futures::stream::iter(0..PROMOTED_FILES)
        .map(|i| {
            let (store, key) = (&store, format!("{prefix}well-{i:03}.csv"));
            async move {
                let bytes = format!("well,signal\n{i},{}\n", i * 7)
                    .repeat(200)
                    .into_bytes();
                store.put(raw, &key, body_of(bytes)).await.expect("put");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let (status, d) = post_json(
        &format!("{url}/catalog"),
        json!({ "name": "plates", "source": "plates", "object_path": format!("{raw}/{prefix}") }),
    )
    .await;
    assert_eq!(status, 201, "{d}");
    assert_eq!(d["file_count"], PROMOTED_FILES, "{d}");
    d["id"].as_str().expect("id").to_owned()
}

/// Objects in a bucket (through the real Garage, not a proxy).
async fn count_objects(bucket: &str) -> usize {
    crate::garage()
        .expect("garage")
        .list(bucket, "")
        .await
        .map(|l| l.len())
        .unwrap_or(0)
}

/// Starts a promotion to processed; the request runs on its own task.
fn promote(url: &str, id: &str) -> tokio::task::JoinHandle<Result<(u16, Value), reqwest::Error>> {
    let (url, id) = (url.to_owned(), id.to_owned());
    tokio::spawn(async move {
        let resp = client()
            .post(format!("{url}/layers/promote"))
            .json(&json!({ "dataset_id": id, "target_layer": "processed" }))
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    })
}

/// The retried promotion completes: the target is ready with every file.
async fn promotion_completes(url: &str, id: &str) {
    let (status, p) = promote(url, id).await.expect("task").expect("request");
    assert!(status == 200 || status == 201, "{p}");
    let target = p["dataset"]["id"].as_str().expect("target id");
    let (status, d) = get_json(&format!("{url}/catalog/{target}")).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["status"], "ready", "{d}");
    assert_eq!(d["file_count"], PROMOTED_FILES, "{d}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_in_the_middle_of_an_upload() {
    let Some(envs) = shared_envs().await else {
        return;
    };
    let (a, url_a, _da) = replica(&envs, &[]);
    let (_b, url_b, _db) = replica(&envs, &[]);
    let sent = Arc::new(AtomicU64::new(0));
    let upload_a = tokio::spawn(upload(url_a.clone(), sent.clone()));
    until(Duration::from_secs(120), "60 MB sent", async || {
        sent.load(Ordering::SeqCst) >= 60_000_000
    })
    .await;
    drop(a); // SIGKILL
    let outcome = upload_a.await.expect("task");
    assert!(
        outcome.as_ref().map_or(true, |(s, _)| *s >= 500),
        "an upload cut by the kill never succeeds: {outcome:?}"
    );
    healthy(&url_b).await;
    let found = fsck_repairs_only_safe_problems(&url_b).await;
    eprintln!("after killing an upload: {:?}", kinds(&found));
    let (status, file) = upload(url_b.clone(), Arc::new(AtomicU64::new(0)))
        .await
        .expect("retry");
    assert_eq!(status, 201, "the retried upload completes: {file}");
    assert!(
        file["rows"].as_u64().is_some_and(|r| r > 2_000_000),
        "{file}"
    );
    assert!(fsck_repairs_only_safe_problems(&url_b).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_in_the_middle_of_a_promotion() {
    let Some(envs) = shared_envs().await else {
        return;
    };
    let slow = [("LAKE_LAYERS__PROMOTION_PARALLELISM", "2")];
    let (a, url_a, _da) = replica(&envs, &slow);
    let (_b, url_b, _db) = replica(&envs, &[]);
    let id = many_files_dataset(&url_a, &envs).await;
    let processed = env(&envs, "LAKE_STORAGE__BUCKETS__PROCESSED").to_owned();
    let running = promote(&url_a, &id);
    until(Duration::from_secs(60), "50 files copied", async || {
        count_objects(&processed).await >= 50
    })
    .await;
    drop(a);
    let copied = count_objects(&processed).await;
    let _ = running.await;
    assert!(
        copied < PROMOTED_FILES,
        "the kill landed mid-copy ({copied} copied)"
    );
    healthy(&url_b).await;
    let found = fsck_repairs_only_safe_problems(&url_b).await;
    let k = kinds(&found);
    assert!(
        k.contains(&"stalled_promotion".to_owned()),
        "the stopped promotion is found: {found:#?}"
    );
    // The repair resumed it; the client's retry answers the completed target.
    promotion_completes(&url_b, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_in_the_middle_of_a_backup() {
    let Some(envs) = shared_envs().await else {
        return;
    };
    let lease = [("LAKE_SERVER__JOB_LEASE_SECS", "6")];
    let (a, url_a, _da) = replica(&envs, &lease);
    let (_b, url_b, _db) = replica(&envs, &lease);
    many_files_dataset(&url_a, &envs).await;
    let backups = env(&envs, "LAKE_BACKUP__BUCKET").to_owned();
    let (status, job) = post_json(&format!("{url_a}/backup/trigger"), json!({})).await;
    assert_eq!(status, 202, "{job}");
    until(Duration::from_secs(60), "backup objects", async || {
        count_objects(&backups).await >= 20
    })
    .await;
    drop(a);
    healthy(&url_b).await;
    // Past the lease, the killed replica's job is abandoned: found and failed.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let found = fsck_repairs_only_safe_problems(&url_b).await;
    eprintln!("after killing a backup: {:?}", kinds(&found));
    let (_, killed) = get_json(&format!(
        "{url_b}/backup/jobs/{}",
        job["id"].as_str().expect("id")
    ))
    .await;
    assert_eq!(
        killed["status"], "failed",
        "the killed backup never counts as done: {killed}"
    );
    // The retry completes, and the backup verifies.
    let (status, retry) = post_json(&format!("{url_b}/backup/trigger"), json!({})).await;
    assert_eq!(status, 202, "{retry}");
    let path = format!("{url_b}/backup/jobs/{}", retry["id"].as_str().expect("id"));
    until(Duration::from_secs(300), "the retried backup", async || {
        let s = get_json(&path).await.1["status"].clone();
        s != "running" && s != "queued"
    })
    .await;
    let (_, done) = get_json(&path).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(fsck_repairs_only_safe_problems(&url_b).await.is_empty());
}

/// An upstream for the `fetch` connector: `/fast.bin` at once, `/slow.bin` a piece every 100 ms.
async fn dripping_upstream(started: Arc<AtomicBool>) -> SocketAddr {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/fast.bin", get(|| async { vec![b'f'; 1 << 20] }))
        .route(
            "/slow.bin",
            get(move || {
                let started = started.clone();
                async move {
                    started.store(true, Ordering::SeqCst);
                    let pieces = futures::stream::iter(0..60).then(|_| async {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, std::io::Error>(vec![b's'; 16 << 10])
                    });
                    axum::body::Body::from_stream(pieces)
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_in_the_middle_of_a_collection() {
    let Some(envs) = shared_envs().await else {
        return;
    };
    let started = Arc::new(AtomicBool::new(false));
    let upstream = dripping_upstream(started.clone()).await;
    let plugins = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        crate::hostile::components().join("fetch.wasm"),
        plugins.path().join("fetch.wasm"),
    )
    .expect("copy");
    let config = plugins.path().join("lake.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins]\ndir = {dir:?}\n[plugins.overrides.fetch]\nhosts = [\"http://{upstream}\"]\n\n\
             [[sources]]\nname = \"drip\"\nplugin = \"fetch\"\nexternal_id = \"drip\"\n\
             params = {{ urls = [\"http://{upstream}/fast.bin\", \"http://{upstream}/slow.bin\"] }}\n",
            dir = plugins.path().display().to_string()
        ),
    )
    .expect("config");
    let config = config.display().to_string();
    let extra = [
        ("LAKE_CONFIG", config.as_str()),
        ("LAKE_SERVER__JOB_LEASE_SECS", "6"),
    ];
    let (a, url_a, _da) = replica(&envs, &extra);
    let (_b, url_b, _db) = replica(&envs, &extra);
    let (status, job) =
        post_json(&format!("{url_a}/collections"), json!({ "source": "drip" })).await;
    assert_eq!(status, 202, "{job}");
    until(Duration::from_secs(60), "the slow download", async || {
        started.load(Ordering::SeqCst)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(a);
    healthy(&url_b).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let found = fsck_repairs_only_safe_problems(&url_b).await;
    let k = kinds(&found);
    eprintln!("after killing a collection: {k:?}");
    assert!(
        k.contains(&"uncataloged_object".to_owned()),
        "the object stored before the kill is found: {found:#?}"
    );
    // The retry completes with both files.
    let (status, retry) =
        post_json(&format!("{url_b}/collections"), json!({ "source": "drip" })).await;
    assert_eq!(status, 202, "{retry}");
    let path = format!("{url_b}/collections/{}", retry["id"].as_str().expect("id"));
    until(
        Duration::from_secs(120),
        "the retried collection",
        async || {
            let s = get_json(&path).await.1["status"].clone();
            s != "running" && s != "queued"
        },
    )
    .await;
    let (_, done) = get_json(&path).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(fsck_repairs_only_safe_problems(&url_b).await.is_empty());
}

/// Uploads a small CSV; its file id.
async fn small_upload(url: &str, name: &str, body: String) -> String {
    let resp = client()
        .post(format!("{url}/files/upload?filename={name}"))
        .body(body)
        .send()
        .await
        .expect("upload");
    assert!(resp.status().is_success(), "{resp:?}");
    let v: Value = resp.json().await.expect("json");
    v["file_id"].as_str().expect("file id").to_owned()
}

async fn merge_key(url: &str, left: &str, right: &str) -> String {
    let (status, m) = get_json(&format!(
        "{url}/files/merge?file_id_1={left}&file_id_2={right}&on=sample_id&how=inner"
    ))
    .await;
    assert_eq!(status, 200, "{m}");
    m["cache_key"].as_str().expect("key").to_owned()
}

/// (e) A save of a merge result killed while it writes its object. The replica's store traffic
/// goes through a metered proxy: once the merge result is in the replica's memory, the proxy lets
/// the save's first MiB through to Garage and then holds the rest, so the kill lands in the middle
/// of the save for certain (the save is seen under way and unanswered before it). The client gets
/// no answer (its connection drops: never a 201), no dataset of that name appears, `fsck` finds
/// only what it repairs, and the retry on the other replica completes.
#[tokio::test(flavor = "multi_thread")]
async fn killed_in_the_middle_of_a_save() {
    let Some(envs) = shared_envs().await else {
        return;
    };
    let mut held = envs.clone();
    // Nothing but the save talks to A's store once the proxy holds: no scheduled backup.
    held.push(("LAKE_BACKUP__DAILY_AT".to_owned(), String::new()));
    held.push(("LAKE_BACKUP__WEEKLY_AT".to_owned(), String::new()));
    let store = through_metered_store_proxy(&mut held).await;
    let (a, url_a, _da) = replica(&held, &[]);
    let (_b, url_b, _db) = replica(&envs, &[]);
    let rows = 300_000;
    let mut left = String::from("sample_id,gene,tpm\n");
    let mut right = String::from("sample_id,tissue\n");
    for i in 0..rows {
        left.push_str(&format!("S{i},G{},{}.5\n", i % 977, i % 1000));
        right.push_str(&format!("S{i},T{}\n", i % 13));
    }
    let l = small_upload(&url_a, "left.csv", left).await;
    let r = small_upload(&url_a, "right.csv", right).await;
    let key = merge_key(&url_a, &l, &r).await;
    // The result is in A's memory: what A sends its store from here on is the save's object (about
    // 7 MB of CSV). Its first MiB goes through; the rest waits at the proxy.
    let holding_at = store.hold_after(1 << 20);
    let save = {
        let url = url_a.clone();
        let key = key.clone();
        tokio::spawn(async move {
            client()
                .post(format!("{url}/files/save_merged"))
                .json(&json!({ "cache_key": key, "name": "joined", "format": "csv" }))
                .send()
                .await
        })
    };
    until(
        Duration::from_secs(120),
        "the save's first MiB at the store",
        async || store.sent() >= holding_at,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !save.is_finished(),
        "the save is under way, held in the middle of writing its object"
    );
    drop(a); // SIGKILL
    store.stop();
    let outcome = save.await.expect("task");
    match &outcome {
        Err(e) => assert!(!e.is_timeout(), "the connection dropped: {e:?}"),
        Ok(resp) => panic!("the killed save answered: {resp:?}"),
    }
    healthy(&url_b).await;
    let (status, page) = get_json(&format!("{url_b}/catalog?q=joined")).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|d| d["name"] != "joined"),
        "the killed save left no dataset: {page}"
    );
    let found = fsck_repairs_only_safe_problems(&url_b).await;
    eprintln!("after killing a save: {:?}", kinds(&found));
    // The client's retry: the merge result lived in the killed replica's memory, so it merges
    // again (the same inputs give the same key) and saves.
    let again = merge_key(&url_b, &l, &r).await;
    assert_eq!(again, key, "a merge's key is its inputs' and parameters'");
    let (status, saved) = post_json(
        &format!("{url_b}/files/save_merged"),
        json!({ "cache_key": again, "name": "joined", "format": "csv" }),
    )
    .await;
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["rows"], rows, "{saved}");
    assert!(fsck_repairs_only_safe_problems(&url_b).await.is_empty());
}

/// A TCP proxy this test owns, standing in front of a shared service so it can be "stopped".
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    /// What a metered proxy has sent on to the service, and may.
    meter: Meter,
}

/// The bytes a metered proxy sends on towards the service: how many so far, and how many it may
/// send in all (past that, every connection's further bytes wait, and so do their senders).
#[derive(Clone)]
struct Meter {
    sent: Arc<AtomicU64>,
    allowed: Arc<AtomicU64>,
}

impl Meter {
    /// Takes up to `want` bytes of the allowance, waiting while none is left; returns how many.
    async fn take(&self, want: usize) -> usize {
        let want = want as u64;
        loop {
            let allowed = self.allowed.load(Ordering::SeqCst);
            let taken = self
                .sent
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |sent| {
                    let room = allowed.saturating_sub(sent);
                    (room > 0).then(|| sent + room.min(want))
                });
            if let Ok(before) = taken {
                return allowed.saturating_sub(before).min(want) as usize;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Copies `from` to `to` until `from` ends, then closes `to`'s side; with a meter, every byte is
/// taken from its allowance first.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    meter: Option<Meter>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut at = 0;
        while at < n {
            let take = match &meter {
                Some(m) => m.take(n - at).await,
                None => n - at,
            };
            if to.write_all(&buf[at..at + take]).await.is_err() {
                return;
            }
            at += take;
        }
    }
    let _ = to.shutdown().await;
}

impl Proxy {
    async fn to(target: SocketAddr) -> Proxy {
        Proxy::serve(target, false).await
    }

    /// A proxy that counts the bytes sent on to the service and can hold them back
    /// ([`Proxy::hold_after`]).
    async fn metered(target: SocketAddr) -> Proxy {
        Proxy::serve(target, true).await
    }

    async fn serve(target: SocketAddr, metered: bool) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let meter = Meter {
            sent: Arc::new(AtomicU64::new(0)),
            allowed: Arc::new(AtomicU64::new(u64::MAX)),
        };
        let (u, c, m) = (up.clone(), conns.clone(), meter.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    drop(inbound); // stopped: closed at once
                    continue;
                }
                let counted = metered.then(|| m.clone());
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    match counted {
                        None => {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                        Some(m) => {
                            let (in_read, in_write) = inbound.into_split();
                            let (out_read, out_write) = outbound.into_split();
                            tokio::join!(
                                pump(in_read, out_write, Some(m)),
                                pump(out_read, in_write, None)
                            );
                        }
                    }
                });
                if let Ok(mut list) = c.lock() {
                    list.push(task.abort_handle());
                }
            }
        });
        Proxy {
            addr,
            up,
            conns,
            meter,
        }
    }

    /// Bytes sent on to the service so far.
    fn sent(&self) -> u64 {
        self.meter.sent.load(Ordering::SeqCst)
    }

    /// Lets `more` bytes more through towards the service, then holds the rest (a metered proxy);
    /// returns the count [`Proxy::sent`] reaches when it starts holding.
    fn hold_after(&self, more: u64) -> u64 {
        let until = self.sent() + more;
        self.meter.allowed.store(until, Ordering::SeqCst);
        until
    }

    /// The service goes away: every connection through the proxy is cut, new ones are closed.
    fn stop(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut list) = self.conns.lock() {
            for c in list.drain(..) {
                c.abort();
            }
        }
    }

    /// The service is back.
    fn start(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn addr_of(url: &str) -> SocketAddr {
    let rest = url.split("://").nth(1).expect("scheme");
    let host = rest
        .split(['/', '@'])
        .find(|p| p.contains(':') && p.chars().next().is_some_and(|c| c.is_ascii_digit()));
    host.expect("host:port").parse().expect("socket address")
}

/// `envs` with the S3 endpoint through a proxy.
async fn through_store_proxy(envs: &mut [(String, String)]) -> Proxy {
    let endpoint = env(envs, "LAKE_STORAGE__S3__ENDPOINT").to_owned();
    let proxy = Proxy::to(addr_of(&endpoint)).await;
    route_store_through(envs, &proxy);
    proxy
}

/// `envs` with the S3 endpoint through a metered proxy.
async fn through_metered_store_proxy(envs: &mut [(String, String)]) -> Proxy {
    let endpoint = env(envs, "LAKE_STORAGE__S3__ENDPOINT").to_owned();
    let proxy = Proxy::metered(addr_of(&endpoint)).await;
    route_store_through(envs, &proxy);
    proxy
}

fn route_store_through(envs: &mut [(String, String)], proxy: &Proxy) {
    for (k, v) in envs.iter_mut() {
        if k == "LAKE_STORAGE__S3__ENDPOINT" {
            *v = format!("http://{}", proxy.addr);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_goes_away_during_an_upload_and_a_promotion() {
    let Some(mut envs) = shared_envs().await else {
        return;
    };
    let garage = crate::garage_config()
        .expect("garage")
        .endpoint
        .expect("endpoint");
    let store = through_store_proxy(&mut envs).await;
    let slow = [("LAKE_LAYERS__PROMOTION_PARALLELISM", "2")];
    let (_c, url, _dc) = replica(&envs, &slow);

    // An upload while the store goes away: refused with a 5xx, the server lives on.
    let sent = Arc::new(AtomicU64::new(0));
    let running = tokio::spawn(upload(url.clone(), sent.clone()));
    until(Duration::from_secs(120), "60 MB sent", async || {
        sent.load(Ordering::SeqCst) >= 60_000_000
    })
    .await;
    store.stop();
    let outcome = running.await.expect("task");
    assert!(
        outcome.as_ref().map_or(true, |(s, _)| *s >= 500),
        "an upload the store failed never succeeds: {outcome:?}"
    );
    if let Ok((status, body)) = &outcome {
        assert_eq!(
            *status, 503,
            "the store's outage is a 503 that says so: {body}"
        );
        assert!(body["error"]["message"].as_str().is_some(), "{body}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    store.start();
    healthy(&url).await;
    let found = fsck_repairs_only_safe_problems(&url).await;
    eprintln!(
        "after the store went away during an upload: {:?}",
        kinds(&found)
    );
    let (status, file) = upload(url.clone(), Arc::new(AtomicU64::new(0)))
        .await
        .expect("retry");
    assert_eq!(status, 201, "the retried upload completes: {file}");

    // A promotion while the store goes away.
    let direct: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| {
            if k == "LAKE_STORAGE__S3__ENDPOINT" {
                (k.clone(), garage.clone())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    let id = many_files_dataset(&url, &direct).await;
    let processed = env(&envs, "LAKE_STORAGE__BUCKETS__PROCESSED").to_owned();
    let before = count_objects(&processed).await;
    let running = promote(&url, &id);
    until(Duration::from_secs(60), "50 files copied", async || {
        count_objects(&processed).await >= before + 50
    })
    .await;
    // Down until the promotion answers (the store client's retries give up): a short outage is
    // ridden out by those retries, which this does not test.
    store.stop();
    let (status, body) = running.await.expect("task").expect("the server answers");
    assert_eq!(status, 503, "the store's outage is a 503: {body}");
    assert!(body["error"]["message"].as_str().is_some(), "{body}");
    store.start();
    healthy(&url).await;
    // The copies made before the outage belong to a failed target: safe to delete, or cataloged
    // by the retry. Here the client retries first.
    promotion_completes(&url, &id).await;
    assert!(fsck_repairs_only_safe_problems(&url).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_restarts_during_a_promotion() {
    let Some(mut envs) = shared_envs().await else {
        return;
    };
    let url_var = env(&envs, "LAKE_CATALOG__URL").to_owned();
    let db = url_var.rsplit('/').next().expect("database").to_owned();
    let pg = Proxy::to(addr_of(&url_var)).await;
    for (k, v) in envs.iter_mut() {
        if k == "LAKE_CATALOG__URL" {
            *v = format!("postgres://postgres@{}/{db}", pg.addr);
        }
    }
    let slow = [("LAKE_LAYERS__PROMOTION_PARALLELISM", "2")];
    let (_d, url, _dd) = replica(&envs, &slow);
    let id = many_files_dataset(&url, &envs).await;
    let processed = env(&envs, "LAKE_STORAGE__BUCKETS__PROCESSED").to_owned();
    let running = promote(&url, &id);
    until(Duration::from_secs(60), "50 files copied", async || {
        count_objects(&processed).await >= 50
    })
    .await;
    // Every connection dropped and new ones refused until the promotion has answered: the commit
    // meets the outage (a restart shorter than the pool's 10 s wait for a connection is ridden
    // out, which this does not test).
    pg.stop();
    let (status, body) = running.await.expect("task").expect("the server answers");
    assert_eq!(
        status, 503,
        "the catalog's outage is a 503 that says so: {body}"
    );
    pg.start();
    healthy(&url).await;
    // The target stayed pending (marking it failed needed the database too): fsck resumes it.
    let found = fsck_repairs_only_safe_problems(&url).await;
    let k = kinds(&found);
    assert!(
        k.contains(&"stalled_promotion".to_owned()),
        "the stopped promotion is found: {found:#?}"
    );
    promotion_completes(&url, &id).await;
    assert!(fsck_repairs_only_safe_problems(&url).await.is_empty());
}
