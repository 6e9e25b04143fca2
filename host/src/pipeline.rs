//! Pipeline runs: one plugin invocation over cataloged datasets, its table stored as Parquet in a
//! new dataset, and a `pipeline` provenance entry for every invocation, successful or not.
//!
//! A parser reads one file of one input dataset (streamed from the store); a step reads the Parquet
//! tables of its input datasets. The entry names the plugin, its version, component SHA-256 and
//! interface version, the parameters, inputs and outputs, the limits granted and what was used, and
//! the error when there is one. Runs are those entries: `GET /pipelines/runs` reads them back.

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::catalog::{Dataset, DatasetId, DatasetStatus, FileRecord, NewDataset};
use crate::lake::LakeError;
use crate::layers::Layer;
use crate::plugins::{InvokeError, Kind, Table};
use crate::provenance::{
    Action, FileFacts, InvocationRecord, NewProvenance, PipelineRecord, ProvenanceEntry, RunStatus,
};

/// What to run.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Plugin name (`GET /plugins` lists them).
    pub plugin: String,
    /// Input dataset ids: one for a parser, one or more for a step.
    #[schema(value_type = Vec<String>)]
    pub inputs: Vec<DatasetId>,
    /// The plugin's parameters (a JSON object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// Layer of the output dataset (default `processed`).
    #[serde(default)]
    pub target_layer: Option<Layer>,
    /// For a parser: which file of the input dataset to read (default: its only file).
    #[serde(default)]
    pub file: Option<String>,
    /// Name of the output dataset (default: derived from the plugin and the first input).
    #[serde(default)]
    pub name: Option<String>,
}

/// A recorded run, as stored in its provenance entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Run {
    /// The run's id (its provenance entry).
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    /// `succeeded` or `failed`.
    pub status: RunStatus,
    /// Input datasets.
    #[schema(value_type = Vec<String>)]
    pub inputs: Vec<DatasetId>,
    /// The output dataset, when the run succeeded.
    #[schema(value_type = Option<String>)]
    pub output: Option<DatasetId>,
    /// Plugin, version, component SHA-256, interface version, parameters, limits, usage, rows, error.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// When it was recorded.
    pub created_at: chrono::DateTime<Utc>,
}

impl Run {
    /// Reads a run back from its provenance entry.
    pub fn from_entry(e: ProvenanceEntry) -> Run {
        Run {
            id: e.id,
            status: e.run_facts().map_or(RunStatus::Unknown, |r| r.status),
            inputs: e.inputs,
            output: e.outputs.first().copied(),
            details: e.parameters,
            created_at: e.created_at,
        }
    }
}

/// A failed run: the error and the id of the provenance entry that records it.
#[derive(Debug)]
pub struct RunFailure {
    /// What went wrong.
    pub error: InvokeError,
    /// The recorded run.
    pub run_id: uuid::Uuid,
}

/// The outcome of [`Pipelines::run`].
#[derive(Debug)]
pub enum RunOutcome {
    /// The run succeeded.
    Succeeded(Run),
    /// The plugin failed; the failure is recorded.
    Failed(RunFailure),
}

crate::lake::service! {
    /// The pipeline service: runs plugins over datasets and reads the runs back.
    Pipelines, pipelines
}

/// Inputs one run may name.
pub const MAX_INPUTS: usize = 16;

/// Bounds a run's inputs before anything is read: at most [`MAX_INPUTS`], and one dataset at most
/// twice (a table joined with itself). Each input is decoded as the plugin reads it, so one id
/// named sixty times was sixty decodes of one table held at once.
fn check_inputs(ids: &[DatasetId]) -> Result<(), LakeError> {
    if ids.len() > MAX_INPUTS {
        return Err(LakeError::Invalid(format!(
            "inputs: {} given, a run takes at most {MAX_INPUTS}",
            ids.len()
        )));
    }
    if let Some(id) = ids
        .iter()
        .find(|id| ids.iter().filter(|other| other == id).count() > 2)
    {
        return Err(LakeError::Invalid(format!(
            "inputs: dataset {id} is named more than twice; a run reads an input at most twice (a table joined with itself)"
        )));
    }
    Ok(())
}

/// The file name of a run's table in its dataset.
const TABLE_FILE: &str = "table.parquet";

/// What a run's plugin produced.
enum Produced {
    /// A step's table, whole in memory.
    Table(Table),
    /// A parser's table, already streamed into the object of the dataset `id` will name.
    Stored {
        id: DatasetId,
        stored: crate::tables::StoredTable,
    },
}

/// A plugin invocation watched for its caller going away. Dropping [`Pipelines::run`]'s future
/// stops the plugin at its next tick (see `Plugins::invoke`); this guard, still armed then,
/// appends the run's failed entry (code `cancelled`) from a task of its own, so every invocation
/// is recorded whether or not anyone waits for its end.
struct Abandoned {
    armed: Option<Watched>,
}

/// What the entry of an abandoned run says.
struct Watched {
    lake: crate::lake::Lake,
    actor: Option<crate::provenance::Actor>,
    invocation: crate::plugins::Invocation<()>,
    started: std::time::Instant,
    params: serde_json::Value,
    file: Option<String>,
    layer: Layer,
    inputs: Vec<DatasetId>,
}

impl Abandoned {
    /// The invocation returned: its own outcome is recorded, not this.
    fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        let Some(mut w) = self.armed.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        w.invocation.usage.wall = w.started.elapsed();
        let plugin = w
            .invocation
            .manifest
            .as_ref()
            .map_or_else(String::new, |m| m.name.clone());
        let record = InvocationRecord::of(&w.invocation, w.params, w.file.as_deref(), w.layer);
        runtime.spawn(crate::provenance::acting_as(w.actor, async move {
            let recorded = w
                .lake
                .pipelines()
                .record_failure(record, w.inputs, InvokeError::Cancelled, &plugin)
                .await;
            if let Err(e) = recorded {
                tracing::warn!(plugin, error = %e, "An abandoned run could not be recorded");
            }
        }));
    }
}

impl Pipelines<'_> {
    /// Runs a plugin over datasets. Errors in the request (unknown plugin or dataset, wrong input
    /// count) are `LakeError`s and record nothing; every invocation is recorded, failed or not.
    pub async fn run(&self, req: RunRequest) -> Result<RunOutcome, LakeError> {
        let plugins = self.running_plugins()?.clone();
        let manifest = plugins.manifest(&req.plugin).await.ok_or_else(|| {
            LakeError::NotFound(format!(
                "no plugin named {:?}; GET /plugins lists them",
                req.plugin
            ))
        })?;
        let params = crate::plugins::params_from_json(&req.params).map_err(LakeError::Invalid)?;
        check_inputs(&req.inputs)?;
        let mut inputs = Vec::with_capacity(req.inputs.len());
        for id in &req.inputs {
            inputs.push(self.get_dataset(*id).await?);
        }
        let target_layer = req.target_layer.unwrap_or(Layer::Processed);
        let input_ids: Vec<DatasetId> = inputs.iter().map(|d| d.id).collect();
        // From the plugin's start until its entry is written, a caller going away records the run.
        let watch = |file: Option<String>| Abandoned {
            armed: Some(Watched {
                lake: self.lake.clone(),
                actor: crate::provenance::current_actor(),
                invocation: crate::plugins::Invocation {
                    manifest: Some(manifest.clone()),
                    limits: plugins.limits_for(&manifest.name),
                    usage: crate::plugins::Usage::default(),
                    result: Err(InvokeError::Cancelled),
                },
                started: std::time::Instant::now(),
                params: req.params.clone(),
                file,
                layer: target_layer,
                inputs: input_ids.clone(),
            }),
        };

        let invocation = match manifest.kind {
            Kind::Parser => {
                let [input] = &inputs[..] else {
                    return Err(LakeError::Invalid(format!(
                        "the parser {} takes exactly one input dataset, not {}",
                        manifest.name,
                        inputs.len()
                    )));
                };
                let file = self.pick_file(input, req.file.as_deref()).await?;
                let from = format!("{}{}", input.prefix, file.name);
                // The table streams into its object as the parser returns it.
                let id = DatasetId::new();
                let bucket = self.bucket(target_layer).to_owned();
                let key = format!("{}/{id}/{TABLE_FILE}", input.source);
                let to = (bucket.as_str(), key.as_str());
                let from = (input.bucket.as_str(), from.as_str());
                let rows = self.files.row_group_rows;
                let watch = watch(Some(file.name.clone()));
                let (name, blobs) = (&manifest.name, self.blobs.as_ref());
                let parse = |params, split| {
                    crate::tables::parse_stored(
                        &plugins, blobs, name, params, from, to, rows, split,
                    )
                };
                let mut parsed = parse(params.clone(), true).await;
                if let Ok((inv, stored)) = &parsed
                    && crate::tables::parse_again_serially(inv, stored)
                {
                    parsed = parse(params, false).await;
                }
                watch.disarm();
                let (inv, stored) = parsed?;
                let result = match (inv.result, stored) {
                    (Ok(_), Some(stored)) => Ok(Produced::Stored { id, stored }),
                    (Ok(_), None) => Err(InvokeError::Output("the parser stored nothing".into())),
                    (Err(e), _) => Err(e),
                };
                let inv = crate::plugins::Invocation {
                    manifest: inv.manifest,
                    limits: inv.limits,
                    usage: inv.usage,
                    result,
                };
                (inv, Some(file.name))
            }
            Kind::Step => {
                if inputs.is_empty() {
                    return Err(LakeError::Invalid(format!(
                        "the step {} needs at least one input dataset",
                        manifest.name
                    )));
                }
                self.check_input_bytes(&inputs).await?;
                let mut tables = Vec::with_capacity(inputs.len());
                for d in &inputs {
                    tables.push(
                        crate::tables::read_dataset(self.catalog.as_ref(), self.blobs.as_ref(), d)
                            .await?,
                    );
                }
                let watch = watch(None);
                let inv = plugins.step(&manifest.name, params, tables).await;
                watch.disarm();
                let inv = crate::plugins::Invocation {
                    manifest: inv.manifest,
                    limits: inv.limits,
                    usage: inv.usage,
                    result: inv.result.map(Produced::Table),
                };
                (inv, None)
            }
            Kind::Connector => {
                return Err(LakeError::Invalid(format!(
                    "{} is a connector; collections run connectors",
                    manifest.name
                )));
            }
        };
        let (inv, file) = invocation;
        let invocation =
            InvocationRecord::of(&inv, req.params.clone(), file.as_deref(), target_layer);
        // The plugin has run: its table is stored and the run recorded even if the caller goes
        // away meanwhile.
        let lake = self.lake.clone();
        let record = crate::provenance::acting_as(crate::provenance::current_actor(), async move {
            lake.pipelines()
                .record_run(&req, &inputs, input_ids, target_layer, inv, invocation)
                .await
        });
        tokio::spawn(record).await.unwrap_or_else(|e| {
            Err(LakeError::Unavailable(format!(
                "recording the run failed: {e}"
            )))
        })
    }

    /// Stores a finished invocation's table and records the run, or records its failure.
    async fn record_run(
        &self,
        req: &RunRequest,
        inputs: &[Dataset],
        input_ids: Vec<DatasetId>,
        target_layer: Layer,
        inv: crate::plugins::Invocation<Produced>,
        invocation: InvocationRecord,
    ) -> Result<RunOutcome, LakeError> {
        let plugin = inv
            .manifest
            .as_ref()
            .map_or_else(|| req.plugin.clone(), |m| m.name.clone());
        match inv.result {
            Ok(produced) => {
                let written = self
                    .store_table(req, inputs, target_layer, produced, &plugin)
                    .await;
                match written {
                    Ok((dataset, file, written)) => {
                        let record = PipelineRecord::succeeded(
                            invocation,
                            written.rows,
                            written.schema.fields().len(),
                            FileFacts {
                                name: file.name.clone(),
                                size: file.size,
                                sha256: file.sha256.clone(),
                            },
                        );
                        let prov = NewProvenance::pipeline(input_ids, Some(dataset.id), &record);
                        let d = self
                            .catalog
                            .commit(
                                dataset.id,
                                std::slice::from_ref(&file),
                                DatasetStatus::Ready,
                                Some(&prov),
                            )
                            .await?;
                        self.openlineage().emit(std::slice::from_ref(&prov));
                        self.iceberg().publish(vec![d.id]);
                        let entry = self
                            .catalog
                            .provenance_of(&[d.id])
                            .await?
                            .into_iter()
                            .rev()
                            .find(|e| e.action == Action::Pipeline);
                        metrics::counter!("lake_pipeline_runs_total", "plugin" => plugin.clone(), "status" => "succeeded").increment(1);
                        entry
                            .map(|e| RunOutcome::Succeeded(Run::from_entry(e)))
                            .ok_or_else(|| {
                                LakeError::Unavailable("the run was not recorded".into())
                            })
                    }
                    Err(e) => {
                        let err = InvokeError::Output(e.to_string());
                        self.record_failure(invocation, input_ids, err, &plugin)
                            .await
                    }
                }
            }
            Err(err) => {
                self.record_failure(invocation, input_ids, err, &plugin)
                    .await
            }
        }
    }

    async fn record_failure(
        &self,
        invocation: InvocationRecord,
        inputs: Vec<DatasetId>,
        error: InvokeError,
        plugin: &str,
    ) -> Result<RunOutcome, LakeError> {
        let record = PipelineRecord::failed(invocation, error.code(), error.to_string());
        let prov = NewProvenance::pipeline(inputs, None, &record);
        let entry = self.catalog.append_provenance(&prov).await?;
        self.openlineage().emit(std::slice::from_ref(&prov));
        tracing::warn!(plugin, run = %entry.id, error = %error, "Pipeline run failed");
        metrics::counter!("lake_pipeline_runs_total", "plugin" => plugin.to_owned(), "status" => "failed").increment(1);
        Ok(RunOutcome::Failed(RunFailure {
            error,
            run_id: entry.id,
        }))
    }

    /// Refuses a step run whose inputs' Parquet comes to more than `plugins.max_step_input_bytes`
    /// before anything is read: each input is fetched and decoded as the step reads it, so the
    /// bytes named bound what the request holds.
    async fn check_input_bytes(&self, inputs: &[Dataset]) -> Result<(), LakeError> {
        let limit = self.settings.max_step_input_bytes;
        let mut total = 0u64;
        for d in inputs {
            total += self
                .catalog
                .list_files(d.id)
                .await?
                .iter()
                .filter(|f| f.name.ends_with(".parquet"))
                .map(|f| f.size)
                .sum::<u64>();
        }
        if total > limit {
            return Err(LakeError::Invalid(format!(
                "inputs: {total} bytes of Parquet, more than the {limit} one step run may read \
                 (plugins.max_step_input_bytes)"
            )));
        }
        Ok(())
    }

    async fn pick_file(&self, d: &Dataset, wanted: Option<&str>) -> Result<FileRecord, LakeError> {
        let files = self.catalog.list_files(d.id).await?;
        match wanted {
            Some(name) => files.into_iter().find(|f| f.name == name).ok_or_else(|| {
                LakeError::NotFound(format!("dataset {} has no file named {name:?}", d.id))
            }),
            None => {
                let n = files.len();
                let mut it = files.into_iter();
                match (it.next(), n) {
                    (Some(f), 1) => Ok(f),
                    (_, 0) => Err(LakeError::Invalid(format!(
                        "dataset {} has no files to parse",
                        d.id
                    ))),
                    _ => Err(LakeError::Invalid(format!(
                        "dataset {} has {n} files; name one with \"file\"",
                        d.id
                    ))),
                }
            }
        }
    }

    /// Catalogs a run's table as a new pending dataset, writing it first when a step returned it
    /// whole (a parser's is already stored); the caller commits it with provenance.
    async fn store_table(
        &self,
        req: &RunRequest,
        inputs: &[Dataset],
        layer: Layer,
        produced: Produced,
        plugin: &str,
    ) -> Result<(Dataset, FileRecord, crate::tables::Written), LakeError> {
        let first = inputs
            .first()
            .ok_or_else(|| LakeError::Invalid("no inputs".into()))?;
        let (id, stored, body) = match produced {
            Produced::Stored { id, stored } => (id, stored, None),
            Produced::Table(table) => {
                // Encoding and hashing a large table is seconds of CPU: off the async workers.
                let (buf, written, sha) = tokio::task::spawn_blocking(move || {
                    let (buf, written) = crate::tables::write_parquet(&table)?;
                    let sha = crate::blob::Sha256::of(&buf).to_hex();
                    Ok::<_, String>((buf, written, sha))
                })
                .await
                .map_err(|e| LakeError::Unavailable(format!("writing the output: {e}")))?
                .map_err(LakeError::Invalid)?;
                let stored = crate::tables::StoredTable {
                    written,
                    size: buf.len() as u64,
                    sha256: sha,
                };
                (DatasetId::new(), stored, Some(buf))
            }
        };
        let written = stored.written;
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| format!("{} ({plugin})", first.name));
        let mut metadata = serde_json::Map::new();
        metadata.insert("source".into(), first.source.clone().into());
        metadata.insert(
            "date".into(),
            Utc::now().format("%Y-%m-%d").to_string().into(),
        );
        metadata.insert("version".into(), "1".into());
        metadata.insert("rows".into(), written.rows.into());
        if !written.renamed.is_empty() {
            metadata.insert("renamed_columns".into(), serde_json::json!(written.renamed));
        }
        metadata.insert(
            "columns".into(),
            // A run's output records each column's name and type (`{"name", "type"}`), as every
            // recorded run since the first has; uploads' file records add `nullable`.
            crate::tables::columns_of(&written.schema)
                .into_iter()
                .map(|c| serde_json::json!({"name": c.name, "type": c.data_type}))
                .collect::<Vec<_>>()
                .into(),
        );
        let new = NewDataset {
            id,
            name,
            source: first.source.clone(),
            external_id: first.external_id.clone(),
            layer,
            bucket: self.bucket(layer).to_owned(),
            prefix: format!("{}/{}/", first.source, id),
            metadata: serde_json::Value::Object(metadata),
            tags: first.tags.clone(),
            status: DatasetStatus::Pending,
            promoted_from: None,
        };
        let key = format!("{}{TABLE_FILE}", new.prefix);
        let dataset = match self.catalog.insert_dataset(&new, &[], None).await {
            Ok(d) => d,
            Err(e) => {
                if body.is_none() {
                    // The parser's object: no row will name it.
                    let _ = self.blobs.delete(&new.bucket, &key).await;
                }
                return Err(e.into());
            }
        };
        let file = FileRecord {
            name: TABLE_FILE.into(),
            size: stored.size,
            sha256: stored.sha256,
            content_type: "application/vnd.apache.parquet".into(),
            created_at: Utc::now(),
        };
        if let Some(buf) = body {
            let body: crate::blob::ByteStream =
                Box::pin(futures::stream::once(
                    async move { Ok(bytes::Bytes::from(buf)) },
                ));
            if let Err(e) = self.blobs.put(&dataset.bucket, &key, body).await {
                let _ = self.catalog.set_status(id, DatasetStatus::Failed).await;
                return Err(e.into());
            }
        }
        Ok((dataset, file, written))
    }

    /// Recorded runs, newest first.
    pub async fn runs(&self, limit: u32) -> Result<Vec<Run>, LakeError> {
        Ok(self
            .catalog
            .entries_by_action(Action::Pipeline, limit)
            .await?
            .into_iter()
            .map(Run::from_entry)
            .collect())
    }

    /// One recorded run.
    pub async fn get(&self, id: uuid::Uuid) -> Result<Run, LakeError> {
        let e = self.catalog.entry(id).await?;
        if e.action != Action::Pipeline {
            return Err(LakeError::NotFound(format!("no pipeline run {id}")));
        }
        Ok(Run::from_entry(e))
    }
}
