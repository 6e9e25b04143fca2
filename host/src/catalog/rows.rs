//! Rows to the catalog's types and back, written once for both databases. An adapter reads a row
//! through [`Columns`] and binds parameters through [`Values`], each implemented over its driver's
//! own row and argument types; this module says which column holds what, and in which order a
//! statement of `catalog/sql.rs` takes its parameters. Adding a column means a migration per
//! database, the SQL text, and one line here.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{
    CatalogError, Dataset, DatasetId, DumpFile, FileRecord, GroupStats, Job, JobStatus, NewDataset,
    NewJob, WalkRow,
};
use crate::provenance::{LineageNode, NewProvenance, ProvenanceEntry};

/// A row read column by column, in the catalog's own types. Each adapter maps its database's
/// storage (UUID or text ids, JSONB or text JSON, arrays or JSON text tags) onto these.
pub(crate) trait Columns {
    /// A text column.
    fn text(&self, col: &str) -> Result<String, CatalogError>;
    /// A nullable text column.
    fn opt_text(&self, col: &str) -> Result<Option<String>, CatalogError>;
    /// An integer column.
    fn int(&self, col: &str) -> Result<i64, CatalogError>;
    /// An id column.
    fn id(&self, col: &str) -> Result<Uuid, CatalogError>;
    /// A nullable id column.
    fn opt_id(&self, col: &str) -> Result<Option<Uuid>, CatalogError>;
    /// A JSON column.
    fn json(&self, col: &str) -> Result<Value, CatalogError>;
    /// A nullable JSON column.
    fn opt_json(&self, col: &str) -> Result<Option<Value>, CatalogError>;
    /// A list of tags.
    fn tags(&self, col: &str) -> Result<Vec<String>, CatalogError>;
    /// A timestamp column.
    fn time(&self, col: &str) -> Result<DateTime<Utc>, CatalogError>;
    /// A nullable timestamp column.
    fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>, CatalogError>;
}

/// Statement parameters, appended in order (`$1`, `$2`, ...), in the catalog's own types.
pub(crate) trait Values {
    /// A text value.
    fn text(&mut self, v: &str);
    /// A nullable text value.
    fn opt_text(&mut self, v: Option<&str>);
    /// An integer.
    fn int(&mut self, v: i64);
    /// An id.
    fn id(&mut self, v: Uuid);
    /// A nullable id.
    fn opt_id(&mut self, v: Option<Uuid>);
    /// A JSON value.
    fn json(&mut self, v: &Value);
    /// A nullable JSON value.
    fn opt_json(&mut self, v: Option<&Value>);
    /// A list of tags.
    fn tags(&mut self, v: &[String]);
    /// A timestamp.
    fn time(&mut self, v: DateTime<Utc>);
}

/// A row that could not be read as what it should hold.
pub(crate) fn bad_row(e: impl std::fmt::Display) -> CatalogError {
    CatalogError::Unavailable(format!("unreadable catalog row: {e}"))
}

// Reading.

/// A dataset from the columns of `sql::DATASET_COLS`.
pub(crate) fn dataset(r: &impl Columns) -> Result<Dataset, CatalogError> {
    let bucket = r.text("bucket")?;
    let prefix = r.text("prefix")?;
    Ok(Dataset {
        id: DatasetId(r.id("id")?),
        name: r.text("name")?,
        source: r.text("source")?,
        external_id: r.opt_text("external_id")?,
        layer: r.text("layer")?.parse().map_err(bad_row)?,
        location: format!("{bucket}/{prefix}"),
        bucket,
        prefix,
        file_count: r.int("file_count")?,
        total_size: r.int("total_size")?,
        metadata: r.json("metadata")?,
        tags: r.tags("tags")?,
        status: r.text("status")?.parse().map_err(bad_row)?,
        promoted_from: r.opt_id("promoted_from")?.map(DatasetId),
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

/// A file from `name, size, sha256, content_type, created_at`.
pub(crate) fn file_record(r: &impl Columns) -> Result<FileRecord, CatalogError> {
    Ok(FileRecord {
        name: r.text("name")?,
        size: r.int("size")?.max(0) as u64,
        sha256: r.text("sha256")?,
        content_type: r.text("content_type")?,
        created_at: r.time("created_at")?,
    })
}

/// A file with its dataset, from `sql::ALL_FILES`.
pub(crate) fn dump_file(r: &impl Columns) -> Result<DumpFile, CatalogError> {
    Ok(DumpFile {
        dataset_id: DatasetId(r.id("dataset_id")?),
        file: file_record(r)?,
    })
}

/// A file with its dataset's place, from `sql::FILES_AFTER`.
pub(crate) fn stored_file(r: &impl Columns) -> Result<super::StoredFile, CatalogError> {
    Ok(super::StoredFile {
        dataset: DatasetId(r.id("id")?),
        status: r.text("status")?.parse().map_err(bad_row)?,
        bucket: r.text("bucket")?,
        prefix: r.text("prefix")?,
        name: r.text("name")?,
        size: r.int("size")?.max(0) as u64,
        sha256: r.text("sha256")?,
    })
}

/// A key's owner, from `sql::OWNERS_OF`.
pub(crate) fn key_owner(r: &impl Columns) -> Result<super::KeyOwner, CatalogError> {
    Ok(super::KeyOwner {
        dataset: DatasetId(r.id("id")?),
        status: r.text("status")?.parse().map_err(bad_row)?,
        cataloged: r.int("cataloged")? > 0,
        claimed: r.int("claimed")? > 0,
    })
}

/// A job from the columns of `sql::JOB_COLS`.
pub(crate) fn job(r: &impl Columns) -> Result<Job, CatalogError> {
    Ok(Job {
        id: r.id("id")?,
        kind: r.text("kind")?,
        status: r.text("status")?.parse::<JobStatus>().map_err(bad_row)?,
        request: r.json("request")?,
        result: r.opt_json("result")?,
        error: r.opt_text("error")?,
        schedule_key: r.opt_text("schedule_key")?,
        created_at: r.time("created_at")?,
        started_at: r.opt_time("started_at")?,
        heartbeat_at: r.opt_time("heartbeat_at")?,
        finished_at: r.opt_time("finished_at")?,
    })
}

/// Counts of one group, from `sql::group_stats`.
pub(crate) fn group(r: &impl Columns) -> Result<GroupStats, CatalogError> {
    Ok(GroupStats {
        key: r.text("k")?,
        datasets: r.int("n")?,
        bytes: r.int("b")?,
    })
}

/// Entries (`id, action, parameters, notes, actor, actor_token, reason, created_at`, oldest first) joined with their
/// datasets (`entry_id, dataset_id, role`, by position).
pub(crate) fn entries<R: Columns>(
    rows: &[R],
    links: &[R],
) -> Result<Vec<ProvenanceEntry>, CatalogError> {
    let mut io: HashMap<Uuid, (Vec<DatasetId>, Vec<DatasetId>)> = HashMap::new();
    for l in links {
        let slot = io.entry(l.id("entry_id")?).or_default();
        let ds = DatasetId(l.id("dataset_id")?);
        if l.text("role")? == "input" {
            slot.0.push(ds)
        } else {
            slot.1.push(ds)
        }
    }
    rows.iter()
        .map(|r| {
            let id = r.id("id")?;
            let (inputs, outputs) = io.remove(&id).unwrap_or_default();
            Ok(ProvenanceEntry {
                id,
                action: r.text("action")?.parse().map_err(bad_row)?,
                inputs,
                outputs,
                parameters: r.json("parameters")?,
                notes: r.opt_text("notes")?,
                actor: r.opt_text("actor")?,
                actor_token: r.opt_text("actor_token")?,
                reason: r.opt_text("reason")?,
                created_at: r.time("created_at")?,
            })
        })
        .collect()
}

/// One row of a lineage walk (`id, dist, other, entry_id, action, name, source, layer, status`);
/// `sign` is -1 walking to ancestors, 1 to descendants.
pub(crate) fn walk_row(r: &impl Columns, sign: i64) -> Result<WalkRow, CatalogError> {
    let other = r.opt_id("other")?.map(DatasetId);
    let entry = r.opt_id("entry_id")?;
    let action = r.opt_text("action")?;
    Ok(WalkRow {
        node: LineageNode {
            id: DatasetId(r.id("id")?),
            name: r.text("name")?,
            source: r.text("source")?,
            layer: r.text("layer")?.parse().map_err(bad_row)?,
            status: r.text("status")?,
            distance: r.int("dist")? * sign,
            restricted: false,
        },
        via: match (other, entry, action) {
            (Some(o), Some(e), Some(a)) => Some((o, e, a)),
            _ => None,
        },
    })
}

/// A recorded entry as it was asked for, to record it again (an import keeps id and time).
pub(crate) fn as_new(e: &ProvenanceEntry) -> NewProvenance {
    NewProvenance {
        action: e.action,
        inputs: e.inputs.clone(),
        outputs: e.outputs.clone(),
        parameters: e.parameters.clone(),
        notes: e.notes.clone(),
        actor: e.actor.clone(),
        actor_token: e.actor_token.clone(),
        reason: e.reason.clone(),
    }
}

// Binding.

/// The parameters of `sql::INSERT_DATASET`.
pub(crate) fn new_dataset(v: &mut impl Values, d: &NewDataset, now: DateTime<Utc>) {
    v.id(d.id.0);
    v.text(&d.name);
    v.text(&d.source);
    v.opt_text(d.external_id.as_deref());
    v.text(d.layer.as_str());
    v.text(&d.bucket);
    v.text(&d.prefix);
    v.json(&d.metadata);
    v.tags(&d.tags);
    v.text(d.status.as_str());
    v.opt_id(d.promoted_from.map(|p| p.0));
    v.time(now);
}

/// The parameters of `sql::IMPORT_DATASET`.
pub(crate) fn dumped_dataset(v: &mut impl Values, d: &Dataset) {
    v.id(d.id.0);
    v.text(&d.name);
    v.text(&d.source);
    v.opt_text(d.external_id.as_deref());
    v.text(d.layer.as_str());
    v.text(&d.bucket);
    v.text(&d.prefix);
    v.int(d.file_count);
    v.int(d.total_size);
    v.json(&d.metadata);
    v.tags(&d.tags);
    v.text(d.status.as_str());
    v.opt_id(d.promoted_from.map(|p| p.0));
    v.time(d.created_at);
    v.time(d.updated_at);
}

/// One file's values for `sql::INSERT_FILES` / `sql::INSERT_FILE`.
pub(crate) fn file(v: &mut impl Values, dataset: DatasetId, f: &FileRecord) {
    v.id(dataset.0);
    v.text(&f.name);
    v.int(f.size as i64);
    v.text(&f.sha256);
    v.text(&f.content_type);
    v.time(f.created_at);
}

/// The parameters of `sql::INSERT_ENTRY`.
pub(crate) fn entry(v: &mut impl Values, p: &NewProvenance, id: Uuid, at: DateTime<Utc>) {
    v.id(id);
    v.text(p.action.as_str());
    v.json(&p.parameters);
    v.opt_text(p.notes.as_deref());
    v.opt_text(p.actor.as_deref());
    v.opt_text(p.actor_token.as_deref());
    v.opt_text(p.reason.as_deref());
    v.time(at);
}

/// The parameters of `sql::INSERT_JOB`.
pub(crate) fn new_job(v: &mut impl Values, job: &NewJob, now: DateTime<Utc>) {
    v.id(job.id);
    v.text(&job.kind);
    v.json(&job.request);
    v.opt_text(job.schedule_key.as_deref());
    v.time(now);
}

/// The parameters of `sql::FINISH_JOB`.
pub(crate) fn finished_job(
    v: &mut impl Values,
    id: Uuid,
    status: JobStatus,
    result: Option<&Value>,
    error: Option<&str>,
    now: DateTime<Utc>,
) {
    v.id(id);
    v.text(status.as_str());
    v.opt_json(result);
    v.opt_text(error);
    v.time(now);
}

/// A token row (`sql::token_cols`).
pub(crate) fn token(r: &impl Columns) -> Result<super::TokenRecord, CatalogError> {
    Ok(super::TokenRecord {
        id: r.id("id")?,
        name: r.text("name")?,
        owner: r.text("owner")?,
        role: r.text("role")?.parse().map_err(bad_row)?,
        digest: r.text("digest")?,
        created_at: r.time("created_at")?,
        expires_at: r.time("expires_at")?,
        last_used_at: r.opt_time("last_used_at")?,
        revoked_at: r.opt_time("revoked_at")?,
        owner_disabled_at: r.opt_time("owner_disabled_at")?,
    })
}

/// A user row (`sql::SELECT_USER`).
pub(crate) fn user(r: &impl Columns) -> Result<super::UserRecord, CatalogError> {
    Ok(super::UserRecord {
        name: r.text("name")?,
        kind: r.text("kind")?.parse().map_err(bad_row)?,
        role: r.text("role")?.parse().map_err(bad_row)?,
        created_at: r.time("created_at")?,
        disabled_at: r.opt_time("disabled_at")?,
    })
}

/// The parameters of `sql::INSERT_USER`.
pub(crate) fn new_user(v: &mut impl Values, u: &super::UserRecord) {
    v.text(&u.name);
    v.text(u.kind.as_str());
    v.text(u.role.as_str());
    v.time(u.created_at);
}

/// The parameters of `sql::INSERT_TOKEN`.
pub(crate) fn new_token(v: &mut impl Values, t: &super::NewToken, now: DateTime<Utc>) {
    v.id(t.id);
    v.text(&t.name);
    v.text(&t.owner);
    v.text(t.role.as_str());
    v.text(&t.digest);
    v.time(now);
    v.time(t.expires_at);
}

/// The parameters of `sql::INSERT_AUDIT`.
pub(crate) fn new_audit(v: &mut impl Values, e: &crate::audit::NewAuditEntry, now: DateTime<Utc>) {
    v.time(now);
    v.text(&e.request_id);
    v.opt_text(e.principal.as_deref());
    v.opt_text(e.token_id.as_deref());
    v.opt_text(e.client.as_deref());
    v.text(&e.method);
    v.text(&e.route);
    v.text(&e.resource);
    v.text(&e.action);
    v.text(e.decision.as_str());
    v.opt_text(e.reason.as_deref());
    v.int(i64::from(e.status));
}

/// The parameters of `sql::SELECT_AUDIT`.
pub(crate) fn audit_query(v: &mut impl Values, q: &crate::audit::AuditQuery) {
    v.text(q.decision.map_or("", |d| d.as_str()));
    v.text(q.principal.as_deref().unwrap_or(""));
    v.time(q.since.unwrap_or(DateTime::UNIX_EPOCH));
    // Year 9999: after any entry, and still four digits where times are stored as text.
    v.time(q.until.unwrap_or_else(|| {
        DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::UNIX_EPOCH)
    }));
    v.int(q.before.unwrap_or(i64::MAX));
    v.int(i64::from(q.limit));
}

/// An audit row (`sql::SELECT_AUDIT`).
pub(crate) fn audit(r: &impl Columns) -> Result<crate::audit::AuditEntry, CatalogError> {
    Ok(crate::audit::AuditEntry {
        seq: r.int("seq")?,
        at: r.time("at")?,
        request: crate::audit::NewAuditEntry {
            request_id: r.text("request_id")?,
            principal: r.opt_text("principal")?,
            token_id: r.opt_text("token_id")?,
            client: r.opt_text("client")?,
            method: r.text("method")?,
            route: r.text("route")?,
            resource: r.text("resource")?,
            action: r.text("action")?,
            decision: r.text("decision")?.parse().map_err(bad_row)?,
            reason: r.opt_text("reason")?,
            status: u16::try_from(r.int("status")?).map_err(bad_row)?,
        },
    })
}

/// A row of `sql::SELECT_TABLE_NAME` and `sql::LIST_TABLE_NAMES`.
pub(crate) fn table_name(r: &impl Columns) -> Result<super::TableName, CatalogError> {
    Ok(super::TableName {
        layer: r.text("layer")?.parse().map_err(bad_row)?,
        name: r.text("name")?,
        source: r.text("source")?,
        dataset_name: r.text("dataset_name")?,
    })
}

/// The parameters of `sql::INSERT_TABLE_NAME`.
pub(crate) fn new_table_name(v: &mut impl Values, t: &super::TableName, now: DateTime<Utc>) {
    v.text(t.layer.as_str());
    v.text(&t.name);
    v.text(&t.source);
    v.text(&t.dataset_name);
    v.time(now);
}
