//! The catalog: datasets, their files, the provenance record and the job queue, behind one contract.
//!
//! The contract comes in parts, each a trait: [`Datasets`], [`ProvenanceLog`], [`JobQueue`],
//! [`Dump`], [`Tokens`], [`AuditLog`], [`TableNames`] and [`Integrity`]; [`Catalog`] is all of them plus `kind`, `migrate` and `ping`, so `Arc<dyn Catalog>`
//! serves every caller. Each part is checked by the conformance suite in
//! `tests/all/catalog_conformance.rs`, run against SQLite and PostgreSQL.
//!
//! # Datasets
//!
//! * A dataset is inserted with its files and (optionally) a provenance entry in one transaction:
//!   all or nothing.
//! * [`Datasets::commit`] adds files, sets a status and appends provenance in one transaction. A
//!   file name already present in the dataset is a [`Constraint::FileName`] conflict and nothing is
//!   written.
//! * A file name can be claimed by one upload at a time ([`Constraint::FileClaim`]); committing the
//!   file releases the claim.
//! * Only one promotion target may exist per (source dataset, layer): a second insert is a
//!   [`Constraint::PromotionTarget`] conflict. Only one raw dataset may hold a collected (source,
//!   external id, version): [`Constraint::CollectionVersion`].
//! * Searches and stats see only `ready` datasets unless asked for another status; pages are ordered
//!   newest first and continue from an opaque cursor.
//!
//! # Provenance
//!
//! * Provenance is append-only; entries come back oldest first with their inputs and outputs in the
//!   order recorded.
//! * Lineage walks are bounded by a depth; a dataset reached twice keeps its shortest distance.
//!
//! # Jobs
//!
//! * A job moves queued → running → succeeded or failed, and each move happens once: a second start
//!   is a [`Constraint::JobNotQueued`] conflict, a second finish [`Constraint::JobEnded`]. A taken
//!   schedule key is [`Constraint::ScheduleKey`].
//! * Jobs silent for too long are failed by whichever replica looks first.
//!
//! # Integrity
//!
//! * [`Integrity`] reads what `lake fsck` reconciles with the store a page at a time: files in
//!   (dataset, name) order, the owners of one key, claims, pending datasets and jobs past their
//!   lease, and references to datasets that do not exist. Nothing in it holds the whole catalog.
//!
//! # Tokens
//!
//! * A token is stored by its id with the digest of its secret, never the secret. Revoking is
//!   final and keeps the first revocation time; tokens are not part of a dump (a restored lake
//!   issues its own).
//! * A user is stored by name ([`Constraint::UserName`] when taken); disabling is final and keeps
//!   the first time. A token read back says whether its user is disabled.
//!
//! # Audit
//!
//! * The audit log is append-only like provenance (the database refuses UPDATE and DELETE); pages
//!   come newest first and continue before a `seq`.
//!
//! # Table names
//!
//! * A chain of tabular datasets (one layer, source and name; ready, one Parquet file) gets one
//!   name, unique in its layer ([`Constraint::TableName`]); a chain named twice is
//!   [`Constraint::TableChain`]. Names are kept for good, and are not part of a dump (a restored
//!   lake names its chains again, oldest first, as they were named).
//!
//! # Dump
//!
//! * An export is one consistent snapshot; an import loads it into an empty catalog in one
//!   transaction ([`Constraint::NotEmpty`] otherwise), keeping ids, times and statuses.
//!
//! # Errors
//!
//! * Unknown ids are [`CatalogError::NotFound`]. Driver errors never leave the adapter: a broken
//!   uniqueness rule becomes a [`CatalogError::Conflict`] whose [`Constraint`] the adapter derives
//!   from the database's constraint or index name, never left for callers to parse.
//!
//! # Inside
//!
//! The adapters (`catalog/sqlite.rs`, `catalog/postgres.rs`) hold only what differs between the
//! databases: connecting, column types, dialect-only statements. What they share is written once:
//! the SQL text both accept (`catalog/sql.rs`), the mapping between rows and these types
//! (`catalog/rows.rs`), and the conflict messages and job state checks (`catalog/rules.rs`).

pub mod postgres;
mod rows;
mod rules;
mod sql;
pub mod sqlite;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::layers::Layer;
use crate::provenance::{Direction, LineageGraph, NewProvenance, ProvenanceEntry};

/// A dataset's identity: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatasetId(pub uuid::Uuid);

impl DatasetId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl Default for DatasetId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatasetId({})", self.0)
    }
}

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for DatasetId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s.trim())
            .map(DatasetId)
            .map_err(|_| format!("{s:?} is not a dataset id (a UUID)"))
    }
}

/// Where a dataset is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatasetStatus {
    /// Being written (a promotion in progress); invisible to searches.
    Pending,
    /// Complete and visible.
    Ready,
    /// A write failed part-way; invisible, resumable.
    Failed,
    /// Removed through the API; the row stays for lineage.
    Deleted,
}

impl DatasetStatus {
    /// The lowercase name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetStatus::Pending => "pending",
            DatasetStatus::Ready => "ready",
            DatasetStatus::Failed => "failed",
            DatasetStatus::Deleted => "deleted",
        }
    }
}

impl FromStr for DatasetStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => DatasetStatus::Pending,
            "ready" => DatasetStatus::Ready,
            "failed" => DatasetStatus::Failed,
            "deleted" => DatasetStatus::Deleted,
            other => return Err(format!("unknown dataset status {other:?}")),
        })
    }
}

/// A cataloged dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Dataset {
    /// Dataset id.
    #[schema(value_type = String, format = Uuid)]
    pub id: DatasetId,
    /// Human name.
    pub name: String,
    /// Where it came from: `geo`, `uniprot`, `pubmed`, `upload`, a lab name...
    pub source: String,
    /// The upstream accession or identifier, if any.
    pub external_id: Option<String>,
    /// Its layer.
    pub layer: Layer,
    /// Bucket (S3) or directory (local) of its layer.
    pub bucket: String,
    /// Key prefix of its objects inside the bucket, ending in `/`.
    pub prefix: String,
    /// `bucket/prefix`, the seed's `location`.
    pub location: String,
    /// Number of files.
    pub file_count: i64,
    /// Total bytes of its files.
    pub total_size: i64,
    /// Free-form metadata; always has `source`, `date` and `version`.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Tags.
    pub tags: Vec<String>,
    /// Life-cycle status.
    pub status: DatasetStatus,
    /// The dataset this one was promoted from.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub promoted_from: Option<DatasetId>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change (status or files).
    pub updated_at: DateTime<Utc>,
}

/// A dataset to insert.
#[derive(Debug, Clone)]
pub struct NewDataset {
    /// Its id (callers choose it so object keys can include it).
    pub id: DatasetId,
    /// Human name.
    pub name: String,
    /// Source.
    pub source: String,
    /// Upstream identifier.
    pub external_id: Option<String>,
    /// Layer.
    pub layer: Layer,
    /// Bucket of the layer.
    pub bucket: String,
    /// Key prefix, ending in `/`.
    pub prefix: String,
    /// Metadata (a JSON object).
    pub metadata: serde_json::Value,
    /// Tags.
    pub tags: Vec<String>,
    /// Initial status.
    pub status: DatasetStatus,
    /// Promotion source.
    pub promoted_from: Option<DatasetId>,
}

/// A file in a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileRecord {
    /// File name inside the dataset (no `/`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// MIME type.
    pub content_type: String,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// A catalog search.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// Only this layer.
    pub layer: Option<Layer>,
    /// Never these layers (those the caller may not see).
    pub hidden_layers: Vec<Layer>,
    /// Only this source.
    pub source: Option<String>,
    /// Free text over name, external id and metadata (case-insensitive substring).
    pub q: Option<String>,
    /// Datasets carrying all of these tags.
    pub tags: Vec<String>,
    /// Status to list (default `ready`).
    pub status: DatasetStatus,
    /// Page size.
    pub limit: u32,
    /// Continue after this dataset id (from the previous page's `next_cursor`).
    pub after: Option<DatasetId>,
    /// Skip this many results (seed-style paging; the cursor is cheaper for deep pages).
    pub offset: u64,
    /// Only datasets with this external id (exact).
    pub external_id: Option<String>,
    /// Only datasets holding a file with this SHA-256 (hex, exact).
    pub sha256: Option<String>,
    /// Only datasets created at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only datasets created before this time.
    pub created_before: Option<DateTime<Utc>>,
}

impl SearchQuery {
    /// Whether the catalog's kept totals answer this search's count: only ready datasets,
    /// filtered by nothing but layer and source.
    pub(crate) fn counted_by_totals(&self) -> bool {
        self.status == DatasetStatus::Ready
            && self.q.as_deref().is_none_or(|t| t.trim().is_empty())
            && self.tags.is_empty()
            && self.external_id.is_none()
            && self.sha256.is_none()
            && self.created_after.is_none()
            && self.created_before.is_none()
    }
}

/// How many datasets a search finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Count {
    /// The datasets found; when `more`, the bound the count stopped at.
    pub found: i64,
    /// More than `found` match: counting stopped at the bound it was given.
    pub more: bool,
}

impl Count {
    /// The count of a bounded `SELECT count(*)` over at most `at_most + 1` rows.
    pub(crate) fn bounded(n: i64, at_most: i64) -> Self {
        if n > at_most {
            Count {
                found: at_most,
                more: true,
            }
        } else {
            Count {
                found: n,
                more: false,
            }
        }
    }
}

impl Default for SearchQuery {
    fn default() -> Self {
        Self {
            layer: None,
            hidden_layers: Vec::new(),
            source: None,
            q: None,
            tags: Vec::new(),
            status: DatasetStatus::Ready,
            limit: 50,
            after: None,
            offset: 0,
            external_id: None,
            sha256: None,
            created_after: None,
            created_before: None,
        }
    }
}

/// One page of results.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The results.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Counts and bytes for one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GroupStats {
    /// The layer or source name.
    pub key: String,
    /// Ready datasets.
    pub datasets: i64,
    /// Bytes of their files.
    pub bytes: i64,
}

/// Catalog-wide statistics over ready datasets.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// All ready datasets.
    pub total_datasets: i64,
    /// All their bytes.
    pub total_bytes: i64,
    /// Per layer (all four, zeros included).
    pub by_layer: Vec<GroupStats>,
    /// Per source.
    pub by_source: Vec<GroupStats>,
}

/// Everything a catalog holds, as one consistent snapshot: the backup's copy of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogDump {
    /// Every dataset, whatever its status, by id.
    pub datasets: Vec<Dataset>,
    /// Every file, by dataset and name.
    pub files: Vec<DumpFile>,
    /// Every provenance entry, in the order recorded.
    pub provenance: Vec<ProvenanceEntry>,
}

/// A file of a dataset, in a [`CatalogDump`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpFile {
    /// Its dataset.
    pub dataset_id: DatasetId,
    /// The file.
    #[serde(flatten)]
    pub file: FileRecord,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Recorded, not yet claimed.
    Queued,
    /// Claimed by one replica and running there.
    Running,
    /// Finished; `result` says what it did.
    Succeeded,
    /// Finished with `error`.
    Failed,
}

impl JobStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }

    /// Whether the job is over.
    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed)
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            other => return Err(format!("unknown job status {other:?}")),
        })
    }
}

/// Background work recorded in the catalog (a collection, a backup), visible to every replica.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Job {
    /// Job id (UUIDv7).
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    /// `collection`, ...
    pub kind: String,
    /// Where it is.
    pub status: JobStatus,
    /// What was asked.
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    /// What it did, once finished.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// For scheduled runs: the source and time slot, unique across replicas.
    pub schedule_key: Option<String>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When a replica claimed it.
    pub started_at: Option<DateTime<Utc>>,
    /// When its replica last said it was at work.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job to record.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its id (UUIDv7).
    pub id: uuid::Uuid,
    /// `collection`, ...
    pub kind: String,
    /// What is asked (a JSON object).
    pub request: serde_json::Value,
    /// For scheduled runs: a key only one job may hold ([`CatalogError::Conflict`] otherwise).
    pub schedule_key: Option<String>,
}

/// Which rule a [`CatalogError::Conflict`] broke. The adapter decides it from the database's own
/// constraint or index name (or, for the rules it checks itself, from the check), so callers branch
/// on this value and never on message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Constraint {
    /// A dataset with this id exists already.
    DatasetId,
    /// The dataset already has a file of this name.
    FileName,
    /// Another live upload holds this file name.
    FileClaim,
    /// The source dataset already has a promotion target in this layer (`datasets_promotion`).
    PromotionTarget,
    /// This (source, external id, version) was collected already (`datasets_collection_version`).
    CollectionVersion,
    /// Another job holds this schedule key.
    ScheduleKey,
    /// A job or provenance entry with this id exists already.
    RecordId,
    /// A user of this name exists already.
    UserName,
    /// A table of this name exists already in the layer (`table_names`).
    TableName,
    /// This chain of datasets has a table name already.
    TableChain,
    /// The job is not queued, so it cannot be started.
    JobNotQueued,
    /// The job has ended already.
    JobEnded,
    /// The catalog holds data, so a dump cannot be loaded into it.
    NotEmpty,
    /// A uniqueness rule the adapter does not know by name.
    Other,
}

/// A refused write: which rule it broke, and a message for people (an HTTP 409 body, a log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The rule, for decisions.
    pub constraint: Constraint,
    /// What happened, for people.
    pub message: String,
}

impl Conflict {
    /// A conflict over `constraint`, described by `message`.
    pub fn new(constraint: Constraint, message: impl Into<String>) -> Self {
        Self {
            constraint,
            message: message.into(),
        }
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A conflict reads as its message (for reports and assertions); decisions use `constraint`.
impl std::ops::Deref for Conflict {
    type Target = str;
    fn deref(&self) -> &str {
        &self.message
    }
}

/// Catalog failures; each variant is a decision for the caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// No such dataset or file.
    #[error("{0} not found")]
    NotFound(String),
    /// A uniqueness or state rule was hit; [`Conflict::constraint`] says which.
    #[error("conflict: {0}")]
    Conflict(Conflict),
    /// The request cannot be satisfied as asked.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The database could not be reached or failed; retrying later may work.
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
}

impl CatalogError {
    /// A [`CatalogError::Conflict`] over `constraint`.
    pub fn conflict(constraint: Constraint, message: impl Into<String>) -> Self {
        CatalogError::Conflict(Conflict::new(constraint, message))
    }
}

/// Datasets and their files. See "Datasets" in the module documentation.
#[async_trait::async_trait]
pub trait Datasets: Send + Sync {
    /// Inserts a dataset with its files and an optional provenance entry, atomically.
    async fn insert_dataset(
        &self,
        new: &NewDataset,
        files: &[FileRecord],
        provenance: Option<&NewProvenance>,
    ) -> Result<Dataset, CatalogError> {
        let inserted = self
            .insert_datasets(
                &[(new.clone(), files.to_vec())],
                provenance.map(std::slice::from_ref).unwrap_or_default(),
            )
            .await?;
        inserted
            .into_iter()
            .next()
            .ok_or_else(|| CatalogError::Unavailable("the insert returned no dataset".into()))
    }
    /// Inserts several datasets with their files, and provenance entries, in one transaction:
    /// all of them or none (an upload's raw file and the table parsed from it).
    async fn insert_datasets(
        &self,
        datasets: &[(NewDataset, Vec<FileRecord>)],
        provenance: &[NewProvenance],
    ) -> Result<Vec<Dataset>, CatalogError>;
    /// One dataset, whatever its status.
    async fn get_dataset(&self, id: DatasetId) -> Result<Dataset, CatalogError>;
    /// A page of datasets.
    async fn search(&self, query: &SearchQuery) -> Result<Page<Dataset>, CatalogError>;
    /// How many datasets `query` finds in all (its filters, without its cursor, offset and limit),
    /// counting no further than `at_most`. Searches by layer and source alone are answered exactly
    /// from the kept totals, at any catalog size; the others read at most `at_most + 1` rows.
    async fn count(&self, query: &SearchQuery, at_most: i64) -> Result<Count, CatalogError>;
    /// Counts and bytes of ready datasets.
    async fn stats(&self) -> Result<Stats, CatalogError>;
    /// A dataset's files, by name.
    async fn list_files(&self, id: DatasetId) -> Result<Vec<FileRecord>, CatalogError>;
    /// Adds files, sets the status and appends provenance in one transaction.
    async fn commit(
        &self,
        id: DatasetId,
        files: &[FileRecord],
        status: DatasetStatus,
        provenance: Option<&NewProvenance>,
    ) -> Result<Dataset, CatalogError>;
    /// Claims a file name for an upload in progress: [`CatalogError::Conflict`] when the dataset
    /// already has that file ([`Constraint::FileName`]) or another live upload holds the name
    /// ([`Constraint::FileClaim`]). Claims older than `stale_after` (left by a crashed server) are
    /// taken over. [`Datasets::commit`] of the file removes the claim.
    async fn claim_file(
        &self,
        id: DatasetId,
        name: &str,
        stale_after: std::time::Duration,
    ) -> Result<(), CatalogError>;
    /// Drops a claim after a failed upload.
    async fn release_claim(&self, id: DatasetId, name: &str) -> Result<(), CatalogError>;
    /// Sets a dataset's status (used to mark failures; successes go through `commit`).
    async fn set_status(&self, id: DatasetId, status: DatasetStatus) -> Result<(), CatalogError>;
    /// A dataset (not deleted) that keeps its objects under exactly `prefix` in `bucket`.
    async fn dataset_at(&self, bucket: &str, prefix: &str)
    -> Result<Option<Dataset>, CatalogError>;
    /// The promotion target of a dataset in a layer, if one was started.
    async fn find_promotion(
        &self,
        source: DatasetId,
        layer: Layer,
    ) -> Result<Option<Dataset>, CatalogError>;
}

/// The provenance record and the lineage walked over it. See "Provenance" in the module
/// documentation.
#[async_trait::async_trait]
pub trait ProvenanceLog: Send + Sync {
    /// Appends a provenance entry on its own.
    async fn append_provenance(
        &self,
        entry: &NewProvenance,
    ) -> Result<ProvenanceEntry, CatalogError>;
    /// Entries that name any of these datasets as input or output, oldest first.
    async fn provenance_of(&self, ids: &[DatasetId]) -> Result<Vec<ProvenanceEntry>, CatalogError>;
    /// The newest entries of one action.
    async fn entries_by_action(
        &self,
        action: crate::provenance::Action,
        limit: u32,
    ) -> Result<Vec<ProvenanceEntry>, CatalogError>;
    /// One entry.
    async fn entry(&self, id: uuid::Uuid) -> Result<ProvenanceEntry, CatalogError>;
    /// Ancestors and/or descendants of a dataset up to `depth` steps.
    async fn lineage(
        &self,
        id: DatasetId,
        depth: u32,
        direction: Direction,
    ) -> Result<LineageGraph, CatalogError>;
}

/// Background work every replica can see. See "Jobs" in the module documentation.
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync {
    /// Records a queued job. [`Constraint::ScheduleKey`] conflict when its `schedule_key` is taken:
    /// another replica recorded that scheduled run first.
    async fn insert_job(&self, job: &NewJob) -> Result<Job, CatalogError>;
    /// Claims a queued job (queued to running). [`Constraint::JobNotQueued`] conflict when it is
    /// not queued: only one caller ever wins.
    async fn start_job(&self, id: uuid::Uuid) -> Result<Job, CatalogError>;
    /// Ends a running or queued job with its result or error. [`Constraint::JobEnded`] conflict
    /// when it has ended already.
    async fn finish_job(
        &self,
        id: uuid::Uuid,
        status: JobStatus,
        result: Option<&serde_json::Value>,
        error: Option<&str>,
    ) -> Result<Job, CatalogError>;
    /// A running job's replica says it is still at work.
    async fn heartbeat_job(&self, id: uuid::Uuid) -> Result<(), CatalogError>;
    /// Marks failed every queued or running job silent (no heartbeat, start or creation) for
    /// longer than `silent_for`, by the database's clock where it has one: its replica stopped.
    /// Returns them.
    async fn fail_stale_jobs(
        &self,
        silent_for: std::time::Duration,
    ) -> Result<Vec<Job>, CatalogError>;
    /// One job.
    async fn get_job(&self, id: uuid::Uuid) -> Result<Job, CatalogError>;
    /// The newest jobs of one kind, newest first.
    async fn list_jobs(&self, kind: &str, limit: u32) -> Result<Vec<Job>, CatalogError>;
}

/// A bearer token's record. The secret itself is never stored: only its digest, which is never
/// serialised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenRecord {
    /// Its id, the `<id>` of `lake_<id>_<secret>`.
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    /// What its holder calls it (`laptop`, `sequencer-3`).
    pub name: String,
    /// The user or service account it acts for.
    pub owner: String,
    /// The most it may do.
    pub role: crate::identity::Role,
    /// SHA-256 of the secret, hex.
    #[serde(skip)]
    pub digest: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// When it last authenticated a request.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When its user was disabled (its tokens stop working then).
    #[serde(skip)]
    pub owner_disabled_at: Option<DateTime<Utc>>,
}

/// A user or service account: the principal tokens act for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UserRecord {
    /// Its name (`ana`, `sequencer-3`).
    pub name: String,
    /// A person, or a service account (a pipeline, an instrument).
    pub kind: crate::identity::UserKind,
    /// The most its tokens may hold.
    pub role: crate::identity::Role,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// When it was disabled.
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A token to record.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Its id.
    pub id: uuid::Uuid,
    /// Its name.
    pub name: String,
    /// Whom it acts for.
    pub owner: String,
    /// Its role.
    pub role: crate::identity::Role,
    /// SHA-256 of its secret, hex.
    pub digest: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// Bearer tokens, seen alike by every replica. See "Tokens" in the module documentation.
#[async_trait::async_trait]
pub trait Tokens: Send + Sync {
    /// Records a token; [`Constraint::RecordId`] conflict when its id exists.
    async fn insert_token(&self, token: &NewToken) -> Result<TokenRecord, CatalogError>;
    /// One token, revoked or not; [`CatalogError::NotFound`] when unknown.
    async fn token(&self, id: uuid::Uuid) -> Result<TokenRecord, CatalogError>;
    /// Tokens, newest first, of one owner or of everyone.
    async fn list_tokens(&self, owner: Option<&str>) -> Result<Vec<TokenRecord>, CatalogError>;
    /// Revokes a token (once: a revoked token keeps its first revocation time);
    /// [`CatalogError::NotFound`] when unknown.
    async fn revoke_token(&self, id: uuid::Uuid) -> Result<TokenRecord, CatalogError>;
    /// Notes that a token authenticated a request now.
    async fn touch_token(&self, id: uuid::Uuid) -> Result<(), CatalogError>;
    /// Records a user; [`Constraint::UserName`] conflict when the name is taken.
    async fn insert_user(&self, user: &UserRecord) -> Result<UserRecord, CatalogError>;
    /// One user; [`CatalogError::NotFound`] when unknown.
    async fn user(&self, name: &str) -> Result<UserRecord, CatalogError>;
    /// Every user, by name.
    async fn list_users(&self) -> Result<Vec<UserRecord>, CatalogError>;
    /// Disables a user (once: the first time is kept); [`CatalogError::NotFound`] when unknown.
    async fn disable_user(&self, name: &str) -> Result<UserRecord, CatalogError>;
}

/// Implements [`Tokens`] for an adapter from the shared SQL (`catalog/sql.rs`) and row mapping
/// (`catalog/rows.rs`); the adapter's module supplies `query`, `db_err` and its `pool`, so the one
/// body serves both dialects.
macro_rules! impl_tokens {
    ($adapter:ty) => {
        #[async_trait::async_trait]
        impl super::Tokens for $adapter {
            async fn insert_token(
                &self,
                token: &super::NewToken,
            ) -> Result<super::TokenRecord, CatalogError> {
                query(sql::INSERT_TOKEN, |v| rows::new_token(v, token, Utc::now()))?
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                super::Tokens::token(self, token.id).await
            }

            async fn token(&self, id: Uuid) -> Result<super::TokenRecord, CatalogError> {
                let row = query(sql::SELECT_TOKEN, |v| v.id(id))?
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| CatalogError::NotFound(format!("token {}", id.simple())))?;
                rows::token(&row)
            }

            async fn list_tokens(
                &self,
                owner: Option<&str>,
            ) -> Result<Vec<super::TokenRecord>, CatalogError> {
                let found = match owner {
                    Some(o) => query(sql::LIST_OWNER_TOKENS, |v| v.text(o))?,
                    None => query(sql::LIST_TOKENS, |_| {})?,
                }
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
                found.iter().map(rows::token).collect()
            }

            async fn revoke_token(&self, id: Uuid) -> Result<super::TokenRecord, CatalogError> {
                query(sql::REVOKE_TOKEN, |v| {
                    v.id(id);
                    v.time(Utc::now())
                })?
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                super::Tokens::token(self, id).await
            }

            async fn touch_token(&self, id: Uuid) -> Result<(), CatalogError> {
                query(sql::TOUCH_TOKEN, |v| {
                    v.id(id);
                    v.time(Utc::now())
                })?
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                Ok(())
            }

            async fn insert_user(
                &self,
                user: &super::UserRecord,
            ) -> Result<super::UserRecord, CatalogError> {
                query(sql::INSERT_USER, |v| rows::new_user(v, user))?
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                super::Tokens::user(self, &user.name).await
            }

            async fn user(&self, name: &str) -> Result<super::UserRecord, CatalogError> {
                let row = query(sql::SELECT_USER, |v| v.text(name))?
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| CatalogError::NotFound(format!("user {name:?}")))?;
                rows::user(&row)
            }

            async fn list_users(&self) -> Result<Vec<super::UserRecord>, CatalogError> {
                query(sql::LIST_USERS, |_| {})?
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?
                    .iter()
                    .map(rows::user)
                    .collect()
            }

            async fn disable_user(&self, name: &str) -> Result<super::UserRecord, CatalogError> {
                query(sql::DISABLE_USER, |v| {
                    v.text(name);
                    v.time(Utc::now())
                })?
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                super::Tokens::user(self, name).await
            }
        }
    };
}
pub(crate) use impl_tokens;

/// The audit log. See "Audit" in the module documentation.
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends one entry.
    async fn append_audit(&self, entry: &crate::audit::NewAuditEntry) -> Result<(), CatalogError>;
    /// Entries matching `q`, newest first, at most `q.limit`.
    async fn audit_entries(
        &self,
        q: &crate::audit::AuditQuery,
    ) -> Result<Vec<crate::audit::AuditEntry>, CatalogError>;
}

/// Implements [`AuditLog`] for an adapter, like [`impl_tokens`].
macro_rules! impl_audit {
    ($adapter:ty) => {
        #[async_trait::async_trait]
        impl super::AuditLog for $adapter {
            async fn append_audit(
                &self,
                entry: &crate::audit::NewAuditEntry,
            ) -> Result<(), CatalogError> {
                query(sql::INSERT_AUDIT, |v| rows::new_audit(v, entry, Utc::now()))?
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            async fn audit_entries(
                &self,
                q: &crate::audit::AuditQuery,
            ) -> Result<Vec<crate::audit::AuditEntry>, CatalogError> {
                query(sql::SELECT_AUDIT, |v| rows::audit_query(v, q))?
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?
                    .iter()
                    .map(rows::audit)
                    .collect()
            }
        }
    };
}
pub(crate) use impl_audit;

/// A chain of table versions under the name the Iceberg catalog publishes it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// The layer: the table's namespace.
    pub layer: Layer,
    /// The table's name in the layer.
    pub name: String,
    /// The source of the chain's datasets.
    pub source: String,
    /// The name the chain's datasets share.
    pub dataset_name: String,
}

/// The names of tables. See "Table names" in the module documentation.
#[async_trait::async_trait]
pub trait TableNames: Send + Sync {
    /// Chains of tabular datasets in `layer` (ready, one Parquet file) that have no name yet, as
    /// (source, dataset name), the oldest chain first, at most `limit`.
    async fn unnamed_tables(
        &self,
        layer: Layer,
        limit: u32,
    ) -> Result<Vec<(String, String)>, CatalogError>;
    /// Gives a chain its name: [`Constraint::TableName`] when the name is taken in the layer,
    /// [`Constraint::TableChain`] when the chain has a name already.
    async fn name_table(&self, name: &TableName) -> Result<(), CatalogError>;
    /// The names of a layer's tables in name order, after `after`, at most `limit`.
    async fn table_names(
        &self,
        layer: Layer,
        after: &str,
        limit: u32,
    ) -> Result<Vec<TableName>, CatalogError>;
    /// One table by its name, if it has one.
    async fn table_name(&self, layer: Layer, name: &str)
    -> Result<Option<TableName>, CatalogError>;
    /// The name of a chain (a layer, source and dataset name), if it has one.
    async fn table_name_of(
        &self,
        layer: Layer,
        source: &str,
        dataset_name: &str,
    ) -> Result<Option<TableName>, CatalogError>;
    /// The datasets of a chain, every status, oldest first.
    async fn table_versions(&self, name: &TableName) -> Result<Vec<Dataset>, CatalogError>;
}

/// Implements [`TableNames`] for an adapter, like [`impl_tokens`].
macro_rules! impl_table_names {
    ($adapter:ty) => {
        #[async_trait::async_trait]
        impl super::TableNames for $adapter {
            async fn unnamed_tables(
                &self,
                layer: Layer,
                limit: u32,
            ) -> Result<Vec<(String, String)>, CatalogError> {
                query(sql::UNNAMED_TABLES, |v| {
                    v.text(layer.as_str());
                    v.int(i64::from(limit));
                })?
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?
                .iter()
                .map(|r| Ok((r.text("source")?, r.text("name")?)))
                .collect()
            }

            async fn name_table(&self, name: &super::TableName) -> Result<(), CatalogError> {
                query(sql::INSERT_TABLE_NAME, |v| {
                    rows::new_table_name(v, name, Utc::now())
                })?
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                Ok(())
            }

            async fn table_names(
                &self,
                layer: Layer,
                after: &str,
                limit: u32,
            ) -> Result<Vec<super::TableName>, CatalogError> {
                query(sql::LIST_TABLE_NAMES, |v| {
                    v.text(layer.as_str());
                    v.text(after);
                    v.int(i64::from(limit));
                })?
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?
                .iter()
                .map(rows::table_name)
                .collect()
            }

            async fn table_name(
                &self,
                layer: Layer,
                name: &str,
            ) -> Result<Option<super::TableName>, CatalogError> {
                query(sql::SELECT_TABLE_NAME, |v| {
                    v.text(layer.as_str());
                    v.text(name);
                })?
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?
                .as_ref()
                .map(rows::table_name)
                .transpose()
            }

            async fn table_name_of(
                &self,
                layer: Layer,
                source: &str,
                dataset_name: &str,
            ) -> Result<Option<super::TableName>, CatalogError> {
                query(sql::SELECT_TABLE_NAME_OF, |v| {
                    v.text(layer.as_str());
                    v.text(source);
                    v.text(dataset_name);
                })?
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?
                .as_ref()
                .map(rows::table_name)
                .transpose()
            }

            async fn table_versions(
                &self,
                name: &super::TableName,
            ) -> Result<Vec<Dataset>, CatalogError> {
                query(sql::TABLE_VERSIONS, |v| {
                    v.text(name.layer.as_str());
                    v.text(&name.source);
                    v.text(&name.dataset_name);
                })?
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?
                .iter()
                .map(rows::dataset)
                .collect()
            }
        }
    };
}
pub(crate) use impl_table_names;

/// A cataloged file and where its object is: what `lake fsck` checks against the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// The dataset holding it.
    pub dataset: DatasetId,
    /// That dataset's status.
    pub status: DatasetStatus,
    /// Its bucket.
    pub bucket: String,
    /// Its prefix (the object's key is the prefix and the name).
    pub prefix: String,
    /// The file's name.
    pub name: String,
    /// Size recorded.
    pub size: u64,
    /// SHA-256 recorded, lowercase hex.
    pub sha256: String,
}

/// A dataset that keeps a prefix, and what it knows of one name under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    /// The dataset keeping the prefix.
    pub dataset: DatasetId,
    /// Its status.
    pub status: DatasetStatus,
    /// It has a file row of that name.
    pub cataloged: bool,
    /// A live upload claims that name.
    pub claimed: bool,
}

/// An upload claim older than its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleClaim {
    /// The dataset the name was claimed in.
    pub dataset: DatasetId,
    /// The name.
    pub name: String,
    /// When.
    pub claimed_at: DateTime<Utc>,
}

/// A provenance entry (or lineage edge) naming a dataset the catalog does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DanglingReference {
    /// The entry.
    pub entry: uuid::Uuid,
    /// The dataset it names.
    pub dataset: DatasetId,
}

/// What the integrity check reads. See "Integrity" in the module documentation.
#[async_trait::async_trait]
pub trait Integrity: Send + Sync {
    /// Files of every dataset in (dataset, name) order after `after`, at most `limit`.
    async fn files_after(
        &self,
        after: Option<(DatasetId, &str)>,
        limit: u32,
    ) -> Result<Vec<StoredFile>, CatalogError>;
    /// The datasets (any status) keeping exactly `prefix` in `bucket`, and whether each has a file
    /// `name` or a claim on it made after `claims_after`.
    async fn owners_of(
        &self,
        bucket: &str,
        prefix: &str,
        name: &str,
        claims_after: DateTime<Utc>,
    ) -> Result<Vec<KeyOwner>, CatalogError>;
    /// Upload claims made before `before`, oldest first, at most `limit`.
    async fn stale_claims(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<StaleClaim>, CatalogError>;
    /// Drops a claim if it is still older than `before`; true when one was dropped.
    async fn drop_stale_claim(
        &self,
        dataset: DatasetId,
        name: &str,
        before: DateTime<Utc>,
    ) -> Result<bool, CatalogError>;
    /// Datasets still `pending` that were created before `before` (promotions that stopped), at
    /// most `limit`.
    async fn stalled_datasets(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Dataset>, CatalogError>;
    /// Queued or running jobs silent since before `before`, at most `limit`.
    async fn silent_jobs(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>, CatalogError>;
    /// Provenance inputs, outputs and lineage edges naming datasets that do not exist, at most
    /// `limit`.
    async fn dangling_references(&self, limit: u32)
    -> Result<Vec<DanglingReference>, CatalogError>;
}

/// Implements [`Integrity`] for an adapter, like [`impl_tokens`].
macro_rules! impl_integrity {
    ($adapter:ty) => {
        #[async_trait::async_trait]
        impl super::Integrity for $adapter {
            async fn files_after(
                &self,
                after: Option<(DatasetId, &str)>,
                limit: u32,
            ) -> Result<Vec<super::StoredFile>, CatalogError> {
                let (id, name) = after.unwrap_or((DatasetId(uuid::Uuid::nil()), ""));
                query(sql::FILES_AFTER, |v| {
                    v.id(id.0);
                    v.text(name);
                    v.int(i64::from(limit));
                })?
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?
                .iter()
                .map(rows::stored_file)
                .collect()
            }

            async fn owners_of(
                &self,
                bucket: &str,
                prefix: &str,
                name: &str,
                claims_after: DateTime<Utc>,
            ) -> Result<Vec<super::KeyOwner>, CatalogError> {
                query(sql::OWNERS_OF, |v| {
                    v.text(bucket);
                    v.text(prefix);
                    v.text(name);
                    v.time(claims_after);
                })?
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?
                .iter()
                .map(rows::key_owner)
                .collect()
            }

            async fn stale_claims(
                &self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<super::StaleClaim>, CatalogError> {
                query(sql::STALE_CLAIMS, |v| {
                    v.time(before);
                    v.int(i64::from(limit));
                })?
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?
                .iter()
                .map(|r| {
                    Ok(super::StaleClaim {
                        dataset: DatasetId(r.id("dataset_id")?),
                        name: r.text("name")?,
                        claimed_at: r.time("claimed_at")?,
                    })
                })
                .collect()
            }

            async fn drop_stale_claim(
                &self,
                dataset: DatasetId,
                name: &str,
                before: DateTime<Utc>,
            ) -> Result<bool, CatalogError> {
                let done = query(sql::DELETE_STALE_CLAIM, |v| {
                    v.id(dataset.0);
                    v.text(name);
                    v.time(before);
                })?
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                Ok(done.rows_affected() > 0)
            }

            async fn stalled_datasets(
                &self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<Dataset>, CatalogError> {
                query(sql::STALLED_DATASETS, |v| {
                    v.time(before);
                    v.int(i64::from(limit));
                })?
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?
                .iter()
                .map(rows::dataset)
                .collect()
            }

            async fn silent_jobs(
                &self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<Job>, CatalogError> {
                query(sql::SILENT_JOBS, |v| {
                    v.time(before);
                    v.int(i64::from(limit));
                })?
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?
                .iter()
                .map(rows::job)
                .collect()
            }

            async fn dangling_references(
                &self,
                limit: u32,
            ) -> Result<Vec<super::DanglingReference>, CatalogError> {
                query(sql::DANGLING_REFERENCES, |v| v.int(i64::from(limit)))?
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?
                    .iter()
                    .map(|r| {
                        Ok(super::DanglingReference {
                            entry: r.id("entry_id")?,
                            dataset: DatasetId(r.id("dataset_id")?),
                        })
                    })
                    .collect()
            }
        }
    };
}
pub(crate) use impl_integrity;

/// The whole catalog as one snapshot, out and in: the backup's copy. See "Dump" in the module
/// documentation.
#[async_trait::async_trait]
pub trait Dump: Send + Sync {
    /// Reads everything (datasets of every status, files, provenance in order) in one consistent
    /// snapshot, so concurrent writes are either wholly in it or wholly out.
    async fn export(&self) -> Result<CatalogDump, CatalogError>;
    /// Loads a dump into an empty catalog in one transaction, keeping ids, times, statuses and
    /// provenance. [`Constraint::NotEmpty`] conflict when the catalog already holds datasets or
    /// provenance (other than `backup` and `restore` entries).
    async fn import(&self, dump: &CatalogDump) -> Result<(), CatalogError>;
}

/// The catalog contract: every part, plus what concerns the database as a whole. Methods of the
/// parts are callable on `dyn Catalog` without importing the parts; on a concrete adapter, import
/// [`prelude`].
#[async_trait::async_trait]
pub trait Catalog:
    Datasets
    + ProvenanceLog
    + JobQueue
    + Dump
    + Tokens
    + AuditLog
    + TableNames
    + Integrity
    + Send
    + Sync
    + fmt::Debug
{
    /// `sqlite` or `postgres`, for reports.
    fn kind(&self) -> &'static str;
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), CatalogError>;
    /// Checks the database answers.
    async fn ping(&self) -> Result<(), CatalogError>;
}

/// The catalog's traits, for `use crate::catalog::prelude::*`.
pub mod prelude {
    pub use super::{
        AuditLog, Catalog, Datasets, Dump, Integrity, JobQueue, ProvenanceLog, TableNames, Tokens,
    };
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern and wraps it for substring search.
pub(crate) fn like_pattern(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 2);
    out.push('%');
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Trims a page fetched with one extra row and derives its cursor from the last item kept.
pub(crate) fn page_of(mut items: Vec<Dataset>, limit: u32) -> Page<Dataset> {
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|d| d.id.to_string())
    } else {
        None
    };
    Page { items, next_cursor }
}

/// Builds [`Stats`] from per-layer and per-source groups, listing all four layers (zeros included).
pub(crate) fn stats_of(layers: &[GroupStats], by_source: Vec<GroupStats>) -> Stats {
    let by_layer: Vec<GroupStats> = Layer::ALL
        .iter()
        .map(|l| {
            layers
                .iter()
                .find(|g| g.key == l.as_str())
                .cloned()
                .unwrap_or(GroupStats {
                    key: l.as_str().to_owned(),
                    datasets: 0,
                    bytes: 0,
                })
        })
        .collect();
    Stats {
        total_datasets: by_layer.iter().map(|g| g.datasets).sum(),
        total_bytes: by_layer.iter().map(|g| g.bytes).sum(),
        by_layer,
        by_source,
    }
}

/// The walks a lineage in `direction` takes over `lineage_edges`: (the column to move to, the
/// column to arrive by, the sign of distances).
pub(crate) fn lineage_walks(direction: Direction) -> &'static [(&'static str, &'static str, i64)] {
    match direction {
        Direction::Ancestors => &[("parent_id", "child_id", -1)],
        Direction::Descendants => &[("child_id", "parent_id", 1)],
        Direction::Both => &[("parent_id", "child_id", -1), ("child_id", "parent_id", 1)],
    }
}

/// Collects the rows of the adapters' lineage walks into a graph, so both answer identically.
#[derive(Debug)]
pub(crate) struct GraphBuilder {
    root: DatasetId,
    depth: u32,
    nodes: std::collections::HashMap<DatasetId, crate::provenance::LineageNode>,
    edges: Vec<crate::provenance::LineageEdge>,
}

/// One row of a lineage walk: a dataset reached `distance` steps away (negative: ancestor), and the
/// edge it was reached by.
#[derive(Debug)]
pub(crate) struct WalkRow {
    pub node: crate::provenance::LineageNode,
    pub via: Option<(DatasetId, uuid::Uuid, String)>,
}

impl GraphBuilder {
    /// Starts from the root dataset.
    pub(crate) fn new(root: &Dataset, depth: u32) -> Self {
        let mut nodes = std::collections::HashMap::new();
        nodes.insert(
            root.id,
            crate::provenance::LineageNode {
                id: root.id,
                name: root.name.clone(),
                source: root.source.clone(),
                layer: root.layer,
                status: root.status.as_str().to_owned(),
                distance: 0,
                restricted: false,
            },
        );
        Self {
            root: root.id,
            depth,
            nodes,
            edges: Vec::new(),
        }
    }

    /// Adds one walk row; a node reached twice keeps its shortest distance.
    pub(crate) fn add(&mut self, row: WalkRow) {
        let id = row.node.id;
        let distance = row.node.distance;
        if let Some((other, entry_id, action)) = row.via {
            let (from, to) = if distance < 0 {
                (id, other)
            } else {
                (other, id)
            };
            self.edges.push(crate::provenance::LineageEdge {
                from,
                to,
                entry_id,
                action,
            });
        }
        let node = self.nodes.entry(id).or_insert(row.node);
        if distance.abs() < node.distance.abs() {
            node.distance = distance;
        }
    }

    /// The graph, nodes ordered by distance then id, edges sorted and unique.
    pub(crate) fn finish(self) -> LineageGraph {
        let mut nodes: Vec<_> = self.nodes.into_values().collect();
        nodes.sort_by(|a, b| a.distance.cmp(&b.distance).then(a.id.cmp(&b.id)));
        let mut edges = self.edges;
        edges.sort();
        edges.dedup();
        LineageGraph {
            root: self.root,
            depth: self.depth,
            nodes,
            edges,
            hidden: 0,
        }
    }
}
