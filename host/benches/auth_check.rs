//! The token check alone, in process: `lake.access().authenticate(token)` on the embedded
//! catalog, with the record cache (`[auth] token_cache_ms`, default 1000) and without it (0: a
//! catalog read per request). It measures what `auth.py` cannot resolve over HTTP on a 2-core
//! machine, where the tail of an open server alone moves by several milliseconds between runs.
//!
//! Run with `bash host/benches/run.sh auth` (after `auth.py`) or `cargo bench -p lake-host --bench
//! auth_check`. Knob: `LAKE_BENCH_CHECKS` (100000 per setting).

use std::time::{Duration, Instant};

use lake_host::config::{Config, Secret};
use lake_host::lake::Lake;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("LAKE_BENCH_CHECKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    println!("# token check in process ({n} checks per setting, SQLite catalog)");
    println!();
    println!("| token_cache_ms | p50 µs | p90 µs | p99 µs | max µs |");
    println!("|---|---|---|---|---|");
    for cache_ms in [0u64, 1000] {
        let mut cfg = Config::default();
        let db = dir.path().join(format!("catalog-{cache_ms}.db"));
        cfg.catalog.url = Secret::new(format!("sqlite:{}", db.display()));
        cfg.storage.local.root = dir.path().join(format!("objects-{cache_ms}"));
        cfg.auth.token_cache_ms = cache_ms;
        let lake = Lake::open(&cfg).await?;
        let token = lake.access().bootstrap().await?.token;
        let access = lake.access();
        for _ in 0..1000 {
            access
                .authenticate(&token)
                .await
                .map_err(anyhow::Error::msg)?;
        }
        let mut took = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            access
                .authenticate(&token)
                .await
                .map_err(anyhow::Error::msg)?;
            took.push(t.elapsed());
        }
        took.sort();
        println!(
            "| {cache_ms} | {:.1} | {:.1} | {:.1} | {:.1} |",
            percentile(&took, 50.0),
            percentile(&took, 90.0),
            percentile(&took, 99.0),
            percentile(&took, 100.0)
        );
    }
    Ok(())
}
