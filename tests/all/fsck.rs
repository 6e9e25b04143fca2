//! `lake fsck`: a lake broken on purpose in every way the check knows (a deleted object, a
//! truncated one, a tampered byte, an object nobody cataloged, a deleted dataset's leftover, a
//! stale claim, a promotion stopped part-way, provenance naming datasets the catalog does not
//! have, jobs silent past their lease), found by name, and the safe ones repaired with a `repair`
//! entry each; on the embedded backends and on PostgreSQL + Garage, over more objects than one
//! page so the paging of both walks is exercised; and the CLI on a lake directory.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::Utc;
use futures::StreamExt;
use http_body_util::BodyExt;
use lake_host::blob::{Sha256, body_of};
use lake_host::catalog::{DatasetId, DatasetStatus, FileRecord, JobStatus, NewDataset, NewJob};
use lake_host::fsck::{Finding, FsckOptions, FsckSummary, Problem};
use lake_host::lake::Lake;
use lake_host::layers::Layer;
use lake_host::provenance::{Action, NewProvenance, RepairRecord};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::http_api::{TestLake, embedded_settings, production_settings, settings};

/// A seeded dataset: its id, bucket and object key.
#[derive(Debug, Clone)]
struct Seeded {
    id: DatasetId,
    bucket: String,
    key: String,
}

/// `n` ready datasets of one small file each in `layer`, written as a registration would.
async fn seed(lake: &Lake, layer: Layer, n: usize) -> Vec<Seeded> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let id = DatasetId::new();
            let bucket = lake.bucket(layer).to_owned();
            let prefix = format!("seed/{id}/");
            let bytes = format!("sample_id,value\nS{i},{i}\n").into_bytes();
            let file = FileRecord {
                name: "data.csv".into(),
                size: bytes.len() as u64,
                sha256: Sha256::of(&bytes).to_hex(),
                content_type: "text/csv".into(),
                created_at: Utc::now(),
            };
            let key = format!("{prefix}data.csv");
            lake.blobs()
                .put(&bucket, &key, body_of(bytes))
                .await
                .expect("put");
            lake.catalog()
                .insert_dataset(
                    &NewDataset {
                        id,
                        name: format!("seed-{i}"),
                        source: "seed".into(),
                        external_id: None,
                        layer,
                        bucket: bucket.clone(),
                        prefix,
                        metadata: json!({}),
                        tags: vec![],
                        status: DatasetStatus::Ready,
                        promoted_from: None,
                    },
                    &[file],
                    None,
                )
                .await
                .expect("insert");
            Seeded { id, bucket, key }
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// Runs the check and gathers what it sent.
async fn fsck(lake: &Lake, verify: bool, repair: bool) -> (Vec<Finding>, FsckSummary) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let opts = FsckOptions {
        verify,
        repair,
        grace: Duration::ZERO,
    };
    let gather = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(f) = rx.recv().await {
            all.push(f);
        }
        all
    });
    let summary = lake.fsck().run(&opts, &tx).await.expect("fsck runs");
    drop(tx);
    (gather.await.expect("gather"), summary)
}

/// The findings by (problem, key or dataset), with whether each was repaired.
fn by_problem(found: &[Finding]) -> BTreeMap<(String, String), bool> {
    found
        .iter()
        .map(|f| {
            let what = f
                .key
                .clone()
                .or_else(|| f.dataset.map(|d| d.to_string()))
                .unwrap_or_default();
            ((f.problem.as_str().to_owned(), what), f.repaired.is_some())
        })
        .collect()
}

fn key(problem: Problem, what: &str) -> (String, String) {
    (problem.as_str().to_owned(), what.to_owned())
}

/// Breaks a seeded lake in each way and checks that fsck names each, repairs the safe ones and
/// leaves the rest reported.
async fn scenario(t: &TestLake, n: usize) {
    let lake = &t.lake;
    let seeded = seed(lake, Layer::Processed, n).await;
    let (found, summary) = fsck(lake, true, false).await;
    assert!(found.is_empty(), "a clean lake has no problems: {found:?}");
    assert_eq!(summary.files, n as u64, "{summary:?}");
    assert_eq!(summary.objects, n as u64, "{summary:?}");
    assert!(summary.bytes_verified > 0, "{summary:?}");

    let blobs = lake.blobs();
    // A deleted object.
    let gone = &seeded[3];
    blobs.delete(&gone.bucket, &gone.key).await.expect("delete");
    // A truncated one.
    let short = &seeded[n / 2];
    blobs
        .put(&short.bucket, &short.key, body_of(b"sample_id".to_vec()))
        .await
        .expect("truncate");
    // A tampered byte: the same size, another SHA-256.
    let tampered = &seeded[n - 2];
    let mut bytes = lake_host::blob::read_all(blobs.as_ref(), &tampered.bucket, &tampered.key)
        .await
        .expect("read");
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    blobs
        .put(&tampered.bucket, &tampered.key, body_of(bytes))
        .await
        .expect("tamper");
    // An object nobody cataloged, in raw.
    let raw = lake.bucket(Layer::Raw).to_owned();
    let orphan = "files/0190aaaa-0000-7000-8000-000000000000/lost.csv".to_owned();
    blobs
        .put(&raw, &orphan, body_of(b"a,b\n1,2\n".to_vec()))
        .await
        .expect("orphan");
    // A deleted dataset's object put back (a delete that stopped part-way).
    let deleted = &seeded[5];
    let kept = lake_host::blob::read_all(blobs.as_ref(), &deleted.bucket, &deleted.key)
        .await
        .expect("read");
    lake.delete(deleted.id, Some("fsck test"))
        .await
        .expect("delete dataset");
    blobs
        .put(&deleted.bucket, &deleted.key, body_of(kept))
        .await
        .expect("leftover");
    // A claim whose upload never finished.
    let claimed = &seeded[7];
    lake.catalog()
        .claim_file(claimed.id, "late.csv", Duration::from_secs(3600))
        .await
        .expect("claim");
    // A promotion stopped after copying its file: a pending target with the copy and no rows.
    let source = &seeded[9];
    let target = DatasetId::new();
    let target_bucket = lake.bucket(Layer::Curated).to_owned();
    let target_prefix = format!("seed/{target}/");
    lake.catalog()
        .insert_dataset(
            &NewDataset {
                id: target,
                name: "seed-9".into(),
                source: "seed".into(),
                external_id: None,
                layer: Layer::Curated,
                bucket: target_bucket.clone(),
                prefix: target_prefix.clone(),
                metadata: json!({ "promoted_from": source.id }),
                tags: vec![],
                status: DatasetStatus::Pending,
                promoted_from: Some(source.id),
            },
            &[],
            None,
        )
        .await
        .expect("pending target");
    let copy_key = format!("{target_prefix}data.csv");
    blobs
        .copy(&source.bucket, &source.key, &target_bucket, &copy_key)
        .await
        .expect("copy");

    // Check only, without hashing: everything but the tampered byte.
    let (found, summary) = fsck(lake, false, false).await;
    let got = by_problem(&found);
    let expected = BTreeMap::from([
        (key(Problem::MissingObject, &gone.key), false),
        (key(Problem::SizeMismatch, &short.key), false),
        (key(Problem::UncatalogedObject, &orphan), false),
        (key(Problem::DeletedLeftover, &deleted.key), false),
        (key(Problem::StaleClaim, &claimed.id.to_string()), false),
        (key(Problem::StalledPromotion, &target.to_string()), false),
        (key(Problem::UncatalogedObject, &copy_key), false),
    ]);
    assert_eq!(got, expected, "{found:#?}");
    assert_eq!(summary.problems, 7, "{summary:?}");
    assert_eq!(summary.repaired, 0, "{summary:?}");
    let missing = found
        .iter()
        .find(|f| f.problem == Problem::MissingObject)
        .expect("missing");
    assert_eq!(
        missing.dataset,
        Some(gone.id),
        "the finding names the dataset"
    );
    assert_eq!(missing.bucket.as_deref(), Some(gone.bucket.as_str()));

    // Verifying finds the tampered byte too, naming its dataset.
    let (found, _) = fsck(lake, true, false).await;
    let tamper = found
        .iter()
        .find(|f| f.problem == Problem::ChecksumMismatch)
        .unwrap_or_else(|| panic!("the tampered byte is found: {found:#?}"));
    assert_eq!(tamper.dataset, Some(tampered.id));
    assert_eq!(tamper.key.as_deref(), Some(tampered.key.as_str()));
    assert_eq!(found.len(), 8, "{found:#?}");

    // Repair: the safe problems are fixed (the stopped promotion resumed, so its copy is
    // cataloged rather than deleted); lost and altered bytes stay reported.
    let (found, summary) = fsck(lake, true, true).await;
    let got = by_problem(&found);
    let expected = BTreeMap::from([
        (key(Problem::MissingObject, &gone.key), false),
        (key(Problem::SizeMismatch, &short.key), false),
        (key(Problem::ChecksumMismatch, &tampered.key), false),
        (key(Problem::UncatalogedObject, &orphan), true),
        (key(Problem::DeletedLeftover, &deleted.key), true),
        (key(Problem::StaleClaim, &claimed.id.to_string()), true),
        (key(Problem::StalledPromotion, &target.to_string()), true),
    ]);
    assert_eq!(got, expected, "{found:#?}");
    assert_eq!(summary.repaired, 4, "{summary:?}");
    assert!(
        matches!(
            blobs.head(&raw, &orphan).await,
            Err(lake_host::blob::BlobError::NotFound { .. })
        ),
        "the uncataloged object is gone"
    );
    let promoted = lake.get_dataset(target).await.expect("target");
    assert_eq!(
        promoted.status,
        DatasetStatus::Ready,
        "the promotion resumed"
    );
    assert_eq!(promoted.file_count, 1);
    let repairs = lake
        .catalog()
        .entries_by_action(Action::Repair, 100)
        .await
        .expect("entries");
    assert_eq!(repairs.len(), 4, "one repair entry per repair: {repairs:?}");

    // What is left is what a person must decide.
    let (found, summary) = fsck(lake, true, false).await;
    let mut left: Vec<&str> = found.iter().map(|f| f.problem.as_str()).collect();
    left.sort_unstable();
    assert_eq!(
        left,
        ["checksum_mismatch", "missing_object", "size_mismatch"],
        "{found:#?}"
    );
    assert_eq!(summary.repaired, 0);
}

#[tokio::test]
async fn fsck_names_each_problem_and_repairs_the_safe_ones_embedded() {
    let t = crate::http_api::embedded(1 << 30).await;
    // More than one page (1,000) of files and of objects.
    scenario(&t, 2100).await;
}

#[tokio::test]
async fn fsck_names_each_problem_and_repairs_the_safe_ones_on_postgres_and_garage() {
    let Some(t) = crate::http_api::production().await else {
        return;
    };
    scenario(&t, 1100).await;
}

/// Provenance naming datasets the catalog never had (an entry whose output was lost before it was
/// cataloged, one whose input came from nowhere the lake knows): fsck names each entry and the
/// missing dataset, here and in `GET /admin/fsck`; references to live datasets and to a deleted
/// one (its row stays) resolve. `--repair` leaves them reported and unrepaired, records no
/// `repair` entry and keeps the entries as written: provenance is append-only history, and no
/// change to it is safe without a person.
async fn dangling_scenario(t: &TestLake) {
    let lake = &t.lake;
    let catalog = lake.catalog();
    let seeded = seed(lake, Layer::Processed, 3).await;
    let manual = |inputs: Vec<DatasetId>, outputs: Vec<DatasetId>| {
        NewProvenance::manual(inputs, outputs, "recorded by the fsck test".into())
    };
    let lost_output = DatasetId::new();
    let to_lost = catalog
        .append_provenance(&manual(vec![seeded[0].id], vec![lost_output]))
        .await
        .expect("entry");
    let unknown_input = DatasetId::new();
    let from_unknown = catalog
        .append_provenance(&manual(vec![unknown_input], vec![seeded[1].id]))
        .await
        .expect("entry");
    // References that resolve: to live datasets, and to a deleted one.
    lake.delete(seeded[2].id, Some("fsck test"))
        .await
        .expect("delete dataset");
    catalog
        .append_provenance(&manual(
            vec![seeded[0].id],
            vec![seeded[1].id, seeded[2].id],
        ))
        .await
        .expect("entry");
    let expected = [(to_lost.id, lost_output), (from_unknown.id, unknown_input)];
    let check = |found: &[Finding]| {
        assert_eq!(
            found.len(),
            expected.len(),
            "the dangling references and nothing else: {found:#?}"
        );
        for (entry, dataset) in &expected {
            let f = found
                .iter()
                .find(|f| f.dataset == Some(*dataset))
                .unwrap_or_else(|| panic!("dataset {dataset} is named: {found:#?}"));
            assert_eq!(f.problem, Problem::DanglingReference, "{f:?}");
            assert!(
                f.detail.contains(&entry.to_string()),
                "the entry {entry} is named: {f:?}"
            );
            assert!(f.detail.contains(&dataset.to_string()), "{f:?}");
            assert!(!f.safe_to_repair, "{f:?}");
            assert_eq!(f.repaired, None, "{f:?}");
            assert_eq!(
                (f.bucket.as_deref(), f.key.as_deref()),
                (None, None),
                "{f:?}"
            );
        }
    };

    let (found, summary) = fsck(lake, true, false).await;
    check(&found);
    assert_eq!((summary.problems, summary.repaired), (2, 0), "{summary:?}");

    let req = Request::builder()
        .method(Method::GET)
        .uri("/admin/fsck?grace_secs=0")
        .body(Body::empty())
        .expect("request");
    let (status, lines) = ndjson(t, req).await;
    assert_eq!(status, StatusCode::OK, "{lines:?}");
    let named: BTreeSet<String> = lines
        .iter()
        .filter(|l| l["problem"] == "dangling_reference")
        .map(|l| {
            assert_eq!(l["safe_to_repair"], false, "{l}");
            assert_eq!(l["repaired"], Value::Null, "{l}");
            l["dataset"].as_str().expect("dataset").to_owned()
        })
        .collect();
    assert_eq!(
        named,
        BTreeSet::from([lost_output.to_string(), unknown_input.to_string()]),
        "{lines:?}"
    );
    assert_eq!(lines.last().expect("summary")["summary"]["problems"], 2);

    // Repair: nothing it may do; the references stay reported and nothing is recorded.
    let (found, summary) = fsck(lake, true, true).await;
    check(&found);
    assert_eq!((summary.problems, summary.repaired), (2, 0), "{summary:?}");
    let repairs = catalog
        .entries_by_action(Action::Repair, 100)
        .await
        .expect("entries");
    assert!(repairs.is_empty(), "no repair is recorded: {repairs:?}");
    let kept = catalog.entry(to_lost.id).await.expect("the entry stays");
    assert_eq!(
        (kept.inputs, kept.outputs),
        (vec![seeded[0].id], vec![lost_output]),
        "the entry is as it was written"
    );
    let (found, _) = fsck(lake, false, false).await;
    check(&found);
}

#[tokio::test]
async fn fsck_names_dangling_references_and_leaves_them_embedded() {
    let t = crate::http_api::embedded(1 << 30).await;
    dangling_scenario(&t).await;
}

#[tokio::test]
async fn fsck_names_dangling_references_and_leaves_them_on_postgres_and_garage() {
    let Some(t) = crate::http_api::production().await else {
        return;
    };
    dangling_scenario(&t).await;
}

/// Settings with this job lease (`server.job_lease_secs`, here shorter than config allows).
fn leased(lease: Duration) -> lake_host::lake::Settings {
    let mut s = settings(1 << 30);
    s.job_lease = lease;
    s
}

/// Jobs whose replica stopped, silent past their lease (one claimed and heard from once, one
/// queued and never claimed): fsck names each by kind, id and status, while a live job (heard
/// from within its lease) and an ended one are left alone. A check changes nothing; `--repair`
/// fails exactly the abandoned ones, with the reason on the job, and records a `repair` entry
/// for each.
async fn abandoned_scenario(t: &TestLake) {
    let lake = &t.lake;
    let catalog = lake.catalog();
    let lease = lake.jobs().lease();
    assert_eq!(lease, Duration::from_secs(5), "the test's lease");
    let job = |kind: &str| NewJob {
        id: uuid::Uuid::now_v7(),
        kind: kind.to_owned(),
        request: json!({ "asked_by": "the fsck test" }),
        schedule_key: None,
    };
    let claimed = catalog.insert_job(&job("collection")).await.expect("job");
    catalog.start_job(claimed.id).await.expect("claim");
    catalog.heartbeat_job(claimed.id).await.expect("heartbeat");
    let queued = catalog.insert_job(&job("backup")).await.expect("job");
    let ended = catalog.insert_job(&job("backup")).await.expect("job");
    catalog.start_job(ended.id).await.expect("claim");
    catalog
        .finish_job(
            ended.id,
            JobStatus::Succeeded,
            Some(&json!({ "objects": 0 })),
            None,
        )
        .await
        .expect("finish");
    // Their replica stopped: silence past the lease.
    tokio::time::sleep(lease + Duration::from_secs(1)).await;
    // A live replica's job: claimed now, and heard from before each check.
    let live = catalog.insert_job(&job("collection")).await.expect("job");
    catalog.start_job(live.id).await.expect("claim");

    let check = |found: &[Finding], repaired: bool| {
        assert_eq!(
            found.len(),
            2,
            "the two abandoned jobs and nothing else: {found:#?}"
        );
        for (j, status) in [(&claimed, "running"), (&queued, "queued")] {
            let f = found
                .iter()
                .find(|f| f.detail.contains(&j.id.to_string()))
                .unwrap_or_else(|| panic!("job {} is named: {found:#?}", j.id));
            assert_eq!(f.problem, Problem::AbandonedJob, "{f:?}");
            assert!(
                f.detail.starts_with(&format!(
                    "{} job {} is {status} but silent since",
                    j.kind, j.id
                )),
                "{f:?}"
            );
            assert_eq!(f.dataset, None, "{f:?}");
            assert!(f.safe_to_repair, "{f:?}");
            assert_eq!(
                f.repaired.as_deref(),
                repaired.then_some("marked failed"),
                "{f:?}"
            );
        }
    };

    catalog.heartbeat_job(live.id).await.expect("heartbeat");
    let (found, summary) = fsck(lake, false, false).await;
    check(&found, false);
    assert_eq!((summary.problems, summary.repaired), (2, 0), "{summary:?}");
    let still = catalog.get_job(claimed.id).await.expect("job");
    assert_eq!(still.status, JobStatus::Running, "a check changes nothing");

    catalog.heartbeat_job(live.id).await.expect("heartbeat");
    let (found, summary) = fsck(lake, false, true).await;
    check(&found, true);
    assert_eq!((summary.problems, summary.repaired), (2, 2), "{summary:?}");
    for j in [&claimed, &queued] {
        let failed = catalog.get_job(j.id).await.expect("job");
        assert_eq!(failed.status, JobStatus::Failed, "{failed:?}");
        let error = failed.error.as_deref().unwrap_or_default();
        assert!(
            error.starts_with("abandoned:") && error.contains("stopped before it finished"),
            "the job says why it failed: {failed:?}"
        );
        assert!(failed.finished_at.is_some(), "{failed:?}");
    }
    let live_now = catalog.get_job(live.id).await.expect("job");
    assert_eq!(
        live_now.status,
        JobStatus::Running,
        "a job heard from within its lease is left alone"
    );
    let ended_now = catalog.get_job(ended.id).await.expect("job");
    assert_eq!(
        (ended_now.status, ended_now.error),
        (JobStatus::Succeeded, None),
        "an ended job is left alone"
    );
    let repairs: Vec<RepairRecord> = catalog
        .entries_by_action(Action::Repair, 100)
        .await
        .expect("entries")
        .into_iter()
        .map(|e| serde_json::from_value(e.parameters).expect("a repair record"))
        .collect();
    assert_eq!(
        repairs.len(),
        2,
        "one repair entry per failed job: {repairs:?}"
    );
    for j in [&claimed, &queued] {
        let r = repairs
            .iter()
            .find(|r| r.found.contains(&j.id.to_string()))
            .unwrap_or_else(|| panic!("a repair entry for job {}: {repairs:?}", j.id));
        assert_eq!(
            (r.problem.as_str(), r.done.as_str()),
            ("abandoned_job", "marked failed"),
            "{r:?}"
        );
    }

    catalog.heartbeat_job(live.id).await.expect("heartbeat");
    let (found, _) = fsck(lake, false, false).await;
    assert!(found.is_empty(), "nothing is left: {found:#?}");
}

#[tokio::test]
async fn fsck_fails_abandoned_jobs_and_records_each_repair_embedded() {
    let t = embedded_settings(leased(Duration::from_secs(5)), None).await;
    abandoned_scenario(&t).await;
}

#[tokio::test]
async fn fsck_fails_abandoned_jobs_and_records_each_repair_on_postgres_and_garage() {
    let Some(t) = production_settings(leased(Duration::from_secs(5)), None).await else {
        return;
    };
    abandoned_scenario(&t).await;
}

/// A check whose reader went away (the HTTP client of `GET /admin/fsck` left) stops at its next
/// page instead of reading the whole lake for nobody; a repair goes on to the end.
#[tokio::test]
async fn a_check_nobody_reads_stops_a_repair_finishes() {
    let t = crate::http_api::embedded(1 << 30).await;
    seed(&t.lake, Layer::Processed, 5).await;
    for repair in [false, true] {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        drop(rx);
        let opts = FsckOptions {
            verify: true,
            repair,
            grace: Duration::ZERO,
        };
        let run = t.lake.fsck().run(&opts, &tx).await;
        if repair {
            let summary = run.expect("a repair runs to the end");
            assert_eq!(summary.files, 5, "{summary:?}");
        } else {
            let e = run.expect_err("a check nobody reads stops");
            assert!(e.to_string().contains("nobody reads"), "{e}");
        }
    }
}

/// The reader leaves in the middle of the store's walk (2,500 uncataloged objects, three pages):
/// the check ends with its error instead of waiting forever on a walk nobody takes pages from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_leaving_mid_walk_ends_the_check() {
    let t = crate::http_api::embedded(1 << 30).await;
    let raw = t.lake.bucket(Layer::Raw).to_owned();
    for i in 0..2_500 {
        t.lake
            .blobs()
            .put(
                &raw,
                &format!("files/{}/stray-{i}.csv", uuid::Uuid::new_v4()),
                lake_host::blob::body_of(b"x\n1\n".to_vec()),
            )
            .await
            .expect("put");
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let reader = tokio::spawn(async move {
        for _ in 0..10 {
            rx.recv().await.expect("a finding");
        }
        // ...and the reader goes.
    });
    let opts = FsckOptions {
        verify: false,
        repair: false,
        grace: Duration::ZERO,
    };
    let run = tokio::time::timeout(Duration::from_secs(60), t.lake.fsck().run(&opts, &tx))
        .await
        .expect("the check ends once its reader has gone");
    reader.await.expect("reader");
    let e = run.expect_err("a check nobody reads stops");
    assert!(e.to_string().contains("nobody reads"), "{e}");
}

/// The NDJSON lines of a response.
async fn ndjson(t: &TestLake, req: Request<Body>) -> (StatusCode, Vec<Value>) {
    let resp = t.app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
    if status != StatusCode::OK {
        return (
            status,
            vec![serde_json::from_str(&text).expect("json error")],
        );
    }
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    (status, lines)
}

#[tokio::test]
async fn admin_fsck_streams_findings_then_a_summary() {
    let t = crate::http_api::embedded(1 << 30).await;
    let seeded = seed(&t.lake, Layer::Processed, 3).await;
    t.lake
        .blobs()
        .delete(&seeded[0].bucket, &seeded[0].key)
        .await
        .expect("delete");
    let get = |uri: &str| {
        Request::builder()
            .method(Method::GET)
            .uri(uri)
            .body(Body::empty())
            .expect("request")
    };
    let (status, lines) = ndjson(&t, get("/admin/fsck?verify=true&grace_secs=0")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["problem"], "missing_object", "{lines:?}");
    assert_eq!(lines[0]["dataset"], seeded[0].id.to_string());
    assert_eq!(lines[0]["key"], seeded[0].key);
    assert_eq!(lines[1]["summary"]["files"], 3, "{lines:?}");
    assert_eq!(lines[1]["summary"]["problems"], 1, "{lines:?}");

    let (status, body) = ndjson(&t, get("/admin/fsck?grace_secs=99999999")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body:?}");
    assert!(
        body[0]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("grace_secs")),
        "{body:?}"
    );
    let (status, _) = ndjson(&t, get("/admin/fsck?verify=maybe")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Repair over POST: nothing safe to repair here, the missing object is still reported.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/admin/fsck/repair")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"grace_secs": 0}"#))
        .expect("request");
    let (status, lines) = ndjson(&t, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lines[0]["problem"], "missing_object");
    assert_eq!(lines[0]["repaired"], Value::Null);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/admin/fsck/repair")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"grace": 0}"#))
        .expect("request");
    let (status, _) = ndjson(&t, req).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an unknown field is refused"
    );
}

#[test]
fn lake_fsck_cli_reports_and_repairs_an_uncataloged_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lake"))
            .arg("fsck")
            .args(args)
            .current_dir(dir.path())
            .env_remove("LAKE_CONFIG")
            .env("LAKE_LOG", "warn")
            .output()
            .expect("run lake fsck")
    };
    let out = run(&["--json"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary: Value = serde_json::from_str(text.trim()).expect("one summary line");
    assert_eq!(summary["summary"]["problems"], 0, "{text}");

    // An object written straight into the raw bucket's directory, as a crashed upload leaves it.
    let objects = dir.path().join("lake-data/objects");
    let raw = std::fs::read_dir(&objects)
        .expect("objects dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("raw"))
        })
        .expect("the raw bucket's directory");
    let stray = raw.join("files/0190aaaa-0000-7000-8000-000000000001/stray.csv");
    std::fs::create_dir_all(stray.parent().expect("parent")).expect("mkdir");
    std::fs::write(&stray, "x\n1\n").expect("write");

    // Young objects may be uploads in flight: not reported under the default grace period.
    let out = run(&[]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 in flight"),
        "{out:?}"
    );
    let out = run(&["--grace-secs", "0"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a problem left exits 1: {out:?}"
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("uncataloged_object"), "{text}");
    assert!(text.contains("stray.csv"), "{text}");
    assert!(text.contains("--repair fixes this"), "{text}");
    let out = run(&["--grace-secs", "0", "--repair"]);
    assert!(out.status.success(), "a repaired problem exits 0: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("repaired: object deleted"),
        "{out:?}"
    );
    assert!(!stray.exists(), "the stray object is deleted");
    let out = run(&["--grace-secs", "0"]);
    assert!(out.status.success(), "{out:?}");
}
