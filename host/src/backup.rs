//! Backups and restores: the catalog as one consistent snapshot plus every object, incremental,
//! verifiable, run once across replicas.
//!
//! A backup writes under the target's prefix (the archive bucket, or a directory of its own):
//! `objects/{sha256}` holds each object's bytes once, whatever dataset or backup names them, so a
//! backup copies only content no earlier backup holds (an object a lifecycle rule expired is simply
//! copied again; retention removes an object once no kept backup names it);
//! `{kind}/{backup id}/catalog.json` is the catalog's snapshot
//! ([`crate::catalog::Dump::export`]) and `{kind}/{backup id}/manifest.json` lists every object
//! with its dataset, key, size and SHA-256, and the catalog file's own SHA-256. The manifest is
//! written last: a backup without one is incomplete and is never listed or restored.
//!
//! Backups run as catalog jobs (kind `backup`). A scheduled run carries the slot's `schedule_key`,
//! so one replica runs it; the slot is the latest due one, so a run missed while every server was
//! down runs when one comes back. A running backup refreshes its heartbeat; a job whose heartbeat
//! stops (its server was killed) is marked failed by the next scheduler tick on any replica, and
//! the next run copies what it had not.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::blob::{self, BlobError, BlobStore, BucketPolicy};
use crate::catalog::{CatalogDump, DatasetId, DatasetStatus, Job};
use crate::config::{BackupTarget, parse_clock, parse_weekly};
use crate::jobs::{Ended, JobKind};
use crate::lake::LakeError;
use crate::layers::Layer;
use crate::provenance::{Action, NewProvenance};

/// A running job silent this long was abandoned (see [`crate::jobs`]).
pub const STALE_AFTER: Duration = crate::jobs::STALE_AFTER;

crate::lake::service! {
    /// The backup service: backups, verification, restores, their jobs and schedules.
    Backups, backups
}

/// One object in a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestObject {
    /// Its dataset.
    pub dataset_id: DatasetId,
    /// The dataset's layer.
    pub layer: Layer,
    /// The file's name.
    pub name: String,
    /// Where it lives in the lake (bucket and key at backup time).
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 (hex): its key in the backup is `objects/{sha256}`.
    pub sha256: String,
}

/// What a backup holds; written last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The backup's id (its job's id).
    pub backup_id: uuid::Uuid,
    /// `daily`, `weekly` or `manual`.
    pub kind: String,
    /// When the catalog snapshot was taken.
    pub created_at: DateTime<Utc>,
    /// SHA-256 of `catalog.json`.
    pub catalog_sha256: String,
    /// Datasets in the snapshot.
    pub datasets: usize,
    /// Provenance entries in the snapshot.
    pub entries: usize,
    /// Every object of every ready dataset.
    pub objects: Vec<ManifestObject>,
}

/// What a backup did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupResult {
    /// The backup's id.
    #[schema(value_type = String, format = Uuid)]
    pub backup_id: uuid::Uuid,
    /// `daily`, `weekly` or `manual`.
    pub kind: String,
    /// Where it is: target, bucket and prefix.
    pub location: String,
    /// Datasets in the catalog snapshot.
    pub datasets: usize,
    /// Provenance entries in it.
    pub entries: usize,
    /// Objects the backup names.
    pub objects: usize,
    /// Objects whose bytes were copied now.
    pub objects_copied: usize,
    /// Bytes copied now.
    pub bytes_copied: u64,
    /// Objects an earlier backup already held.
    pub objects_present: usize,
    /// Backups removed by retention after this one.
    pub removed: Vec<String>,
}

/// A backup found at the target.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BackupSummary {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub backup_id: uuid::Uuid,
    /// `daily`, `weekly` or `manual`.
    pub kind: String,
    /// When its snapshot was taken.
    pub created_at: DateTime<Utc>,
    /// Datasets.
    pub datasets: usize,
    /// Objects.
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// One problem `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The dataset whose file it is (absent for the catalog file).
    pub dataset_id: Option<DatasetId>,
    /// The file's name, or `catalog.json`.
    pub name: String,
    /// The key in the backup.
    pub key: String,
    /// What is wrong: `missing`, or the SHA-256 and size found.
    pub problem: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The backup.
    pub backup_id: uuid::Uuid,
    /// Distinct objects re-read.
    pub objects_checked: usize,
    /// Bytes re-read.
    pub bytes_checked: u64,
    /// Every mismatch; empty when the backup is sound.
    pub problems: Vec<Problem>,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The backup restored.
    pub backup_id: uuid::Uuid,
    /// Datasets restored.
    pub datasets: usize,
    /// Provenance entries restored.
    pub entries: usize,
    /// Objects written.
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// What happened to one content during a backup.
enum Copied {
    /// Copied now: its bytes.
    Now(u64),
    /// An earlier backup holds it.
    Before,
    /// Every dataset holding it was deleted since the snapshot.
    Deleted(Vec<DatasetId>),
}

/// Progress of a backup, verify or restore: objects done of a total.
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Where backups are read and written.
#[derive(Debug, Clone)]
struct Target {
    store: Arc<dyn BlobStore>,
    bucket: String,
    prefix: String,
    /// The lake's own store (server-side copies) rather than a store of its own.
    shared: bool,
    name: String,
}

impl Target {
    fn object_key(&self, sha: &str) -> String {
        format!("{}/objects/{sha}", self.prefix)
    }
    fn run_key(&self, kind: &str, id: uuid::Uuid, file: &str) -> String {
        format!("{}/{kind}/{id}/{file}", self.prefix)
    }
}

/// The latest due slot of each schedule at `now`: (kind, slot start).
pub fn due_slots(
    daily_at: &str,
    weekly_at: &str,
    now: DateTime<Utc>,
) -> Vec<(&'static str, DateTime<Utc>)> {
    let mut out = Vec::new();
    let midnight = now
        .with_hour(0)
        .and_then(|t| t.with_minute(0))
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now);
    if let Ok(min) = parse_clock(daily_at) {
        let today = midnight + chrono::Duration::minutes(i64::from(min));
        out.push((
            "daily",
            if today <= now {
                today
            } else {
                today - chrono::Duration::days(1)
            },
        ));
    }
    if let Ok((day, min)) = parse_weekly(weekly_at) {
        let back = (i64::from(now.weekday().num_days_from_monday()) - i64::from(day)).rem_euclid(7);
        let mut slot =
            midnight - chrono::Duration::days(back) + chrono::Duration::minutes(i64::from(min));
        if slot > now {
            slot -= chrono::Duration::days(7);
        }
        out.push(("weekly", slot));
    }
    out
}

fn json_err(e: serde_json::Error) -> LakeError {
    LakeError::Invalid(format!("the backup's JSON is unreadable: {e}"))
}

async fn read_all(store: &dyn BlobStore, bucket: &str, key: &str) -> Result<Vec<u8>, LakeError> {
    Ok(blob::read_all(store, bucket, key).await?)
}

impl Backups<'_> {
    async fn backup_target(&self) -> Result<Target, LakeError> {
        let cfg = &self.settings().backup;
        let prefix = cfg.prefix.trim_matches('/').to_owned();
        match cfg.target {
            BackupTarget::Archive => Ok(Target {
                store: self.blobs().clone(),
                bucket: self.bucket(Layer::Archive).to_owned(),
                name: format!("archive bucket {}/{prefix}", self.bucket(Layer::Archive)),
                prefix,
                shared: true,
            }),
            // `Settings::from_config` resolves `auto`; a directory is the safe reading if not.
            BackupTarget::Auto | BackupTarget::Dir | BackupTarget::S3 => {
                let (store, name): (Arc<dyn BlobStore>, String) = match (&cfg.target, &cfg.s3) {
                    (BackupTarget::S3, Some(s3)) => (
                        Arc::new(blob::s3::S3Store::new(s3)?),
                        format!(
                            "bucket {} at {}",
                            cfg.bucket,
                            s3.endpoint.as_deref().unwrap_or("AWS S3")
                        ),
                    ),
                    (BackupTarget::S3, None) => {
                        return Err(LakeError::Invalid(
                            "backup.target = \"s3\" needs [backup.s3]".into(),
                        ));
                    }
                    _ => (
                        Arc::new(blob::local::LocalStore::open(&cfg.dir).await?),
                        format!("directory {}/{}", cfg.dir.display(), cfg.bucket),
                    ),
                };
                store
                    .prepare_bucket(&cfg.bucket, &BucketPolicy::default())
                    .await?;
                Ok(Target {
                    store,
                    bucket: cfg.bucket.clone(),
                    name: format!("{name}/{prefix}"),
                    prefix,
                    shared: false,
                })
            }
        }
    }

    /// What an operator should know about the backup setup (logged at start).
    pub fn caveats(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.settings().backup.target == BackupTarget::Archive
            && let Some(days) = self.settings().archive_expiration_days
        {
            out.push(format!(
                "backups are kept in the archive bucket, whose lifecycle rule expires objects after {days} days: \
                 a backup object copied that long ago disappears even while newer backups name it (the next backup \
                 copies it again if the lake still holds it). Set backup.target to \"dir\" or \"s3\", or \
                 layers.archive_expiration_days = 0, to keep backups whole"
            ));
        }
        out
    }

    /// Records a manual backup job and runs it in the background.
    pub async fn trigger(&self) -> Result<Job, LakeError> {
        let job = self
            .jobs()
            .record(JobKind::Backup, serde_json::json!({"kind": "manual"}))
            .await?;
        let lake = self.lake.clone();
        let id = job.id;
        tokio::spawn(crate::provenance::acting_as(
            crate::provenance::current_actor(),
            async move { lake.backups().run_job(id, "manual", None).await },
        ));
        Ok(job)
    }

    /// Runs a backup now in this task as a recorded job (`lake backup run`).
    pub async fn run_now(
        &self,
        kind: &str,
        progress: Option<ProgressFn>,
    ) -> Result<Job, LakeError> {
        let job = self
            .jobs()
            .record(JobKind::Backup, serde_json::json!({ "kind": kind }))
            .await?;
        self.run_job(job.id, kind, progress).await
    }

    /// Starts the due daily and weekly backups no replica has run yet. Returns the jobs this
    /// replica started.
    pub async fn run_due(&self, now: DateTime<Utc>) -> Vec<Job> {
        // An empty lake (a new one, or one about to be restored) has nothing to back up; its
        // empty backups would only push real ones out of retention.
        match self
            .catalog()
            .search(&crate::catalog::SearchQuery {
                limit: 1,
                ..crate::catalog::SearchQuery::default()
            })
            .await
        {
            Ok(page) if page.items.is_empty() => return Vec::new(),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "Scheduling backups failed");
                return Vec::new();
            }
        }
        let cfg = &self.settings().backup;
        let mut started = Vec::new();
        for (kind, slot) in due_slots(&cfg.daily_at, &cfg.weekly_at, now) {
            let key = format!("backup:{kind}@{}", slot.format("%Y-%m-%dT%H:%MZ"));
            let request = serde_json::json!({"kind": kind, "slot": slot});
            match self
                .jobs()
                .record_scheduled(JobKind::Backup, request, key.clone())
                .await
            {
                Ok(Some(job)) => {
                    tracing::info!(kind, slot = key, job = %job.id, "Scheduled backup started");
                    let lake = self.lake.clone();
                    let id = job.id;
                    tokio::spawn(async move { lake.backups().run_job(id, kind, None).await });
                    started.push(job);
                }
                // Another replica (or an earlier tick) has this slot.
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "Scheduling a backup failed"),
            }
        }
        started
    }

    /// Claims a recorded backup job, runs it with a heartbeat, and records how it ended.
    pub async fn run_job(
        &self,
        id: uuid::Uuid,
        kind: &str,
        progress: Option<ProgressFn>,
    ) -> Result<Job, LakeError> {
        let work = async {
            match self.backup(id, kind, progress).await {
                Ok(r) => Ended::Succeeded(serde_json::to_value(&r).unwrap_or_default()),
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "Backup failed");
                    Ended::Failed {
                        result: None,
                        error: e.to_string(),
                    }
                }
            }
        };
        self.jobs().run(id, work).await
    }

    /// One backup: the catalog snapshot, the objects it names not yet in the backup, the
    /// manifest, a `backup` provenance entry, then retention.
    pub async fn backup(
        &self,
        id: uuid::Uuid,
        kind: &str,
        progress: Option<ProgressFn>,
    ) -> Result<BackupResult, LakeError> {
        let target = self.backup_target().await?;
        let created_at = Utc::now();
        let mut dump = self.catalog().export().await?;
        let by_id: HashMap<DatasetId, &crate::catalog::Dataset> =
            dump.datasets.iter().map(|d| (d.id, d)).collect();
        let mut objects = Vec::new();
        for f in &dump.files {
            let Some(d) = by_id.get(&f.dataset_id) else {
                continue;
            };
            if d.status != DatasetStatus::Ready {
                continue;
            }
            objects.push(ManifestObject {
                dataset_id: d.id,
                layer: d.layer,
                name: f.file.name.clone(),
                bucket: d.bucket.clone(),
                key: format!("{}{}", d.prefix, f.file.name),
                size: f.file.size,
                sha256: f.file.sha256.clone(),
            });
        }
        // One copy per content; any object holding it will do as the source.
        let mut by_sha: BTreeMap<String, Vec<ManifestObject>> = BTreeMap::new();
        for o in &objects {
            by_sha.entry(o.sha256.clone()).or_default().push(o.clone());
        }
        let total = by_sha.len() as u64;
        let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let parallel = self.settings().backup.parallelism.max(1);
        let results: Vec<Result<Copied, LakeError>> = futures::stream::iter(by_sha.into_values())
            .map(|sources| {
                let (target, done, progress) = (&target, done.clone(), progress.clone());
                async move {
                    let copied = self.back_up_content(target, &sources).await;
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if let Some(p) = &progress {
                        p(n, total);
                    }
                    copied
                }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        let (mut copied, mut bytes, mut present) = (0usize, 0u64, 0usize);
        let mut gone = std::collections::HashSet::new();
        for r in results {
            match r? {
                Copied::Now(n) => {
                    copied += 1;
                    bytes += n;
                }
                Copied::Before => present += 1,
                Copied::Deleted(ids) => gone.extend(ids),
            }
        }
        // Datasets deleted since the snapshot: recorded as deleted, their objects left out.
        if !gone.is_empty() {
            for d in &mut dump.datasets {
                if gone.contains(&d.id) {
                    d.status = DatasetStatus::Deleted;
                }
            }
            objects.retain(|o| !gone.contains(&o.dataset_id));
        }
        // Encoding and hashing the snapshot is CPU work that grows with the catalog: off the
        // async workers, so that a scheduled backup does not hold up the requests a replica
        // serves.
        let kind_owned = kind.to_owned();
        let (catalog_json, manifest, manifest_json) = tokio::task::spawn_blocking(move || {
            let catalog_json = serde_json::to_vec(&dump).map_err(json_err)?;
            let manifest = Manifest {
                backup_id: id,
                kind: kind_owned,
                created_at,
                catalog_sha256: blob::Sha256::of(&catalog_json).to_hex(),
                datasets: dump.datasets.len(),
                entries: dump.provenance.len(),
                objects,
            };
            let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(json_err)?;
            Ok::<_, LakeError>((catalog_json, manifest, manifest_json))
        })
        .await
        .map_err(|e| LakeError::Unavailable(format!("encoding the backup: {e}")))??;
        target
            .store
            .put(
                &target.bucket,
                &target.run_key(kind, id, "catalog.json"),
                blob::body_of(catalog_json),
            )
            .await?;
        target
            .store
            .put(
                &target.bucket,
                &target.run_key(kind, id, "manifest.json"),
                blob::body_of(manifest_json),
            )
            .await?;
        // The backup is complete and sound; a retention problem is reported, not fatal.
        let removed = match self.apply_retention(&target, kind, id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(backup = %id, error = %e, "Retention failed; older backups stay");
                Vec::new()
            }
        };
        let result = BackupResult {
            backup_id: id,
            kind: kind.to_owned(),
            location: target.name.clone(),
            datasets: manifest.datasets,
            entries: manifest.entries,
            objects: manifest.objects.len(),
            objects_copied: copied,
            bytes_copied: bytes,
            objects_present: present,
            removed,
        };
        self.catalog()
            .append_provenance(&NewProvenance::backup(&result))
            .await?;
        metrics::counter!("lake_backups_total", "kind" => kind.to_owned()).increment(1);
        Ok(result)
    }

    /// Copies one content's bytes into the backup unless it holds them, from the first of its
    /// objects still in the lake. When none is (their datasets were deleted since the snapshot),
    /// says which datasets went.
    async fn back_up_content(
        &self,
        target: &Target,
        sources: &[ManifestObject],
    ) -> Result<Copied, LakeError> {
        let Some(first) = sources.first() else {
            return Ok(Copied::Before);
        };
        let dest = target.object_key(&first.sha256);
        match target.store.head(&target.bucket, &dest).await {
            Ok(info) if info.size == first.size => return Ok(Copied::Before),
            Ok(_) | Err(BlobError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        for o in sources {
            let copied = if target.shared {
                self.blobs()
                    .copy(&o.bucket, &o.key, &target.bucket, &dest)
                    .await
            } else {
                match self.blobs().get(&o.bucket, &o.key).await {
                    Ok(body) => target
                        .store
                        .put(&target.bucket, &dest, body)
                        .await
                        .map(|_| ()),
                    Err(e) => Err(e),
                }
            };
            match copied {
                Ok(()) => return Ok(Copied::Now(o.size)),
                Err(BlobError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // No object with these bytes is left: only a deletion since the snapshot explains that.
        let mut deleted = Vec::new();
        for o in sources {
            let d = self.catalog().get_dataset(o.dataset_id).await?;
            if d.status != DatasetStatus::Deleted {
                return Err(LakeError::Unavailable(format!(
                    "{} of dataset {} is missing from {}/{}",
                    o.name, o.dataset_id, o.bucket, o.key
                )));
            }
            deleted.push(o.dataset_id);
        }
        Ok(Copied::Deleted(deleted))
    }

    /// Keeps the newest `keep_daily` / `keep_weekly` backups of `kind`; removes the rest, then the
    /// objects no remaining backup names.
    async fn apply_retention(
        &self,
        target: &Target,
        kind: &str,
        this: uuid::Uuid,
    ) -> Result<Vec<String>, LakeError> {
        let cfg = &self.settings().backup;
        let keep = match kind {
            "daily" => cfg.keep_daily,
            "weekly" => cfg.keep_weekly,
            _ => return Ok(Vec::new()),
        } as usize;
        let mut ids = self.backup_ids(target, kind).await?;
        if ids.len() <= keep {
            return Ok(Vec::new());
        }
        ids.sort();
        let drop_n = ids.len() - keep;
        let mut removed = Vec::new();
        // Objects only the removed backups may name: the only candidates for the sweep.
        let mut candidates = std::collections::HashSet::new();
        for id in ids.into_iter().take(drop_n) {
            let m = self.read_manifest(target, kind, id).await?;
            candidates.extend(m.objects.into_iter().map(|o| o.sha256));
            // The manifest first: without it the rest is never read.
            for file in ["manifest.json", "catalog.json"] {
                target
                    .store
                    .delete(&target.bucket, &target.run_key(kind, id, file))
                    .await?;
            }
            removed.push(id.to_string());
        }
        for s in self.list_backups_in(target).await? {
            match self.read_manifest(target, &s.kind, s.backup_id).await {
                Ok(m) => {
                    for o in m.objects {
                        candidates.remove(&o.sha256);
                    }
                }
                // Removed meanwhile by another run's retention.
                Err(LakeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Another backup in progress may be counting on an object it found present; leave the
        // sweep to a later run.
        let busy = self
            .list_jobs(50)
            .await?
            .iter()
            .any(|j| !j.status.is_finished() && j.id != this);
        if busy {
            tracing::info!("Another backup is running; unused objects are left for a later sweep");
            return Ok(removed);
        }
        for sha in candidates {
            target
                .store
                .delete(&target.bucket, &target.object_key(&sha))
                .await?;
        }
        Ok(removed)
    }

    async fn backup_ids(&self, target: &Target, kind: &str) -> Result<Vec<uuid::Uuid>, LakeError> {
        let listed = target
            .store
            .list(&target.bucket, &format!("{}/{kind}/", target.prefix))
            .await?;
        Ok(listed
            .iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(&format!("{}/{kind}/", target.prefix))?;
                let (id, file) = rest.split_once('/')?;
                (file == "manifest.json").then(|| id.parse().ok()).flatten()
            })
            .collect())
    }

    async fn read_manifest(
        &self,
        target: &Target,
        kind: &str,
        id: uuid::Uuid,
    ) -> Result<Manifest, LakeError> {
        let bytes = read_all(
            target.store.as_ref(),
            &target.bucket,
            &target.run_key(kind, id, "manifest.json"),
        )
        .await?;
        serde_json::from_slice(&bytes).map_err(json_err)
    }

    async fn list_backups_in(&self, target: &Target) -> Result<Vec<BackupSummary>, LakeError> {
        let mut out = Vec::new();
        for kind in ["daily", "weekly", "manual"] {
            for id in self.backup_ids(target, kind).await? {
                let m = self.read_manifest(target, kind, id).await?;
                out.push(BackupSummary {
                    backup_id: id,
                    kind: kind.to_owned(),
                    created_at: m.created_at,
                    datasets: m.datasets,
                    objects: m.objects.len(),
                    bytes: m.objects.iter().map(|o| o.size).sum(),
                });
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.backup_id));
        Ok(out)
    }

    /// Complete backups at the target, newest first.
    pub async fn list(&self) -> Result<Vec<BackupSummary>, LakeError> {
        let target = self.backup_target().await?;
        self.list_backups_in(&target).await
    }

    async fn find_backup(&self, target: &Target, id: uuid::Uuid) -> Result<Manifest, LakeError> {
        for kind in ["daily", "weekly", "manual"] {
            match self.read_manifest(target, kind, id).await {
                Ok(m) => return Ok(m),
                Err(LakeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Err(LakeError::NotFound(format!(
            "no complete backup {id} in the {}",
            target.name
        )))
    }

    /// Re-reads a backup: every object's SHA-256 and size, and the catalog file's, against the
    /// manifest. Problems name the dataset and file.
    pub async fn verify(
        &self,
        id: uuid::Uuid,
        progress: Option<ProgressFn>,
    ) -> Result<VerifyReport, LakeError> {
        let target = self.backup_target().await?;
        let m = self.find_backup(&target, id).await?;
        let mut problems = Vec::new();
        let catalog_key = target.run_key(&m.kind, id, "catalog.json");
        match read_all(target.store.as_ref(), &target.bucket, &catalog_key).await {
            Ok(bytes) if blob::Sha256::of(&bytes).to_hex() == m.catalog_sha256 => {}
            Ok(bytes) => problems.push(Problem {
                dataset_id: None,
                name: "catalog.json".into(),
                key: catalog_key,
                problem: format!(
                    "SHA-256 {} instead of {}",
                    blob::Sha256::of(&bytes).to_hex(),
                    m.catalog_sha256
                ),
            }),
            Err(LakeError::NotFound(_)) => problems.push(Problem {
                dataset_id: None,
                name: "catalog.json".into(),
                key: catalog_key,
                problem: "missing".into(),
            }),
            Err(e) => return Err(e),
        }
        let mut by_sha: BTreeMap<&str, Vec<&ManifestObject>> = BTreeMap::new();
        for o in &m.objects {
            by_sha.entry(o.sha256.as_str()).or_default().push(o);
        }
        let total = by_sha.len() as u64;
        let (mut checked, mut bytes) = (0usize, 0u64);
        for (sha, names) in &by_sha {
            let key = target.object_key(sha);
            let found = match target.store.get(&target.bucket, &key).await {
                Ok(body) => {
                    let (mut s, hash) = blob::hashing(body, None);
                    let mut failed = None;
                    while let Some(c) = s.next().await {
                        if let Err(e) = c {
                            failed = Some(e.to_string());
                            break;
                        }
                    }
                    let (got, size) = hash.finish();
                    bytes += size;
                    match failed {
                        Some(e) => Some(format!("unreadable: {e}")),
                        None if got.to_hex() != *sha || size != names[0].size => Some(format!(
                            "SHA-256 {} and {size} bytes instead of {sha} and {} bytes",
                            got.to_hex(),
                            names[0].size
                        )),
                        None => None,
                    }
                }
                Err(BlobError::NotFound { .. }) => Some("missing".into()),
                Err(e) => return Err(e.into()),
            };
            checked += 1;
            if let Some(p) = &progress {
                p(checked as u64, total);
            }
            if let Some(problem) = found {
                for o in names {
                    problems.push(Problem {
                        dataset_id: Some(o.dataset_id),
                        name: o.name.clone(),
                        key: key.clone(),
                        problem: problem.clone(),
                    });
                }
            }
        }
        Ok(VerifyReport {
            backup_id: id,
            objects_checked: checked,
            bytes_checked: bytes,
            problems,
        })
    }

    /// Restores a backup into this lake, which must be empty: every object is written to its
    /// layer's bucket here (its SHA-256 checked on the way), then the catalog is loaded in one
    /// transaction, then a `restore` entry is appended.
    pub async fn restore(
        &self,
        id: uuid::Uuid,
        progress: Option<ProgressFn>,
    ) -> Result<RestoreReport, LakeError> {
        let here = self.catalog().export().await?;
        let entries = here
            .provenance
            .iter()
            .filter(|e| !matches!(e.action, Action::Backup | Action::Restore))
            .count();
        if !here.datasets.is_empty() || entries > 0 {
            return Err(LakeError::Conflict(format!(
                "this lake is not empty ({} datasets, {entries} provenance entries): restore into an empty lake",
                here.datasets.len(),
            )));
        }
        let target = self.backup_target().await?;
        let m = self.find_backup(&target, id).await?;
        let catalog_json = read_all(
            target.store.as_ref(),
            &target.bucket,
            &target.run_key(&m.kind, id, "catalog.json"),
        )
        .await?;
        if blob::Sha256::of(&catalog_json).to_hex() != m.catalog_sha256 {
            return Err(LakeError::Invalid(format!(
                "backup {id}: catalog.json does not match its manifest; `lake backup verify {id}` names the damage"
            )));
        }
        let mut dump: CatalogDump = serde_json::from_slice(&catalog_json).map_err(json_err)?;
        // Datasets live in this lake's layer buckets.
        for d in &mut dump.datasets {
            d.bucket = self.bucket(d.layer).to_owned();
            d.location = format!("{}/{}", d.bucket, d.prefix);
        }
        let by_id: HashMap<DatasetId, &crate::catalog::Dataset> =
            dump.datasets.iter().map(|d| (d.id, d)).collect();
        let total = m.objects.len() as u64;
        let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let parallel = self.settings().backup.parallelism.max(1);
        let written: Vec<Result<u64, LakeError>> = futures::stream::iter(m.objects.clone())
            .map(|o| {
                let (target, by_id, done, progress) = (&target, &by_id, done.clone(), progress.clone());
                async move {
                    let d = by_id.get(&o.dataset_id).ok_or_else(|| {
                        LakeError::Invalid(format!("backup {id}: object {} names no dataset of its catalog", o.key))
                    })?;
                    let dest_key = format!("{}{}", d.prefix, o.name);
                    let body = target.store.get(&target.bucket, &target.object_key(&o.sha256)).await?;
                    let (body, hash) = blob::hashing(body, None);
                    let size = self.blobs().put(&d.bucket, &dest_key, body).await?;
                    let (sha, _) = hash.finish();
                    if sha.to_hex() != o.sha256 {
                        let _ = self.blobs().delete(&d.bucket, &dest_key).await;
                        return Err(LakeError::Invalid(format!(
                            "backup {id}: the copy of {} (dataset {}) does not match its SHA-256; `lake backup verify {id}` names the damage",
                            o.name, o.dataset_id
                        )));
                    }
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if let Some(p) = &progress {
                        p(n, total);
                    }
                    Ok(size)
                }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        let mut bytes = 0;
        for w in written {
            bytes += w?;
        }
        self.catalog().import(&dump).await?;
        let report = RestoreReport {
            backup_id: id,
            datasets: dump.datasets.len(),
            entries: dump.provenance.len(),
            objects: m.objects.len(),
            bytes,
        };
        self.catalog()
            .append_provenance(&NewProvenance::restore(&target.name, &report))
            .await?;
        Ok(report)
    }

    /// The newest backup jobs.
    pub async fn list_jobs(&self, limit: u32) -> Result<Vec<Job>, LakeError> {
        self.jobs().list(JobKind::Backup, limit).await
    }

    /// One backup job.
    pub async fn job(&self, id: uuid::Uuid) -> Result<Job, LakeError> {
        self.jobs().get(id, JobKind::Backup).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn the_latest_due_slot_is_run_even_when_it_was_missed() {
        // 2026-12-01 is a Tuesday.
        let slots = due_slots("02:00", "sun 03:00", at("2026-12-01T09:30:00Z"));
        assert_eq!(
            slots,
            [
                ("daily", at("2026-12-01T02:00:00Z")),
                ("weekly", at("2026-11-29T03:00:00Z"))
            ]
        );
        // Before 02:00 the due daily slot is yesterday's.
        let slots = due_slots("02:00", "", at("2026-12-01T01:59:00Z"));
        assert_eq!(slots, [("daily", at("2026-11-30T02:00:00Z"))]);
        // On Sunday before 03:00 the due weekly slot is last week's.
        let slots = due_slots("", "sun 03:00", at("2026-11-29T02:00:00Z"));
        assert_eq!(slots, [("weekly", at("2026-11-22T03:00:00Z"))]);
        let slots = due_slots("", "sun 03:00", at("2026-11-29T03:00:00Z"));
        assert_eq!(slots, [("weekly", at("2026-11-29T03:00:00Z"))]);
        assert!(due_slots("", "", at("2026-11-29T03:00:00Z")).is_empty());
    }
}
