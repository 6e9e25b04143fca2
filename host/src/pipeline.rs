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
                let body = self
                    .blobs
                    .get(&input.bucket, &format!("{}{}", input.prefix, file.name))
                    .await?;
                let inv = plugins.parse(&manifest.name, params, body).await;
                (inv, Some(file.name))
            }
            Kind::Step => {
                if inputs.is_empty() {
                    return Err(LakeError::Invalid(format!(
                        "the step {} needs at least one input dataset",
                        manifest.name
                    )));
                }
                let mut tables = Vec::with_capacity(inputs.len());
                for d in &inputs {
                    tables.push(
                        crate::tables::read_dataset(self.catalog.as_ref(), self.blobs.as_ref(), d)
                            .await?,
                    );
                }
                (plugins.step(&manifest.name, params, tables).await, None)
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
        let input_ids: Vec<DatasetId> = inputs.iter().map(|d| d.id).collect();
        match inv.result {
            Ok(table) => {
                let written = self
                    .store_table(&req, &inputs, target_layer, &table, &manifest.name)
                    .await;
                match written {
                    Ok((dataset, file)) => {
                        let record = PipelineRecord::succeeded(
                            invocation,
                            table.num_rows() as u64,
                            table.schema.fields().len(),
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
                        metrics::counter!("lake_pipeline_runs_total", "plugin" => manifest.name.clone(), "status" => "succeeded").increment(1);
                        entry
                            .map(|e| RunOutcome::Succeeded(Run::from_entry(e)))
                            .ok_or_else(|| {
                                LakeError::Unavailable("the run was not recorded".into())
                            })
                    }
                    Err(e) => {
                        let err = InvokeError::Output(e.to_string());
                        self.record_failure(invocation, input_ids, err, &manifest.name)
                            .await
                    }
                }
            }
            Err(err) => {
                self.record_failure(invocation, input_ids, err, &manifest.name)
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

    /// Writes a table as Parquet into a new pending dataset; the caller commits it with provenance.
    async fn store_table(
        &self,
        req: &RunRequest,
        inputs: &[Dataset],
        layer: Layer,
        table: &Table,
        plugin: &str,
    ) -> Result<(Dataset, FileRecord), LakeError> {
        let first = inputs
            .first()
            .ok_or_else(|| LakeError::Invalid("no inputs".into()))?;
        let id = DatasetId::new();
        // Encoding and hashing a large table is seconds of CPU: off the async workers.
        let owned = table.clone();
        let (buf, written, sha) = tokio::task::spawn_blocking(move || {
            let (buf, written) = crate::tables::write_parquet(&owned)?;
            let sha = crate::blob::Sha256::of(&buf).to_hex();
            Ok::<_, String>((buf, written, sha))
        })
        .await
        .map_err(|e| LakeError::Unavailable(format!("writing the output: {e}")))?
        .map_err(LakeError::Invalid)?;
        let size = buf.len() as u64;
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
        metadata.insert("rows".into(), table.num_rows().into());
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
        let dataset = self.catalog.insert_dataset(&new, &[], None).await?;
        let file = FileRecord {
            name: "table.parquet".into(),
            size,
            sha256: sha,
            content_type: "application/vnd.apache.parquet".into(),
            created_at: Utc::now(),
        };
        let body: crate::blob::ByteStream =
            Box::pin(futures::stream::once(
                async move { Ok(bytes::Bytes::from(buf)) },
            ));
        if let Err(e) = self
            .blobs
            .put(
                &dataset.bucket,
                &format!("{}{}", dataset.prefix, file.name),
                body,
            )
            .await
        {
            let _ = self.catalog.set_status(id, DatasetStatus::Failed).await;
            return Err(e.into());
        }
        Ok((dataset, file))
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
