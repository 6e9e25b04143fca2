//! Plugin runtime benchmark: warm invocation overhead, CSV parse speed in the sandbox next to native
//! arrow-csv on the same bytes, XLSX in the sandbox, and server start time with a warm
//! compiled-component cache.
//!
//! Run with `bash host/benches/run.sh plugins` (it generates `../shared/bench` data first). Data
//! comes from `LAKE_BENCH_DATA` (default `/tmp/benchdata`): `left_1M.csv` and `samples_100k.xlsx`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use lake_host::config::PluginsConfig;
use lake_host::plugins::{Plugins, Table};

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    pct(&v, 50.0)
}

/// The file as a stream of `size`-byte chunks, sliced from one buffer (as a store would hand them
/// over), so the harness adds no copy of its own.
fn chunks(bytes: &bytes::Bytes, size: usize) -> lake_host::blob::ByteStream {
    let b = bytes.clone();
    let n = b.len().div_ceil(size);
    Box::pin(futures::stream::iter((0..n).map(move |i| {
        let end = ((i + 1) * size).min(b.len());
        Ok(b.slice(i * size..end))
    })))
}

/// Native arrow-csv on the same bytes, with the same inference (first 1000 records).
fn native_csv(bytes: &[u8]) -> anyhow::Result<usize> {
    let (schema, _) = arrow_csv::reader::Format::default()
        .with_header(true)
        .infer_schema(std::io::Cursor::new(bytes), Some(1000))?;
    let reader = arrow_csv::ReaderBuilder::new(Arc::new(schema))
        .with_header(true)
        .with_batch_size(64 * 1024)
        .build(std::io::Cursor::new(bytes))?;
    let mut rows = 0;
    for b in reader {
        rows += b?.num_rows();
    }
    Ok(rows)
}

fn start_time(dir: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lake"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("LAKE_CONFIG")
        .env("LAKE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let mut listening = None;
    for line in BufReader::new(stderr).lines() {
        if line?.starts_with("lake listening on ") {
            listening = Some(t.elapsed());
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    listening.ok_or_else(|| anyhow::anyhow!("lake serve exited before listening"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("LAKE_BENCH_TRACE").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter("lake_host=debug")
            .with_writer(std::io::stderr)
            .init();
    }
    let data =
        PathBuf::from(std::env::var("LAKE_BENCH_DATA").unwrap_or_else(|_| "/tmp/benchdata".into()));
    let cache = tempfile::tempdir()?;
    // LAKE_BENCH_POOL=0 measures without the instance pool.
    let pool = std::env::var("LAKE_BENCH_POOL").map_or(true, |v| v != "0");
    let cfg = PluginsConfig {
        instance_pool: pool,
        cache_dir: cache.path().to_path_buf(),
        dir: cache.path().join("none"),
        ..PluginsConfig::default()
    };
    let t = Instant::now();
    let plugins = Plugins::open(&cfg).map_err(|e| anyhow::anyhow!(e))?;
    let cold_open = t.elapsed();
    let t = Instant::now();
    let _again = Plugins::open(&cfg).map_err(|e| anyhow::anyhow!(e))?;
    let warm_open = t.elapsed();

    // 1. Warm invocation overhead: `select` over a one-row table, end to end through the registry
    //    (blocking-thread hop, fresh store, instantiate, IPC both ways, validation).
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    let tiny = Table {
        schema: schema.clone(),
        batches: vec![RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![1]))],
        )?],
    };
    let params = vec![("columns".to_owned(), "[\"x\"]".to_owned())];
    for _ in 0..200 {
        plugins
            .step("select", params.clone(), vec![tiny.clone().into()])
            .await
            .result
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    let mut overhead = Vec::with_capacity(3000);
    for _ in 0..3000 {
        let t = Instant::now();
        let inv = plugins
            .step("select", params.clone(), vec![tiny.clone().into()])
            .await;
        overhead.push(t.elapsed().as_secs_f64() * 1e6);
        inv.result.map_err(|e| anyhow::anyhow!(e))?;
    }
    overhead.sort_by(f64::total_cmp);

    // 2. CSV: the same in-memory bytes through the sandboxed csv plugin and through native arrow-csv.
    let csv_path = data.join("left_1M.csv");
    let csv =
        bytes::Bytes::from(std::fs::read(&csv_path).map_err(|e| {
            anyhow::anyhow!("{}: {e} (generate the data first)", csv_path.display())
        })?);
    let mb = csv.len() as f64 / 1e6;
    let mut sandbox = Vec::new();
    let mut rows = 0;
    let mut peak = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let inv = plugins
            .parse("csv", Vec::new(), chunks(&csv, 1 << 20))
            .await;
        sandbox.push(t.elapsed().as_secs_f64());
        let table = inv.result.map_err(|e| anyhow::anyhow!(e))?;
        rows = table.num_rows();
        peak = inv.usage.peak_memory_bytes;
    }
    // The same parse kept to one instance (parse_parallelism = 1).
    let single = Plugins::open(&PluginsConfig {
        parse_parallelism: 1,
        ..cfg.clone()
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    let mut one = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let inv = single.parse("csv", Vec::new(), chunks(&csv, 1 << 20)).await;
        one.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(
            inv.result.map_err(|e| anyhow::anyhow!(e))?.num_rows() == rows,
            "one instance read a different number of rows"
        );
    }
    let one_s = median(one);
    let mut native = Vec::new();
    for _ in 0..5 {
        let bytes = csv.clone();
        let t = Instant::now();
        let n = tokio::task::spawn_blocking(move || native_csv(&bytes)).await??;
        native.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(n == rows, "native read {n} rows, the plugin {rows}");
    }
    let (sandbox_s, native_s) = (median(sandbox), median(native));

    // 3. XLSX 100k rows in the sandbox (when the xlsx plugin is bundled).
    let xlsx_path = data.join("samples_100k.xlsx");
    let xlsx = match (plugins.get("xlsx"), std::fs::read(&xlsx_path)) {
        (Some(_), Ok(bytes)) => {
            let bytes = bytes::Bytes::from(bytes);
            let mut times = Vec::new();
            let mut n = 0;
            for _ in 0..3 {
                let t = Instant::now();
                let inv = plugins
                    .parse("xlsx", Vec::new(), chunks(&bytes, 1 << 20))
                    .await;
                times.push(t.elapsed().as_secs_f64());
                n = inv.result.map_err(|e| anyhow::anyhow!(e))?.num_rows();
            }
            Some((median(times), n))
        }
        _ => None,
    };

    // 4. Server start: first start compiles the bundled components; later starts load the cache.
    let serve_dir = tempfile::tempdir()?;
    let first = start_time(serve_dir.path())?;
    let mut warm = Vec::new();
    for _ in 0..3 {
        warm.push(start_time(serve_dir.path())?.as_secs_f64());
    }
    let warm_start = median(warm);

    println!("# lake plugin runtime benchmark");
    println!();
    println!("| measure | result | reference |");
    println!("|---|---|---|");
    println!(
        "| warm invocation overhead (select, 1 row, end to end), n=3000 | p50 {:.0} µs, p99 {:.0} µs | target p50 <= 100 µs |",
        pct(&overhead, 50.0),
        pct(&overhead, 99.0)
    );
    println!(
        "| CSV parse in the sandbox, left_1M.csv ({mb:.1} MB, {rows} rows), median of 5 | {:.3} s = {:.0} MB/s (peak guest memory {} MiB) | target >= 200 MB/s |",
        sandbox_s,
        mb / sandbox_s,
        peak >> 20
    );
    println!(
        "| CSV parse in the sandbox, one instance (parse_parallelism = 1), median of 5 | {:.3} s = {:.0} MB/s | |",
        one_s,
        mb / one_s
    );
    println!(
        "| native arrow-csv, same bytes, same inference, median of 5 | {:.3} s = {:.0} MB/s | sandbox/native = {:.2}x |",
        native_s,
        mb / native_s,
        sandbox_s / native_s
    );
    match xlsx {
        Some((s, n)) => println!(
            "| XLSX samples_100k.xlsx in the sandbox, median of 3 | {s:.3} s, {n} rows = {:.0}k rows/s | fastexcel 0.354 s (baselines.md): {:.2}x, target <= 1.5x |",
            n as f64 / s / 1e3,
            s / 0.354
        ),
        None => println!(
            "| XLSX in the sandbox | not measured (no xlsx plugin or no samples_100k.xlsx) | |"
        ),
    }
    println!(
        "| registry open, cold cache (compiles bundled components) | {:.2} s | |",
        cold_open.as_secs_f64()
    );
    println!(
        "| registry open, warm cache | {:.1} ms | |",
        warm_open.as_secs_f64() * 1e3
    );
    println!(
        "| `lake serve` start to listening: first start / warm cache (median of 3) | {:.2} s / {:.0} ms | |",
        first.as_secs_f64(),
        warm_start * 1e3
    );
    println!();
    println!(
        "{}",
        serde_json::json!({
            "overhead_p50_us": pct(&overhead, 50.0), "overhead_p99_us": pct(&overhead, 99.0),
            "csv_sandbox_mb_s": mb / sandbox_s, "csv_one_instance_mb_s": mb / one_s,
            "csv_native_mb_s": mb / native_s,
            "xlsx_s": xlsx.map(|x| x.0), "serve_warm_start_ms": warm_start * 1e3,
        })
    );
    Ok(())
}
