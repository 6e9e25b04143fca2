//! The PostgreSQL catalog: production.
//!
//! Several `lake serve` replicas share one database; everything that must happen once is decided by
//! the database (unique indexes, transactions), never by process memory. Free-text search uses a
//! trigram index over a generated `search_text` column, tag filters a GIN index over `tags`.

use std::collections::HashMap;

use chrono::Utc;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::{
    Catalog, CatalogError, Dataset, DatasetId, DatasetStatus, FileRecord, GraphBuilder, GroupStats,
    Job, JobStatus, NewDataset, NewJob, Page, SearchQuery, Stats, WalkRow, like_pattern, page_of,
    stats_of,
};
use super::{CatalogDump, DumpFile};
use crate::layers::Layer;
use crate::provenance::{
    Action, Direction, LineageGraph, LineageNode, NewProvenance, ProvenanceEntry,
};

const COLS: &str = "id, name, source, external_id, layer, bucket, prefix, file_count, total_size, metadata, tags, \
                    status, promoted_from, created_at, updated_at";

/// The PostgreSQL catalog.
#[derive(Debug, Clone)]
pub struct PostgresCatalog {
    pool: PgPool,
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

fn uuids(ids: impl IntoIterator<Item = DatasetId>) -> Vec<Uuid> {
    ids.into_iter().map(|i| i.0).collect()
}

impl PostgresCatalog {
    /// Connects to the database named by a `postgres://` URL.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, CatalogError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(db_err)?;
        Ok(Self { pool })
    }

    /// The pool, for tests and benchmarks that seed data in bulk or check the schema's own rules.
    #[doc(hidden)]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn row_to_dataset(row: &PgRow) -> Result<Dataset, CatalogError> {
        let layer: String = row.try_get("layer").map_err(bad_row)?;
        let status: String = row.try_get("status").map_err(bad_row)?;
        let metadata: Json<serde_json::Value> = row.try_get("metadata").map_err(bad_row)?;
        let bucket: String = row.try_get("bucket").map_err(bad_row)?;
        let prefix: String = row.try_get("prefix").map_err(bad_row)?;
        let promoted_from: Option<Uuid> = row.try_get("promoted_from").map_err(bad_row)?;
        Ok(Dataset {
            id: DatasetId(row.try_get("id").map_err(bad_row)?),
            name: row.try_get("name").map_err(bad_row)?,
            source: row.try_get("source").map_err(bad_row)?,
            external_id: row.try_get("external_id").map_err(bad_row)?,
            layer: layer.parse::<Layer>().map_err(bad_row)?,
            location: format!("{bucket}/{prefix}"),
            bucket,
            prefix,
            file_count: row.try_get("file_count").map_err(bad_row)?,
            total_size: row.try_get("total_size").map_err(bad_row)?,
            metadata: metadata.0,
            tags: row.try_get("tags").map_err(bad_row)?,
            status: status.parse().map_err(bad_row)?,
            promoted_from: promoted_from.map(DatasetId),
            created_at: row.try_get("created_at").map_err(bad_row)?,
            updated_at: row.try_get("updated_at").map_err(bad_row)?,
        })
    }

    async fn fetch_dataset(
        tx: &mut Transaction<'_, Postgres>,
        id: DatasetId,
    ) -> Result<Dataset, CatalogError> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM datasets WHERE id = $1"))
            .bind(id.0)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err)?
            .ok_or_else(|| CatalogError::NotFound(format!("dataset {id}")))?;
        Self::row_to_dataset(&row)
    }

    async fn insert_files(
        tx: &mut Transaction<'_, Postgres>,
        id: DatasetId,
        files: &[FileRecord],
    ) -> Result<(), CatalogError> {
        if !files.is_empty() {
            let mut b: QueryBuilder<Postgres> = QueryBuilder::new(
                "INSERT INTO files (dataset_id, name, size, sha256, content_type, created_at) ",
            );
            b.push_values(files, |mut row, f| {
                row.push_bind(id.0)
                    .push_bind(&f.name)
                    .push_bind(f.size as i64)
                    .push_bind(&f.sha256)
                    .push_bind(&f.content_type)
                    .push_bind(f.created_at);
            });
            b.build()
                .execute(&mut **tx)
                .await
                .map_err(|e| match db_err(e) {
                    CatalogError::Conflict(_) => {
                        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
                        CatalogError::Conflict(format!(
                            "a file named {names:?} already exists in dataset {id}"
                        ))
                    }
                    other => other,
                })?;
        }
        for f in files {
            sqlx::query("DELETE FROM file_claims WHERE dataset_id = $1 AND name = $2")
                .bind(id.0)
                .bind(&f.name)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
        }
        sqlx::query(
            "UPDATE datasets SET file_count = (SELECT count(*) FROM files WHERE dataset_id = $1), \
             total_size = (SELECT coalesce(sum(size), 0) FROM files WHERE dataset_id = $1) WHERE id = $1",
        )
        .bind(id.0)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn insert_provenance(
        tx: &mut Transaction<'_, Postgres>,
        p: &NewProvenance,
        now: chrono::DateTime<Utc>,
    ) -> Result<ProvenanceEntry, CatalogError> {
        Self::insert_entry(tx, p, Uuid::now_v7(), now).await
    }

    /// Records an entry under a given id and time (an import keeps the originals).
    async fn insert_entry(
        tx: &mut Transaction<'_, Postgres>,
        p: &NewProvenance,
        id: Uuid,
        now: chrono::DateTime<Utc>,
    ) -> Result<ProvenanceEntry, CatalogError> {
        sqlx::query("INSERT INTO provenance (id, action, parameters, notes, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id)
            .bind(p.action.as_str())
            .bind(Json(&p.parameters))
            .bind(&p.notes)
            .bind(&p.actor)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        let mut links: Vec<(Uuid, &str, i32)> = Vec::new();
        for (role, list) in [("input", &p.inputs), ("output", &p.outputs)] {
            for (pos, ds) in list.iter().enumerate() {
                links.push((ds.0, role, pos as i32));
            }
        }
        if !links.is_empty() {
            let mut b: QueryBuilder<Postgres> = QueryBuilder::new(
                "INSERT INTO provenance_datasets (entry_id, dataset_id, role, position) ",
            );
            b.push_values(&links, |mut row, (ds, role, pos)| {
                row.push_bind(id)
                    .push_bind(*ds)
                    .push_bind(*role)
                    .push_bind(*pos);
            });
            b.push(" ON CONFLICT DO NOTHING");
            b.build().execute(&mut **tx).await.map_err(db_err)?;
        }
        let pairs: Vec<(Uuid, Uuid)> = p
            .inputs
            .iter()
            .flat_map(|i| p.outputs.iter().map(move |o| (i.0, o.0)))
            .collect();
        if !pairs.is_empty() {
            let mut b: QueryBuilder<Postgres> = QueryBuilder::new(
                "INSERT INTO lineage_edges (parent_id, child_id, entry_id, action) ",
            );
            b.push_values(&pairs, |mut row, (parent, child)| {
                row.push_bind(*parent)
                    .push_bind(*child)
                    .push_bind(id)
                    .push_bind(p.action.as_str());
            });
            b.push(" ON CONFLICT DO NOTHING");
            b.build().execute(&mut **tx).await.map_err(db_err)?;
        }
        Ok(p.recorded(id, now))
    }

    /// Entries by id, oldest first, with their inputs and outputs.
    async fn entries_by_ids(
        &self,
        entry_ids: &[Uuid],
    ) -> Result<Vec<ProvenanceEntry>, CatalogError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        Self::entries_in(&mut conn, Some(entry_ids)).await
    }

    /// Entries with these ids (all of them with `None`), oldest first, over one connection.
    async fn entries_in(
        conn: &mut sqlx::PgConnection,
        entry_ids: Option<&[Uuid]>,
    ) -> Result<Vec<ProvenanceEntry>, CatalogError> {
        // Separate statements for "all" and "these", so a lookup by id keeps its index.
        let ids = entry_ids.map(<[Uuid]>::to_vec).unwrap_or_default();
        let (entries_sql, links_sql) = if entry_ids.is_some() {
            (
                "SELECT id, action, parameters, notes, actor, created_at FROM provenance \
                 WHERE id = ANY($1) ORDER BY seq",
                "SELECT entry_id, dataset_id, role FROM provenance_datasets \
                 WHERE entry_id = ANY($1) ORDER BY position",
            )
        } else {
            (
                "SELECT id, action, parameters, notes, actor, created_at FROM provenance \
                 WHERE cardinality($1::uuid[]) = 0 ORDER BY seq",
                "SELECT entry_id, dataset_id, role FROM provenance_datasets \
                 WHERE cardinality($1::uuid[]) = 0 ORDER BY position",
            )
        };
        let rows = sqlx::query(entries_sql)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        let links = sqlx::query(links_sql)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        let mut io: HashMap<Uuid, (Vec<DatasetId>, Vec<DatasetId>)> = HashMap::new();
        for l in &links {
            let entry: Uuid = l.try_get("entry_id").map_err(bad_row)?;
            let ds: Uuid = l.try_get("dataset_id").map_err(bad_row)?;
            let role: String = l.try_get("role").map_err(bad_row)?;
            let slot = io.entry(entry).or_default();
            if role == "input" {
                slot.0.push(DatasetId(ds))
            } else {
                slot.1.push(DatasetId(ds))
            }
        }
        rows.iter()
            .map(|r| {
                let id: Uuid = r.try_get("id").map_err(bad_row)?;
                let action: String = r.try_get("action").map_err(bad_row)?;
                let params: Json<serde_json::Value> = r.try_get("parameters").map_err(bad_row)?;
                let (inputs, outputs) = io.remove(&id).unwrap_or_default();
                Ok(ProvenanceEntry {
                    id,
                    action: action.parse::<Action>().map_err(bad_row)?,
                    inputs,
                    outputs,
                    parameters: params.0,
                    notes: r.try_get("notes").map_err(bad_row)?,
                    actor: r.try_get("actor").map_err(bad_row)?,
                    created_at: r.try_get("created_at").map_err(bad_row)?,
                })
            })
            .collect()
    }

    async fn group_stats(&self, column: &str) -> Result<Vec<GroupStats>, CatalogError> {
        let rows = sqlx::query(&format!(
            "SELECT {column} AS k, count(*) AS n, coalesce(sum(total_size), 0)::bigint AS b FROM datasets \
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

#[async_trait::async_trait]
impl Catalog for PostgresCatalog {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<(), CatalogError> {
        // sqlx takes an advisory lock, so replicas starting together migrate once.
        sqlx::migrate!("../migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| {
                CatalogError::Unavailable(format!("migrating the PostgreSQL catalog: {e}"))
            })
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
             promoted_from, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
        )
        .bind(new.id.0)
        .bind(&new.name)
        .bind(&new.source)
        .bind(&new.external_id)
        .bind(new.layer.as_str())
        .bind(&new.bucket)
        .bind(&new.prefix)
        .bind(Json(&new.metadata))
        .bind(&new.tags)
        .bind(new.status.as_str())
        .bind(new.promoted_from.map(|p| p.0))
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
        let row = sqlx::query(&format!("SELECT {COLS} FROM datasets WHERE id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .ok_or_else(|| CatalogError::NotFound(format!("dataset {id}")))?;
        Self::row_to_dataset(&row)
    }

    async fn search(&self, q: &SearchQuery) -> Result<Page<Dataset>, CatalogError> {
        // Built per request with only the filters in use, so every query gets a plan that can use
        // its index (a generic "$n IS NULL OR ..." plan could not).
        let mut b: QueryBuilder<Postgres> =
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
        if !q.tags.is_empty() {
            b.push(" AND tags @> ").push_bind(q.tags.clone());
        }
        if let Some(after) = q.after {
            b.push(" AND id < ").push_bind(after.0);
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
            "SELECT name, size, sha256, content_type, created_at FROM files WHERE dataset_id = $1 ORDER BY name",
        )
        .bind(id.0)
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
        let updated = sqlx::query("UPDATE datasets SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(now)
            .bind(id.0)
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
            "DELETE FROM file_claims WHERE dataset_id = $1 AND name = $2 AND claimed_at < $3",
        )
        .bind(id.0)
        .bind(name)
        .bind(stale)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        // Claim first, then look for a committed file: a claim can only be won after the previous
        // holder committed (or gave up), so this check always sees its file.
        sqlx::query("INSERT INTO file_claims (dataset_id, name, claimed_at) VALUES ($1, $2, $3)")
            .bind(id.0)
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
        let exists = sqlx::query("SELECT 1 FROM files WHERE dataset_id = $1 AND name = $2")
            .bind(id.0)
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
        sqlx::query("DELETE FROM file_claims WHERE dataset_id = $1 AND name = $2")
            .bind(id.0)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn set_status(&self, id: DatasetId, status: DatasetStatus) -> Result<(), CatalogError> {
        let r = sqlx::query("UPDATE datasets SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(Utc::now())
            .bind(id.0)
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
            "SELECT {COLS} FROM datasets WHERE promoted_from = $1 AND layer = $2"
        ))
        .bind(source.0)
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
        let ids = uuids(ids.iter().copied());
        let rows = sqlx::query(
            "SELECT DISTINCT entry_id FROM provenance_datasets WHERE dataset_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let entry_ids = rows
            .iter()
            .map(|r| r.try_get::<Uuid, _>("entry_id"))
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
            sqlx::query("SELECT id FROM provenance WHERE action = $1 ORDER BY seq DESC LIMIT $2")
                .bind(action.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        let ids = rows
            .iter()
            .map(|r| r.try_get::<Uuid, _>("id"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad_row)?;
        let mut entries = self.entries_by_ids(&ids).await?;
        entries.reverse();
        Ok(entries)
    }

    async fn entry(&self, id: Uuid) -> Result<ProvenanceEntry, CatalogError> {
        self.entries_by_ids(&[id])
            .await?
            .pop()
            .ok_or_else(|| CatalogError::NotFound(format!("provenance entry {id}")))
    }

    async fn export(&self) -> Result<CatalogDump, CatalogError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // One snapshot for every read below.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
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
                Ok(DumpFile {
                    dataset_id: DatasetId(r.try_get("dataset_id").map_err(bad_row)?),
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
        // Two restores at once must not both find the catalog empty.
        sqlx::query("LOCK TABLE datasets, provenance IN EXCLUSIVE MODE")
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
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(d.id.0)
            .bind(&d.name)
            .bind(&d.source)
            .bind(&d.external_id)
            .bind(d.layer.as_str())
            .bind(&d.bucket)
            .bind(&d.prefix)
            .bind(d.file_count)
            .bind(d.total_size)
            .bind(Json(&d.metadata))
            .bind(&d.tags)
            .bind(d.status.as_str())
            .bind(d.promoted_from.map(|p| p.0))
            .bind(d.created_at)
            .bind(d.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        for f in &dump.files {
            sqlx::query(
                "INSERT INTO files (dataset_id, name, size, sha256, content_type, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(f.dataset_id.0)
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
             VALUES ($1, $2, 'queued', $3, $4, $5)",
        )
        .bind(job.id)
        .bind(&job.kind)
        .bind(Json(&job.request))
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
            "UPDATE jobs SET status = 'running', started_at = $2, heartbeat_at = now() WHERE id = $1 AND status = 'queued'",
        )
        .bind(id)
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
            "UPDATE jobs SET status = $2, result = $3, error = $4, finished_at = $5 \
             WHERE id = $1 AND status IN ('queued', 'running')",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(result.map(Json))
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
        // The database's clock, so replicas' clocks never disagree about silence.
        sqlx::query("UPDATE jobs SET heartbeat_at = now() WHERE id = $1 AND status = 'running'")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn fail_stale_jobs(
        &self,
        silent_for: std::time::Duration,
    ) -> Result<Vec<Job>, CatalogError> {
        let rows = sqlx::query(&format!(
            "UPDATE jobs SET status = 'failed', finished_at = $2, \
             error = 'abandoned: the server running it stopped before it finished; the next run completes it' \
             WHERE status IN ('queued', 'running') \
             AND coalesce(heartbeat_at, started_at, created_at) < now() - make_interval(secs => $1) \
             RETURNING {JOB_COLS}"
        ))
        .bind(silent_for.as_secs_f64())
        .bind(Utc::now())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(row_to_job).collect()
    }

    async fn get_job(&self, id: Uuid) -> Result<Job, CatalogError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .ok_or_else(|| CatalogError::NotFound(format!("job {id}")))?;
        row_to_job(&row)
    }

    async fn list_jobs(&self, kind: &str, limit: u32) -> Result<Vec<Job>, CatalogError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE kind = $1 ORDER BY id DESC LIMIT $2"
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
                "WITH RECURSIVE walk(id, dist, other, entry_id, action) AS (SELECT $1::uuid, 0, NULL::uuid, NULL::uuid, NULL::text UNION \
                 SELECT e.{next}, w.dist + 1, e.{here}, e.entry_id, e.action FROM lineage_edges e \
                 JOIN walk w ON e.{here} = w.id WHERE w.dist < $2) \
                 SELECT w.id, w.dist, w.other, w.entry_id, w.action, d.name, d.source, d.layer, d.status \
                 FROM walk w JOIN datasets d ON d.id = w.id WHERE w.dist > 0"
            ))
            .bind(id.0)
            .bind(depth as i32)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            for r in &rows {
                let nid: Uuid = r.try_get("id").map_err(bad_row)?;
                let nid = DatasetId(nid);
                let dist: i32 = r.try_get("dist").map_err(bad_row)?;
                let distance = i64::from(dist) * sign;
                let other: Option<Uuid> = r.try_get("other").map_err(bad_row)?;
                let entry: Option<Uuid> = r.try_get("entry_id").map_err(bad_row)?;
                let other = other.map(DatasetId);
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

fn row_to_job(row: &PgRow) -> Result<Job, CatalogError> {
    let status: String = row.try_get("status").map_err(bad_row)?;
    let request: Json<serde_json::Value> = row.try_get("request").map_err(bad_row)?;
    let result: Option<Json<serde_json::Value>> = row.try_get("result").map_err(bad_row)?;
    Ok(Job {
        id: row.try_get("id").map_err(bad_row)?,
        kind: row.try_get("kind").map_err(bad_row)?,
        status: status.parse().map_err(bad_row)?,
        request: request.0,
        result: result.map(|r| r.0),
        error: row.try_get("error").map_err(bad_row)?,
        schedule_key: row.try_get("schedule_key").map_err(bad_row)?,
        created_at: row.try_get("created_at").map_err(bad_row)?,
        started_at: row.try_get("started_at").map_err(bad_row)?,
        heartbeat_at: row.try_get("heartbeat_at").map_err(bad_row)?,
        finished_at: row.try_get("finished_at").map_err(bad_row)?,
    })
}

fn row_to_file(r: &PgRow) -> Result<FileRecord, CatalogError> {
    Ok(FileRecord {
        name: r.try_get("name").map_err(bad_row)?,
        size: r.try_get::<i64, _>("size").map_err(bad_row)?.max(0) as u64,
        sha256: r.try_get("sha256").map_err(bad_row)?,
        content_type: r.try_get("content_type").map_err(bad_row)?,
        created_at: r.try_get("created_at").map_err(bad_row)?,
    })
}
