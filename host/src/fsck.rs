//! Integrity: `lake fsck` and `GET /admin/fsck`, the catalog reconciled with the store.
//!
//! The lake promises no ready file row without its object (of the recorded size and SHA-256), no
//! object under the lake's buckets without its row, and no claim, pending promotion or job left
//! half-done by a stopped server. `lake.fsck().run` checks each promise and sends every problem it
//! finds as a [`Finding`] the moment it finds it, naming the dataset and the key. It walks both
//! sides a page at a time (files in (dataset, name) order from the catalog, objects in key order
//! from the store), so a lake of a million objects is checked in the memory of one page.
//!
//! With `repair`, what is safe is fixed and each fix recorded as a `repair` provenance entry:
//! objects no dataset catalogs (older than the grace period, so never an upload in flight) and
//! objects a deleted dataset left behind are deleted; stale upload claims are dropped; a promotion
//! that stopped part-way is resumed (its retry is idempotent); abandoned jobs are failed. A
//! missing, truncated or altered object is only reported: the bytes are gone, and a person decides
//! (restore from a backup, or delete the dataset).
//!
//! The order matters for repair: stopped promotions resume before the store is walked, so the
//! objects they had copied become cataloged instead of being deleted as uncataloged.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::blob::{self, BlobError, ListedObject};
use crate::catalog::{DatasetId, DatasetStatus, KeyOwner, StoredFile};
use crate::lake::LakeError;
use crate::layers::Layer;
use crate::promotion::PromoteRequest;
use crate::provenance::{NewProvenance, RepairRecord};

/// Rows or objects read per page.
const PAGE: u32 = 1000;
/// Objects checked at once.
const PARALLEL: usize = 16;

/// What to check and whether to repair.
#[derive(Debug, Clone)]
pub struct FsckOptions {
    /// Hash every ready object and compare with its recorded SHA-256 (reads every byte).
    pub verify: bool,
    /// Fix what is safe, recording each fix in provenance.
    pub repair: bool,
    /// Objects, claims and pending promotions younger than this may belong to work in flight:
    /// they are counted, never reported or repaired.
    pub grace: Duration,
}

impl Default for FsckOptions {
    fn default() -> Self {
        Self {
            verify: false,
            repair: false,
            grace: crate::lake::CLAIM_STALE_AFTER,
        }
    }
}

/// A kind of problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// A ready dataset's file has no object.
    MissingObject,
    /// The object's size is not the recorded size.
    SizeMismatch,
    /// The object's SHA-256 is not the recorded one (`--verify`).
    ChecksumMismatch,
    /// The store failed to answer for the object.
    UnreadableObject,
    /// An object no dataset catalogs (a write the catalog never recorded).
    UncatalogedObject,
    /// An object of a deleted dataset still in the store.
    DeletedLeftover,
    /// An upload claim older than its lease (its server stopped).
    StaleClaim,
    /// A promotion target still pending past the grace period (its server stopped).
    StalledPromotion,
    /// A queued or running job nobody has heard from (its server stopped).
    AbandonedJob,
    /// A provenance entry or lineage edge naming a dataset the catalog does not have.
    DanglingReference,
}

impl Problem {
    /// The name used in reports and `repair` entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::MissingObject => "missing_object",
            Problem::SizeMismatch => "size_mismatch",
            Problem::ChecksumMismatch => "checksum_mismatch",
            Problem::UnreadableObject => "unreadable_object",
            Problem::UncatalogedObject => "uncataloged_object",
            Problem::DeletedLeftover => "deleted_leftover",
            Problem::StaleClaim => "stale_claim",
            Problem::StalledPromotion => "stalled_promotion",
            Problem::AbandonedJob => "abandoned_job",
            Problem::DanglingReference => "dangling_reference",
        }
    }

    /// Whether `--repair` fixes it without a person's decision.
    pub fn safe_to_repair(self) -> bool {
        matches!(
            self,
            Problem::UncatalogedObject
                | Problem::DeletedLeftover
                | Problem::StaleClaim
                | Problem::StalledPromotion
                | Problem::AbandonedJob
        )
    }
}

/// One problem found, sent as soon as it is found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Finding {
    /// What is wrong.
    pub problem: Problem,
    /// The dataset concerned, where there is one.
    #[schema(value_type = Option<String>)]
    pub dataset: Option<DatasetId>,
    /// The object's bucket, where the problem is an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The object's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What was found, in words.
    pub detail: String,
    /// `--repair` fixes this kind of problem.
    pub safe_to_repair: bool,
    /// What the repair did (`null` when not repaired).
    pub repaired: Option<String>,
}

/// What a run checked and found.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct FsckSummary {
    /// Cataloged files checked against the store.
    pub files: u64,
    /// Bytes hashed (`verify`).
    pub bytes_verified: u64,
    /// Objects listed in the lake's buckets.
    pub objects: u64,
    /// Uncataloged objects younger than the grace period (uploads or copies in flight).
    pub in_flight: u64,
    /// Problems found.
    pub problems: u64,
    /// Of those, repaired.
    pub repaired: u64,
    /// Wall time.
    pub millis: u64,
}

crate::lake::service! {
    /// The integrity check: the catalog reconciled with the store.
    Fsck, fsck
}

/// Where findings go, with the running counts.
struct Report<'a> {
    to: &'a mpsc::Sender<Finding>,
    summary: FsckSummary,
}

impl Report<'_> {
    async fn found(&mut self, f: Finding) {
        self.summary.problems += 1;
        if f.repaired.is_some() {
            self.summary.repaired += 1;
        }
        // A reader that went away stops nothing here: a repair finishes and is recorded.
        let _ = self.to.send(f).await;
    }

    /// A check (not a repair) whose reader went away stops at the next page rather than read
    /// the whole lake (every byte, verifying) for nobody.
    fn unread(&self, opts: &FsckOptions) -> Result<(), LakeError> {
        if !opts.repair && self.to.is_closed() {
            return Err(LakeError::Unavailable(
                "the check stopped: nobody reads its findings any more".into(),
            ));
        }
        Ok(())
    }
}

fn finding(problem: Problem, dataset: Option<DatasetId>, detail: String) -> Finding {
    Finding {
        problem,
        dataset,
        bucket: None,
        key: None,
        detail,
        safe_to_repair: problem.safe_to_repair(),
        repaired: None,
    }
}

fn at(mut f: Finding, bucket: &str, key: &str) -> Finding {
    f.bucket = Some(bucket.to_owned());
    f.key = Some(key.to_owned());
    f
}

impl Fsck<'_> {
    /// Checks the whole lake, sending each problem to `found` as it is found (and repairing what
    /// is safe with `opts.repair`); returns the counts.
    pub async fn run(
        &self,
        opts: &FsckOptions,
        found: &mpsc::Sender<Finding>,
    ) -> Result<FsckSummary, LakeError> {
        let start = Instant::now();
        let mut report = Report {
            to: found,
            summary: FsckSummary::default(),
        };
        let cutoff = Utc::now() - chrono::Duration::from_std(opts.grace).unwrap_or_default();
        self.jobs_check(opts, &mut report).await?;
        self.claims_check(opts, cutoff, &mut report).await?;
        self.promotions_check(opts, cutoff, &mut report).await?;
        self.files_check(opts, &mut report).await?;
        self.objects_check(opts, cutoff, &mut report).await?;
        self.references_check(&mut report).await?;
        report.summary.millis = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(report.summary)
    }

    /// Records a repair and returns what it did, for the finding.
    async fn record(&self, f: &Finding, done: &str) -> Option<String> {
        let entry = NewProvenance::repair(
            f.dataset,
            &RepairRecord {
                problem: f.problem.as_str().to_owned(),
                bucket: f.bucket.clone(),
                key: f.key.clone(),
                found: f.detail.clone(),
                done: done.to_owned(),
            },
        );
        match self.catalog.append_provenance(&entry).await {
            Ok(_) => Some(done.to_owned()),
            Err(e) => {
                tracing::error!(error = %e, problem = f.problem.as_str(), "Repaired, but the repair entry could not be recorded");
                Some(format!(
                    "{done} (the repair entry could not be recorded: {e})"
                ))
            }
        }
    }

    async fn jobs_check(
        &self,
        opts: &FsckOptions,
        report: &mut Report<'_>,
    ) -> Result<(), LakeError> {
        let before =
            Utc::now() - chrono::Duration::from_std(self.jobs().lease()).unwrap_or_default();
        let silent = self.catalog.silent_jobs(before, PAGE).await?;
        if silent.is_empty() {
            return Ok(());
        }
        let failed = if opts.repair {
            self.jobs().fail_abandoned().await?
        } else {
            Vec::new()
        };
        for job in silent {
            let last = job
                .heartbeat_at
                .or(job.started_at)
                .unwrap_or(job.created_at);
            let mut f = finding(
                Problem::AbandonedJob,
                None,
                format!(
                    "{} job {} is {} but silent since {last}",
                    job.kind,
                    job.id,
                    job.status.as_str()
                ),
            );
            if failed.iter().any(|j| j.id == job.id) {
                f.repaired = self.record(&f, "marked failed").await;
            }
            report.found(f).await;
        }
        Ok(())
    }

    async fn claims_check(
        &self,
        opts: &FsckOptions,
        cutoff: chrono::DateTime<Utc>,
        report: &mut Report<'_>,
    ) -> Result<(), LakeError> {
        for claim in self.catalog.stale_claims(cutoff, PAGE).await? {
            let mut f = finding(
                Problem::StaleClaim,
                Some(claim.dataset),
                format!(
                    "the name {:?} has been claimed by an upload since {}",
                    claim.name, claim.claimed_at
                ),
            );
            if opts.repair
                && self
                    .catalog
                    .drop_stale_claim(claim.dataset, &claim.name, cutoff)
                    .await?
            {
                f.repaired = self.record(&f, "claim dropped").await;
            }
            report.found(f).await;
        }
        Ok(())
    }

    async fn promotions_check(
        &self,
        opts: &FsckOptions,
        cutoff: chrono::DateTime<Utc>,
        report: &mut Report<'_>,
    ) -> Result<(), LakeError> {
        for target in self.catalog.stalled_datasets(cutoff, PAGE).await? {
            let mut f = finding(
                Problem::StalledPromotion,
                Some(target.id),
                match target.promoted_from {
                    Some(from) => format!(
                        "the promotion of {from} to {} is pending since {}",
                        target.layer, target.created_at
                    ),
                    None => format!("dataset pending since {}", target.created_at),
                },
            );
            if opts.repair {
                let done = match target.promoted_from {
                    Some(from) => {
                        let resumed = self
                            .promotions()
                            .promote(PromoteRequest {
                                dataset_id: from,
                                target_layer: target.layer,
                                notes: Some("resumed by lake fsck".into()),
                                reason: Some(
                                    "resumed by lake fsck: the promotion stopped part-way".into(),
                                ),
                            })
                            .await;
                        match resumed {
                            Ok(p) if p.target.status == DatasetStatus::Ready => {
                                Some("promotion resumed and completed".to_owned())
                            }
                            Ok(_) => None,
                            Err(e) => {
                                f.detail.push_str(&format!("; resuming it failed: {e}"));
                                None
                            }
                        }
                    }
                    None => {
                        self.catalog
                            .set_status(target.id, DatasetStatus::Failed)
                            .await?;
                        Some("marked failed".to_owned())
                    }
                };
                if let Some(done) = done {
                    f.repaired = self.record(&f, &done).await;
                }
            }
            report.found(f).await;
        }
        Ok(())
    }

    /// Every file of a ready dataset has its object, of its size (and, verifying, its SHA-256).
    async fn files_check(
        &self,
        opts: &FsckOptions,
        report: &mut Report<'_>,
    ) -> Result<(), LakeError> {
        let mut after: Option<(DatasetId, String)> = None;
        loop {
            report.unread(opts)?;
            let page = self
                .catalog
                .files_after(after.as_ref().map(|(d, n)| (*d, n.as_str())), PAGE)
                .await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some((last.dataset, last.name.clone()));
            let ready: Vec<StoredFile> = page
                .into_iter()
                .filter(|f| f.status == DatasetStatus::Ready)
                .collect();
            report.summary.files += ready.len() as u64;
            let checked: Vec<(Option<Finding>, u64)> = futures::stream::iter(ready)
                .map(|f| self.check_file(f, opts.verify))
                .buffered(PARALLEL)
                .collect()
                .await;
            for (problem, hashed) in checked {
                report.summary.bytes_verified += hashed;
                if let Some(p) = problem {
                    report.found(p).await;
                }
            }
        }
    }

    /// The problem with one file's object, if any, and the bytes hashed.
    async fn check_file(&self, f: StoredFile, verify: bool) -> (Option<Finding>, u64) {
        let key = format!("{}{}", f.prefix, f.name);
        let problem =
            |p: Problem, detail: String| at(finding(p, Some(f.dataset), detail), &f.bucket, &key);
        let stored = match self.blobs.head(&f.bucket, &key).await {
            Ok(info) => info,
            Err(BlobError::NotFound { .. }) => {
                return (
                    Some(problem(
                        Problem::MissingObject,
                        format!(
                            "the catalog records {} bytes; the store has no object",
                            f.size
                        ),
                    )),
                    0,
                );
            }
            Err(e) => return (Some(problem(Problem::UnreadableObject, e.to_string())), 0),
        };
        if stored.size != f.size {
            return (
                Some(problem(
                    Problem::SizeMismatch,
                    format!(
                        "the catalog records {} bytes; the object has {}",
                        f.size, stored.size
                    ),
                )),
                0,
            );
        }
        if !verify {
            return (None, 0);
        }
        match blob::sha256_of(self.blobs.as_ref(), &f.bucket, &key).await {
            Ok((sha, n)) if sha.to_hex() == f.sha256 => (None, n),
            Ok((sha, n)) => (
                Some(problem(
                    Problem::ChecksumMismatch,
                    format!(
                        "the catalog records SHA-256 {}; the object's is {sha}",
                        f.sha256
                    ),
                )),
                n,
            ),
            Err(e) => (Some(problem(Problem::UnreadableObject, e.to_string())), 0),
        }
    }

    /// Every object in the lake's buckets belongs to a dataset's files (or to a dataset's Iceberg
    /// metadata); the rest are reported, and deleted when safe.
    async fn objects_check(
        &self,
        opts: &FsckOptions,
        cutoff: chrono::DateTime<Utc>,
        report: &mut Report<'_>,
    ) -> Result<(), LakeError> {
        let mut buckets: Vec<&str> = Layer::ALL.iter().map(|l| self.bucket(*l)).collect();
        buckets.dedup();
        // Backups kept in the archive bucket are the backup service's, not datasets.
        let backups = (self.settings().backup.target == crate::config::BackupTarget::Archive)
            .then(|| format!("{}/", self.settings().backup.prefix.trim_matches('/')));
        for bucket in buckets {
            // The store walks on its own while this checks the page before.
            let (tx, mut pages) = tokio::sync::mpsc::channel(1);
            let walk = self.blobs.walk(bucket, "", PAGE as usize, tx);
            let (backups, report) = (backups.as_deref(), &mut *report);
            // Owns the receiver: a check that stops early drops it, which ends the walk.
            let check = async move {
                while let Some(page) = pages.recv().await {
                    self.check_objects(bucket, page, backups, opts, cutoff, report)
                        .await?;
                }
                Ok::<_, LakeError>(())
            };
            let (walked, checked) = tokio::join!(walk, check);
            checked?;
            walked?;
        }
        Ok(())
    }

    /// One page of the store's walk against the catalog.
    async fn check_objects(
        &self,
        bucket: &str,
        page: Vec<ListedObject>,
        backups: Option<&str>,
        opts: &FsckOptions,
        cutoff: chrono::DateTime<Utc>,
        report: &mut Report<'_>,
    ) -> Result<(), LakeError> {
        report.unread(opts)?;
        report.summary.objects += page.len() as u64;
        let page: Vec<_> = page
            .into_iter()
            .filter(|o| {
                !(bucket == self.bucket(Layer::Archive)
                    && backups.is_some_and(|p| o.key.starts_with(p)))
            })
            .collect();
        let owned: Vec<_> = futures::stream::iter(page)
            .map(|o| async move {
                let verdict = self.owner_verdict(bucket, &o.key, cutoff).await;
                verdict.map(|v| (o, v))
            })
            .buffered(PARALLEL)
            .try_collect()
            .await?;
        for (o, verdict) in owned {
            let (problem, dataset, detail) = match verdict {
                Verdict::Kept => continue,
                Verdict::InFlight => {
                    report.summary.in_flight += 1;
                    continue;
                }
                Verdict::Uncataloged(dataset, why) => {
                    if o.modified.is_some_and(|m| m > cutoff) {
                        report.summary.in_flight += 1;
                        continue;
                    }
                    (Problem::UncatalogedObject, dataset, why)
                }
                Verdict::Leftover(dataset) => (
                    Problem::DeletedLeftover,
                    Some(dataset),
                    "the object of a deleted dataset".to_owned(),
                ),
            };
            let mut f = at(
                finding(problem, dataset, format!("{detail} ({} bytes)", o.size)),
                bucket,
                &o.key,
            );
            if opts.repair {
                match self.blobs.delete(bucket, &o.key).await {
                    Ok(()) => f.repaired = self.record(&f, "object deleted").await,
                    Err(e) => f.detail.push_str(&format!("; deleting it failed: {e}")),
                }
            }
            report.found(f).await;
        }
        Ok(())
    }

    /// Who keeps an object, from the catalog.
    async fn owner_verdict(
        &self,
        bucket: &str,
        key: &str,
        cutoff: chrono::DateTime<Utc>,
    ) -> Result<Verdict, LakeError> {
        let (prefix, name) = match key.rfind('/') {
            Some(i) => key.split_at(i + 1),
            None => ("", key),
        };
        let owners = self.catalog.owners_of(bucket, prefix, name, cutoff).await?;
        if let Some(v) = Verdict::of(&owners) {
            return Ok(v);
        }
        // The Iceberg catalog's files live under the prefix of the version they describe.
        if let Some(parent) = crate::iceberg::described_prefix(prefix) {
            let owners = self.catalog.owners_of(bucket, parent, "", cutoff).await?;
            if owners.iter().any(|o| o.status != DatasetStatus::Deleted) {
                return Ok(Verdict::Kept);
            }
            if let Some(o) = owners.first() {
                return Ok(Verdict::Leftover(o.dataset));
            }
        }
        Ok(Verdict::Uncataloged(
            None,
            "no dataset keeps this object's prefix".to_owned(),
        ))
    }

    async fn references_check(&self, report: &mut Report<'_>) -> Result<(), LakeError> {
        for r in self.catalog.dangling_references(PAGE).await? {
            report
                .found(finding(
                    Problem::DanglingReference,
                    Some(r.dataset),
                    format!(
                        "provenance entry {} names dataset {}, which the catalog does not have",
                        r.entry, r.dataset
                    ),
                ))
                .await;
        }
        Ok(())
    }
}

/// What the catalog says of one object.
enum Verdict {
    /// A file of a dataset that is not deleted.
    Kept,
    /// A live upload claims it.
    InFlight,
    /// No file row names it (the dataset keeping its prefix, if any, and why).
    Uncataloged(Option<DatasetId>, String),
    /// It belongs to a deleted dataset.
    Leftover(DatasetId),
}

impl Verdict {
    /// The verdict from the datasets keeping the object's prefix, or `None` when none does.
    fn of(owners: &[KeyOwner]) -> Option<Verdict> {
        let first = owners.first()?;
        Some(
            if owners
                .iter()
                .any(|o| o.cataloged && o.status != DatasetStatus::Deleted)
            {
                Verdict::Kept
            } else if owners.iter().any(|o| o.claimed) {
                Verdict::InFlight
            } else if let Some(o) = owners.iter().find(|o| o.status == DatasetStatus::Deleted) {
                Verdict::Leftover(o.dataset)
            } else {
                Verdict::Uncataloged(
                    Some(first.dataset),
                    format!(
                        "dataset {} ({}) has no file of this name",
                        first.dataset,
                        first.status.as_str()
                    ),
                )
            },
        )
    }
}
