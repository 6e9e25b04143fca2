//! API benchmark on PostgreSQL: `GET /catalog` latency under a fixed request rate over 100,000
//! datasets, and the lineage-graph time on a 10,000-node lineage.
//!
//! Run with `bash host/benches/run.sh` (starts PostgreSQL if needed). Knobs, all optional:
//! `LAKE_BENCH_PG_URL` (admin URL; default the test one), `LAKE_BENCH_DATASETS` (100000),
//! `LAKE_BENCH_LINEAGE` (10000), `LAKE_BENCH_RATE` (500 req/s), `LAKE_BENCH_SECONDS` (20).
//!
//! The server is the release `lake` binary in its own process; the load generator is open-loop:
//! request `i` is due at `start + i / rate` and its latency counts from that due time, so a slow
//! server cannot hide its queueing by slowing the generator down (no coordinated omission).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

const SOURCES: [&str; 5] = ["geo", "uniprot", "pubmed", "upload", "ncbi-gene"];
const LAYERS: [&str; 4] = ["raw", "processed", "curated", "archive"];
const ORGANISMS: [&str; 4] = [
    "Homo sapiens",
    "Mus musculus",
    "Danio rerio",
    "Saccharomyces cerevisiae",
];

async fn seed(url: &str, n: usize, lineage: usize) -> anyhow::Result<Vec<uuid::Uuid>> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    // Datasets in batches, through UNNEST so each batch is one statement.
    let batch = 5_000;
    let mut done = 0;
    while done < n {
        let m = batch.min(n - done);
        let mut ids = Vec::with_capacity(m);
        let (
            mut names,
            mut sources,
            mut ext,
            mut layers,
            mut buckets,
            mut prefixes,
            mut metas,
            mut tags,
            mut sizes,
        ) = (
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
        );
        for j in 0..m {
            let i = done + j;
            let id = uuid::Uuid::now_v7();
            let source = SOURCES[i % SOURCES.len()];
            let layer = LAYERS[(i / 7) % LAYERS.len()];
            ids.push(id);
            names.push(format!("{source} dataset {i}"));
            sources.push(source.to_owned());
            ext.push(format!("{}{:06}", &source[..1].to_uppercase(), i));
            layers.push(layer.to_owned());
            buckets.push(format!("lake-{layer}"));
            prefixes.push(format!("{source}/{id}/"));
            metas.push(
                serde_json::json!({"source": source, "date": "2026-11-22", "version": "1",
                "organism": ORGANISMS[i % ORGANISMS.len()], "platform": format!("GPL{}", i % 300)})
                .to_string(),
            );
            tags.push(if i % 10 == 0 {
                "{kinase,human}".to_owned()
            } else if i % 3 == 0 {
                "{human}".to_owned()
            } else {
                "{}".to_owned()
            });
            sizes.push((i as i64 % 1000) * 1024);
        }
        sqlx::query(
            "INSERT INTO datasets (id, name, source, external_id, layer, bucket, prefix, file_count, total_size, metadata, tags, status, created_at, updated_at) \
             SELECT id, name, source, ext, layer, bucket, prefix, 1, size, meta::jsonb, tags::text[], 'ready', now(), now() \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[], $10::text[]) \
             AS t(id, name, source, ext, layer, bucket, prefix, size, meta, tags)",
        )
        .bind(&ids).bind(&names).bind(&sources).bind(&ext).bind(&layers).bind(&buckets).bind(&prefixes).bind(&sizes).bind(&metas).bind(&tags)
        .execute(&mut conn)
        .await?;
        done += m;
    }
    // A lineage chain: each dataset derived from the previous by one pipeline entry.
    let chain: Vec<uuid::Uuid> = (0..lineage).map(|_| uuid::Uuid::now_v7()).collect();
    let names: Vec<String> = (0..lineage).map(|i| format!("lineage step {i}")).collect();
    sqlx::query(
        "INSERT INTO datasets (id, name, source, layer, bucket, prefix, metadata, tags, status, created_at, updated_at) \
         SELECT id, name, 'lineage', 'processed', 'lake-processed', 'lineage/' || id || '/', '{}'::jsonb, '{}', 'ready', now(), now() \
         FROM UNNEST($1::uuid[], $2::text[]) AS t(id, name)",
    )
    .bind(&chain)
    .bind(&names)
    .execute(&mut conn)
    .await?;
    let entries: Vec<uuid::Uuid> = (1..lineage).map(|_| uuid::Uuid::now_v7()).collect();
    let parents: Vec<uuid::Uuid> = chain[..lineage - 1].to_vec();
    let children: Vec<uuid::Uuid> = chain[1..].to_vec();
    sqlx::query("INSERT INTO provenance (id, action, parameters, created_at) SELECT id, 'pipeline', '{}', now() FROM UNNEST($1::uuid[]) AS t(id)")
        .bind(&entries)
        .execute(&mut conn)
        .await?;
    sqlx::query(
        "INSERT INTO provenance_datasets (entry_id, dataset_id, role, position) \
         SELECT e, p, 'input', 0 FROM UNNEST($1::uuid[], $2::uuid[]) AS t(e, p) \
         UNION ALL SELECT e, c, 'output', 0 FROM UNNEST($1::uuid[], $3::uuid[]) AS t(e, c)",
    )
    .bind(&entries)
    .bind(&parents)
    .bind(&children)
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "INSERT INTO lineage_edges (parent_id, child_id, entry_id, action) \
         SELECT p, c, e, 'pipeline' FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[]) AS t(p, c, e)",
    )
    .bind(&parents)
    .bind(&children)
    .bind(&entries)
    .execute(&mut conn)
    .await?;
    // A catalog at rest, as a lab's is between bulk loads: the vacuum autovacuum would otherwise
    // start in the middle of the load (it merges the GIN indexes' pending entries of 110,000
    // new rows, seconds of PostgreSQL's CPU on these two cores) is done before it.
    sqlx::query("VACUUM ANALYZE").execute(&mut conn).await?;
    Ok(chain)
}

fn start_server(db_url: &str, dir: &std::path::Path) -> anyhow::Result<(Server, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lake"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("LAKE_CONFIG")
        .env("LAKE_LOG", "warn")
        .env("LAKE_CATALOG__URL", db_url)
        .env("LAKE_CATALOG__MAX_CONNECTIONS", "16")
        // Compiled components kept between runs, so a start does not compile them again while
        // the load runs (what is measured is serving, not a first start).
        .env(
            "LAKE_PLUGINS__CACHE_DIR",
            concat!(env!("CARGO_TARGET_TMPDIR"), "/bench-plugin-cache"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let server = Server(child);
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("lake serve exited"))??;
        if let Some(rest) = line.strip_prefix("lake listening on ") {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        eprintln!("server: {line}");
    };
    std::thread::spawn(move || for _ in lines {});
    Ok((server, url))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin = std::env::var("LAKE_BENCH_PG_URL")
        .or_else(|_| std::env::var("LAKE_TEST_PG_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let n: usize = env_or("LAKE_BENCH_DATASETS", 100_000);
    let lineage: usize = env_or("LAKE_BENCH_LINEAGE", 10_000);
    let rate: f64 = env_or("LAKE_BENCH_RATE", 500.0);
    let seconds: f64 = env_or("LAKE_BENCH_SECONDS", 20.0);

    let db = format!(
        "lake_bench_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let mut admin_conn = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin_conn)
        .await?;
    // The admin URL's options (`?sslmode=disable`, say) hold for the bench's database too.
    let (admin_path, options) = admin.split_once('?').unwrap_or((admin.as_str(), ""));
    let base = admin_path.rsplit_once('/').map_or(admin_path, |(b, _)| b);
    let url = if options.is_empty() {
        format!("{base}/{db}")
    } else {
        format!("{base}/{db}?{options}")
    };

    let dir = tempfile::tempdir()?;
    // First start migrates the empty database; then seed and restart so the server sees fresh stats.
    let (first, _) = start_server(&url, dir.path())?;
    drop(first);
    let t = Instant::now();
    let chain = seed(&url, n, lineage).await?;
    let seed_s = t.elapsed().as_secs_f64();
    let (server, base_url) = start_server(&url, dir.path())?;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let queries = [
        "/catalog",
        "/catalog?layer=processed",
        "/catalog?source=uniprot&layer=raw",
        "/catalog?tags=kinase",
        "/catalog?q=musculus",
        "/catalog?q=GPL42&source=geo",
        "/catalog?limit=100&offset=200",
    ];
    // Every component loaded (compiled once, then read from the cache), so nothing but the
    // requests runs while they are timed.
    let loading = Instant::now();
    loop {
        let p: serde_json::Value = client
            .get(format!("{base_url}/plugins"))
            .send()
            .await?
            .json()
            .await?;
        if p["loading"]["done"] == true {
            break;
        }
        if loading.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("the plugins did not load in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A lake's first start with data runs the backups its schedule missed (a daily and a weekly
    // one): seconds of work for both cores and the database. What is timed is serving, so wait
    // for them too, and say what they took.
    let mut jobs_conn = sqlx::PgConnection::connect(&url).await?;
    let waiting = Instant::now();
    loop {
        let (all, busy): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status IN ('queued', 'running')) FROM jobs",
        )
        .fetch_one(&mut jobs_conn)
        .await?;
        // The scheduler's first round is at start; give it a moment to record its jobs.
        if busy == 0 && (all > 0 || waiting.elapsed() > Duration::from_secs(5)) {
            break;
        }
        if waiting.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("the jobs at start did not end in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let startup_jobs: Vec<(String, String, f64)> = sqlx::query_as(
        "SELECT coalesce(schedule_key, kind), status, \
         coalesce(extract(epoch FROM finished_at - started_at), 0)::float8 \
         FROM jobs ORDER BY created_at",
    )
    .fetch_all(&mut jobs_conn)
    .await?;
    let startup_jobs: Vec<String> = startup_jobs
        .iter()
        .map(|(what, status, s)| format!("{what} {status} in {s:.1} s"))
        .collect();
    let waited_s = waiting.elapsed().as_secs_f64();
    drop(jobs_conn);
    // Warm up connections and caches.
    for _ in 0..3 {
        for q in &queries {
            client
                .get(format!("{base_url}{q}"))
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
        }
    }

    let total = (rate * seconds) as usize;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let client = client.clone();
        let q = queries[i % queries.len()];
        let url = format!("{base_url}{q}");
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let r = client.get(url).send().await;
            let ok = match r {
                Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
                Err(_) => false,
            };
            (i % queries.len(), due.elapsed().as_secs_f64() * 1000.0, ok)
        }));
    }
    let mut all = Vec::with_capacity(total);
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); queries.len()];
    let mut errors = 0usize;
    for t in tasks {
        let (qi, ms, ok) = t.await?;
        if !ok {
            errors += 1;
        }
        all.push(ms);
        per[qi].push(ms);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    for p in &mut per {
        p.sort_by(f64::total_cmp);
    }

    // Lineage graph: walk the whole 10,000-node chain from its middle (both ways) and from its tail.
    let mid = chain[chain.len() / 2];
    let tail = chain[chain.len() - 1];
    let mut graph_ms = Vec::new();
    let mut nodes = 0;
    for (i, id) in std::iter::repeat_n([mid, tail], 10).flatten().enumerate() {
        let t = Instant::now();
        let v: serde_json::Value = client
            .get(format!("{base_url}/provenance/{id}/graph?depth={lineage}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if i >= 2 {
            graph_ms.push(ms);
        }
        nodes = nodes.max(v["nodes"].as_array().map_or(0, Vec::len));
    }
    graph_ms.sort_by(f64::total_cmp);

    // The dashboard's pages, rendered by the server over the same catalog (issue 20: each under
    // 100 ms). A dataset page draws its graph at depth 2 and its history 5 steps back.
    let first = client
        .get(format!("{base_url}/catalog?limit=1"))
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?;
    let some = first["items"][0]["id"].as_str().unwrap_or("").to_owned();
    let pages = [
        "/ui".to_owned(),
        "/ui/catalog".to_owned(),
        "/ui/catalog?q=musculus".to_owned(),
        // Matches every dataset: the count stops at its bound.
        "/ui/catalog?q=dataset".to_owned(),
        "/ui/catalog?tag=human&from=2026-01-01".to_owned(),
        "/ui/catalog?layer=curated&source=geo".to_owned(),
        format!("/ui/datasets/{some}"),
        format!("/ui/datasets/{mid}"),
        "/ui/layers".to_owned(),
        "/ui/files".to_owned(),
        "/ui/runs".to_owned(),
        "/ui/collections".to_owned(),
        "/ui/backups".to_owned(),
        "/ui/admin".to_owned(),
    ];
    let mut page_ms = Vec::new();
    for page in &pages {
        let mut ms = Vec::new();
        for i in 0..12 {
            let t = Instant::now();
            let resp = client.get(format!("{base_url}{page}")).send().await?;
            let ok = resp.status().is_success();
            let bytes = resp.bytes().await?.len();
            if !ok {
                anyhow::bail!("{page} answered an error");
            }
            if i >= 2 {
                ms.push((t.elapsed().as_secs_f64() * 1000.0, bytes));
            }
        }
        ms.sort_by(|a, b| a.0.total_cmp(&b.0));
        page_ms.push((
            page.clone(),
            ms[ms.len() / 2].0,
            ms[ms.len() - 1].0,
            ms[0].1,
        ));
    }
    drop(server);

    println!("# lake API benchmark (PostgreSQL, {n} datasets + {lineage}-node lineage)");
    println!();
    println!(
        "jobs at start (waited for before the load, {waited_s:.1} s): {}",
        if startup_jobs.is_empty() {
            "none".to_owned()
        } else {
            startup_jobs.join(", ")
        }
    );
    println!(
        "seeded in {seed_s:.1} s; {total} requests at {rate} req/s over {elapsed:.1} s; errors: {errors}"
    );
    println!("achieved rate: {:.0} req/s", total as f64 / elapsed);
    println!();
    println!("| GET /catalog query | n | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| **all** | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        all.len(),
        percentile(&all, 50.0),
        percentile(&all, 90.0),
        percentile(&all, 99.0),
        percentile(&all, 100.0)
    );
    for (q, p) in queries.iter().zip(&per) {
        println!(
            "| `{q}` | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            p.len(),
            percentile(p, 50.0),
            percentile(p, 90.0),
            percentile(p, 99.0),
            percentile(p, 100.0)
        );
    }
    println!();
    println!(
        "lineage graph, {nodes} nodes (depth {lineage}): median {:.1} ms, p90 {:.1} ms, max {:.1} ms over {} runs",
        percentile(&graph_ms, 50.0),
        percentile(&graph_ms, 90.0),
        percentile(&graph_ms, 100.0),
        graph_ms.len()
    );
    println!();
    println!("| dashboard page | median ms | max ms | bytes |");
    println!("|---|---|---|---|");
    for (page, median, max, bytes) in &page_ms {
        let shown = page
            .replace(&some, "{id}")
            .replace(&mid.to_string(), "{middle of the lineage}");
        println!("| `{shown}` | {median:.1} | {max:.1} | {bytes} |");
    }
    let json = serde_json::json!({
        "datasets": n, "rate": rate, "requests": total, "errors": errors,
        "catalog_p50_ms": percentile(&all, 50.0), "catalog_p99_ms": percentile(&all, 99.0),
        "graph_nodes": nodes, "graph_median_ms": percentile(&graph_ms, 50.0),
        "dashboard_max_median_ms": page_ms.iter().map(|p| p.1).fold(0.0, f64::max),
    });
    println!();
    println!("{json}");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut admin_conn)
        .await?;
    Ok(())
}
