//! Provenance: the append-only record of every action, and lineage built from it.
//!
//! An entry names an action, its input and output datasets, its parameters and when it happened.
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
            other => return Err(format!("unknown provenance action {other:?}")),
        })
    }
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
    /// Who or what did it, when known.
    pub actor: Option<String>,
}

impl NewProvenance {
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
    /// Who or what did it.
    pub actor: Option<String>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
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
}

/// Renders a lineage graph and its entries as W3C PROV-JSON (<https://www.w3.org/submissions/prov-json/>).
///
/// Datasets are `entity`s, provenance entries are `activity`s, and each edge becomes `used`,
/// `wasGeneratedBy` and `wasDerivedFrom` records.
pub fn to_prov_json(graph: &LineageGraph, entries: &[ProvenanceEntry]) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let mut entity = Map::new();
    for n in &graph.nodes {
        entity.insert(
            format!("lake:dataset/{}", n.id),
            json!({
                "prov:label": n.name,
                "prov:type": {"$": "lake:Dataset", "type": "prov:QUALIFIED_NAME"},
                "lake:layer": n.layer,
                "lake:source": n.source,
                "lake:status": n.status,
            }),
        );
    }
    let mut activity = Map::new();
    for e in entries {
        activity.insert(
            format!("lake:activity/{}", e.id),
            json!({
                "prov:type": format!("lake:{}", e.action),
                "prov:startTime": e.created_at.to_rfc3339(),
                "prov:endTime": e.created_at.to_rfc3339(),
                "lake:parameters": e.parameters.to_string(),
                "lake:notes": e.notes.clone().unwrap_or_default(),
            }),
        );
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
        "used": to_map(used),
        "wasGeneratedBy": to_map(generated),
        "wasDerivedFrom": to_map(derived),
    })
}

/// Plugin parameters as the JSON object provenance records: each value parsed as JSON where it
/// is JSON, else kept as a string.
pub(crate) fn params_json(params: &[(String, String)]) -> serde_json::Value {
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

/// What a `pipeline` provenance entry says about an invocation, before its outcome.
pub(crate) fn run_details<T>(
    inv: &crate::plugins::Invocation<T>,
    params: serde_json::Value,
    input_file: Option<&str>,
    target_layer: Layer,
) -> serde_json::Value {
    let m = inv.manifest.as_ref();
    serde_json::json!({
        "plugin": m.map(|m| m.name.clone()),
        "plugin_version": m.map(|m| m.version.clone()),
        "component_sha256": m.map(|m| m.sha256.clone()),
        "wit_version": m.map(|m| m.wit_version.clone()),
        "kind": m.map(|m| m.kind),
        "params": params,
        "input_file": input_file,
        "target_layer": target_layer,
        "limits": inv.limits,
        "usage": inv.usage,
    })
}
