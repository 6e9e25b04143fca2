//! OpenLineage in: the runs of engines and schedulers outside the lake, in its lineage.
//!
//! `POST /api/v1/lineage` (the endpoint Marquez and every OpenLineage integration post to) takes a
//! RunEvent. START and RUNNING are acknowledged and recorded nowhere: the lineage is what a run
//! did, known when it ends. COMPLETE, FAIL and ABORT become one `external` provenance entry whose
//! inputs and outputs are the lake datasets the event names, so a Spark job that read two lake
//! tables and wrote a third appears between them in the lineage graph, with its job, run id,
//! producer and facets, and the person whose token posted it.
//!
//! A dataset in an event names a lake dataset by its id (any namespace, the id as the name, as
//! the lake's own events say it), or by where it is stored: a storage namespace (`s3://bucket`,
//! `file`) and a path under the dataset's prefix (the lake's prefixes hold the dataset's id).
//! Datasets the lake does not hold are listed back as unmatched, and kept in the entry's record.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::{Dataset, DatasetId};
use crate::lake::LakeError;
use crate::provenance::{ExternalRunRecord, NewProvenance};

crate::lake::service! {
    /// OpenLineage: engines' run events recorded as the lake's lineage.
    OpenLineage, openlineage
}

/// A dataset as an OpenLineage event names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventDataset {
    /// Where it lives: a lake, a storage scheme and bucket (`s3://lake-processed`), `file`.
    pub namespace: String,
    /// Its name there: a lake dataset id, or a path.
    pub name: String,
    /// Facets, kept as sent.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Object)]
    pub facets: Value,
}

/// The job of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventJob {
    /// The job's namespace (the scheduler or engine).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Facets, kept as sent.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Object)]
    pub facets: Value,
}

/// The run of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventRun {
    /// The run's id (a UUID).
    #[serde(rename = "runId")]
    pub run_id: String,
    /// Facets, kept as sent.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Object)]
    pub facets: Value,
}

/// An OpenLineage RunEvent (spec 2-0-x), the parts the lake reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunEvent {
    /// `START`, `RUNNING`, `COMPLETE`, `ABORT`, `FAIL` or `OTHER`.
    #[serde(rename = "eventType")]
    pub event_type: String,
    /// When it happened (RFC 3339).
    #[serde(rename = "eventTime")]
    pub event_time: String,
    /// The run.
    pub run: EventRun,
    /// The job.
    pub job: EventJob,
    /// Datasets read.
    #[serde(default)]
    pub inputs: Vec<EventDataset>,
    /// Datasets written.
    #[serde(default)]
    pub outputs: Vec<EventDataset>,
    /// What produced the event (a URI).
    pub producer: String,
    /// The spec it follows.
    #[serde(rename = "schemaURL", default)]
    pub schema_url: String,
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Received {
    /// Whether it was recorded in provenance (only a run's end is).
    pub recorded: bool,
    /// The `external` provenance entry, when recorded.
    #[schema(value_type = Option<String>)]
    pub entry_id: Option<uuid::Uuid>,
    /// The lake datasets the event's inputs name.
    #[schema(value_type = Vec<String>)]
    pub inputs: Vec<DatasetId>,
    /// The lake datasets its outputs name.
    #[schema(value_type = Vec<String>)]
    pub outputs: Vec<DatasetId>,
    /// Datasets it names that the lake does not hold (or the caller may not see).
    pub unmatched: Vec<EventDataset>,
    /// Why nothing was recorded, when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

const TYPES: [&str; 6] = ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"];

impl OpenLineage<'_> {
    /// Checks an event and, when it ends a run, records it as an `external` entry linking the
    /// lake datasets it names; `sees` says which datasets the caller may see (the others are
    /// unmatched, exactly as unknown ones).
    pub async fn receive(
        &self,
        event: &RunEvent,
        sees: impl Fn(&Dataset) -> bool,
    ) -> Result<Received, LakeError> {
        let invalid = |m: String| Err(LakeError::Invalid(m));
        if !TYPES.contains(&event.event_type.as_str()) {
            return invalid(format!(
                "eventType: {:?} is none of {}",
                event.event_type,
                TYPES.join(", ")
            ));
        }
        let time = chrono::DateTime::parse_from_rfc3339(&event.event_time).map_err(|e| {
            LakeError::Invalid(format!(
                "eventTime: {:?} is not an RFC 3339 time: {e}",
                event.event_time
            ))
        })?;
        if uuid::Uuid::parse_str(&event.run.run_id).is_err() {
            return invalid(format!("run.runId: {:?} is not a UUID", event.run.run_id));
        }
        for (what, v) in [
            ("job.namespace", &event.job.namespace),
            ("job.name", &event.job.name),
            ("producer", &event.producer),
        ] {
            if v.trim().is_empty() || v.len() > 1024 {
                return invalid(format!("{what}: must be 1 to 1024 bytes"));
            }
        }
        if event.inputs.len() + event.outputs.len() > 1000 {
            return invalid("inputs and outputs: at most 1000 datasets an event".into());
        }
        let mut unmatched = Vec::new();
        let mut resolve = async |list: &[EventDataset]| -> Result<Vec<DatasetId>, LakeError> {
            let mut ids = Vec::new();
            for d in list {
                match self.dataset_named(d).await? {
                    Some(found) if sees(&found) => {
                        if !ids.contains(&found.id) {
                            ids.push(found.id);
                        }
                    }
                    _ => unmatched.push(d.clone()),
                }
            }
            Ok(ids)
        };
        let inputs = resolve(&event.inputs).await?;
        let outputs = resolve(&event.outputs).await?;
        if !matches!(event.event_type.as_str(), "COMPLETE" | "FAIL" | "ABORT") {
            return Ok(Received {
                recorded: false,
                entry_id: None,
                inputs,
                outputs,
                unmatched,
                note: Some(format!(
                    "{} is acknowledged; a run's lineage is recorded when it ends (COMPLETE, FAIL or ABORT)",
                    event.event_type
                )),
            });
        }
        let record = ExternalRunRecord {
            event_type: event.event_type.clone(),
            event_time: time.with_timezone(&chrono::Utc),
            run_id: event.run.run_id.clone(),
            job_namespace: event.job.namespace.clone(),
            job_name: event.job.name.clone(),
            producer: event.producer.clone(),
            schema_url: event.schema_url.clone(),
            run_facets: event.run.facets.clone(),
            job_facets: event.job.facets.clone(),
            unmatched: serde_json::to_value(&unmatched).unwrap_or_default(),
        };
        let entry = self
            .catalog
            .append_provenance(&NewProvenance::external(
                inputs.clone(),
                outputs.clone(),
                &record,
            ))
            .await?;
        Ok(Received {
            recorded: true,
            entry_id: Some(entry.id),
            inputs,
            outputs,
            unmatched,
            note: None,
        })
    }

    /// The ready lake dataset an event's dataset names, if any.
    async fn dataset_named(&self, d: &EventDataset) -> Result<Option<Dataset>, LakeError> {
        // By id: the name is the dataset's id.
        if let Ok(id) = d.name.trim().parse::<DatasetId>() {
            return self.ready(id).await;
        }
        // By where it is stored: a path under a dataset's prefix, in its bucket.
        let (bucket, path) = match d.namespace.split_once("://") {
            Some((_, rest)) => {
                let (bucket, rest) = rest.split_once('/').unwrap_or((rest, ""));
                let path = if rest.is_empty() {
                    d.name.trim_start_matches('/').to_owned()
                } else {
                    format!("{}/{}", rest, d.name.trim_start_matches('/'))
                };
                (Some(bucket.to_owned()), path)
            }
            None => (None, d.name.clone()),
        };
        for segment in path.split('/') {
            let Ok(id) = segment.parse::<DatasetId>() else {
                continue;
            };
            let Some(found) = self.ready(id).await? else {
                continue;
            };
            let at = match &bucket {
                Some(b) => *b == found.bucket && path.starts_with(&found.prefix),
                // A local path: `<root>/<bucket>/<prefix>...`.
                None => path.contains(&format!("/{}/{}", found.bucket, found.prefix)),
            };
            if at {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    async fn ready(&self, id: DatasetId) -> Result<Option<Dataset>, LakeError> {
        match self.catalog.get_dataset(id).await {
            Ok(d) if d.status == crate::catalog::DatasetStatus::Ready => Ok(Some(d)),
            Ok(_) | Err(crate::catalog::CatalogError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
