//! The SQLite catalog: the embedded default.
//!
//! Ids are stored as hyphenated UUID text (UUIDv7 text sorts by time), JSON as text, timestamps as
//! RFC 3339 text. Write transactions start with a write so that SQLite takes its write lock up front
//! and waits on `busy_timeout` instead of failing a read-to-write upgrade.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

use super::{
    Catalog, CatalogError, Dataset, DatasetId, DatasetStatus, FileRecord, GraphBuilder, GroupStats,
    Job, JobStatus, NewDataset, NewJob, Page, SearchQuery, Stats, WalkRow, like_pattern, page_of,
    stats_of,
};
use super::{CatalogDump, DumpFile};
use uuid::Uuid;

use crate::layers::Layer;
use crate::provenance::{
    Action, Direction, LineageGraph, LineageNode, NewProvenance, ProvenanceEntry,
};

const COLS: &str = "id, name, source, external_id, layer, bucket, prefix, file_count, total_size, metadata, tags, \
                    status, promoted_from, created_at, updated_at";

/// The SQLite catalog.
#[derive(Debug, Clone)]
pub struct SqliteCatalog {
    pool: SqlitePool,
}

fn db_err(e: sqlx::Error) -> CatalogError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            CatalogError::Conflict(d.message().to_owned())
        }
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            CatalogError::Invalid(d.message().to_owned())
        }
        _ => CatalogError::Unavailable(e.to_string()),
    }
}

fn bad_row(e: impl std::fmt::Display) -> CatalogError {
    CatalogError::Unavailable(format!("unreadable catalog row: {e}"))
}

impl SqliteCatalog {
    /// Opens (creating if needed) the database named by a `sqlite:` URL.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, CatalogError> {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let opts = if path == ":memory:" || path.is_empty() {
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(db_err)?
        } else {
            if let Some(parent) = Path::new(path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    CatalogError::Unavailable(format!("creating {}: {e}", parent.display()))
                })?;
            }
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
        };
        let opts = opts
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // An in-memory database exists per connection; keep exactly one.
        let max = if path == ":memory:" || path.is_empty() {
            1
        } else {
            max_connections.max(1)
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        Ok(Self { pool })
    }

    fn row_to_dataset(row: &SqliteRow) -> Result<Dataset, CatalogError> {
        let id: String = row.try_get("id").map_err(bad_row)?;
        let layer: String = row.try_get("layer").map_err(bad_row)?;
        let status: String = row.try_get("status").map_err(bad_row)?;
        let metadata: String = row.try_get("metadata").map_err(bad_row)?;
        let tags: String = row.try_get("tags").map_err(bad_row)?;
        let promoted_from: Option<String> = row.try_get("promoted_from").map_err(bad_row)?;
        let bucket: String = row.try_get("bucket").map_err(bad_row)?;
        let prefix: String = row.try_get("prefix").map_err(bad_row)?;
        Ok(Dataset {
            id: id.parse().map_err(bad_row)?,
            name: row.try_get("name").map_err(bad_row)?,
            source: row.try_get("source").map_err(bad_row)?,
            external_id: row.try_get("external_id").map_err(bad_row)?,
            layer: layer.parse::<Layer>().map_err(bad_row)?,
            location: format!("{bucket}/{prefix}"),
            bucket,
            prefix,
            file_count: row.try_get("file_count").map_err(bad_row)?,
            total_size: row.try_get("total_size").map_err(bad_row)?,
            metadata: serde_json::from_str(&metadata).map_err(bad_row)?,
            tags: serde_json::from_str(&tags).map_err(bad_row)?,
            status: status.parse().map_err(bad_row)?,
            promoted_from: promoted_from
                .map(|p| p.parse())
                .transpose()
                .map_err(bad_row)?,
            created_at: row.try_get("created_at").map_err(bad_row)?,
            updated_at: row.try_get("updated_at").map_err(bad_row)?,
        })
    }

    async fn fetch_dataset(
        tx: &mut Transaction<'_, Sqlite>,
        id: DatasetId,
    ) -> Result<Dataset, CatalogError> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM datasets WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err)?
            .ok_or_else(|| CatalogError::NotFound(format!("dataset {id}")))?;
        Self::row_to_dataset(&row)
    }

    async fn insert_files(
        tx: &mut Transaction<'_, Sqlite>,
        id: DatasetId,
        files: &[FileRecord],
    ) -> Result<(), CatalogError> {
        for f in files {
            sqlx::query(
                "INSERT INTO files (dataset_id, name, size, sha256, content_type, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(id.to_string())
            .bind(&f.name)
            .bind(f.size as i64)
            .bind(&f.sha256)
            .bind(&f.content_type)
            .bind(f.created_at)
            .execute(&mut **tx)
            .await
            .map_err(|e| match db_err(e) {
                CatalogError::Conflict(_) => CatalogError::Conflict(format!("file {:?} already exists in dataset {id}", f.name)),
                other => other,
            })?;
        }
        for f in files {
            sqlx::query("DELETE FROM file_claims WHERE dataset_id = ?1 AND name = ?2")
                .bind(id.to_string())
                .bind(&f.name)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
        }
        sqlx::query(
            "UPDATE datasets SET file_count = (SELECT count(*) FROM files WHERE dataset_id = ?1), \
             total_size = (SELECT coalesce(sum(size), 0) FROM files WHERE dataset_id = ?1) WHERE id = ?1",
        )
        .bind(id.to_string())
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn insert_provenance(
        tx: &mut Transaction<'_, Sqlite>,
        p: &NewProvenance,
        now: DateTime<Utc>,
    ) -> Result<ProvenanceEntry, CatalogError> {
        Self::insert_entry(tx, p, uuid::Uuid::now_v7(), now).await
    }

    /// Records an entry under a given id and time (an import keeps the originals).
    async fn insert_entry(
        tx: &mut Transaction<'_, Sqlite>,
        p: &NewProvenance,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<ProvenanceEntry, CatalogError> {
        sqlx::query("INSERT INTO provenance (id, action, parameters, notes, actor, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(id.to_string())
            .bind(p.action.as_str())
            .bind(p.parameters.to_string())
            .bind(&p.notes)
            .bind(&p.actor)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        for (role, list) in [("input", &p.inputs), ("output", &p.outputs)] {
            for (pos, ds) in list.iter().enumerate() {
                sqlx::query(
                    "INSERT OR IGNORE INTO provenance_datasets (entry_id, dataset_id, role, position) VALUES (?, ?, ?, ?)",
                )
                .bind(id.to_string())
                .bind(ds.to_string())
                .bind(role)
                .bind(pos as i64)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
            }
        }
        for input in &p.inputs {
            for output in &p.outputs {
                sqlx::query(
                    "INSERT OR IGNORE INTO lineage_edges (parent_id, child_id, entry_id, action) VALUES (?, ?, ?, ?)",
                )
                .bind(input.to_string())
                .bind(output.to_string())
                .bind(id.to_string())
                .bind(p.action.as_str())
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
            }
        }
        Ok(p.recorded(id, now))
    }

    /// Entries by id, oldest first, with their inputs and outputs.
    async fn entries_by_ids(&self, ids: &[String]) -> Result<Vec<ProvenanceEntry>, CatalogError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        Self::entries_in(&mut conn, Some(ids)).await
    }

    /// Entries with these ids (all of them with `None`), oldest first, over one connection.
    async fn entries_in(
        conn: &mut sqlx::SqliteConnection,
        ids: Option<&[String]>,
    ) -> Result<Vec<ProvenanceEntry>, CatalogError> {
        // Separate statements for "all" and "these", so a lookup by id keeps its index.
        let ids_json = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
        let (entries_sql, links_sql) = match ids {
            Some(_) => (
                "SELECT id, action, parameters, notes, actor, created_at FROM provenance \
                 WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY seq",
                "SELECT entry_id, dataset_id, role FROM provenance_datasets \
                 WHERE entry_id IN (SELECT value FROM json_each(?1)) ORDER BY position",
            ),
            None => (
                "SELECT id, action, parameters, notes, actor, created_at FROM provenance ORDER BY seq",
                "SELECT entry_id, dataset_id, role FROM provenance_datasets ORDER BY position",
            ),
        };
        let rows = sqlx::query(entries_sql)
            .bind(&ids_json)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        let links = sqlx::query(links_sql)
            .bind(&ids_json)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        let mut io: HashMap<String, (Vec<DatasetId>, Vec<DatasetId>)> = HashMap::new();
        for l in &links {
            let entry: String = l.try_get("entry_id").map_err(bad_row)?;
            let ds: String = l.try_get("dataset_id").map_err(bad_row)?;
            let role: String = l.try_get("role").map_err(bad_row)?;
            let slot = io.entry(entry).or_default();
            let ds = ds.parse().map_err(bad_row)?;
            if role == "input" {
                slot.0.push(ds)
            } else {
                slot.1.push(ds)
            }
        }
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id").map_err(bad_row)?;
                let action: String = r.try_get("action").map_err(bad_row)?;
                let params: String = r.try_get("parameters").map_err(bad_row)?;
                let (inputs, outputs) = io.remove(&id).unwrap_or_default();
                Ok(ProvenanceEntry {
                    id: id.parse().map_err(bad_row)?,
                    action: action.parse::<Action>().map_err(bad_row)?,
                    inputs,
                    outputs,
                    parameters: serde_json::from_str(&params).map_err(bad_row)?,
                    notes: r.try_get("notes").map_err(bad_row)?,
                    actor: r.try_get("actor").map_err(bad_row)?,
                    created_at: r.try_get("created_at").map_err(bad_row)?,
                })
            })
            .collect()
    }

    async fn group_stats(&self, column: &str) -> Result<Vec<GroupStats>, CatalogError> {
        let rows = sqlx::query(&format!(
            "SELECT {column} AS k, count(*) AS n, coalesce(sum(total_size), 0) AS b FROM datasets \
             WHERE status = 'ready' GROUP BY {column} ORDER BY n DESC, k"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(GroupStats {
                    key: r.try_get("k").map_err(bad_row)?,
                    datasets: r.try_get("n").map_err(bad_row)?,
                    bytes: r.try_get("b").map_err(bad_row)?,
                })
            })
            .collect()
    }
}

fn json_ids(ids: impl IntoIterator<Item = DatasetId>) -> String {
    serde_json::Value::Array(
        ids.into_iter()
            .map(|i| serde_json::Value::String(i.to_string()))
            .collect(),
    )
    .to_string()
}

#[async_trait::async_trait]
impl Catalog for SqliteCatalog {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), CatalogError> {
        sqlx::migrate!("../migrations/sqlite")
            .run(&self.pool)
            .await
            .map_err(|e| CatalogError::Unavailable(format!("migrating the SQLite catalog: {e}")))
    }

    async fn ping(&self) -> Result<(), CatalogError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err)
            .map(|_| ())
    }

    async fn insert_datasets(
        &self,
        datasets: &[(NewDataset, Vec<FileRecord>)],
        provenance: &[NewProvenance],
    ) -> Result<Vec<Dataset>, CatalogError> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        for (new, files) in datasets {
            sqlx::query(
            "INSERT INTO datasets (id, name, source, external_id, layer, bucket, prefix, metadata, tags, status, \
             promoted_from, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(new.id.to_string())
        .bind(&new.name)
        .bind(&new.source)
        .bind(&new.external_id)
        .bind(new.layer.as_str())
        .bind(&new.bucket)
        .bind(&new.prefix)
        .bind(new.metadata.to_string())
        .bind(serde_json::to_string(&new.tags).unwrap_or_else(|_| "[]".into()))
        .bind(new.status.as_str())
        .bind(new.promoted_from.map(|p| p.to_string()))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
            Self::insert_files(&mut tx, new.id, files).await?;
        }
        for p in provenance {
            Self::insert_provenance(&mut tx, p, now).await?;
        }
        let mut out = Vec::with_capacity(datasets.len());
        for (new, _) in datasets {
            out.push(Self::fetch_dataset(&mut tx, new.id).await?);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn get_dataset(&self, id: DatasetId) -> Result<Dataset, CatalogError> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM datasets WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .ok_or_else(|| CatalogError::NotFound(format!("dataset {id}")))?;
        Self::row_to_dataset(&row)
    }

    async fn search(&self, q: &SearchQuery) -> Result<Page<Dataset>, CatalogError> {
        let mut b: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {COLS} FROM datasets WHERE status = "));
        b.push_bind(q.status.as_str());
        if let Some(l) = q.layer {
            b.push(" AND layer = ").push_bind(l.as_str());
        }
        if let Some(s) = &q.source {
            b.push(" AND source = ").push_bind(s.clone());
        }
        if let Some(e) = &q.external_id {
            b.push(" AND external_id = ").push_bind(e.clone());
        }
        if let Some(h) = &q.sha256 {
            b.push(" AND id IN (SELECT dataset_id FROM files WHERE sha256 = ")
                .push_bind(h.to_ascii_lowercase())
                .push(")");
        }
        if let Some(text) = q.q.as_deref().filter(|t| !t.trim().is_empty()) {
            b.push(" AND search_text LIKE ")
                .push_bind(like_pattern(text.trim()))
                .push(" ESCAPE '\\'");
        }
        for t in &q.tags {
            b.push(" AND EXISTS (SELECT 1 FROM json_each(datasets.tags) WHERE value = ")
                .push_bind(t.clone())
                .push(")");
        }
        if let Some(after) = q.after {
            b.push(" AND id < ").push_bind(after.to_string());
        }
        b.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(q.limit) + 1);
        b.push(" OFFSET ").push_bind(q.offset as i64);
        let rows = b.build().fetch_all(&self.pool).await.map_err(db_err)?;
        let items = rows
            .iter()
            .map(Self::row_to_dataset)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_of(items, q.limit))
    }

    async fn stats(&self) -> Result<Stats, CatalogError> {
        let layers = self.group_stats("layer").await?;
        Ok(stats_of(&layers, self.group_stats("source").await?))
    }

    async fn list_files(&self, id: DatasetId) -> Result<Vec<FileRecord>, CatalogError> {
        self.get_dataset(id).await?;
        let rows = sqlx::query(
            "SELECT name, size, sha256, content_type, created_at FROM files WHERE dataset_id = ? ORDER BY name",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(row_to_file).collect()
    }

    async fn commit(
        &self,
        id: DatasetId,
        files: &[FileRecord],
        status: DatasetStatus,
        provenance: Option<&NewProvenance>,
    ) -> Result<Dataset, CatalogError> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let updated = sqlx::query("UPDATE datasets SET status = ?, updated_at = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(now)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Err(CatalogError::NotFound(format!("dataset {id}")));
        }
        Self::insert_files(&mut tx, id, files).await?;
        if let Some(p) = provenance {
            Self::insert_provenance(&mut tx, p, now).await?;
        }
        let d = Self::fetch_dataset(&mut tx, id).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(d)
    }

    async fn claim_file(
        &self,
        id: DatasetId,
        name: &str,
        stale_after: std::time::Duration,
    ) -> Result<(), CatalogError> {
        let now = Utc::now();
        let stale =
            now - chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::hours(1));
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query(
            "DELETE FROM file_claims WHERE dataset_id = ?1 AND name = ?2 AND claimed_at < ?3",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(stale)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        // Claim first, then look for a committed file: a claim can only be won after the previous
        // holder committed (or gave up), so this check always sees its file.
        sqlx::query("INSERT INTO file_claims (dataset_id, name, claimed_at) VALUES (?1, ?2, ?3)")
            .bind(id.to_string())
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| match db_err(e) {
                CatalogError::Conflict(_) => CatalogError::Conflict(format!(
                    "another upload of {name:?} into dataset {id} is in progress"
                )),
                CatalogError::Invalid(_) => CatalogError::NotFound(format!("dataset {id}")),
                other => other,
            })?;
        tx.commit().await.map_err(db_err)?;
        let exists = sqlx::query("SELECT 1 FROM files WHERE dataset_id = ?1 AND name = ?2")
            .bind(id.to_string())
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .is_some();
        if exists {
            self.release_claim(id, name).await?;
            return Err(CatalogError::Conflict(format!(
                "dataset {id} already has a file named {name:?}; datasets are immutable, so upload under a new name or into a new dataset"
            )));
        }
        Ok(())
    }

    async fn release_claim(&self, id: DatasetId, name: &str) -> Result<(), CatalogError> {
        sqlx::query("DELETE FROM file_claims WHERE dataset_id = ?1 AND name = ?2")
            .bind(id.to_string())
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn set_status(&self, id: DatasetId, status: DatasetStatus) -> Result<(), CatalogError> {
        let r = sqlx::query("UPDATE datasets SET status = ?, updated_at = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(Utc::now())
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        if r.rows_affected() == 0 {
            return Err(CatalogError::NotFound(format!("dataset {id}")));
        }
        Ok(())
    }

    async fn find_promotion(
        &self,
        source: DatasetId,
        layer: Layer,
    ) -> Result<Option<Dataset>, CatalogError> {
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM datasets WHERE promoted_from = ? AND layer = ?"
        ))
        .bind(source.to_string())
        .bind(layer.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.as_ref().map(Self::row_to_dataset).transpose()
    }

    async fn append_provenance(
        &self,
        entry: &NewProvenance,
    ) -> Result<ProvenanceEntry, CatalogError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let e = Self::insert_provenance(&mut tx, entry, Utc::now()).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(e)
    }

    async fn provenance_of(&self, ids: &[DatasetId]) -> Result<Vec<ProvenanceEntry>, CatalogError> {
        let ids_json = json_ids(ids.iter().copied());
        let rows = sqlx::query(
            "SELECT DISTINCT entry_id FROM provenance_datasets WHERE dataset_id IN (SELECT value FROM json_each(?))",
        )
        .bind(&ids_json)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let entry_ids = rows
            .iter()
            .map(|r| r.try_get::<String, _>("entry_id"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad_row)?;
        self.entries_by_ids(&entry_ids).await
    }

    async fn entries_by_action(
        &self,
        action: Action,
        limit: u32,
    ) -> Result<Vec<ProvenanceEntry>, CatalogError> {
        let rows =
            sqlx::query("SELECT id FROM provenance WHERE action = ? ORDER BY seq DESC LIMIT ?")
                .bind(action.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        let ids = rows
            .iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad_row)?;
        let mut entries = self.entries_by_ids(&ids).await?;
        entries.reverse();
        Ok(entries)
    }

    async fn entry(&self, id: Uuid) -> Result<ProvenanceEntry, CatalogError> {
        self.entries_by_ids(&[id.to_string()])
            .await?
            .pop()
            .ok_or_else(|| CatalogError::NotFound(format!("provenance entry {id}")))
    }

    async fn export(&self) -> Result<CatalogDump, CatalogError> {
        // One read transaction: in WAL mode it reads one snapshot throughout.
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let rows = sqlx::query(&format!("SELECT {COLS} FROM datasets ORDER BY id"))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let datasets = rows
            .iter()
            .map(Self::row_to_dataset)
            .collect::<Result<Vec<_>, _>>()?;
        let rows = sqlx::query(
            "SELECT dataset_id, name, size, sha256, content_type, created_at FROM files ORDER BY dataset_id, name",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        let files = rows
            .iter()
            .map(|r| {
                let id: String = r.try_get("dataset_id").map_err(bad_row)?;
                Ok(DumpFile {
                    dataset_id: id.parse().map_err(bad_row)?,
                    file: row_to_file(r)?,
                })
            })
            .collect::<Result<Vec<_>, CatalogError>>()?;
        let provenance = Self::entries_in(&mut tx, None).await?;
        tx.rollback().await.map_err(db_err)?;
        Ok(CatalogDump {
            datasets,
            files,
            provenance,
        })
    }

    async fn import(&self, dump: &CatalogDump) -> Result<(), CatalogError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // Write first, so the transaction holds the write lock before it reads.
        sqlx::query("DELETE FROM file_claims WHERE claimed_at IS NULL")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let held: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM datasets) + \
             (SELECT count(*) FROM provenance WHERE action NOT IN ('backup', 'restore'))",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        if held > 0 {
            return Err(CatalogError::Conflict(
                "the catalog is not empty: a restore needs an empty lake".into(),
            ));
        }
        for d in &dump.datasets {
            sqlx::query(
                "INSERT INTO datasets (id, name, source, external_id, layer, bucket, prefix, file_count, total_size, \
                 metadata, tags, status, promoted_from, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(d.id.to_string())
            .bind(&d.name)
            .bind(&d.source)
            .bind(&d.external_id)
            .bind(d.layer.as_str())
            .bind(&d.bucket)
            .bind(&d.prefix)
            .bind(d.file_count)
            .bind(d.total_size)
            .bind(d.metadata.to_string())
            .bind(serde_json::to_string(&d.tags).unwrap_or_else(|_| "[]".into()))
            .bind(d.status.as_str())
            .bind(d.promoted_from.map(|p| p.to_string()))
            .bind(d.created_at)
            .bind(d.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        for f in &dump.files {
            sqlx::query(
                "INSERT INTO files (dataset_id, name, size, sha256, content_type, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(f.dataset_id.to_string())
            .bind(&f.file.name)
            .bind(f.file.size as i64)
            .bind(&f.file.sha256)
            .bind(&f.file.content_type)
            .bind(f.file.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        for e in &dump.provenance {
            let p = NewProvenance {
                action: e.action,
                inputs: e.inputs.clone(),
                outputs: e.outputs.clone(),
                parameters: e.parameters.clone(),
                notes: e.notes.clone(),
                actor: e.actor.clone(),
            };
            Self::insert_entry(&mut tx, &p, e.id, e.created_at).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn insert_job(&self, job: &NewJob) -> Result<Job, CatalogError> {
        sqlx::query(
            "INSERT INTO jobs (id, kind, status, request, schedule_key, created_at) \
             VALUES (?1, ?2, 'queued', ?3, ?4, ?5)",
        )
        .bind(job.id.to_string())
        .bind(&job.kind)
        .bind(job.request.to_string())
        .bind(&job.schedule_key)
        .bind(Utc::now())
        .execute(&self.pool)
        .await
        .map_err(|e| match db_err(e) {
            CatalogError::Conflict(_) => CatalogError::Conflict(format!(
                "a job with schedule key {:?} exists already",
                job.schedule_key.as_deref().unwrap_or("")
            )),
            other => other,
        })?;
        self.get_job(job.id).await
    }

    async fn start_job(&self, id: Uuid) -> Result<Job, CatalogError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'running', started_at = ?2, heartbeat_at = ?2 WHERE id = ?1 AND status = 'queued'",
        )
        .bind(id.to_string())
        .bind(Utc::now())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        let job = self.get_job(id).await?;
        if done.rows_affected() == 0 {
            return Err(CatalogError::Conflict(format!(
                "job {id} is {}, not queued",
                job.status.as_str()
            )));
        }
        Ok(job)
    }

    async fn finish_job(
        &self,
        id: Uuid,
        status: JobStatus,
        result: Option<&serde_json::Value>,
        error: Option<&str>,
    ) -> Result<Job, CatalogError> {
        if !status.is_finished() {
            return Err(CatalogError::Invalid(format!(
                "a job cannot finish as {}",
                status.as_str()
            )));
        }
        let done = sqlx::query(
            "UPDATE jobs SET status = ?2, result = ?3, error = ?4, finished_at = ?5 \
             WHERE id = ?1 AND status IN ('queued', 'running')",
        )
        .bind(id.to_string())
        .bind(status.as_str())
        .bind(result.map(|r| r.to_string()))
        .bind(error)
        .bind(Utc::now())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        let job = self.get_job(id).await?;
        if done.rows_affected() == 0 {
            return Err(CatalogError::Conflict(format!(
                "job {id} has ended already ({})",
                job.status.as_str()
            )));
        }
        Ok(job)
    }

    async fn heartbeat_job(&self, id: Uuid) -> Result<(), CatalogError> {
        sqlx::query("UPDATE jobs SET heartbeat_at = ?2 WHERE id = ?1 AND status = 'running'")
            .bind(id.to_string())
            .bind(Utc::now())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn fail_stale_jobs(&self, silent_for: Duration) -> Result<Vec<Job>, CatalogError> {
        let before = Utc::now()
            - chrono::Duration::from_std(silent_for).unwrap_or(chrono::Duration::minutes(1));
        let rows = sqlx::query(&format!(
            "UPDATE jobs SET status = 'failed', finished_at = ?2, \
             error = 'abandoned: the server running it stopped before it finished; the next run completes it' \
             WHERE status IN ('queued', 'running') AND coalesce(heartbeat_at, started_at, created_at) < ?1 \
             RETURNING {JOB_COLS}"
        ))
        .bind(before)
        .bind(Utc::now())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(row_to_job).collect()
    }

    async fn get_job(&self, id: Uuid) -> Result<Job, CatalogError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .ok_or_else(|| CatalogError::NotFound(format!("job {id}")))?;
        row_to_job(&row)
    }

    async fn list_jobs(&self, kind: &str, limit: u32) -> Result<Vec<Job>, CatalogError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE kind = ?1 ORDER BY id DESC LIMIT ?2"
        ))
        .bind(kind)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(row_to_job).collect()
    }

    async fn lineage(
        &self,
        id: DatasetId,
        depth: u32,
        direction: Direction,
    ) -> Result<LineageGraph, CatalogError> {
        let root = self.get_dataset(id).await?;
        let mut graph = GraphBuilder::new(&root, depth);
        let walks: &[(&str, &str, i64)] = match direction {
            Direction::Ancestors => &[("parent_id", "child_id", -1)],
            Direction::Descendants => &[("child_id", "parent_id", 1)],
            Direction::Both => &[("parent_id", "child_id", -1), ("child_id", "parent_id", 1)],
        };
        for (next, here, sign) in walks {
            // One statement per direction: each walk row remembers the edge it arrived by, and the
            // dataset columns are joined in, so a deep lineage costs one round trip, not one per node.
            // UNION (not UNION ALL) keeps diamonds from multiplying rows.
            let rows = sqlx::query(&format!(
                "WITH RECURSIVE walk(id, dist, other, entry_id, action) AS (SELECT ?1, 0, CAST(NULL AS TEXT), CAST(NULL AS TEXT), CAST(NULL AS TEXT) UNION \
                 SELECT e.{next}, w.dist + 1, e.{here}, e.entry_id, e.action FROM lineage_edges e \
                 JOIN walk w ON e.{here} = w.id WHERE w.dist < ?2) \
                 SELECT w.id, w.dist, w.other, w.entry_id, w.action, d.name, d.source, d.layer, d.status \
                 FROM walk w JOIN datasets d ON d.id = w.id WHERE w.dist > 0"
            ))
            .bind(id.to_string())
            .bind(i64::from(depth))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            for r in &rows {
                let nid: String = r.try_get("id").map_err(bad_row)?;
                let nid: DatasetId = nid.parse().map_err(bad_row)?;
                let dist: i64 = r.try_get("dist").map_err(bad_row)?;
                let distance = dist * sign;
                let other: Option<String> = r.try_get("other").map_err(bad_row)?;
                let entry: Option<String> = r.try_get("entry_id").map_err(bad_row)?;
                let other: Option<DatasetId> =
                    other.map(|o| o.parse()).transpose().map_err(bad_row)?;
                let entry: Option<Uuid> = entry.map(|e| e.parse()).transpose().map_err(bad_row)?;
                let layer: String = r.try_get("layer").map_err(bad_row)?;
                let action: Option<String> = r.try_get("action").map_err(bad_row)?;
                graph.add(WalkRow {
                    node: LineageNode {
                        id: nid,
                        name: r.try_get("name").map_err(bad_row)?,
                        source: r.try_get("source").map_err(bad_row)?,
                        layer: layer.parse().map_err(bad_row)?,
                        status: r.try_get("status").map_err(bad_row)?,
                        distance,
                    },
                    via: match (other, entry, action) {
                        (Some(o), Some(e), Some(a)) => Some((o, e, a)),
                        _ => None,
                    },
                });
            }
        }
        Ok(graph.finish())
    }
}

const JOB_COLS: &str = "id, kind, status, request, result, error, schedule_key, created_at, started_at, \
                        heartbeat_at, finished_at";

fn row_to_job(row: &sqlx::sqlite::SqliteRow) -> Result<Job, CatalogError> {
    let id: String = row.try_get("id").map_err(bad_row)?;
    let status: String = row.try_get("status").map_err(bad_row)?;
    let request: String = row.try_get("request").map_err(bad_row)?;
    let result: Option<String> = row.try_get("result").map_err(bad_row)?;
    Ok(Job {
        id: Uuid::parse_str(&id).map_err(bad_row)?,
        kind: row.try_get("kind").map_err(bad_row)?,
        status: status.parse().map_err(bad_row)?,
        request: serde_json::from_str(&request).map_err(bad_row)?,
        result: result
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(bad_row)?,
        error: row.try_get("error").map_err(bad_row)?,
        schedule_key: row.try_get("schedule_key").map_err(bad_row)?,
        created_at: row.try_get("created_at").map_err(bad_row)?,
        started_at: row.try_get("started_at").map_err(bad_row)?,
        heartbeat_at: row.try_get("heartbeat_at").map_err(bad_row)?,
        finished_at: row.try_get("finished_at").map_err(bad_row)?,
    })
}

fn row_to_file(r: &SqliteRow) -> Result<FileRecord, CatalogError> {
    Ok(FileRecord {
        name: r.try_get("name").map_err(bad_row)?,
        size: r.try_get::<i64, _>("size").map_err(bad_row)?.max(0) as u64,
        sha256: r.try_get("sha256").map_err(bad_row)?,
        content_type: r.try_get("content_type").map_err(bad_row)?,
        created_at: r.try_get("created_at").map_err(bad_row)?,
    })
}
