//! Collections: a connector plugin's upstream bytes stored untouched in raw, then parsed.
//!
//! A collection runs one connector ([`crate::plugins::Plugins::collect`]) and streams each object
//! it hands over straight to its final raw key, `{plugin}/{external_id}/{dataset id}/{name}`,
//! hashing it on the way. When the connector succeeds, the set of files is compared with the newest
//! earlier collection of the same `(plugin, external_id)`: the same names and SHA-256s mean
//! *unchanged* (the new copies are deleted, the old dataset stands), anything else becomes a new
//! raw dataset whose metadata names the version it follows. Every collection, failed, unchanged or
//! new, appends one `collection` provenance entry naming the plugin, its component SHA-256, the
//! parameters and every request made (refused ones included). Configured parsers then run over the
//! files through [`crate::pipeline::Pipelines::run`], so each table has its own `pipeline` entry; a parse that
//! already succeeded with the same component and parameters is not repeated.
//!
//! Collections run as jobs recorded in the catalog ([`crate::catalog::Job`]), so every replica
//! sees them. Scheduled sources take a per-slot `schedule_key`, which the catalog lets only one
//! replica insert: a slot runs once however many replicas tick.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::blob::{self, Sha256};
use crate::catalog::{
    CatalogError, Constraint, DatasetId, DatasetStatus, FileRecord, Job, NewDataset, SearchQuery,
};
use crate::config::{ParseConfig, SourceConfig, check_external_id, parse_schedule};
use crate::jobs::{Ended, JobKind};
use crate::lake::LakeError;
use crate::layers::Layer;
use crate::pipeline::{RunOutcome, RunRequest};
use crate::plugins::{Kind, Part};
use crate::provenance::{
    Action, CollectionRecord, CollectionStatus, InvocationRecord, NewProvenance, PreviousVersion,
    RunStatus,
};

/// The collection service's own state inside [`crate::lake::Lake`].
#[derive(Debug, Default)]
pub(crate) struct CollectState {
    /// Serialises a collection's check for an earlier version with its insert.
    decide: tokio::sync::Mutex<()>,
}

crate::lake::service! {
    /// The collection service: plans, jobs, the connector run, dedup, the parsers.
    Collections, collections, CollectState = collect
}

/// `POST /collections`: what to collect.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectRequest {
    /// A `[[sources]]` name from lake.toml, or a connector plugin's name.
    pub source: String,
    /// What the catalog calls the collected data (`GSE105845`, `brca1-papers`). Required with a
    /// plugin name; a configured source defaults to its own.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The connector's parameters; with a configured source they override its own, key by key.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// Parsers to run over the collected files (default: the configured source's).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub parse: Option<Vec<ParseConfig>>,
    /// Tags for the collected datasets (added to the configured source's).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A resolved collection: everything needed to run it.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The configured source's name, when it came from one.
    pub source: Option<String>,
    /// The connector.
    pub plugin: String,
    /// The catalog's identifier.
    pub external_id: String,
    /// The connector's parameters.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Parsers to run.
    pub parse: Vec<ParseConfig>,
    /// Tags.
    pub tags: Vec<String>,
}

/// One file of a collection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CollectedFile {
    /// Name inside the dataset.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 (hex).
    pub sha256: String,
    /// Content type, as the upstream said or guessed from the name.
    pub content_type: String,
    /// Upstream version facts (etag, last-modified, release, last-update date).
    pub facts: BTreeMap<String, String>,
}

/// What a collection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CollectionOutcome {
    /// The first collection of its `(plugin, external_id)`.
    New,
    /// A new version.
    Changed,
    /// The same files as the newest earlier version; nothing new is stored.
    Unchanged,
}

impl CollectionOutcome {
    /// The spelling in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CollectionOutcome::New => "new",
            CollectionOutcome::Changed => "changed",
            CollectionOutcome::Unchanged => "unchanged",
        }
    }
}

/// What became of one configured parse of a collected file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParseStatus {
    /// The table was stored.
    Succeeded,
    /// The parser failed; its run is recorded.
    Failed,
    /// An equal run (same component, parameters and file) succeeded before.
    Skipped,
}

/// What a parser made of one collected file.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ParsedFile {
    /// The raw file.
    pub file: String,
    /// The parser.
    pub plugin: String,
    /// `succeeded`, `failed`, or `skipped` (an equal run succeeded before).
    pub status: ParseStatus,
    /// The pipeline run (its provenance entry).
    #[schema(value_type = Option<String>)]
    pub run_id: Option<uuid::Uuid>,
    /// The table's dataset.
    #[schema(value_type = Option<String>)]
    pub dataset_id: Option<DatasetId>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The result of a collection.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Collected {
    /// `new` (first collection), `changed` (a new version) or `unchanged`.
    pub outcome: CollectionOutcome,
    /// The raw dataset holding these bytes (the earlier one when unchanged).
    #[schema(value_type = String)]
    pub dataset_id: DatasetId,
    /// Its version (1 for the first collection).
    pub version: u32,
    /// The version this one follows, when changed.
    #[schema(value_type = Option<String>)]
    pub previous: Option<DatasetId>,
    /// The files.
    pub files: Vec<CollectedFile>,
    /// Requests the connector made.
    pub requests: usize,
    /// The `collection` provenance entry.
    #[schema(value_type = String)]
    pub entry_id: uuid::Uuid,
    /// The parses run over the files.
    pub parsed: Vec<ParsedFile>,
}

/// A collection that failed; the failure is recorded when `entry_id` is set.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CollectFailure {
    /// A stable code (`capability_denied`, `plugin_error`, `unavailable`, ...).
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// The `collection` provenance entry recording it.
    pub entry_id: Option<uuid::Uuid>,
}

impl From<LakeError> for CollectFailure {
    fn from(e: LakeError) -> Self {
        let code = match &e {
            LakeError::NotFound(_) => "not_found",
            LakeError::Invalid(_) => "invalid_request",
            LakeError::Conflict(_) => "conflict",
            LakeError::Unavailable(_) => "unavailable",
            _ => "failed",
        };
        CollectFailure {
            code: code.into(),
            message: e.to_string(),
            entry_id: None,
        }
    }
}

/// A connector's objects, stored at their raw keys but not yet cataloged.
struct Stored {
    /// The dataset they will be.
    id: DatasetId,
    bucket: String,
    prefix: String,
    files: Vec<CollectedFile>,
    /// Every key written, to delete when nothing is cataloged.
    keys: Vec<String>,
}

/// What a collection was recorded as.
struct Decided {
    outcome: CollectionOutcome,
    dataset_id: DatasetId,
    version: u32,
    previous: Option<DatasetId>,
    entry: uuid::Uuid,
}

/// What a running collection reports, for progress bars.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A new object started.
    Object(String),
    /// Bytes of the current object arrived.
    Bytes(u64),
    /// A parser started on a file.
    Parsing {
        /// The file.
        file: String,
        /// The parser.
        plugin: String,
    },
}

/// Receives [`Progress`].
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The schedule slot `now` falls in, and the key that makes it run once.
pub fn schedule_key(
    source: &str,
    every: std::time::Duration,
    now: chrono::DateTime<Utc>,
) -> String {
    let secs = every.as_secs().max(60) as i64;
    let start = now.timestamp().div_euclid(secs) * secs;
    let at = chrono::DateTime::from_timestamp(start, 0).unwrap_or(now);
    format!("source:{source}@{}", at.format("%Y-%m-%dT%H:%M:%SZ"))
}

/// A request as its job records it.
fn request_json(req: &CollectRequest) -> Result<serde_json::Value, LakeError> {
    serde_json::to_value(req)
        .map_err(|e| LakeError::Invalid(format!("the request cannot be recorded: {e}")))
}

fn json_object(
    v: &serde_json::Value,
    what: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, LakeError> {
    match v {
        serde_json::Value::Null => Ok(serde_json::Map::new()),
        serde_json::Value::Object(o) => Ok(o.clone()),
        _ => Err(LakeError::Invalid(format!("{what} must be a JSON object"))),
    }
}

/// Fingerprint of a set of files: SHA-256 over their sorted names and hashes.
fn content_sha(files: &[CollectedFile]) -> String {
    let mut lines: Vec<String> = files
        .iter()
        .map(|f| format!("{}\t{}\n", f.name, f.sha256))
        .collect();
    lines.sort();
    Sha256::of(lines.concat().as_bytes()).to_hex()
}

impl Collections<'_> {
    fn sources(&self) -> &[SourceConfig] {
        &self.settings().sources
    }

    /// Resolves a request against lake.toml's sources and the loaded plugins.
    pub async fn plan(&self, req: &CollectRequest) -> Result<Plan, LakeError> {
        let configured = self.sources().iter().find(|s| s.name == req.source);
        let extra = json_object(&req.params, "params")?;
        let plan = match configured {
            Some(src) => {
                let mut params: serde_json::Map<String, serde_json::Value> =
                    src.params.clone().into_iter().collect();
                params.extend(extra);
                let mut tags = src.tags.clone();
                tags.extend(req.tags.iter().cloned());
                Plan {
                    source: Some(src.name.clone()),
                    plugin: src.plugin.clone(),
                    external_id: req
                        .external_id
                        .clone()
                        .or_else(|| src.external_id.clone())
                        .unwrap_or_else(|| src.name.clone()),
                    params,
                    parse: req.parse.clone().unwrap_or_else(|| src.parse.clone()),
                    tags,
                }
            }
            None => {
                let external_id = req.external_id.clone().ok_or_else(|| {
                    LakeError::Invalid(format!(
                        "{:?} is not a configured source, so external_id is required to name what is collected",
                        req.source
                    ))
                })?;
                Plan {
                    source: None,
                    plugin: req.source.clone(),
                    external_id,
                    params: extra,
                    parse: req.parse.clone().unwrap_or_default(),
                    tags: req.tags.clone(),
                }
            }
        };
        check_external_id(&plan.external_id).map_err(LakeError::Invalid)?;
        let plugins = self.running_plugins()?;
        match plugins.manifest(&plan.plugin).await.map(|m| m.kind) {
            Some(Kind::Connector) => {}
            Some(_) => {
                return Err(LakeError::Invalid(format!(
                    "{} is not a connector",
                    plan.plugin
                )));
            }
            None => {
                let names: Vec<&str> = self.sources().iter().map(|s| s.name.as_str()).collect();
                return Err(LakeError::NotFound(format!(
                    "no source or connector named {:?} (configured sources: {}; GET /plugins lists connectors)",
                    plan.plugin,
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        }
        for p in &plan.parse {
            if plugins.manifest(&p.plugin).await.map(|m| m.kind) != Some(Kind::Parser) {
                return Err(LakeError::Invalid(format!(
                    "parse: {:?} is not a parser plugin",
                    p.plugin
                )));
            }
        }
        Ok(plan)
    }

    /// Records a collection job and runs it in the background; `GET /collections/{id}` follows it.
    pub async fn submit(&self, req: CollectRequest) -> Result<Job, LakeError> {
        let plan = self.plan(&req).await?;
        let job = self
            .jobs()
            .record(JobKind::Collection, request_json(&req)?)
            .await?;
        let lake = self.lake.clone();
        let id = job.id;
        tokio::spawn(crate::provenance::acting_as(
            crate::provenance::current_actor(),
            async move { lake.collections().run_job(id, plan, None).await },
        ));
        Ok(job)
    }

    /// Claims a recorded job, runs its collection and records how it ended.
    pub async fn run_job(
        &self,
        id: uuid::Uuid,
        plan: Plan,
        progress: Option<ProgressFn>,
    ) -> Result<Job, LakeError> {
        let work = async {
            match self.collect(&plan, progress).await {
                Ok(c) => Ended::Succeeded(serde_json::to_value(&c).unwrap_or_default()),
                Err(f) => {
                    tracing::warn!(job = %id, plugin = plan.plugin, error = %f, "Collection failed");
                    Ended::Failed {
                        result: Some(serde_json::json!({"code": f.code, "entry_id": f.entry_id})),
                        error: f.message,
                    }
                }
            }
        };
        self.jobs().run(id, work).await
    }

    /// Runs a collection now, in this task, as a recorded job (`lake ingest`).
    pub async fn run_now(
        &self,
        req: &CollectRequest,
        progress: Option<ProgressFn>,
    ) -> Result<Job, LakeError> {
        let plan = self.plan(req).await?;
        let job = self
            .jobs()
            .record(JobKind::Collection, request_json(req)?)
            .await?;
        self.run_job(job.id, plan, progress).await
    }

    /// Starts every scheduled source whose current slot has not run on any replica. Returns the
    /// jobs this replica started.
    pub async fn run_due(&self, now: chrono::DateTime<Utc>) -> Vec<Job> {
        let mut started = Vec::new();
        for src in self.sources() {
            let Some(every) = src.schedule.as_deref().and_then(|s| parse_schedule(s).ok()) else {
                continue;
            };
            let req = CollectRequest {
                source: src.name.clone(),
                ..CollectRequest::default()
            };
            let plan = match self.plan(&req).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(source = src.name, error = %e, "Scheduled source cannot run");
                    continue;
                }
            };
            let key = schedule_key(&src.name, every, now);
            let recorded = match request_json(&req) {
                Ok(request) => {
                    self.jobs()
                        .record_scheduled(JobKind::Collection, request, key.clone())
                        .await
                }
                Err(e) => Err(e),
            };
            match recorded {
                Ok(Some(job)) => {
                    tracing::info!(source = src.name, job = %job.id, slot = key, "Scheduled collection started");
                    let lake = self.lake.clone();
                    let id = job.id;
                    tokio::spawn(async move { lake.collections().run_job(id, plan, None).await });
                    started.push(job);
                }
                // Another replica (or an earlier tick) has this slot.
                Ok(None) => {}
                Err(e) => tracing::error!(source = src.name, error = %e, "Scheduling failed"),
            }
        }
        started
    }

    /// One collection job.
    pub async fn get(&self, id: uuid::Uuid) -> Result<Job, LakeError> {
        self.jobs().get(id, JobKind::Collection).await
    }

    /// The newest collection jobs.
    pub async fn list(&self, limit: u32) -> Result<Vec<Job>, LakeError> {
        self.jobs().list(JobKind::Collection, limit).await
    }

    /// A recorded collection: its provenance entry and what it records (every request the
    /// connector made, refused ones included).
    pub async fn recorded(
        &self,
        entry: uuid::Uuid,
    ) -> Result<(crate::provenance::ProvenanceEntry, CollectionRecord), LakeError> {
        let not_one = || LakeError::NotFound(format!("collection {entry}"));
        let e = match self.catalog.entry(entry).await {
            Ok(e) => e,
            Err(crate::catalog::CatalogError::NotFound(_)) => return Err(not_one()),
            Err(e) => return Err(e.into()),
        };
        let record = e.collection_record().ok_or_else(not_one)?.map_err(|err| {
            LakeError::Unavailable(format!("collection {entry} is recorded unreadably: {err}"))
        })?;
        Ok((e, record))
    }

    /// Runs one collection: connector, raw storage, dedup, provenance, then the parsers.
    pub async fn collect(
        &self,
        plan: &Plan,
        progress: Option<ProgressFn>,
    ) -> Result<Collected, CollectFailure> {
        let plugins = self.running_plugins()?.clone();
        let params =
            crate::plugins::params_from_json(&serde_json::Value::Object(plan.params.clone()))
                .map_err(LakeError::Invalid)?;
        let id = DatasetId::new();
        let bucket = self.bucket(Layer::Raw).to_owned();
        let prefix = format!("{}/{}/{id}/", plan.plugin, plan.external_id);

        let (tx, rx) = tokio::sync::mpsc::channel::<Part>(8);
        let store = self.store_parts(rx, &bucket, &prefix, progress.clone());
        let ((inv, requests), stored) =
            tokio::join!(plugins.collect_recorded(&plan.plugin, params, tx), store);
        let (files, keys, store_err) = stored;

        let record = CollectionRecord {
            invocation: InvocationRecord::of(
                &inv,
                serde_json::Value::Object(plan.params.clone()),
                None,
                Layer::Raw,
            ),
            external_id: plan.external_id.clone(),
            source: plan.source.clone(),
            requests: serde_json::to_value(&requests).unwrap_or_default(),
            status: CollectionStatus::Succeeded,
            content_sha256: None,
            same_as: None,
            version: None,
            previous_version: None,
            error: None,
        };

        let failure = match (&inv.result, store_err) {
            (_, Some((code, e))) => Some((code.to_owned(), e)),
            (Err(e), None) => Some((e.code().to_owned(), e.to_string())),
            (Ok(_), None) if files.is_empty() => Some((
                "plugin_error".to_owned(),
                "the connector finished without handing over any object".to_owned(),
            )),
            (Ok(_), None) => None,
        };
        if let Some((code, message)) = failure {
            self.discard_all(&bucket, &keys).await;
            let record = record.failed(&code, message.clone());
            let entry = self.record_collection(vec![], &record).await?;
            metrics::counter!("lake_collections_total", "plugin" => plan.plugin.clone(), "outcome" => "failed").increment(1);
            return Err(CollectFailure {
                code,
                message,
                entry_id: Some(entry),
            });
        }

        let stored = Stored {
            id,
            bucket,
            prefix,
            files,
            keys,
        };
        let record = CollectionRecord {
            content_sha256: Some(content_sha(&stored.files)),
            ..record
        };
        let Decided {
            outcome,
            dataset_id,
            version,
            previous: prev,
            entry,
        } = self.decide(plan, &stored, record).await?;
        metrics::counter!("lake_collections_total", "plugin" => plan.plugin.clone(), "outcome" => outcome.as_str()).increment(1);

        let stored_files = if outcome == CollectionOutcome::Unchanged {
            self.dataset_files(dataset_id)
                .await
                .map_err(CollectFailure::from)?
                .into_iter()
                .map(|f| f.name)
                .collect::<Vec<_>>()
        } else {
            stored.files.iter().map(|f| f.name.clone()).collect()
        };
        let parsed = self
            .parse_collected(plan, dataset_id, &stored_files, progress)
            .await?;
        Ok(Collected {
            outcome,
            dataset_id,
            version,
            previous: prev,
            files: stored.files,
            requests: requests.len(),
            entry_id: entry,
            parsed,
        })
    }

    /// Decides what the stored files are against the newest earlier version, and records it: an
    /// unchanged collection discards its copies and names the version that holds the bytes; a new
    /// or changed one becomes the next version. A version another replica recorded first makes it
    /// decide again.
    async fn decide(
        &self,
        plan: &Plan,
        stored: &Stored,
        record: CollectionRecord,
    ) -> Result<Decided, CollectFailure> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let guard = self.state.decide.lock().await;
            let previous = self.newest_version(plan).await?;
            match previous {
                Some((p, version))
                    if p.metadata.get("content_sha256").and_then(|v| v.as_str())
                        == record.content_sha256.as_deref() =>
                {
                    drop(guard);
                    self.discard_all(&stored.bucket, &stored.keys).await;
                    let record = CollectionRecord {
                        status: CollectionStatus::Unchanged,
                        same_as: Some(p.id.to_string()),
                        ..record
                    };
                    let entry = self.record_collection(vec![p.id], &record).await?;
                    return Ok(Decided {
                        outcome: CollectionOutcome::Unchanged,
                        dataset_id: p.id,
                        version,
                        previous: None,
                        entry,
                    });
                }
                previous => {
                    // The record as attempted (version, previous version), for a failure too.
                    let mut attempted = record.clone();
                    let inserted = self
                        .insert_version(plan, stored, &mut attempted, previous.as_ref())
                        .await;
                    drop(guard);
                    match inserted {
                        Err(CatalogError::Conflict(c))
                            if attempt < 3 && c.constraint == Constraint::CollectionVersion =>
                        {
                            // Another replica recorded this version first: decide again against it.
                            continue;
                        }
                        Err(e) => {
                            self.discard_all(&stored.bucket, &stored.keys).await;
                            // Nothing is stored, but the collection and its requests are still
                            // recorded.
                            let e = LakeError::from(e);
                            let record = attempted.failed("not_stored", e.to_string());
                            let failure = CollectFailure::from(e);
                            let entry = self.record_collection(vec![], &record).await;
                            return Err(CollectFailure {
                                entry_id: entry.ok(),
                                ..failure
                            });
                        }
                        // Committed: from here on an error is reported as it is, and the
                        // objects the new dataset names stay.
                        Ok(version) => {
                            let entry = self
                                .catalog()
                                .provenance_of(&[stored.id])
                                .await
                                .map_err(LakeError::from)?
                                .into_iter()
                                .find(|e| e.action == Action::Collection)
                                .ok_or_else(|| {
                                    LakeError::Unavailable("the collection was not recorded".into())
                                })?;
                            return Ok(Decided {
                                outcome: if previous.is_some() {
                                    CollectionOutcome::Changed
                                } else {
                                    CollectionOutcome::New
                                },
                                dataset_id: stored.id,
                                version,
                                previous: previous.map(|(p, _)| p.id),
                                entry: entry.id,
                            });
                        }
                    }
                }
            }
        }
    }

    /// The newest earlier collection of the plan's `(plugin, external_id)` and its version number,
    /// by number: a slow collection that started earlier has the smaller id but may finish later.
    async fn newest_version(
        &self,
        plan: &Plan,
    ) -> Result<Option<(crate::catalog::Dataset, u32)>, LakeError> {
        let version_of = |d: &crate::catalog::Dataset| {
            d.metadata
                .get("version")
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(1)
        };
        Ok(self
            .catalog()
            .search(&SearchQuery {
                layer: Some(Layer::Raw),
                source: Some(plan.plugin.clone()),
                external_id: Some(plan.external_id.clone()),
                limit: 500,
                ..SearchQuery::default()
            })
            .await?
            .items
            .into_iter()
            .map(|d| {
                let v = version_of(&d);
                (d, v)
            })
            .max_by_key(|(d, v)| (*v, d.id)))
    }

    /// Inserts the stored files as the version after `previous`, with their `collection` entry
    /// (`record`, completed with the version and the previous one), in one transaction. Returns
    /// the version.
    async fn insert_version(
        &self,
        plan: &Plan,
        stored: &Stored,
        record: &mut CollectionRecord,
        previous: Option<&(crate::catalog::Dataset, u32)>,
    ) -> Result<u32, CatalogError> {
        let version = previous.map_or(0, |(_, v)| *v) + 1;
        record.version = Some(version);
        let mut facts = serde_json::Map::new();
        for f in &stored.files {
            for (k, v) in &f.facts {
                facts.entry(k.clone()).or_insert_with(|| v.clone().into());
            }
        }
        let mut metadata = serde_json::json!({
            "source": plan.plugin,
            "date": Utc::now().format("%Y-%m-%d").to_string(),
            "version": version.to_string(),
            "external_id": plan.external_id,
            "content_sha256": record.content_sha256,
            "collected_by": {
                "plugin": plan.plugin,
                "component_sha256": record.invocation.component_sha256,
                "configured_source": plan.source,
            },
            "upstream": facts,
            "files": stored.files,
        });
        if let Some((p, v)) = previous {
            let previous_version = PreviousVersion {
                dataset_id: p.id,
                version: *v,
            };
            metadata["previous_version"] =
                serde_json::to_value(&previous_version).unwrap_or_default();
            record.previous_version = Some(previous_version);
        }
        let id = stored.id;
        let new = NewDataset {
            id,
            name: format!("{} {}", plan.plugin, plan.external_id),
            source: plan.plugin.clone(),
            external_id: Some(plan.external_id.clone()),
            layer: Layer::Raw,
            bucket: stored.bucket.clone(),
            prefix: stored.prefix.clone(),
            metadata,
            tags: plan.tags.clone(),
            status: DatasetStatus::Ready,
            promoted_from: None,
        };
        let records: Vec<FileRecord> = stored
            .files
            .iter()
            .map(|f| FileRecord {
                name: f.name.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
                content_type: f.content_type.clone(),
                created_at: Utc::now(),
            })
            .collect();
        let prov = NewProvenance::collection(vec![], Some(id), record);
        self.catalog()
            .insert_datasets(&[(new, records)], std::slice::from_ref(&prov))
            .await?;
        self.openlineage().emit(std::slice::from_ref(&prov));
        Ok(version)
    }

    async fn discard_all(&self, bucket: &str, keys: &[String]) {
        for key in keys {
            self.discard_object(bucket, key).await;
        }
    }

    /// Streams the connector's parts to their raw keys. Returns the finished files, every key
    /// written (to delete on failure) and why it stopped, if it did, with its code: what the
    /// connector sent was refused (a name that is not a plain file name, facts past their bounds:
    /// `invalid_output`, the connector's fault), went past `plugins.max_collect_bytes`
    /// (`too_large`) or the store failed (`unavailable`). On any of them it stops taking parts,
    /// which fails the connector too.
    async fn store_parts(
        &self,
        mut rx: tokio::sync::mpsc::Receiver<Part>,
        bucket: &str,
        prefix: &str,
        progress: Option<ProgressFn>,
    ) -> (
        Vec<CollectedFile>,
        Vec<String>,
        Option<(&'static str, String)>,
    ) {
        const REFUSED: &str = "invalid_output";
        const TOO_LARGE: &str = "too_large";
        const FAILED: &str = "unavailable";
        type Open = (
            String,
            tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
            tokio::task::JoinHandle<Result<u64, crate::blob::BlobError>>,
            blob::HashHandle,
        );
        let mut files = Vec::new();
        let mut keys = Vec::new();
        let mut open: Option<Open> = None;
        let mut total = 0u64;
        let report = |p: Progress| {
            if let Some(f) = &progress {
                f(p);
            }
        };
        while let Some(part) = rx.recv().await {
            if open.is_none() {
                if let Err(e) = crate::lake::check_file_name(&part.name) {
                    return (
                        files,
                        keys,
                        Some((REFUSED, format!("the connector's object: {e}"))),
                    );
                }
                let key = format!("{prefix}{}", part.name);
                let (btx, brx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
                let (stream, hash) = blob::hashing(blob::stream_of(brx), None);
                let blobs = self.blobs().clone();
                let b = bucket.to_owned();
                let k = key.clone();
                let put = tokio::spawn(async move { blobs.put(&b, &k, stream).await });
                keys.push(key);
                report(Progress::Object(part.name.clone()));
                open = Some((part.name.clone(), btx, put, hash));
            }
            let Some((name, btx, _, _)) = open.as_ref() else {
                continue;
            };
            let n = part.bytes.len() as u64;
            total += n;
            // Past the operator's bound an honest connector of a large source is too large, not
            // wrong; facts past theirs are the connector's fault.
            let refused = if total > self.settings().max_collect_bytes {
                Some((
                    TOO_LARGE,
                    format!(
                        "the connector sent more than {} bytes (plugins.max_collect_bytes)",
                        self.settings().max_collect_bytes
                    ),
                ))
            } else if part.last {
                check_facts(&part.facts).err().map(|why| (REFUSED, why))
            } else {
                None
            };
            if let Some((code, why)) = refused {
                if let Some((_, btx, put, _)) = open.take() {
                    let _ = btx.send(Err(std::io::Error::other(why.clone()))).await;
                    drop(btx);
                    let _ = put.await;
                }
                return (files, keys, Some((code, why)));
            }
            if !part.bytes.is_empty() && btx.send(Ok(Bytes::from(part.bytes))).await.is_err() {
                // The put ended early: its error is taken below.
                let name = name.clone();
                let err = match open.take() {
                    Some((_, _, put, _)) => match put.await {
                        Ok(Err(e)) => e.to_string(),
                        _ => "the store stopped taking the object".into(),
                    },
                    None => String::new(),
                };
                return (
                    files,
                    keys,
                    Some((FAILED, format!("storing {name}: {err}"))),
                );
            }
            report(Progress::Bytes(n));
            if part.last {
                let Some((name, btx, put, hash)) = open.take() else {
                    continue;
                };
                drop(btx);
                let size = match put.await {
                    Ok(Ok(size)) => size,
                    Ok(Err(e)) => {
                        return (files, keys, Some((FAILED, format!("storing {name}: {e}"))));
                    }
                    Err(e) => {
                        return (files, keys, Some((FAILED, format!("storing {name}: {e}"))));
                    }
                };
                let (sha, _) = hash.finish();
                let content_type = part
                    .content_type
                    .clone()
                    .map(|c| c.split(';').next().unwrap_or("").trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| crate::lake::content_type_for(&name).to_owned());
                files.push(CollectedFile {
                    name,
                    size,
                    sha256: sha.to_hex(),
                    content_type,
                    facts: part.facts.into_iter().collect(),
                });
            }
        }
        if let Some((name, btx, put, _)) = open.take() {
            // The connector stopped mid-object: break the stream so nothing half-written stays.
            let _ = btx
                .send(Err(std::io::Error::other(
                    "the connector stopped mid-object",
                )))
                .await;
            drop(btx);
            let _ = put.await;
            tracing::debug!(name, "Connector stopped mid-object");
        }
        (files, keys, None)
    }

    /// Appends a `collection` entry that stored nothing (failed, or unchanged: `inputs` names the
    /// dataset that already holds the bytes); returns its id.
    async fn record_collection(
        &self,
        inputs: Vec<DatasetId>,
        record: &CollectionRecord,
    ) -> Result<uuid::Uuid, LakeError> {
        let prov = NewProvenance::collection(inputs, None, record);
        let entry = self.catalog().append_provenance(&prov).await?;
        self.openlineage().emit(std::slice::from_ref(&prov));
        Ok(entry.id)
    }

    async fn discard_object(&self, bucket: &str, key: &str) {
        if let Err(e) = self.blobs().delete(bucket, key).await {
            tracing::warn!(bucket, key, error = %e, "An uncataloged object was left behind");
        }
    }

    /// Runs the plan's parsers over a raw dataset's files, skipping runs that already succeeded
    /// with the same component and parameters.
    async fn parse_collected(
        &self,
        plan: &Plan,
        dataset: DatasetId,
        files: &[String],
        progress: Option<ProgressFn>,
    ) -> Result<Vec<ParsedFile>, CollectFailure> {
        let mut out = Vec::new();
        if plan.parse.is_empty() {
            return Ok(out);
        }
        let earlier = self
            .catalog()
            .provenance_of(&[dataset])
            .await
            .map_err(LakeError::from)?;
        let plugins = self.running_plugins()?;
        for p in &plan.parse {
            let params = serde_json::Value::Object(p.params.clone().into_iter().collect());
            let sha = plugins.manifest(&p.plugin).await.map(|m| m.sha256);
            let mut names: Vec<&String> = files.iter().filter(|f| matches(&p.files, f)).collect();
            names.sort();
            for file in names {
                let done = earlier.iter().find(|e| {
                    e.inputs.contains(&dataset)
                        && e.run_facts().is_some_and(|r| {
                            r.status == RunStatus::Succeeded
                                && r.input_file.as_deref() == Some(file.as_str())
                                && r.component_sha256 == sha
                                && r.params == params
                        })
                });
                if let Some(e) = done {
                    out.push(ParsedFile {
                        file: file.clone(),
                        plugin: p.plugin.clone(),
                        status: ParseStatus::Skipped,
                        run_id: Some(e.id),
                        dataset_id: e.outputs.first().copied(),
                        error: None,
                    });
                    continue;
                }
                if let Some(f) = &progress {
                    f(Progress::Parsing {
                        file: file.clone(),
                        plugin: p.plugin.clone(),
                    });
                }
                let run = self
                    .pipelines()
                    .run(RunRequest {
                        plugin: p.plugin.clone(),
                        inputs: vec![dataset],
                        params: params.clone(),
                        target_layer: None,
                        file: Some(file.clone()),
                        name: Some(format!("{} {file} ({})", plan.external_id, p.plugin)),
                    })
                    .await?;
                out.push(match run {
                    RunOutcome::Succeeded(r) => ParsedFile {
                        file: file.clone(),
                        plugin: p.plugin.clone(),
                        status: ParseStatus::Succeeded,
                        run_id: Some(r.id),
                        dataset_id: r.output,
                        error: None,
                    },
                    RunOutcome::Failed(f) => ParsedFile {
                        file: file.clone(),
                        plugin: p.plugin.clone(),
                        status: ParseStatus::Failed,
                        run_id: Some(f.run_id),
                        dataset_id: None,
                        error: Some(f.error.to_string()),
                    },
                });
            }
        }
        Ok(out)
    }
}

impl From<CatalogError> for CollectFailure {
    fn from(e: CatalogError) -> Self {
        LakeError::from(e).into()
    }
}

/// Facts an object may carry: they land in the catalog row, which every listing returns.
pub const MAX_FACTS: usize = 64;
/// The longest fact name, and value.
pub const MAX_FACT_CHARS: (usize, usize) = (128, 4096);

/// A connector's facts about one object (ETag, release, dates) are few and short: a 4-byte object
/// with 80 MB of facts made every `GET /catalog` answer 88 MB.
fn check_facts(facts: &[(String, String)]) -> Result<(), String> {
    if facts.len() > MAX_FACTS {
        return Err(format!(
            "the connector gave an object {} facts; at most {MAX_FACTS} are kept",
            facts.len()
        ));
    }
    for (k, v) in facts {
        if k.chars().count() > MAX_FACT_CHARS.0 || v.chars().count() > MAX_FACT_CHARS.1 {
            return Err(format!(
                "the connector's fact {:?} is too long (names at most {} characters, values {})",
                k.chars().take(40).collect::<String>(),
                MAX_FACT_CHARS.0,
                MAX_FACT_CHARS.1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_objects_facts_are_few_and_short() {
        let ok: Vec<(String, String)> = vec![("etag".into(), "\"v1\"".into())];
        assert!(check_facts(&ok).is_ok());
        let many: Vec<(String, String)> = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(check_facts(&many).is_err_and(|e| e.contains("65 facts")));
        let huge = vec![("release".to_owned(), "x".repeat(80 << 20))];
        assert!(check_facts(&huge).is_err_and(|e| e.contains("too long")));
    }

    #[test]
    fn patterns_match_names() {
        assert!(matches("efetch-*.xml", "efetch-0001.xml"));
        assert!(!matches("efetch-*.xml", "esearch.json"));
        assert!(matches("*", "anything"));
        assert!(matches("a*b*c", "a-x-b-y-c"));
        assert!(!matches("a*b*c", "a-x-c-y-b"));
        assert!(!matches("ab*ba", "aba"));
        assert!(matches("GSE105845_family.soft", "GSE105845_family.soft"));
        assert!(!matches(
            "GSE105845_family.soft",
            "GSE105845_family.soft.gz"
        ));
    }

    #[test]
    fn schedule_keys_name_one_slot() {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or_default()
        };
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(
            schedule_key("pubmed", day, at("2026-12-01T16:59:00Z")),
            "source:pubmed@2026-12-01T00:00:00Z"
        );
        assert_eq!(
            schedule_key("pubmed", day, at("2026-12-01T00:00:00Z")),
            schedule_key("pubmed", day, at("2026-12-01T23:59:59Z"))
        );
        assert_ne!(
            schedule_key("pubmed", day, at("2026-12-01T23:59:59Z")),
            schedule_key("pubmed", day, at("2026-12-02T00:00:00Z"))
        );
    }

    #[test]
    fn the_fingerprint_ignores_order_but_not_content() {
        let f = |name: &str, sha: &str| CollectedFile {
            name: name.into(),
            size: 1,
            sha256: sha.into(),
            content_type: "text/plain".into(),
            facts: BTreeMap::new(),
        };
        let a = content_sha(&[f("a", "1"), f("b", "2")]);
        assert_eq!(a, content_sha(&[f("b", "2"), f("a", "1")]));
        assert_ne!(a, content_sha(&[f("a", "1"), f("b", "3")]));
        assert_ne!(a, content_sha(&[f("a", "1")]));
    }
}
