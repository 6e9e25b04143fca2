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
//! the lake's own events say it), by its Iceberg identifier (`processed.samples`: the table's
//! current version), or by where it is stored: a storage namespace (`s3://bucket`, `file`) and a
//! path under the dataset's prefix (the lake's prefixes hold the dataset's id). An output the
//! lake does not hold yet, but whose objects the engine wrote into a layer's bucket, is
//! registered there as a new dataset (as `POST /catalog` with `object_path` would), so the run's
//! result enters the catalog with its lineage. Datasets the lake does not hold are listed back
//! as unmatched, and kept in the entry's record.
//!
//! Engines retry: an event whose run id and type were recorded already returns that entry and
//! records nothing more.
//!
//! OpenLineage out: with `[lineage] openlineage_url` set, every pipeline run, collection and
//! promotion the lake records is sent there as a RunEvent (COMPLETE or FAIL; run id = the
//! provenance entry's place in time, job `pipeline.csv`, `collection.geo`, `promotion.curated`
//! in the configured namespace, datasets named by their lake id as the lake's own events name
//! them), from a task of its own with a few retries: a lineage server that is down delays or
//! loses an event, never a run.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::{Dataset, DatasetId};
use crate::lake::{LakeError, RegisterRequest};
use crate::layers::Layer;
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
    /// Whether this run's end was recorded by an earlier event (a retry): the entry is that one.
    pub repeated: bool,
    /// The `external` provenance entry, when recorded.
    #[schema(value_type = Option<String>)]
    pub entry_id: Option<uuid::Uuid>,
    /// The lake datasets the event's inputs name.
    #[schema(value_type = Vec<String>)]
    pub inputs: Vec<DatasetId>,
    /// The lake datasets its outputs name.
    #[schema(value_type = Vec<String>)]
    pub outputs: Vec<DatasetId>,
    /// Outputs registered as new datasets from the objects the engine wrote into the store.
    #[schema(value_type = Vec<String>)]
    pub registered: Vec<DatasetId>,
    /// Datasets it names that the lake does not hold (or the caller may not see).
    pub unmatched: Vec<EventDataset>,
    /// Why nothing was recorded, when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

const TYPES: [&str; 6] = ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"];

/// The OpenLineage spec the lake's events follow.
const RUN_EVENT_SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";

/// What produces the lake's events.
const PRODUCER: &str = concat!("urn:lake:lake-host:", env!("CARGO_PKG_VERSION"));

/// The RunEvent that tells an OpenLineage server of one of the lake's own runs, recorded as
/// `entry` at `at`; `None` for entries that are not runs (registrations, deletions, ...).
pub fn run_event(
    entry: &NewProvenance,
    run_id: uuid::Uuid,
    at: chrono::DateTime<chrono::Utc>,
    namespace: &str,
) -> Option<Value> {
    let summary = entry.run_summary()?;
    let kind = summary
        .job
        .split('.')
        .next()
        .unwrap_or("run")
        .to_ascii_uppercase();
    let mut run_facets = serde_json::Map::new();
    if let Some(message) = &summary.error {
        run_facets.insert(
            "errorMessage".into(),
            serde_json::json!({
                "_producer": PRODUCER,
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
                "message": message,
                "programmingLanguage": "WebAssembly",
            }),
        );
    }
    // Shaped as the official client shapes them (empty facet maps included).
    let datasets = |ids: &[DatasetId], own: &str| -> Vec<Value> {
        ids.iter()
            .map(|id| {
                let mut d = serde_json::json!({
                    "namespace": namespace, "name": id.to_string(), "facets": {},
                });
                d[own] = serde_json::json!({});
                d
            })
            .collect()
    };
    let mut job_facets = serde_json::json!({
        "jobType": {
            "_producer": PRODUCER,
            "_schemaURL": "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
            "processingType": "BATCH",
            "integration": "LAKE",
            "jobType": kind,
        }
    });
    if let Some(sha) = &summary.component_sha256 {
        job_facets["documentation"] = serde_json::json!({
            "_producer": PRODUCER,
            "_schemaURL": "https://openlineage.io/spec/facets/1-1-0/DocumentationJobFacet.json#/$defs/DocumentationJobFacet",
            "description": format!("WebAssembly component sha256:{sha}"),
        });
    }
    Some(serde_json::json!({
        "eventType": if summary.failed { "FAIL" } else { "COMPLETE" },
        "eventTime": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "producer": PRODUCER,
        "schemaURL": RUN_EVENT_SCHEMA,
        "run": {"runId": run_id.to_string(), "facets": run_facets},
        "job": {"namespace": namespace, "name": summary.job, "facets": job_facets},
        "inputs": datasets(&entry.inputs, "inputFacets"),
        "outputs": datasets(&entry.outputs, "outputFacets"),
    }))
}

/// The one client that sends events (built on first use).
fn sender() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default()
    })
}

impl OpenLineage<'_> {
    /// Sends the runs among `entries` (just recorded) to `[lineage] openlineage_url`, if set,
    /// from a task of its own: the caller never waits and never fails for it.
    pub fn emit(&self, entries: &[NewProvenance]) {
        let Some(url) = self.settings().lineage.openlineage_url.clone() else {
            return;
        };
        let url = if url.trim_end_matches('/').ends_with("/api/v1/lineage") {
            url
        } else {
            format!("{}/api/v1/lineage", url.trim_end_matches('/'))
        };
        let namespace = &self.settings().lineage.namespace;
        let events: Vec<Value> = entries
            .iter()
            .filter_map(|e| run_event(e, uuid::Uuid::now_v7(), chrono::Utc::now(), namespace))
            .collect();
        if events.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for event in events {
                let mut delay = std::time::Duration::from_millis(200);
                for attempt in 1..=4 {
                    match sender().post(&url).json(&event).send().await {
                        Ok(r) if r.status().is_success() => break,
                        Ok(r) if r.status().is_client_error() => {
                            tracing::warn!(url = %url, status = %r.status(), "OpenLineage server refused an event");
                            break;
                        }
                        outcome => {
                            let why = match outcome {
                                Ok(r) => r.status().to_string(),
                                Err(e) => e.to_string(),
                            };
                            if attempt == 4 {
                                tracing::warn!(url = %url, error = %why, "OpenLineage event not sent");
                            } else {
                                tokio::time::sleep(delay).await;
                                delay *= 4;
                            }
                        }
                    }
                }
            }
        });
    }

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
        let mut outputs = resolve(&event.outputs).await?;
        let ends = matches!(event.event_type.as_str(), "COMPLETE" | "FAIL" | "ABORT");
        let earlier = if ends {
            self.recorded_earlier(event, &inputs, &outputs).await?
        } else {
            None
        };
        if let Some(earlier) = earlier {
            return Ok(Received {
                recorded: true,
                repeated: true,
                entry_id: Some(earlier.id),
                inputs: earlier.inputs,
                outputs: earlier.outputs,
                registered: Vec::new(),
                unmatched,
                note: Some(format!(
                    "run {} was recorded as {} already (entry {}); nothing more was recorded",
                    event.run.run_id, event.event_type, earlier.id
                )),
            });
        }
        // A completed run's outputs that the engine wrote into the lake's store join the catalog.
        let mut registered = Vec::new();
        if event.event_type == "COMPLETE" {
            let mut still = Vec::new();
            for d in unmatched.drain(..) {
                let found = if event.outputs.contains(&d) {
                    self.register_output(&d, &event.job).await?
                } else {
                    None
                };
                match found {
                    Some(found) => {
                        outputs.push(found.id);
                        registered.push(found.id);
                    }
                    None => still.push(d),
                }
            }
            unmatched = still;
        }
        if !ends {
            return Ok(Received {
                recorded: false,
                repeated: false,
                entry_id: None,
                inputs,
                outputs,
                registered,
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
            repeated: false,
            entry_id: Some(entry.id),
            inputs,
            outputs,
            registered,
            unmatched,
            note: None,
        })
    }

    /// The `external` entry recorded for this run and event type already, if any: looked up
    /// among the entries of the datasets it names, or the newest external entries when it
    /// names none.
    async fn recorded_earlier(
        &self,
        event: &RunEvent,
        inputs: &[DatasetId],
        outputs: &[DatasetId],
    ) -> Result<Option<crate::provenance::ProvenanceEntry>, LakeError> {
        let named: Vec<DatasetId> = inputs.iter().chain(outputs).copied().collect();
        let entries = if named.is_empty() {
            self.catalog
                .entries_by_action(crate::provenance::Action::External, 1000)
                .await?
        } else {
            self.catalog.provenance_of(&named[..1]).await?
        };
        Ok(entries.into_iter().find(|e| {
            e.external_record()
                .is_some_and(|r| r.run_id == event.run.run_id && r.event_type == event.event_type)
        }))
    }

    /// Registers an output the engine wrote into a layer's bucket (`s3://bucket/key`, or a
    /// `file` path inside the local store): the object, or every object under the key, becomes
    /// a dataset of that layer. `None` when the output is not in the store or nothing is there.
    async fn register_output(
        &self,
        d: &EventDataset,
        job: &EventJob,
    ) -> Result<Option<Dataset>, LakeError> {
        let uri = if d.namespace.contains("://") {
            format!(
                "{}/{}",
                d.namespace.trim_end_matches('/'),
                d.name.trim_start_matches('/')
            )
        } else if d.namespace == "file" {
            format!("file://{}", d.name)
        } else {
            return Ok(None);
        };
        for layer in Layer::ALL {
            let base = self.blobs().uri(self.bucket(layer), "");
            let Some(key) = uri.strip_prefix(&base) else {
                continue;
            };
            let key = key.trim_matches('/');
            let Some(name) = key.rsplit('/').next().filter(|n| !n.is_empty()) else {
                return Ok(None);
            };
            let source: String = job
                .namespace
                .chars()
                .map(|c| if c == '/' { '_' } else { c })
                .take(128)
                .collect();
            let request = RegisterRequest {
                name: name.to_owned(),
                source,
                external_id: None,
                layer,
                bucket: None,
                object_path: Some(key.to_owned()),
                prefix: None,
                metadata: serde_json::json!({"registered_from": "openlineage", "job": job.name}),
                tags: vec![],
                action: None,
            };
            return match self.register(request).await {
                Ok(found) => Ok(Some(found)),
                // Registered before (an earlier event of the run): it is that dataset.
                Err(LakeError::Conflict(_)) => {
                    let bucket = self.bucket(layer);
                    let dir = key.rsplit_once('/').map_or("", |(d, _)| d);
                    for prefix in [format!("{key}/"), format!("{dir}/")] {
                        if let Some(d) = self.catalog.dataset_at(bucket, &prefix).await? {
                            return Ok(Some(d));
                        }
                    }
                    Ok(None)
                }
                // Nothing there, or not a flat prefix: it stays unmatched, and says so.
                Err(LakeError::Invalid(m)) => {
                    tracing::info!(output = %uri, reason = %m, "OpenLineage output not registered");
                    Ok(None)
                }
                Err(e) => Err(e),
            };
        }
        Ok(None)
    }

    /// The ready lake dataset an event's dataset names, if any.
    async fn dataset_named(&self, d: &EventDataset) -> Result<Option<Dataset>, LakeError> {
        // By id: the name is the dataset's id.
        if let Ok(id) = d.name.trim().parse::<DatasetId>() {
            return self.ready(id).await;
        }
        // By Iceberg identifier: `layer.table`, the table's current version.
        if let Some((ns, table)) = d.name.trim().split_once('.')
            && let Ok(layer) = ns.parse::<Layer>()
            && layer.as_str() == ns
            && let Some(found) = self.iceberg().current(layer, table).await?
        {
            return Ok(Some(found));
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
