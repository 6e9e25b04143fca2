//! Backups and restores (issue 6): the restore drill across backend pairs (SQLite + local <->
//! PostgreSQL + Garage) compared dataset by dataset, entry by entry and object by object; the
//! incremental copy count; verify naming a tampered object (through the `lake` binary); a due
//! schedule run once by two servers on one PostgreSQL; an abandoned job marked failed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use futures::StreamExt;
use lake_host::catalog::{Catalog, CatalogDump, JobStatus, NewJob};
use lake_host::config::{BackupConfig, BackupTarget};
use lake_host::lake::Lake;
use lake_host::provenance::Action;
use serde_json::{Value, json};

use crate::http_api::{TestLake, embedded_settings, production_settings, settings};

fn backup_settings(dir: &Path) -> lake_host::lake::Settings {
    let mut s = settings(1 << 30);
    s.backup = BackupConfig {
        target: BackupTarget::Dir,
        dir: dir.to_path_buf(),
        ..BackupConfig::default()
    };
    s
}

fn plugins() -> lake_host::plugins::Plugins {
    crate::plugins::open(&crate::plugins::shared_cache())
}

async fn post(t: &TestLake, uri: &str, body: Value) -> Value {
    let (s, v) = t.call(Method::POST, uri, Some(body)).await;
    assert!(s.is_success(), "{uri}: {s} {v}");
    v
}

/// Datasets in every layer, promotions, pipeline runs, a deleted dataset, tags and metadata.
async fn populate(t: &TestLake, tag: &str) {
    let iris = std::fs::read(crate::plugins::shared().join("fixtures/csv/iris.csv")).expect("iris");
    let raw = t
        .create(
            json!({"name": format!("iris {tag}"), "source": "upload", "tags": ["drill", tag],
                       "metadata": {"lab": "B", "n": 150}}),
        )
        .await;
    let (s, v) = t.upload(&raw, "iris.csv", &iris).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = t
        .upload(&raw, "notes.txt", format!("notes {tag}\n").as_bytes())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let parsed = post(
        t,
        "/pipelines/run",
        json!({"plugin": "csv", "inputs": [raw], "file": "iris.csv"}),
    )
    .await;
    let table = parsed["output"].as_str().expect("table").to_owned();
    post(
        t,
        "/pipelines/run",
        json!({"plugin": "select", "inputs": [table], "params": {"columns": ["species"]}}),
    )
    .await;
    let processed = post(
        t,
        "/layers/promote",
        json!({"dataset_id": raw, "target_layer": "processed"}),
    )
    .await;
    let processed = processed["dataset"]["id"].as_str().expect("id").to_owned();
    let curated = post(
        t,
        "/layers/promote",
        json!({"dataset_id": processed, "target_layer": "curated", "notes": "QC", "reason": "QC passed"}),
    )
    .await;
    let curated = curated["dataset"]["id"].as_str().expect("id").to_owned();
    post(
        t,
        "/layers/promote",
        json!({"dataset_id": curated, "target_layer": "archive", "reason": "study closed"}),
    )
    .await;
    let doomed = t
        .create(json!({"name": "doomed", "source": "upload", "layer": "processed"}))
        .await;
    let (s, _) = t.upload(&doomed, "x.csv", b"a\n1\n").await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = t
        .call(
            Method::DELETE,
            &format!("/catalog/{doomed}?reason=test"),
            None,
        )
        .await;
    assert!(s.is_success(), "{v}");
}

/// What must survive a restore: ids, names, layers, statuses, metadata, tags, lineage, files and
/// entries (times and bucket names may differ between backends).
fn essence(d: &CatalogDump) -> Value {
    let datasets: Vec<Value> = d
        .datasets
        .iter()
        .map(|x| {
            json!([
                x.id,
                x.name,
                x.source,
                x.external_id,
                x.layer,
                x.prefix,
                x.metadata,
                x.tags,
                x.status,
                x.promoted_from,
                x.file_count,
                x.total_size
            ])
        })
        .collect();
    let files: Vec<Value> = d
        .files
        .iter()
        .map(|f| {
            json!([
                f.dataset_id,
                f.file.name,
                f.file.size,
                f.file.sha256,
                f.file.content_type
            ])
        })
        .collect();
    let entries: Vec<Value> = d
        .provenance
        .iter()
        .filter(|e| e.action != Action::Backup && e.action != Action::Restore)
        .map(|e| {
            json!([
                e.id,
                e.action,
                e.inputs,
                e.outputs,
                e.parameters,
                e.notes,
                e.actor
            ])
        })
        .collect();
    json!({"datasets": datasets, "files": files, "entries": entries})
}

/// Every file of every ready dataset, read back from the store and hashed.
async fn stored_hashes(lake: &Lake) -> BTreeMap<String, String> {
    let dump = lake.catalog().export().await.expect("export");
    let mut out = BTreeMap::new();
    for f in &dump.files {
        let d = dump
            .datasets
            .iter()
            .find(|d| d.id == f.dataset_id)
            .expect("dataset");
        if d.status != lake_host::catalog::DatasetStatus::Ready {
            continue;
        }
        let mut s = lake
            .blobs()
            .get(&d.bucket, &format!("{}{}", d.prefix, f.file.name))
            .await
            .expect("object");
        let mut bytes = Vec::new();
        while let Some(c) = s.next().await {
            bytes.extend_from_slice(&c.expect("read"));
        }
        let sha = lake_host::blob::Sha256::of(&bytes).to_hex();
        assert_eq!(sha, f.file.sha256, "{}/{}", d.id, f.file.name);
        out.insert(format!("{}/{}", d.id, f.file.name), sha);
    }
    out
}

async fn drill(from: TestLake, into: TestLake) {
    populate(&from, "drill").await;
    let job = from
        .lake
        .backups()
        .run_now("manual", None)
        .await
        .expect("backup");
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let result = job.result.expect("result");
    assert!(
        result["objects"].as_u64().expect("objects") >= 6,
        "{result}"
    );
    let id: uuid::Uuid = result["backup_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    // Listed, and sound.
    let list = into.lake.backups().list().await.expect("list");
    assert!(list.iter().any(|b| b.backup_id == id));
    let report = into.lake.backups().verify(id, None).await.expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    let restored = into
        .lake
        .backups()
        .restore(id, None)
        .await
        .expect("restore");
    assert_eq!(
        restored.objects as u64,
        result["objects"].as_u64().expect("objects")
    );
    let a = from.lake.catalog().export().await.expect("export");
    let b = into.lake.catalog().export().await.expect("export");
    assert_eq!(essence(&b), essence(&a));
    assert!(
        b.datasets
            .iter()
            .all(|d| d.bucket == into.lake.bucket(d.layer))
    );
    assert_eq!(
        stored_hashes(&into.lake).await,
        stored_hashes(&from.lake).await
    );
    // Lineage answers the same from the restored catalog.
    for d in &a.datasets {
        let g1 = from
            .lake
            .catalog()
            .lineage(d.id, 20, lake_host::provenance::Direction::Both)
            .await
            .expect("graph");
        let g2 = into
            .lake
            .catalog()
            .lineage(d.id, 20, lake_host::provenance::Direction::Both)
            .await
            .expect("graph");
        let edges = |g: &lake_host::provenance::LineageGraph| {
            let mut e: Vec<String> = g
                .edges
                .iter()
                .map(|e| format!("{}>{}:{}:{}", e.from, e.to, e.action, e.entry_id))
                .collect();
            e.sort();
            e
        };
        assert_eq!(edges(&g2), edges(&g1), "lineage of {}", d.id);
    }
    // The restore is recorded; a second restore into the now non-empty lake is refused.
    assert!(b.provenance.iter().any(|e| e.action == Action::Restore));
    assert!(matches!(
        into.lake.backups().restore(id, None).await,
        Err(lake_host::lake::LakeError::Conflict(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_from_sqlite_local_into_postgres_garage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(into) = production_settings(backup_settings(dir.path()), Some(plugins())).await else {
        return;
    };
    let from = embedded_settings(backup_settings(dir.path()), Some(plugins())).await;
    drill(from, into).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_from_postgres_garage_into_sqlite_local() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(from) = production_settings(backup_settings(dir.path()), Some(plugins())).await else {
        return;
    };
    let into = embedded_settings(backup_settings(dir.path()), Some(plugins())).await;
    drill(from, into).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_through_a_backup_bucket_of_its_own_on_s3() {
    let Some(s3) = crate::garage_config() else {
        return;
    };
    let mut s = settings(1 << 30);
    s.backup = BackupConfig {
        target: BackupTarget::S3,
        bucket: crate::unique("bk"),
        s3: Some(s3),
        ..BackupConfig::default()
    };
    let from = embedded_settings(s.clone(), Some(plugins())).await;
    let into = embedded_settings(s, Some(plugins())).await;
    drill(from, into).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_backup_copies_only_the_new_file() {
    // The archive layer's bucket in the lake's own store (server-side copies); the default target
    // is a directory of its own now, which the other tests use.
    let mut s = settings(1 << 30);
    s.backup.target = BackupTarget::Archive;
    let t = embedded_settings(s, None).await;
    let id = t
        .create(json!({"name": "plates", "source": "upload"}))
        .await;
    for i in 0..3 {
        let (s, _) = t
            .upload(
                &id,
                &format!("plate{i}.csv"),
                format!("well,od\nA1,0.{i}\n").as_bytes(),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, job) = t.call(Method::POST, "/backup/trigger", None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let first = finished(&t, job["id"].as_str().expect("id")).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["result"]["objects_copied"], 3);
    assert_eq!(first["result"]["kind"], "manual");

    let added = b"well,od\nB7,0.93\nB8,0.11\n";
    let (s, _) = t.upload(&id, "plate9.csv", added).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, job) = t.call(Method::POST, "/backup/trigger", None).await;
    let second = finished(&t, job["id"].as_str().expect("id")).await;
    let r = &second["result"];
    assert_eq!(r["objects"], 4, "{second}");
    assert_eq!(r["objects_copied"], 1, "only the new file: {second}");
    assert_eq!(r["bytes_copied"], added.len());
    assert_eq!(r["objects_present"], 3);
    // Jobs are listed newest first, with their kind and counts; a `backup` entry each.
    let (_, jobs) = t.call(Method::GET, "/backup/jobs", None).await;
    let jobs = jobs.as_array().expect("jobs");
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["id"], second["id"]);
    assert!(
        jobs.iter()
            .all(|j| j["started_at"].is_string() && j["finished_at"].is_string())
    );
    let (s, _) = t.call(Method::GET, "/backup/jobs/not-an-id", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let entries = t
        .lake
        .catalog()
        .entries_by_action(Action::Backup, 10)
        .await
        .expect("entries");
    assert_eq!(entries.len(), 2);
}

async fn finished(t: &TestLake, id: &str) -> Value {
    for _ in 0..400 {
        let (s, job) = t
            .call(Method::GET, &format!("/backup/jobs/{id}"), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{job}");
        if job["status"] == "succeeded" || job["status"] == "failed" {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("backup {id} did not finish");
}

#[test]
fn verify_names_a_tampered_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("lake.toml"),
        "[backup]\ntarget = \"dir\"\ndir = \"backups\"\n",
    )
    .expect("config");
    let (ok, out, err) = crate::cli::lake(
        d,
        &[
            "catalog", "register", "--name", "plates", "--source", "upload",
        ],
    );
    assert!(ok, "{out}{err}");
    let id = serde_json::from_str::<Value>(&out).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for (name, body) in [("a.csv", "x\n1\n"), ("b.csv", "x\n2\n")] {
        std::fs::write(d.join(name), body).expect("write");
        let (ok, _, err) = crate::cli::lake(d, &["catalog", "upload", &id, name]);
        assert!(ok, "{err}");
    }
    let (ok, out, err) = crate::cli::lake(d, &["backup", "run"]);
    assert!(ok, "{out}{err}");
    let job: Value = serde_json::from_str(&out).expect("job");
    assert_eq!(job["status"], "succeeded");
    let backup = job["result"]["backup_id"]
        .as_str()
        .expect("backup id")
        .to_owned();
    let (ok, out, err) = crate::cli::lake(d, &["backup", "verify", &backup]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = crate::cli::lake(d, &["backup", "list"]);
    assert!(ok && out.contains(&backup), "{out}");

    // `lake restore` into a new, empty lake that reads the same backup directory.
    let other = tempfile::tempdir().expect("tempdir");
    let backups = d.join("backups");
    std::fs::write(
        other.path().join("lake.toml"),
        format!(
            "[backup]\ntarget = \"dir\"\ndir = {:?}\n",
            backups.display().to_string()
        ),
    )
    .expect("config");
    let (ok, out, err) = crate::cli::lake(other.path(), &["restore", "--from", &backup]);
    assert!(ok, "{out}{err}");
    let report: Value = serde_json::from_str(&out).expect("report");
    assert_eq!(
        (report["datasets"].as_u64(), report["objects"].as_u64()),
        (Some(1), Some(2))
    );
    let (ok, out, err) = crate::cli::lake(other.path(), &["catalog", "files", &id]);
    assert!(ok, "{err}");
    assert!(out.contains("a.csv") && out.contains("b.csv"), "{out}");
    let (ok, _, err) = crate::cli::lake(other.path(), &["restore", "--from", &backup]);
    assert!(!ok && err.contains("not empty"), "{err}");

    // Change one byte of b.csv's copy in the backup.
    let sha = lake_host::blob::Sha256::of(b"x\n2\n").to_hex();
    let copy = d.join("backups/lake-backups/backups/objects").join(&sha);
    assert!(copy.exists(), "{} holds the copy", copy.display());
    std::fs::write(&copy, b"x\n3\n").expect("tamper");
    let (ok, out, err) = crate::cli::lake(d, &["backup", "verify", &backup]);
    assert!(!ok, "a tampered backup fails verification");
    assert!(err.contains("b.csv") && err.contains(&id), "{err}");
    assert!(!err.contains("a.csv"), "{err}");
    let report: Value = serde_json::from_str(&out).expect("report");
    assert_eq!(report["problems"].as_array().expect("problems").len(), 1);
    // A missing copy is named too.
    std::fs::remove_file(&copy).expect("remove");
    let (ok, _, err) = crate::cli::lake(d, &["backup", "verify", &backup]);
    assert!(
        !ok && err.contains("b.csv") && err.contains("missing"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_run_a_due_backup_once_and_abandoned_jobs_fail() {
    let Some(url) = crate::scratch_pg().await else {
        return;
    };
    let mut servers = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    for _ in 0..2 {
        let c = lake_host::catalog::postgres::PostgresCatalog::connect(&url, 4)
            .await
            .expect("connect");
        c.migrate().await.expect("migrate");
        let blobs = lake_host::blob::local::LocalStore::open(dir.path().join("objects"))
            .await
            .expect("store");
        let mut s = backup_settings(&dir.path().join("backups"));
        s.backup.daily_at = "02:00".into();
        s.backup.weekly_at = String::new();
        let lake = Lake::new(Arc::new(c), Arc::new(blobs), s);
        lake.prepare_buckets().await.expect("buckets");
        servers.push(lake);
    }
    // A job whose server was killed mid-run: running, its heartbeat silent. Any server's check
    // (here a minute and a bit later) marks it failed.
    let catalog = servers[0].catalog().clone();
    let killed = catalog
        .insert_job(&NewJob {
            id: uuid::Uuid::now_v7(),
            kind: "backup".into(),
            request: json!({"kind": "manual"}),
            schedule_key: None,
        })
        .await
        .expect("job");
    catalog.start_job(killed.id).await.expect("start");
    // A job queued by a server that died before starting it.
    let orphan = catalog
        .insert_job(&NewJob {
            id: uuid::Uuid::now_v7(),
            kind: "backup".into(),
            request: json!({"kind": "daily"}),
            schedule_key: None,
        })
        .await
        .expect("job");
    // Silence longer than the limit (zero here, rather than a minute).
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut failed = catalog
        .fail_stale_jobs(std::time::Duration::ZERO)
        .await
        .expect("check")
        .iter()
        .map(|j| j.id)
        .collect::<Vec<_>>();
    failed.sort();
    assert_eq!(failed, [killed.id, orphan.id]);
    assert!(
        catalog
            .fail_stale_jobs(lake_host::backup::STALE_AFTER)
            .await
            .expect("check")
            .is_empty()
    );

    let gone = catalog.get_job(killed.id).await.expect("job");
    assert_eq!(
        gone.status,
        JobStatus::Failed,
        "never reported as successful"
    );
    assert!(
        gone.error
            .as_deref()
            .unwrap_or_default()
            .contains("abandoned"),
        "{gone:?}"
    );
    assert!(matches!(
        catalog
            .finish_job(killed.id, JobStatus::Succeeded, None, None)
            .await,
        Err(lake_host::catalog::CatalogError::Conflict(_))
    ));

    // An empty lake is not backed up on schedule.
    let now = chrono::Utc::now();
    assert!(servers[0].backups().run_due(now).await.is_empty());
    let d = servers[0]
        .register(lake_host::lake::RegisterRequest {
            name: "plates".into(),
            source: "upload".into(),
            ..Default::default()
        })
        .await
        .expect("register");
    let body: lake_host::blob::ByteStream = Box::pin(futures::stream::once(async {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"well,od\nA1,0.5\n"))
    }));
    servers[0]
        .put_file(d.id, "plate.csv", None, body)
        .await
        .expect("file");

    // Both servers tick for the same due slot at once: one runs it.
    let (b0, b1) = (servers[0].backups(), servers[1].backups());
    let (a, b) = tokio::join!(b0.run_due(now), b1.run_due(now));
    assert_eq!(a.len() + b.len(), 1, "one server runs the slot");
    let started = a.iter().chain(&b).next().expect("a job").clone();
    let (_, slot) = lake_host::backup::due_slots("02:00", "", now)[0];
    assert_eq!(
        started.schedule_key,
        Some(format!("backup:daily@{}", slot.format("%Y-%m-%dT%H:%MZ")))
    );
    assert!(
        servers[1].backups().run_due(now).await.is_empty(),
        "a slot runs once"
    );
    assert!(
        servers[0].backups().run_due(now).await.is_empty(),
        "a slot runs once"
    );
    let mut job = started.clone();
    for _ in 0..400 {
        job = catalog.get_job(started.id).await.expect("job");
        if job.status.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_eq!(job.result.expect("result")["kind"], "daily");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_and_a_cut_short_backup_is_completed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = backup_settings(dir.path());
    s.backup.keep_daily = 2;
    let t = embedded_settings(s, None).await;
    let objects = dir.path().join("lake-backups/backups/objects");
    let keep = t.create(json!({"name": "kept", "source": "upload"})).await;
    let (st, _) = t.upload(&keep, "kept.csv", b"a\n1\n").await;
    assert_eq!(st, StatusCode::CREATED);
    // A processed dataset only the first backup holds: deleted before the others.
    let gone = t
        .create(json!({"name": "gone", "source": "upload", "layer": "processed"}))
        .await;
    let (st, _) = t
        .upload(&gone, "gone.csv", b"only in the first backup\n")
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let gone_sha = lake_host::blob::Sha256::of(b"only in the first backup\n").to_hex();

    let mut ids = Vec::new();
    for i in 0..3 {
        if i == 1 {
            let (st, v) = t
                .call(
                    Method::DELETE,
                    &format!("/catalog/{gone}?reason=test"),
                    None,
                )
                .await;
            assert!(st.is_success(), "{v}");
        }
        let (st, _) = t
            .upload(
                &keep,
                &format!("day{i}.csv"),
                format!("a\n{i}\n").as_bytes(),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED);
        let job = t
            .lake
            .backups()
            .run_now("daily", None)
            .await
            .expect("backup");
        assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
        let r = job.result.expect("result");
        ids.push(r["backup_id"].as_str().expect("id").to_owned());
        if i == 2 {
            assert_eq!(r["removed"], json!([ids[0]]), "{r}");
        }
        if i == 0 {
            assert!(objects.join(&gone_sha).exists());
        }
    }
    let listed: Vec<String> = t
        .lake
        .backups()
        .list()
        .await
        .expect("list")
        .iter()
        .map(|b| b.backup_id.to_string())
        .collect();
    assert_eq!(
        listed,
        [ids[2].clone(), ids[1].clone()],
        "the newest two, newest first"
    );
    assert!(!objects.join(&gone_sha).exists(), "no kept backup names it");
    // A manual backup is not counted against the daily ones.
    let manual = t
        .lake
        .backups()
        .run_now("manual", None)
        .await
        .expect("manual");
    assert_eq!(manual.status, JobStatus::Succeeded);
    assert_eq!(t.lake.backups().list().await.expect("list").len(), 3);

    // A backup cut short left some objects uncopied: the next one copies exactly those.
    let day2 = lake_host::blob::Sha256::of(b"a\n2\n").to_hex();
    std::fs::remove_file(objects.join(&day2)).expect("remove a copy");
    let next = t
        .lake
        .backups()
        .run_now("manual", None)
        .await
        .expect("backup");
    let r = next.result.expect("result");
    assert_eq!(
        (r["objects_copied"].as_u64(), r["bytes_copied"].as_u64()),
        (Some(1), Some(4)),
        "{r}"
    );
    assert!(objects.join(&day2).exists());
    let id: uuid::Uuid = r["backup_id"].as_str().expect("id").parse().expect("uuid");
    assert!(
        t.lake
            .backups()
            .verify(id, None)
            .await
            .expect("verify")
            .problems
            .is_empty()
    );
}

/// A stopping server lets its jobs go on for the grace it gives them: one that ends within it is
/// recorded as it ended, one still running after it is recorded failed at once (its record says
/// the server stopped) instead of looking alive until its lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_ends_the_jobs_it_could_not_finish() {
    use lake_host::jobs::{Ended, JobKind};
    let t = embedded_settings(settings(1 << 20), None).await;
    let lake = t.lake.clone();
    assert!(
        lake.jobs()
            .stop(std::time::Duration::from_secs(5))
            .await
            .is_empty(),
        "nothing runs: the stop is immediate"
    );
    let quick = lake
        .jobs()
        .record(JobKind::Backup, json!({"kind": "manual"}))
        .await
        .expect("job");
    let stuck = lake
        .jobs()
        .record(JobKind::Collection, json!({"source": "test"}))
        .await
        .expect("job");
    let (l1, l2) = (lake.clone(), lake.clone());
    let (q, s) = (quick.id, stuck.id);
    let quick_run = tokio::spawn(async move {
        l1.jobs()
            .run(q, async {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                Ended::Succeeded(json!({"done": true}))
            })
            .await
    });
    let stuck_run =
        tokio::spawn(async move { l2.jobs().run(s, std::future::pending::<Ended>()).await });
    // Both claimed before the stop.
    for id in [q, s] {
        for _ in 0..200 {
            if lake.catalog().get_job(id).await.expect("job").status == JobStatus::Running {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let stopped_at = std::time::Instant::now();
    let ended = lake.jobs().stop(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        ended,
        [s],
        "only the job still running after the grace is ended"
    );
    assert!(stopped_at.elapsed() >= std::time::Duration::from_secs(2));
    let quick = quick_run.await.expect("join").expect("recorded");
    assert_eq!(quick.status, JobStatus::Succeeded, "{quick:?}");
    let stuck = lake.catalog().get_job(s).await.expect("job");
    assert_eq!(stuck.status, JobStatus::Failed, "{stuck:?}");
    assert!(
        stuck
            .error
            .as_deref()
            .is_some_and(|e| e.contains("server stopped")),
        "{stuck:?}"
    );
    // The stuck work, dropped at last as a stopping runtime drops it, changes nothing.
    stuck_run.abort();
    let _ = stuck_run.await;
    let stuck = lake.catalog().get_job(s).await.expect("job");
    assert_eq!(stuck.status, JobStatus::Failed);
    assert!(
        lake.jobs()
            .stop(std::time::Duration::from_secs(5))
            .await
            .is_empty()
    );
}
