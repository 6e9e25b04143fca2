//! Provenance: the append-only record of every action, and lineage built from it.
//!
//! An entry names an action, its input and output datasets, its parameters and when it happened.
//! Parameters are typed: one record per action ([`PipelineRecord`], [`CollectionRecord`],
//! [`RegistrationRecord`], [`PromotionRecord`], [`DeletionRecord`], the backup's and restore's
//! reports), written by the `NewProvenance` constructors here and read back by the typed readers
//! here ([`ProvenanceEntry::run_facts`]); no other module builds or picks apart an entry's
//! JSON.
//! Entries are never updated or deleted: the database adapters only insert them, and both schemas
//! carry triggers that reject `UPDATE` and `DELETE` on the provenance tables. Lineage is the graph whose
//! edges run from each input of an entry to each of its outputs.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::DatasetId;
use crate::layers::Layer;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Bytes collected from an upstream source by a connector.
    Collection,
    /// Existing objects or an upload registered in the catalog.
    Registration,
    /// A dataset copied to the next layer.
    Promotion,
    /// One plugin invocation.
    Pipeline,
    /// A person's action recorded by hand.
    Manual,
    /// A non-raw dataset removed from the catalog (its row stays, marked deleted).
    Deletion,
    /// The catalog and every object copied to a backup.
    Backup,
    /// A lake restored from a backup.
    Restore,
    /// A run outside the lake (an engine's or a scheduler's), reported as an OpenLineage event.
    External,
    /// A problem `lake fsck` found and repaired (an uncataloged object deleted, a stale claim
    /// dropped, a stopped promotion resumed, an abandoned job failed).
    Repair,
}

impl Action {
    /// The lowercase name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Collection => "collection",
            Action::Registration => "registration",
            Action::Promotion => "promotion",
            Action::Pipeline => "pipeline",
            Action::Manual => "manual",
            Action::Deletion => "deletion",
            Action::Backup => "backup",
            Action::Restore => "restore",
            Action::External => "external",
            Action::Repair => "repair",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "collection" => Action::Collection,
            "registration" => Action::Registration,
            "promotion" => Action::Promotion,
            "pipeline" => Action::Pipeline,
            "manual" => Action::Manual,
            "deletion" => Action::Deletion,
            "backup" => Action::Backup,
            "restore" => Action::Restore,
            "external" => Action::External,
            "repair" => Action::Repair,
            other => return Err(format!("unknown provenance action {other:?}")),
        })
    }
}

/// Who acted: a user (or service account) and the token or sign-in session they acted through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The user or service account.
    pub user: String,
    /// The token (`lake_<id>_...`'s id) or sign-in session (`oidc:...`) that carried the request.
    pub via: Option<String>,
}

tokio::task_local! {
    /// Who acts in the current request (set by the HTTP layer from the caller's token); every
    /// entry built meanwhile records it.
    static ACTOR: Option<Actor>;
}

/// Runs `work` with `actor` as the actor of every entry it builds, background work it hands the
/// actor on to included ([`current_actor`]).
pub async fn acting_as<F: std::future::Future>(actor: Option<Actor>, work: F) -> F::Output {
    ACTOR.scope(actor, work).await
}

/// The actor of the current task, when one is set.
pub fn current_actor() -> Option<Actor> {
    ACTOR.try_with(Clone::clone).ok().flatten()
}

/// The longest reason a person may give.
pub const MAX_REASON: usize = 2000;

/// A person's reason for an action that needs one: trimmed, not empty, at most [`MAX_REASON`]
/// characters; `what` names the action in the refusal.
pub fn required_reason(reason: Option<&str>, what: &str) -> Result<String, String> {
    let r = reason.map(str::trim).unwrap_or_default();
    if r.is_empty() {
        return Err(format!(
            "reason: {what} needs a reason (it is kept in provenance)"
        ));
    }
    if r.chars().count() > MAX_REASON {
        return Err(format!("reason: at most {MAX_REASON} characters"));
    }
    Ok(r.to_owned())
}

/// An entry to append.
#[derive(Debug, Clone)]
pub struct NewProvenance {
    /// What happened.
    pub action: Action,
    /// Datasets read.
    pub inputs: Vec<DatasetId>,
    /// Datasets written.
    pub outputs: Vec<DatasetId>,
    /// Parameters of the action.
    pub parameters: serde_json::Value,
    /// Free text, such as promotion notes.
    pub notes: Option<String>,
    /// The user or service account who did it, when known.
    pub actor: Option<String>,
    /// The token or session they acted through.
    pub actor_token: Option<String>,
    /// The reason they gave, where one is asked for.
    pub reason: Option<String>,
}

impl NewProvenance {
    fn of(
        action: Action,
        inputs: Vec<DatasetId>,
        outputs: Vec<DatasetId>,
        record: &impl Serialize,
    ) -> Self {
        let actor = current_actor();
        Self {
            action,
            inputs,
            outputs,
            // The records are plain data: serialising them cannot fail.
            parameters: serde_json::to_value(record).unwrap_or_default(),
            notes: None,
            actor: actor.as_ref().map(|a| a.user.clone()),
            actor_token: actor.and_then(|a| a.via),
            reason: None,
        }
    }

    /// A dataset registered (or collected, as `action` says) with its files.
    pub fn registration(action: Action, output: DatasetId, record: &RegistrationRecord) -> Self {
        Self::of(action, vec![], vec![output], record)
    }

    /// One plugin invocation: its output when it made one.
    pub fn pipeline(
        inputs: Vec<DatasetId>,
        output: Option<DatasetId>,
        record: &PipelineRecord,
    ) -> Self {
        Self::of(
            Action::Pipeline,
            inputs,
            output.into_iter().collect(),
            record,
        )
    }

    /// One collection: the new dataset, or (unchanged) the one that already holds the bytes as its
    /// input, or neither (failed).
    pub fn collection(
        inputs: Vec<DatasetId>,
        output: Option<DatasetId>,
        record: &CollectionRecord,
    ) -> Self {
        Self::of(
            Action::Collection,
            inputs,
            output.into_iter().collect(),
            record,
        )
    }

    /// A dataset copied to the next layer, with the caller's notes and reason.
    pub fn promotion(
        source: DatasetId,
        target: DatasetId,
        record: &PromotionRecord,
        notes: Option<String>,
        reason: Option<String>,
    ) -> Self {
        Self {
            notes,
            reason,
            ..Self::of(Action::Promotion, vec![source], vec![target], record)
        }
    }

    /// What an OpenLineage RunEvent says of this entry, for the lake's own runs (pipeline runs,
    /// collections, promotions); `None` for other actions.
    pub fn run_summary(&self) -> Option<RunSummary> {
        let read_error = |e: Option<RecordedError>| e.map(|e| format!("{}: {}", e.code, e.message));
        match self.action {
            Action::Pipeline => {
                let r: PipelineRecord = serde_json::from_value(self.parameters.clone()).ok()?;
                let plugin = r.invocation.plugin.unwrap_or_else(|| "unknown".into());
                Some(RunSummary {
                    job: format!("pipeline.{plugin}"),
                    failed: r.status != RunStatus::Succeeded,
                    error: read_error(r.error),
                    component_sha256: r.invocation.component_sha256,
                })
            }
            Action::Collection => {
                let r: CollectionRecord = serde_json::from_value(self.parameters.clone()).ok()?;
                let what = r
                    .source
                    .or(r.invocation.plugin)
                    .unwrap_or_else(|| "unknown".into());
                Some(RunSummary {
                    job: format!("collection.{what}"),
                    failed: r.status == CollectionStatus::Failed,
                    error: read_error(r.error),
                    component_sha256: r.invocation.component_sha256,
                })
            }
            Action::Promotion => {
                let r: PromotionRecord = serde_json::from_value(self.parameters.clone()).ok()?;
                Some(RunSummary {
                    job: format!("promotion.{}", r.to_layer),
                    failed: false,
                    error: None,
                    component_sha256: None,
                })
            }
            _ => None,
        }
    }

    /// A dataset deleted, for `reason`.
    pub fn deletion(id: DatasetId, record: &DeletionRecord, reason: String) -> Self {
        Self {
            reason: Some(reason),
            ..Self::of(Action::Deletion, vec![id], vec![], record)
        }
    }

    /// A backup, as its result says.
    pub fn backup(result: &crate::backup::BackupResult) -> Self {
        Self::of(Action::Backup, vec![], vec![], result)
    }

    /// A restore from `from`, as its report says.
    pub fn restore(from: &str, report: &crate::backup::RestoreReport) -> Self {
        Self::of(
            Action::Restore,
            vec![],
            vec![],
            &RestoreRecord {
                from: from.to_owned(),
                report: report.clone(),
            },
        )
    }

    /// A person's note on datasets.
    pub fn manual(inputs: Vec<DatasetId>, outputs: Vec<DatasetId>, notes: String) -> Self {
        Self {
            notes: Some(notes),
            ..Self::of(Action::Manual, inputs, outputs, &serde_json::Map::new())
        }
    }

    /// A run outside the lake that read `inputs` and wrote `outputs`, as its OpenLineage event
    /// says.
    pub fn external(
        inputs: Vec<DatasetId>,
        outputs: Vec<DatasetId>,
        record: &ExternalRunRecord,
    ) -> Self {
        Self::of(Action::External, inputs, outputs, record)
    }

    /// A repair by `lake fsck`, of a dataset's problem or of an object no dataset keeps.
    pub fn repair(dataset: Option<DatasetId>, record: &RepairRecord) -> Self {
        Self::of(
            Action::Repair,
            dataset.into_iter().collect(),
            vec![],
            record,
        )
    }

    /// The entry as recorded under `id` at `at`.
    pub fn recorded(&self, id: uuid::Uuid, at: DateTime<Utc>) -> ProvenanceEntry {
        ProvenanceEntry {
            id,
            action: self.action,
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
            parameters: self.parameters.clone(),
            notes: self.notes.clone(),
            actor: self.actor.clone(),
            actor_token: self.actor_token.clone(),
            reason: self.reason.clone(),
            created_at: at,
        }
    }
}

/// A recorded entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProvenanceEntry {
    /// Entry id.
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    /// What happened.
    pub action: Action,
    /// Datasets read.
    #[schema(value_type = Vec<String>)]
    pub inputs: Vec<DatasetId>,
    /// Datasets written.
    #[schema(value_type = Vec<String>)]
    pub outputs: Vec<DatasetId>,
    /// Parameters of the action.
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
    /// Free text.
    pub notes: Option<String>,
    /// The user or service account who did it.
    pub actor: Option<String>,
    /// The token or sign-in session they acted through.
    #[serde(default)]
    pub actor_token: Option<String>,
    /// The reason they gave.
    #[serde(default)]
    pub reason: Option<String>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

impl ProvenanceEntry {
    /// What a `pipeline` entry says about its run that decisions use (its status, the component,
    /// parameters and file), read on their own so that an entry with fields this version does not
    /// know still counts; `None` for other actions.
    pub fn run_facts(&self) -> Option<RunFacts> {
        (self.action == Action::Pipeline)
            .then(|| serde_json::from_value(self.parameters.clone()).ok())
            .flatten()
    }

    /// A `promotion` entry's record (which layers, how many files); `None` for other actions.
    pub fn promotion_record(&self) -> Option<PromotionRecord> {
        (self.action == Action::Promotion)
            .then(|| serde_json::from_value(self.parameters.clone()).ok())
            .flatten()
    }

    /// An `external` entry's record (an engine's run, from OpenLineage); `None` for other actions.
    pub fn external_record(&self) -> Option<ExternalRunRecord> {
        (self.action == Action::External)
            .then(|| serde_json::from_value(self.parameters.clone()).ok())
            .flatten()
    }

    /// A `collection` entry's record (the requests, the outcome); `None` for other actions, or
    /// with why a collection's record does not read.
    pub fn collection_record(&self) -> Option<Result<CollectionRecord, String>> {
        (self.action == Action::Collection)
            .then(|| serde_json::from_value(self.parameters.clone()).map_err(|e| e.to_string()))
    }
}

/// The parts of a [`PipelineRecord`] that decisions read: see [`ProvenanceEntry::run_facts`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunFacts {
    /// How the run ended.
    pub status: RunStatus,
    /// The plugin that ran.
    #[serde(default)]
    pub plugin: Option<String>,
    /// The file a parser read.
    #[serde(default)]
    pub input_file: Option<String>,
    /// SHA-256 of the component that ran.
    #[serde(default)]
    pub component_sha256: Option<String>,
    /// The parameters it was given.
    #[serde(default)]
    pub params: serde_json::Value,
}

/// What an entry (or a run's details) says about the component that acted, for people: the
/// dashboard's timeline and runs table. Every field is optional, so any action's parameters read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ComponentFacts {
    /// The plugin.
    #[serde(default)]
    pub plugin: Option<String>,
    /// Its version.
    #[serde(default)]
    pub plugin_version: Option<String>,
    /// SHA-256 of its component.
    #[serde(default)]
    pub component_sha256: Option<String>,
    /// The parameters it was given.
    #[serde(default)]
    pub params: serde_json::Value,
    /// The limits it was granted.
    #[serde(default)]
    pub limits: serde_json::Value,
    /// What it used.
    #[serde(default)]
    pub usage: serde_json::Value,
    /// Its error, when it failed.
    #[serde(default)]
    pub error: Option<RecordedErrorFacts>,
}

/// The message of a recorded error.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RecordedErrorFacts {
    /// What went wrong.
    #[serde(default)]
    pub message: String,
}

impl ComponentFacts {
    /// The facts in an entry's parameters or a run's details (empty when they hold none).
    pub fn of(parameters: &serde_json::Value) -> Self {
        serde_json::from_value(parameters.clone()).unwrap_or_default()
    }
}

impl ProvenanceEntry {
    /// What this entry says about the component that acted.
    pub fn component(&self) -> ComponentFacts {
        ComponentFacts::of(&self.parameters)
    }
}

/// How a pipeline run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// The plugin's table was stored.
    Succeeded,
    /// The plugin failed, or its table could not be stored.
    Failed,
    /// An entry written in a form this version does not read.
    #[serde(other)]
    Unknown,
}

/// What a `collection` entry says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CollectionStatus {
    /// A new raw dataset holds the bytes.
    Succeeded,
    /// The bytes equal the newest earlier version's; nothing new was stored.
    Unchanged,
    /// Nothing was stored.
    Failed,
}

/// A failure as an entry records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordedError {
    /// A stable code (`timeout`, `invalid_input`, `not_stored`, ...).
    pub code: String,
    /// What a person needs to know.
    pub message: String,
}

/// A file as an entry names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileFacts {
    /// Name inside its dataset.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// What every plugin invocation's entry says about the invocation: the component, its parameters,
/// the limits granted and what it used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InvocationRecord {
    /// The plugin's name.
    pub plugin: Option<String>,
    /// Its version.
    pub plugin_version: Option<String>,
    /// SHA-256 of the component that ran.
    pub component_sha256: Option<String>,
    /// The interface version it was built against.
    pub wit_version: Option<String>,
    /// Parser, step or connector.
    pub kind: Option<crate::plugins::Kind>,
    /// The parameters it was given.
    pub params: serde_json::Value,
    /// The file a parser read.
    pub input_file: Option<String>,
    /// Where its output goes.
    pub target_layer: Layer,
    /// Limits granted.
    pub limits: serde_json::Value,
    /// What it used.
    pub usage: serde_json::Value,
}

impl InvocationRecord {
    /// The record of `inv`, given its parameters as JSON (see [`params_json`]).
    pub fn of<T>(
        inv: &crate::plugins::Invocation<T>,
        params: serde_json::Value,
        input_file: Option<&str>,
        target_layer: Layer,
    ) -> Self {
        let m = inv.manifest.as_ref();
        Self {
            plugin: m.map(|m| m.name.clone()),
            plugin_version: m.map(|m| m.version.clone()),
            component_sha256: m.map(|m| m.sha256.clone()),
            wit_version: m.map(|m| m.wit_version.clone()),
            kind: m.map(|m| m.kind),
            params,
            input_file: input_file.map(str::to_owned),
            target_layer,
            limits: serde_json::to_value(&inv.limits).unwrap_or_default(),
            usage: serde_json::to_value(&inv.usage).unwrap_or_default(),
        }
    }
}

/// Plugin parameters as an entry records them: each value parsed as JSON where it is JSON, else
/// kept as a string.
pub fn params_json(params: &[(String, String)]) -> serde_json::Value {
    params
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone())),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A `pipeline` entry: one invocation of a parser or step and what became of its table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRecord {
    /// The invocation.
    #[serde(flatten)]
    pub invocation: InvocationRecord,
    /// How it ended.
    pub status: RunStatus,
    /// Rows of the stored table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Columns of the stored table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<usize>,
    /// The stored table's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_file: Option<FileFacts>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RecordedError>,
    /// A saved merge: the cache key it was saved from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    /// A saved merge: the merge asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<serde_json::Value>,
}

impl PipelineRecord {
    /// A run that stored a table of `rows` x `columns` in `output_file`.
    pub fn succeeded(
        invocation: InvocationRecord,
        rows: u64,
        columns: usize,
        output_file: FileFacts,
    ) -> Self {
        Self {
            invocation,
            status: RunStatus::Succeeded,
            rows: Some(rows),
            columns: Some(columns),
            output_file: Some(output_file),
            error: None,
            cache_key: None,
            merge: None,
        }
    }

    /// A run that failed with `code` and `message`.
    pub fn failed(invocation: InvocationRecord, code: &str, message: String) -> Self {
        Self {
            invocation,
            status: RunStatus::Failed,
            rows: None,
            columns: None,
            output_file: None,
            error: Some(RecordedError {
                code: code.to_owned(),
                message,
            }),
            cache_key: None,
            merge: None,
        }
    }
}

/// The version a collected dataset follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousVersion {
    /// Its dataset.
    pub dataset_id: DatasetId,
    /// Its version number.
    pub version: u32,
}

/// A `collection` entry: one connector run, whatever came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionRecord {
    /// The connector's invocation.
    #[serde(flatten)]
    pub invocation: InvocationRecord,
    /// What the catalog calls the collected data.
    pub external_id: String,
    /// The configured source, when it came from one.
    pub source: Option<String>,
    /// Every request the connector made, refused ones included.
    pub requests: serde_json::Value,
    /// What happened.
    pub status: CollectionStatus,
    /// Fingerprint of the (name, SHA-256) pairs collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
    /// Unchanged: the dataset that already holds these bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<String>,
    /// The new dataset's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// The version the new dataset follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<PreviousVersion>,
    /// Why nothing was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RecordedError>,
}

impl CollectionRecord {
    /// The same record, ended in failure with `code` and `message`.
    pub fn failed(mut self, code: &str, message: String) -> Self {
        self.status = CollectionStatus::Failed;
        self.error = Some(RecordedError {
            code: code.to_owned(),
            message,
        });
        self
    }
}

/// An upload as its `registration` entry names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadFacts {
    /// The name the client gave.
    pub filename: String,
    /// The name it is stored under.
    pub stored_as: String,
    /// Its version among uploads of that name.
    pub version: u32,
}

/// A `registration` entry: what was registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RegistrationRecord {
    /// A file uploaded through `/files`.
    Upload {
        /// The upload.
        upload: UploadFacts,
        /// Its bytes.
        files: Vec<FileFacts>,
    },
    /// Objects registered where they are (or an empty dataset).
    Objects {
        /// The path the caller named, if any.
        object_path: Option<String>,
        /// The objects found.
        files: Vec<FileFacts>,
    },
    /// One file streamed into a dataset.
    File {
        /// Its name.
        file: String,
        /// SHA-256, hex.
        sha256: String,
        /// Bytes.
        size: u64,
    },
}

/// One of the lake's own runs as an OpenLineage event tells it: see
/// [`NewProvenance::run_summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The job's name: `pipeline.csv`, `collection.geo`, `promotion.curated`.
    pub job: String,
    /// Whether the run failed.
    pub failed: bool,
    /// Why, when it failed.
    pub error: Option<String>,
    /// The component that ran, by SHA-256.
    pub component_sha256: Option<String>,
}

/// An `external` entry: an engine's run, from its OpenLineage event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalRunRecord {
    /// `COMPLETE`, `FAIL` or `ABORT`.
    pub event_type: String,
    /// When the run ended, as the event says.
    pub event_time: DateTime<Utc>,
    /// The run's id at its engine.
    pub run_id: String,
    /// The job's namespace (the engine or scheduler).
    pub job_namespace: String,
    /// The job's name.
    pub job_name: String,
    /// What produced the event.
    pub producer: String,
    /// The OpenLineage spec the event follows.
    pub schema_url: String,
    /// The run's facets, as sent.
    pub run_facets: serde_json::Value,
    /// The job's facets, as sent.
    pub job_facets: serde_json::Value,
    /// Datasets the event named that the lake does not hold.
    pub unmatched: serde_json::Value,
}

/// A `promotion` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionRecord {
    /// The source's layer.
    pub from_layer: Layer,
    /// The target's layer.
    pub to_layer: Layer,
    /// Files copied.
    pub files: usize,
}

/// A `repair` entry: what `lake fsck` found and what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairRecord {
    /// The problem, as `lake fsck` names it (`uncataloged_object`, `stale_claim`, ...).
    pub problem: String,
    /// The object's bucket, where the problem is an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The object's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What was found.
    pub found: String,
    /// What was done.
    pub done: String,
}

/// A `deletion` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionRecord {
    /// The deleted dataset's layer.
    pub layer: Layer,
    /// Its files, removed from the store.
    pub files: usize,
}

/// A `restore` entry.
#[derive(Debug, Clone, Serialize)]
struct RestoreRecord {
    from: String,
    report: crate::backup::RestoreReport,
}

/// Which way to walk lineage from a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Datasets this one was derived from.
    Ancestors,
    /// Datasets derived from this one.
    Descendants,
    /// Both.
    #[default]
    Both,
}

/// A dataset in a lineage graph.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LineageNode {
    /// Dataset id.
    #[schema(value_type = String, format = Uuid)]
    pub id: DatasetId,
    /// Dataset name.
    pub name: String,
    /// Source.
    pub source: String,
    /// Layer.
    pub layer: Layer,
    /// Status (`ready`, `deleted`, ...).
    pub status: String,
    /// Steps from the root: negative for ancestors, positive for descendants, 0 for the root.
    pub distance: i64,
    /// A placeholder for a dataset the caller may not see: its layer only, an id that names
    /// nothing, no name, source or status.
    pub restricted: bool,
}

/// An edge from an input dataset to an output dataset of one provenance entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
pub struct LineageEdge {
    /// Input dataset.
    #[schema(value_type = String, format = Uuid)]
    pub from: DatasetId,
    /// Output dataset.
    #[schema(value_type = String, format = Uuid)]
    pub to: DatasetId,
    /// The action that made the output.
    pub action: String,
    /// The provenance entry.
    #[schema(value_type = String, format = Uuid)]
    pub entry_id: uuid::Uuid,
}

/// Ancestors and descendants of one dataset.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LineageGraph {
    /// The dataset the walk started from.
    #[schema(value_type = String, format = Uuid)]
    pub root: DatasetId,
    /// Maximum steps walked each way.
    pub depth: u32,
    /// Datasets reached, the root included.
    pub nodes: Vec<LineageNode>,
    /// Edges among them.
    pub edges: Vec<LineageEdge>,
    /// How many of the nodes are placeholders for datasets the caller may not see.
    pub hidden: usize,
}

impl LineageGraph {
    /// The graph as a caller who sees only what `sees` allows finds it: every other dataset becomes
    /// a placeholder (its layer, an id made up for this answer, no name, source or status), the
    /// edges follow the placeholders, and `hidden` counts them. The made-up ids are returned by
    /// the id they stand for, for [`restrict_entries`].
    pub fn restricted(
        mut self,
        sees: impl Fn(Layer) -> bool,
    ) -> (Self, std::collections::HashMap<DatasetId, DatasetId>) {
        let mut stand_in = std::collections::HashMap::new();
        for n in &mut self.nodes {
            if sees(n.layer) {
                continue;
            }
            let placeholder = DatasetId(uuid::Uuid::new_v4());
            stand_in.insert(n.id, placeholder);
            *n = LineageNode {
                id: placeholder,
                name: String::new(),
                source: String::new(),
                layer: n.layer,
                status: String::new(),
                distance: n.distance,
                restricted: true,
            };
        }
        for e in &mut self.edges {
            for end in [&mut e.from, &mut e.to] {
                if let Some(p) = stand_in.get(end) {
                    *end = *p;
                }
            }
        }
        self.edges.sort();
        self.hidden = stand_in.len();
        (self, stand_in)
    }
}

/// Entries as a caller who may not see the datasets in `stand_in` finds them: an entry about
/// hidden datasets only is left out; the others name the placeholders instead.
pub fn restrict_entries(
    entries: Vec<ProvenanceEntry>,
    stand_in: &std::collections::HashMap<DatasetId, DatasetId>,
) -> Vec<ProvenanceEntry> {
    if stand_in.is_empty() {
        return entries;
    }
    entries
        .into_iter()
        .filter(|e| {
            e.inputs
                .iter()
                .chain(&e.outputs)
                .any(|d| !stand_in.contains_key(d))
        })
        .map(|mut e| {
            for d in e.inputs.iter_mut().chain(e.outputs.iter_mut()) {
                if let Some(p) = stand_in.get(d) {
                    *d = *p;
                }
            }
            e
        })
        .collect()
}

/// Renders a lineage graph and its entries as W3C PROV-JSON (<https://www.w3.org/submissions/prov-json/>).
///
/// Datasets are `entity`s, provenance entries are `activity`s, and each edge becomes `used`,
/// `wasGeneratedBy` and `wasDerivedFrom` records. The people and software that acted are
/// `agent`s: the user a `prov:Person`, the token (or sign-in session) they acted through a
/// `prov:SoftwareAgent` that `actedOnBehalfOf` the user, and a plugin a `prov:SoftwareAgent`
/// named by its component's SHA-256; `wasAssociatedWith` links each activity to them. A
/// placeholder for a dataset the caller may not see is an entity with its layer only.
pub fn to_prov_json(graph: &LineageGraph, entries: &[ProvenanceEntry]) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let qname = |q: &str| json!({"$": q, "type": "prov:QUALIFIED_NAME"});
    let mut entity = Map::new();
    for n in &graph.nodes {
        let mut attrs = if n.restricted {
            json!({
                "prov:type": qname("lake:Dataset"),
                "lake:layer": n.layer,
                "lake:restricted": true,
            })
        } else {
            json!({
                "prov:label": n.name,
                "prov:type": qname("lake:Dataset"),
                "lake:layer": n.layer,
                "lake:source": n.source,
                "lake:status": n.status,
            })
        };
        if n.id == graph.root
            && let Some(a) = attrs.as_object_mut()
        {
            a.insert("lake:hiddenDatasets".into(), json!(graph.hidden));
        }
        entity.insert(format!("lake:dataset/{}", n.id), attrs);
    }
    let mut activity = Map::new();
    let mut agent = Map::new();
    let mut associated = BTreeMap::new();
    let mut delegated = BTreeMap::new();
    for e in entries {
        let act = format!("lake:activity/{}", e.id);
        let mut attrs = json!({
            "prov:type": qname(&format!("lake:{}", e.action)),
            "prov:startTime": e.created_at.to_rfc3339(),
            "prov:endTime": e.created_at.to_rfc3339(),
            "lake:parameters": e.parameters.to_string(),
            "lake:notes": e.notes.clone().unwrap_or_default(),
        });
        if let (Some(r), Some(a)) = (&e.reason, attrs.as_object_mut()) {
            a.insert("lake:reason".into(), json!(r));
        }
        activity.insert(act.clone(), attrs);
        let mut associate = |who: String| {
            associated.insert(
                format!("_:a{}_{}", e.id, associated.len()),
                json!({"prov:activity": act, "prov:agent": who}),
            );
        };
        let user = e.actor.as_deref().map(|u| {
            let id = format!("lake:user/{}", qname_part(u));
            agent.insert(
                id.clone(),
                json!({"prov:type": qname("prov:Person"), "prov:label": u}),
            );
            id
        });
        if let Some(u) = &user {
            associate(u.clone());
        }
        if let Some(t) = e.actor_token.as_deref() {
            let id = format!("lake:token/{}", qname_part(t));
            agent.insert(
                id.clone(),
                json!({"prov:type": qname("prov:SoftwareAgent"), "prov:label": t}),
            );
            associate(id.clone());
            if let Some(u) = &user {
                delegated.insert(
                    format!("_:d{}", e.id),
                    json!({"prov:delegate": id, "prov:responsible": u, "prov:activity": act}),
                );
            }
        }
        if let Some(sha) = e.run_facts().and_then(|f| {
            f.component_sha256
                .map(|sha| (sha, f.plugin.unwrap_or_default()))
        }) {
            let id = format!("lake:component/{}", qname_part(&sha.0));
            agent.insert(
                id.clone(),
                json!({
                    "prov:type": qname("prov:SoftwareAgent"),
                    "prov:label": sha.1,
                    "lake:sha256": sha.0,
                }),
            );
            associate(id);
        }
    }
    let mut used = BTreeMap::new();
    let mut generated = BTreeMap::new();
    let mut derived = BTreeMap::new();
    for (i, edge) in graph.edges.iter().enumerate() {
        let act = format!("lake:activity/{}", edge.entry_id);
        let from = format!("lake:dataset/{}", edge.from);
        let to = format!("lake:dataset/{}", edge.to);
        used.insert(
            format!("_:u{}_{}", edge.entry_id, edge.from),
            json!({"prov:activity": act, "prov:entity": from}),
        );
        generated.insert(
            format!("_:g{}_{}", edge.entry_id, edge.to),
            json!({"prov:entity": to, "prov:activity": act}),
        );
        derived.insert(
            format!("_:d{i}"),
            json!({"prov:generatedEntity": to, "prov:usedEntity": from, "prov:activity": act}),
        );
    }
    let to_map = |m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect());
    json!({
        "prefix": {"lake": "https://lake.example/ns#", "prov": "http://www.w3.org/ns/prov#"},
        "entity": Value::Object(entity),
        "activity": Value::Object(activity),
        "agent": Value::Object(agent),
        "used": to_map(used),
        "wasGeneratedBy": to_map(generated),
        "wasDerivedFrom": to_map(derived),
        "wasAssociatedWith": to_map(associated),
        "actedOnBehalfOf": to_map(delegated),
    })
}

/// `s` made safe as the local part of a qualified name: letters, digits, `-`, `.` and `_` kept,
/// anything else percent-encoded.
fn qname_part(s: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_');
    percent_encoding::utf8_percent_encode(s, KEEP).to_string()
}
