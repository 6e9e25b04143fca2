//! The lake under a crowd: two `lake serve` replicas (this build's binary) on one PostgreSQL
//! database and one set of Garage buckets, and for 60 s at once: 50 clients each uploading 10 MB
//! CSVs back to back, 500 requests a second of catalog searches and dataset reads, 20 clients each
//! merging two tables back to back, and 5 promotions a second. Reported: requests and errors by
//! status per route, p50 and p99 latency per route, each replica's peak RSS, and a `lake fsck
//! --verify` of the whole lake at the end (target: no error that is not the client's fault, no
//! problem found). A 429 is the server asking a client to wait (`Retry-After`); clients wait
//! and retry, and the count is reported on its own.
//!
//! Run with `bash host/benches/run.sh load` (it starts PostgreSQL and Garage as the test command
//! does). Knobs: `LAKE_BENCH_LOAD_SECS` (60), `LAKE_BENCH_LOAD_UPLOADERS` (50),
//! `LAKE_BENCH_LOAD_READS` (500 per second), `LAKE_BENCH_LOAD_MERGERS` (20),
//! `LAKE_BENCH_LOAD_PROMOTIONS` (5 per second).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use lake_host::blob::{BlobStore, body_of};
use serde_json::{Value, json};

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| {
        anyhow::anyhow!("{name} is not set: run through `bash host/benches/run.sh load`")
    })
}

/// Latencies and statuses per route.
#[derive(Default)]
struct Stats {
    by_route: BTreeMap<&'static str, Route>,
}

#[derive(Default)]
struct Route {
    took: Vec<Duration>,
    statuses: BTreeMap<String, u64>,
}

type Shared = Arc<Mutex<Stats>>;

fn record(stats: &Shared, route: &'static str, status: String, took: Duration) {
    if let Ok(mut s) = stats.lock() {
        let r = s.by_route.entry(route).or_default();
        r.took.push(took);
        *r.statuses.entry(status).or_default() += 1;
    }
}

/// Sends a request and records it; the answer's status and body.
async fn timed(
    stats: &Shared,
    route: &'static str,
    req: reqwest::RequestBuilder,
) -> Option<(u16, Value, Option<u64>)> {
    let t = Instant::now();
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = resp.json().await.unwrap_or(Value::Null);
            record(stats, route, status.to_string(), t.elapsed());
            Some((status, body, retry))
        }
        Err(e) => {
            let kind = if e.is_timeout() {
                "timeout"
            } else {
                "connection error"
            };
            record(stats, route, kind.to_owned(), t.elapsed());
            None
        }
    }
}

struct Replica {
    child: Child,
    url: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        // Only the process this bench started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(envs: &[(String, String)], dir: &std::path::Path) -> anyhow::Result<Replica> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lake"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("LAKE_CONFIG")
        .env("LAKE_LOG", "warn")
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("stderr"))?;
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("lake serve exited before listening"))??;
        if let Some(rest) = line.strip_prefix("lake listening on ") {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if l.contains("ERROR") || l.contains("panicked") {
                eprintln!("server: {l}");
            }
        }
    });
    Ok(Replica { child, url })
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A CSV of about `bytes` bytes.
fn csv(rows: usize, tag: &str) -> String {
    let mut s = String::from("sample_id,gene,tpm,note\n");
    for i in 0..rows {
        s.push_str(&format!(
            "S{i},G{},{}.25,{tag} row {i}\n",
            i % 977,
            i % 1000
        ));
    }
    s
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs = knob("LAKE_BENCH_LOAD_SECS", 60);
    let uploaders = knob("LAKE_BENCH_LOAD_UPLOADERS", 50) as usize;
    let reads = knob("LAKE_BENCH_LOAD_READS", 500);
    let mergers = knob("LAKE_BENCH_LOAD_MERGERS", 20) as usize;
    let promotions = knob("LAKE_BENCH_LOAD_PROMOTIONS", 5);

    // A fresh database and buckets on the test command's PostgreSQL and Garage.
    let pg = var("LAKE_TEST_PG_URL")?;
    let tag = format!("load{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let made = Command::new("psql")
        .args([pg.as_str(), "-qc", &format!("CREATE DATABASE {tag}")])
        .status()?;
    anyhow::ensure!(made.success(), "could not create database {tag}");
    let base = pg.rsplit_once('/').map_or(pg.as_str(), |(b, _)| b);
    let endpoint = var("LAKE_TEST_S3_ENDPOINT")?;
    let key_id = var("LAKE_TEST_S3_ACCESS_KEY_ID")?;
    let secret = var("LAKE_TEST_S3_SECRET_ACCESS_KEY")?;
    let mut envs: Vec<(String, String)> = vec![
        ("LAKE_CATALOG__URL".into(), format!("{base}/{tag}")),
        ("LAKE_STORAGE__BACKEND".into(), "s3".into()),
        ("LAKE_STORAGE__S3__ENDPOINT".into(), endpoint.clone()),
        ("LAKE_STORAGE__S3__REGION".into(), "garage".into()),
        ("LAKE_STORAGE__S3__ACCESS_KEY_ID".into(), key_id.clone()),
        ("LAKE_STORAGE__S3__SECRET_ACCESS_KEY".into(), secret.clone()),
        ("LAKE_BACKUP__BUCKET".into(), format!("{tag}-backups")),
    ];
    for layer in ["raw", "processed", "curated", "archive"] {
        envs.push((
            format!("LAKE_STORAGE__BUCKETS__{}", layer.to_uppercase()),
            format!("{tag}-{layer}"),
        ));
    }
    let dir = tempfile::tempdir()?;
    let a = start(&envs, dir.path())?;
    let b = start(&envs, dir.path())?;
    let urls = Arc::new([a.url.clone(), b.url.clone()]);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(256)
        .build()?;
    let stats: Shared = Arc::default();

    // Set-up, not measured: tables to merge, datasets to promote and read.
    let mut tables = Vec::new();
    for i in 0..10 {
        let resp = http
            .post(format!("{}/files/upload?filename=table{i}.csv", urls[0]))
            .body(csv(20_000, &format!("t{i}")))
            .send()
            .await?;
        let v: Value = resp.json().await?;
        tables.push(v["file_id"].as_str().unwrap_or_default().to_owned());
    }
    let store = lake_host::blob::s3::S3Store::new(&lake_host::config::S3Config {
        endpoint: Some(endpoint),
        region: "garage".into(),
        force_path_style: true,
        access_key_id: Some(key_id),
        secret_access_key: Some(lake_host::config::Secret::new(secret)),
        secret_access_key_file: None,
        multipart_part_size: lake_host::config::ByteSize(8 << 20),
        multipart_concurrency: 2,
    })?;
    let raw = format!("{tag}-raw");
    let to_promote = (secs * promotions + 20) as usize;
    let promotable: Vec<String> = futures::stream::iter(0..to_promote)
        .map(|i| {
            let (http, store, raw, url) = (&http, &store, &raw, urls[0].clone());
            async move {
                let key = format!("plates/p{i}/plate.csv");
                store
                    .put(raw, &key, body_of(csv(200, &format!("p{i}")).into_bytes()))
                    .await?;
                let v: Value = http
                    .post(format!("{url}/catalog"))
                    .json(&json!({"name": format!("plate-{i}"), "source": "plates",
                                  "object_path": format!("{raw}/plates/p{i}/")}))
                    .send()
                    .await?
                    .json()
                    .await?;
                anyhow::Ok(v["id"].as_str().unwrap_or_default().to_owned())
            }
        })
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let promotable = Arc::new(promotable);
    let tables = Arc::new(tables);
    // 10 MB of CSV shared by every upload; each adds a row of its own so none is a duplicate.
    let body = Bytes::from(csv(260_000, "upload"));
    println!(
        "# load: {secs} s, {uploaders} uploaders of {:.1} MB, {reads} reads/s, {mergers} mergers, {promotions} promotions/s, 2 replicas",
        body.len() as f64 / 1e6
    );

    let deadline = Instant::now() + Duration::from_secs(secs);
    let peak = Arc::new(Mutex::new([0.0f64; 2]));
    let sampler = {
        let (peak, pids) = (peak.clone(), [a.child.id(), b.child.id()]);
        tokio::spawn(async move {
            while Instant::now() < deadline + Duration::from_secs(30) {
                if let Ok(mut p) = peak.lock() {
                    for (i, pid) in pids.iter().enumerate() {
                        p[i] = p[i].max(rss_mib(*pid));
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    let backpressure = Arc::new(AtomicUsize::new(0));
    for c in 0..uploaders {
        let (http, stats, urls, body, bp) = (
            http.clone(),
            stats.clone(),
            urls.clone(),
            body.clone(),
            backpressure.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while Instant::now() < deadline {
                k += 1;
                let own = Bytes::from(format!("U{c}-{k},G0,0.5,unique\n"));
                let chunks =
                    futures::stream::iter([Ok::<_, std::io::Error>(body.clone()), Ok(own)]);
                let req = http
                    .post(format!(
                        "{}/files/upload?filename=u{c}-{k}.csv",
                        urls[c % 2]
                    ))
                    .body(reqwest::Body::wrap_stream(chunks));
                if let Some((429, _, retry)) = timed(&stats, "POST /files/upload", req).await {
                    bp.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(retry.unwrap_or(1).min(5))).await;
                }
            }
        }));
    }
    for c in 0..mergers {
        let (http, stats, urls, tables) =
            (http.clone(), stats.clone(), urls.clone(), tables.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = c;
            while Instant::now() < deadline {
                k += 1;
                let (l, r) = (&tables[k % tables.len()], &tables[(k * 7 + 3) % tables.len()]);
                let how = ["inner", "left"][k % 2];
                let req = http.get(format!(
                    "{}/files/merge?file_id_1={l}&file_id_2={r}&on=sample_id&how={how}&suffixes=_a{},_b",
                    urls[c % 2],
                    k % 5
                ));
                timed(&stats, "GET /files/merge", req).await;
            }
        }));
    }
    {
        let (http, stats, urls, sample) = (
            http.clone(),
            stats.clone(),
            urls.clone(),
            promotable.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / reads as f64));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut k = 0usize;
            let mut inflight = Vec::new();
            while Instant::now() < deadline {
                every.tick().await;
                k += 1;
                let url = &urls[k % 2];
                let id = &sample[k % sample.len()];
                let (route, req) = match k % 3 {
                    0 => (
                        "GET /catalog?q=",
                        http.get(format!("{url}/catalog?q=plate&limit=20")),
                    ),
                    1 => ("GET /catalog/{id}", http.get(format!("{url}/catalog/{id}"))),
                    _ => (
                        "GET /catalog/{id}/files",
                        http.get(format!("{url}/catalog/{id}/files")),
                    ),
                };
                let stats = stats.clone();
                inflight.push(tokio::spawn(async move {
                    timed(&stats, route, req).await;
                }));
            }
            for t in inflight {
                let _ = t.await;
            }
        }));
    }
    {
        let (http, stats, urls, ids) = (
            http.clone(),
            stats.clone(),
            urls.clone(),
            promotable.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / promotions as f64));
            let mut inflight = Vec::new();
            let mut k = 0usize;
            while Instant::now() < deadline && k < ids.len() {
                every.tick().await;
                let req = http
                    .post(format!("{}/layers/promote", urls[k % 2]))
                    .json(&json!({"dataset_id": ids[k], "target_layer": "processed"}));
                k += 1;
                let stats = stats.clone();
                inflight.push(tokio::spawn(async move {
                    timed(&stats, "POST /layers/promote", req).await;
                }));
            }
            for t in inflight {
                let _ = t.await;
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let ran = started.elapsed();
    sampler.abort();

    println!();
    println!("| route | requests | statuses | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    let mut server_faults = 0u64;
    if let Ok(mut s) = stats.lock() {
        for (route, r) in s.by_route.iter_mut() {
            r.took.sort();
            let statuses: Vec<String> = r
                .statuses
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            for (k, v) in &r.statuses {
                if k.starts_with('5') || k == "connection error" || k == "timeout" {
                    server_faults += v;
                }
            }
            println!(
                "| {route} | {} | {} | {:.1} | {:.1} |",
                r.took.len(),
                statuses.join(", "),
                pct(&r.took, 50.0),
                pct(&r.took, 99.0)
            );
        }
    }
    let peak = peak.lock().map(|p| *p).unwrap_or_default();
    println!();
    println!(
        "ran {:.1} s (the last requests finish after the deadline); 429s (waited and retried): {}; errors that are not the client's fault (5xx, connection errors, timeouts): {server_faults}",
        ran.as_secs_f64(),
        backpressure.load(Ordering::SeqCst)
    );
    println!(
        "peak RSS: replica A {:.0} MiB, replica B {:.0} MiB",
        peak[0], peak[1]
    );

    // The whole lake checked, every byte hashed.
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_lake"))
        .args(["fsck", "--verify", "--json", "--grace-secs", "0"])
        .current_dir(dir.path())
        .env_remove("LAKE_CONFIG")
        .env("LAKE_LOG", "warn")
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text.lines().last().unwrap_or_default();
    let problems: Vec<&str> = text.lines().filter(|l| l.contains("\"problem\"")).collect();
    println!(
        "fsck --verify after the run ({:.1} s): {summary}",
        t.elapsed().as_secs_f64()
    );
    for p in problems.iter().take(20) {
        println!("  {p}");
    }
    drop(a);
    drop(b);
    anyhow::ensure!(out.status.success(), "fsck found problems");
    Ok(())
}
