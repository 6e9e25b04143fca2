//! RO-Crate: a dataset's history as research infrastructure reads it.
//!
//! [`crate_of`] describes a dataset, the datasets it was made from and the provenance entries that
//! made them as an RO-Crate 1.1 that conforms to the Process Run Crate profile (the base of the
//! Workflow Run Crate family): every dataset is a `Dataset` whose files are `File`s with their size,
//! media type and SHA-256, downloadable from the lake (web-based data entities); every entry is a
//! `CreateAction` whose `instrument` is the component that acted (a `SoftwareApplication` named by
//! its SHA-256), or the lake itself for what the lake does on its own (uploads, promotions), with
//! its `object`s (inputs), `result`s (outputs), `agent` (the person), time and status.
//! [`zip_of`] packs `ro-crate-metadata.json` as a zip, as crates travel.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::catalog::{Dataset, DatasetId, FileRecord};
use crate::provenance::{LineageGraph, ProvenanceEntry};

/// The profile the crate conforms to.
pub const PROCESS_RUN_CRATE: &str = "https://w3id.org/ro/wfrun/process/0.5";
/// The RO-Crate specification it follows.
pub const RO_CRATE: &str = "https://w3id.org/ro/crate/1.1";

/// What the crate describes: the dataset, the lineage behind it (as the caller may see it), its
/// entries, and the files of every dataset in it.
#[derive(Debug)]
pub struct CrateInput<'a> {
    /// The dataset the crate is about.
    pub root: &'a Dataset,
    /// Its ancestors' graph.
    pub graph: &'a LineageGraph,
    /// The entries that made the datasets in the graph.
    pub entries: &'a [ProvenanceEntry],
    /// Each visible dataset's files.
    pub files: &'a BTreeMap<DatasetId, Vec<FileRecord>>,
    /// The lake's address, so the files' ids are the URLs that download them.
    pub base_url: &'a str,
}

/// The crate's metadata document (`ro-crate-metadata.json`).
pub fn crate_of(c: &CrateInput<'_>) -> Value {
    let base = c.base_url.trim_end_matches('/');
    // A dataset is directory-like, so its id ends with a slash (the lake redirects it to its page).
    let dataset_id = |id: DatasetId| format!("{base}/ui/datasets/{id}/");
    let file_id = |id: DatasetId, f: &FileRecord| {
        format!(
            "{base}/catalog/{id}/download/{}",
            percent_encoding::utf8_percent_encode(&f.name, percent_encoding::NON_ALPHANUMERIC)
        )
    };
    let mut graph: Vec<Value> = Vec::new();
    let mut mentions = Vec::new();
    let mut parts = Vec::new();
    let mut people = BTreeMap::new();
    let mut tools = BTreeMap::new();

    // The datasets and their files.
    for n in &c.graph.nodes {
        if n.restricted {
            continue;
        }
        let files = c.files.get(&n.id).map(Vec::as_slice).unwrap_or_default();
        let file_refs: Vec<Value> = files
            .iter()
            .map(|f| json!({"@id": file_id(n.id, f)}))
            .collect();
        for f in files {
            graph.push(json!({
                "@id": file_id(n.id, f),
                "@type": "File",
                "name": f.name,
                "contentSize": f.size.to_string(),
                "encodingFormat": f.content_type,
                "sha256": f.sha256,
                "dateCreated": f.created_at.to_rfc3339(),
            }));
        }
        graph.push(json!({
            "@id": dataset_id(n.id),
            "@type": "Dataset",
            "name": n.name,
            "identifier": n.id.to_string(),
            "description": format!("{} dataset from {}, in the {} layer", n.status, n.source, n.layer),
            "hasPart": file_refs,
        }));
        parts.push(json!({"@id": dataset_id(n.id)}));
    }
    let visible = |id: &DatasetId| c.graph.nodes.iter().any(|n| n.id == *id && !n.restricted);

    // The actions that made them.
    for e in c.entries {
        let facts = e.component();
        let tool = match (&facts.plugin, &facts.component_sha256) {
            (Some(plugin), Some(sha)) => {
                let id = format!("#component-{sha}");
                tools.entry(id.clone()).or_insert_with(|| {
                    json!({
                        "@id": id,
                        "@type": "SoftwareApplication",
                        "name": plugin,
                        "softwareVersion": facts.plugin_version.clone().unwrap_or_default(),
                        "identifier": format!("sha256:{sha}"),
                        "description": "a WebAssembly component run in the lake's sandbox",
                    })
                });
                id
            }
            _ => {
                let id = "#lake".to_owned();
                tools.entry(id.clone()).or_insert_with(|| {
                    json!({
                        "@id": id,
                        "@type": "SoftwareApplication",
                        "name": "lake",
                        "softwareVersion": env!("CARGO_PKG_VERSION"),
                        "description": "the data lake itself (uploads, collections' bookkeeping, promotions)",
                    })
                });
                id
            }
        };
        let refs = |ids: &[DatasetId]| -> Vec<Value> {
            ids.iter()
                .filter(|id| visible(id))
                .map(|id| json!({"@id": dataset_id(*id)}))
                .collect()
        };
        let failed = facts.error.is_some()
            || e.run_facts()
                .is_some_and(|r| r.status == crate::provenance::RunStatus::Failed);
        let mut action = json!({
            "@id": format!("#action-{}", e.id),
            "@type": "CreateAction",
            "name": match &facts.plugin {
                Some(p) => format!("{} with {p}", e.action),
                None => e.action.to_string(),
            },
            "instrument": {"@id": tool},
            "object": refs(&e.inputs),
            "result": refs(&e.outputs),
            "startTime": e.created_at.to_rfc3339(),
            "endTime": e.created_at.to_rfc3339(),
            "actionStatus": if failed {
                "http://schema.org/FailedActionStatus"
            } else {
                "http://schema.org/CompletedActionStatus"
            },
        });
        if let Some(a) = action.as_object_mut() {
            if let Some(who) = &e.actor {
                let id = format!(
                    "#person-{}",
                    percent_encoding::utf8_percent_encode(who, percent_encoding::NON_ALPHANUMERIC)
                );
                people
                    .entry(id.clone())
                    .or_insert_with(|| json!({"@id": id, "@type": "Person", "name": who}));
                a.insert("agent".into(), json!({"@id": id}));
            }
            let note = [e.reason.as_deref(), e.notes.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            if !note.is_empty() {
                a.insert("description".into(), json!(note));
            }
            if let Some(err) = &facts.error {
                a.insert("error".into(), json!(err.message));
            }
        }
        mentions.push(json!({"@id": format!("#action-{}", e.id)}));
        graph.push(action);
    }
    graph.extend(tools.into_values());
    graph.extend(people.into_values());
    graph.push(json!({
        "@id": PROCESS_RUN_CRATE,
        "@type": "CreativeWork",
        "name": "Process Run Crate",
        "version": "0.5",
    }));
    let root = c.root;
    let mut head = vec![
        json!({
            "@id": "ro-crate-metadata.json",
            "@type": "CreativeWork",
            "conformsTo": {"@id": RO_CRATE},
            "about": {"@id": "./"},
        }),
        json!({
            "@id": "./",
            "@type": "Dataset",
            "name": format!("{} and how it was made", root.name),
            "description": format!(
                "The dataset {} ({}, {} layer) of the lake, the datasets it was made from and the runs that made them.",
                root.name, root.source, root.layer
            ),
            "identifier": root.id.to_string(),
            "datePublished": chrono::Utc::now().to_rfc3339(),
            "conformsTo": {"@id": PROCESS_RUN_CRATE},
            "mainEntity": {"@id": dataset_id(root.id)},
            "hasPart": parts,
            "mentions": mentions,
        }),
    ];
    head.extend(graph);
    json!({
        "@context": "https://w3id.org/ro/crate/1.1/context",
        "@graph": head,
    })
}

/// A zip holding one file, stored (not compressed): how a crate of metadata travels.
pub fn zip_of(name: &str, body: &[u8]) -> Vec<u8> {
    let crc = crc32fast::hash(body);
    let size = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let name_len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let name = &name.as_bytes()[..usize::from(name_len)];
    // 1980-01-01 00:00, the earliest time a zip can say.
    let (time, date): (u16, u16) = (0, 0x21);
    let mut out = Vec::with_capacity(body.len() + 2 * name.len() + 100);
    // What the local header and the central directory both say of the entry, from the version
    // needed to extract it to its name's length.
    let entry = |out: &mut Vec<u8>| {
        out.extend_from_slice(&20u16.to_le_bytes()); // version needed
        out.extend_from_slice(&0x0800u16.to_le_bytes()); // UTF-8 names
        out.extend_from_slice(&0u16.to_le_bytes()); // stored
        for field in [time, date] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        for field in [crc, size, size] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&name_len.to_le_bytes());
    };
    out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    entry(&mut out);
    out.extend_from_slice(&0u16.to_le_bytes()); // extra
    out.extend_from_slice(name);
    out.extend_from_slice(body);
    let central_at = u32::try_from(out.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    out.extend_from_slice(&20u16.to_le_bytes()); // made by
    entry(&mut out);
    out.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attributes
    out.extend_from_slice(&0u32.to_le_bytes()); // external attributes
    out.extend_from_slice(&0u32.to_le_bytes()); // where the local header is
    out.extend_from_slice(name);
    let central_len = u32::try_from(out.len()).unwrap_or(u32::MAX) - central_at;
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // disks
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&central_len.to_le_bytes());
    out.extend_from_slice(&central_at.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment
    out
}
