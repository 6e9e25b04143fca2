//! `lake fsck` over a large lake: N objects (100,000 by default) seeded into an embedded lake
//! (SQLite catalog, local directory) as ready datasets of one file each; then a deleted object, an
//! object nobody cataloged and a tampered byte are planted, and the real `lake fsck` (this build's
//! binary) runs with and without `--verify` under `/usr/bin/time`: wall time, peak RSS, and
//! whether each planted problem is named. The check holds a page of rows and a page of keys, so
//! its peak RSS should not grow with N.
//!
//! Run with `bash host/benches/run.sh fsck` or `cargo bench -p lake-host --bench fsck`. Knob:
//! `LAKE_BENCH_FSCK_OBJECTS` (100000).

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lake_host::blob::{Sha256, body_of};
use lake_host::catalog::{DatasetId, DatasetStatus, FileRecord, NewDataset};
use lake_host::config::{Config, Secret};
use lake_host::lake::Lake;
use lake_host::layers::Layer;

/// Runs `lake fsck` in `dir`; returns its stdout, wall seconds and peak RSS in MiB.
fn fsck(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<(String, f64, f64)> {
    let rss = dir.join("time.txt");
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M %e")
        .arg("-o")
        .arg(&rss)
        .arg(env!("CARGO_BIN_EXE_lake"))
        .arg("fsck")
        .args(args)
        .current_dir(dir)
        .env_remove("LAKE_CONFIG")
        .env("LAKE_LOG", "warn")
        .output()?;
    // A run that finds problems exits 1, and time says so on a line of its own first.
    let time = std::fs::read_to_string(&rss)?;
    let mut parts = time.lines().last().unwrap_or_default().split_whitespace();
    let kib: f64 = parts.next().unwrap_or("0").parse()?;
    let secs: f64 = parts.next().unwrap_or("0").parse()?;
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        secs,
        kib / 1024.0,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("LAKE_BENCH_FSCK_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::default();
    cfg.catalog.url = Secret::new(format!(
        "sqlite:{}",
        dir.path().join("lake-data/catalog.db").display()
    ));
    cfg.storage.local.root = dir.path().join("lake-data/objects");
    let lake = Lake::open(&cfg).await?;
    let seeding = Instant::now();
    let bucket = lake.bucket(Layer::Processed).to_owned();
    let keys: Vec<String> = futures::stream::iter(0..n)
        .map(|i| {
            let (lake, bucket) = (&lake, bucket.clone());
            async move {
                let id = DatasetId::new();
                let prefix = format!("seed/{id}/");
                let bytes = format!("sample_id,value\nS{i},{i}\n").into_bytes();
                let file = FileRecord {
                    name: "data.csv".into(),
                    size: bytes.len() as u64,
                    sha256: Sha256::of(&bytes).to_hex(),
                    content_type: "text/csv".into(),
                    created_at: chrono::Utc::now(),
                };
                let key = format!("{prefix}data.csv");
                lake.blobs().put(&bucket, &key, body_of(bytes)).await?;
                lake.catalog()
                    .insert_dataset(
                        &NewDataset {
                            id,
                            name: format!("seed-{i}"),
                            source: "seed".into(),
                            external_id: None,
                            layer: Layer::Processed,
                            bucket: bucket.clone(),
                            prefix,
                            metadata: serde_json::json!({}),
                            tags: vec![],
                            status: DatasetStatus::Ready,
                            promoted_from: None,
                        },
                        &[file],
                        None,
                    )
                    .await?;
                anyhow::Ok(key)
            }
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let seeded = seeding.elapsed();
    // The three planted problems.
    let gone = &keys[n / 3];
    lake.blobs().delete(&bucket, gone).await?;
    let raw = lake.bucket(Layer::Raw).to_owned();
    let orphan = "files/0190aaaa-0000-7000-8000-00000000beef/stray.csv";
    lake.blobs()
        .put(&raw, orphan, body_of(b"x\n1\n".to_vec()))
        .await?;
    let tampered = &keys[n - 7];
    let mut bytes = lake_host::blob::read_all(lake.blobs().as_ref(), &bucket, tampered).await?;
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    lake.blobs().put(&bucket, tampered, body_of(bytes)).await?;
    drop(lake);
    tokio::time::sleep(Duration::from_millis(200)).await;

    println!(
        "# lake fsck over {n} objects (SQLite catalog, local directory; seeded in {:.1} s)",
        seeded.as_secs_f64()
    );
    println!();
    println!("| run | wall s | peak RSS MiB | problems named |");
    println!("|---|---|---|---|");
    for (label, args) in [
        ("fsck", vec!["--json", "--grace-secs", "0"]),
        (
            "fsck --verify",
            vec!["--verify", "--json", "--grace-secs", "0"],
        ),
    ] {
        let (out, secs, mib) = fsck(dir.path(), &args)?;
        let mut named = Vec::new();
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            if let Some(p) = v["problem"].as_str() {
                named.push(format!("{p} {}", v["key"].as_str().unwrap_or_default()));
            }
        }
        let expect_tamper = args.contains(&"--verify");
        let found = |p: &str, key: &str| named.iter().any(|n| n == &format!("{p} {key}"));
        let ok = found("missing_object", gone)
            && found("uncataloged_object", orphan)
            && (!expect_tamper || found("checksum_mismatch", tampered));
        println!(
            "| {label} | {secs:.1} | {mib:.0} | {} ({}) |",
            named.len(),
            if ok {
                "each planted problem named"
            } else {
                "A PLANTED PROBLEM WAS MISSED"
            }
        );
        if !ok {
            anyhow::bail!("{label} missed a planted problem: {named:?}");
        }
    }
    Ok(())
}
