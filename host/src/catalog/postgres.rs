//! The PostgreSQL catalog: production.
//!
//! Several `lake serve` replicas share one database; everything that must happen once is decided by
//! the database (unique indexes, transactions), never by process memory. Free-text search uses a
//! trigram index over a generated `search_text` column, tag filters a GIN index over `tags`. The
//! statements both databases share are in `catalog/sql.rs`, the row mapping in `catalog/rows.rs`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions, PgRow};
use sqlx::query_builder::Separated;
use sqlx::types::Json;
use sqlx::{Arguments as _, Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::rows::{self, Columns, Values, bad_row};
use super::{
    Catalog, CatalogDump, CatalogError, Constraint, Count, Dataset, DatasetId, DatasetStatus,
    Datasets, Dump, FileRecord, GraphBuilder, Job, JobQueue, JobStatus, NewDataset, NewJob, Page,
    ProvenanceLog, SearchQuery, Stats, like_pattern, lineage_walks, page_of, rules, sql, stats_of,
};
use crate::layers::Layer;
use crate::provenance::{Action, Direction, LineageGraph, NewProvenance, ProvenanceEntry};

/// The PostgreSQL catalog.
#[derive(Debug, Clone)]
pub struct PostgresCatalog {
    pool: PgPool,
}

/// Which rule a unique violation broke, from the constraint or index PostgreSQL names.
fn constraint_of(name: Option<&str>) -> Constraint {
    match name.unwrap_or_default() {
        "datasets_collection_version" => Constraint::CollectionVersion,
        "datasets_promotion" => Constraint::PromotionTarget,
        "datasets_pkey" => Constraint::DatasetId,
        "files_pkey" => Constraint::FileName,
        "file_claims_pkey" => Constraint::FileClaim,
        "jobs_schedule_key_key" => Constraint::ScheduleKey,
        "jobs_pkey" | "provenance_id_key" => Constraint::RecordId,
        "table_names_pkey" => Constraint::TableName,
        "table_names_layer_source_dataset_name_key" => Constraint::TableChain,
        "users_pkey" => Constraint::UserName,
        _ => Constraint::Other,
    }
}

fn db_err(e: sqlx::Error) -> CatalogError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            CatalogError::conflict(constraint_of(d.constraint()), d.message())
        }
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            CatalogError::Invalid(d.message().to_owned())
        }
        _ => CatalogError::Unavailable(e.to_string()),
    }
}

fn get<'r, T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>>(
    row: &'r PgRow,
    col: &str,
) -> Result<T, CatalogError> {
    row.try_get(col).map_err(bad_row)
}

/// Ids are UUIDs, JSON is JSONB, tags a text array.
impl Columns for PgRow {
    fn text(&self, col: &str) -> Result<String, CatalogError> {
        get(self, col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, CatalogError> {
        get(self, col)
    }
    fn int(&self, col: &str) -> Result<i64, CatalogError> {
        // BIGINT columns, and INTEGER ones (a walk's distance).
        get::<i64>(self, col).or_else(|_| get::<i32>(self, col).map(i64::from))
    }
    fn id(&self, col: &str) -> Result<Uuid, CatalogError> {
        get(self, col)
    }
    fn opt_id(&self, col: &str) -> Result<Option<Uuid>, CatalogError> {
        get(self, col)
    }
    fn json(&self, col: &str) -> Result<Value, CatalogError> {
        get::<Json<Value>>(self, col).map(|j| j.0)
    }
    fn opt_json(&self, col: &str) -> Result<Option<Value>, CatalogError> {
        get::<Option<Json<Value>>>(self, col).map(|j| j.map(|j| j.0))
    }
    fn tags(&self, col: &str) -> Result<Vec<String>, CatalogError> {
        get(self, col)
    }
    fn time(&self, col: &str) -> Result<DateTime<Utc>, CatalogError> {
        get(self, col)
    }
    fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>, CatalogError> {
        get(self, col)
    }
}

/// Values in PostgreSQL's own types, to whatever takes them (a statement's arguments, a row of a
/// multi-row insert).
trait Bind {
    fn put<T: sqlx::Encode<'static, Postgres> + sqlx::Type<Postgres> + Send + 'static>(
        &mut self,
        v: T,
    );
}

impl<B: Bind> Values for B {
    fn text(&mut self, v: &str) {
        self.put(v.to_owned())
    }
    fn opt_text(&mut self, v: Option<&str>) {
        self.put(v.map(str::to_owned))
    }
    fn int(&mut self, v: i64) {
        self.put(v)
    }
    fn id(&mut self, v: Uuid) {
        self.put(v)
    }
    fn opt_id(&mut self, v: Option<Uuid>) {
        self.put(v)
    }
    fn json(&mut self, v: &Value) {
        self.put(Json(v.clone()))
    }
    fn opt_json(&mut self, v: Option<&Value>) {
        self.put(v.cloned().map(Json))
    }
    fn tags(&mut self, v: &[String]) {
        self.put(v.to_vec())
    }
    fn time(&mut self, v: DateTime<Utc>) {
        self.put(v)
    }
}

/// Parameters for one statement; the first value that cannot be encoded is kept as the error.
#[derive(Default)]
struct Args {
    args: PgArguments,
    error: Option<String>,
}

impl Bind for Args {
    fn put<T: sqlx::Encode<'static, Postgres> + sqlx::Type<Postgres> + Send + 'static>(
        &mut self,
        v: T,
    ) {
        if let Err(e) = self.args.add(v) {
            self.error.get_or_insert(e.to_string());
        }
    }
}

impl Bind for Separated<'_, 'static, Postgres, &'static str> {
    fn put<T: sqlx::Encode<'static, Postgres> + sqlx::Type<Postgres> + Send + 'static>(
        &mut self,
        v: T,
    ) {
        self.push_bind(v);
    }
}

impl Args {
    /// Fills the parameters with `bind`.
    fn of(bind: impl FnOnce(&mut Self)) -> Result<PgArguments, CatalogError> {
        let mut a = Args::default();
        bind(&mut a);
        match a.error {
            Some(e) => Err(CatalogError::Invalid(format!("an unstorable value: {e}"))),
            None => Ok(a.args),
        }
    }
}

/// A statement of `catalog/sql.rs` with its parameters.
fn query<'q>(
    sql: &'q str,
    bind: impl FnOnce(&mut Args),
) -> Result<sqlx::query::Query<'q, Postgres, PgArguments>, CatalogError> {
    Ok(sqlx::query_with(sql, Args::of(bind)?))
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

    async fn fetch_dataset(
        tx: &mut Transaction<'_, Postgres>,
        id: DatasetId,
    ) -> Result<Dataset, CatalogError> {
        let row = query(sql::SELECT_DATASET, |v| v.id(id.0))?
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err)?
            .ok_or_else(|| CatalogError::NotFound(format!("dataset {id}")))?;
        rows::dataset(&row)
    }

    async fn insert_files(
        tx: &mut Transaction<'_, Postgres>,
        id: DatasetId,
        files: &[FileRecord],
    ) -> Result<(), CatalogError> {
        if !files.is_empty() {
            let mut b: QueryBuilder<Postgres> = QueryBuilder::new(sql::INSERT_FILES);
            b.push_values(files, |mut row, f| rows::file(&mut row, id, f));
            b.build()
                .execute(&mut **tx)
                .await
                .map_err(|e| match db_err(e) {
                    CatalogError::Conflict(_) => {
                        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
                        rules::files_taken(id, &names)
                    }
                    other => other,
                })?;
        }
        for f in files {
            query(sql::DELETE_CLAIM, |v| {
                v.id(id.0);
                v.text(&f.name)
            })?
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        }
        query(sql::RECOUNT_FILES, |v| v.id(id.0))?
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Records an entry under a given id and time (an import keeps the originals).
    async fn insert_entry(
        tx: &mut Transaction<'_, Postgres>,
        p: &NewProvenance,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<ProvenanceEntry, CatalogError> {
        query(sql::INSERT_ENTRY, |v| rows::entry(v, p, id, at))?
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
        Ok(p.recorded(id, at))
    }

    /// Entries by id, oldest first, with their inputs and outputs.
    async fn entries_by_ids(&self, ids: &[Uuid]) -> Result<Vec<ProvenanceEntry>, CatalogError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        Self::entries_in(&mut conn, Some(ids)).await
    }

    /// Entries with these ids (all of them with `None`), oldest first, over one connection.
    async fn entries_in(
        conn: &mut sqlx::PgConnection,
        ids: Option<&[Uuid]>,
    ) -> Result<Vec<ProvenanceEntry>, CatalogError> {
        // Separate statements for "all" and "these", so a lookup by id keeps its index.
        let ids_bound = ids.map(<[Uuid]>::to_vec).unwrap_or_default();
        let (entries_sql, links_sql) = match ids {
            Some(_) => (
                "SELECT id, action, parameters, notes, actor, actor_token, reason, created_at FROM provenance \
                 WHERE id = ANY($1) ORDER BY seq",
                "SELECT entry_id, dataset_id, role FROM provenance_datasets \
                 WHERE entry_id = ANY($1) ORDER BY position",
            ),
            None => (sql::ALL_ENTRIES, sql::ALL_ENTRY_LINKS),
        };
        let entries = sqlx::query(entries_sql)
            .bind(&ids_bound)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        let links = sqlx::query(links_sql)
            .bind(&ids_bound)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        rows::entries(&entries, &links)
    }

    async fn group_stats(&self, column: &str) -> Result<Vec<super::GroupStats>, CatalogError> {
        let found = sqlx::query(&sql::group_stats(column))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        found.iter().map(rows::group).collect()
    }

    /// The `id` column of a statement's rows.
    async fn ids_of(
        &self,
        sql: &str,
        bind: impl FnOnce(&mut Args),
    ) -> Result<Vec<Uuid>, CatalogError> {
        let found = query(sql, bind)?
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        found.iter().map(|r| r.id("id")).collect()
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
}

#[async_trait::async_trait]
impl Datasets for PostgresCatalog {
    async fn insert_datasets(
        &self,
        datasets: &[(NewDataset, Vec<FileRecord>)],
        provenance: &[NewProvenance],
    ) -> Result<Vec<Dataset>, CatalogError> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        for (new, files) in datasets {
            query(sql::INSERT_DATASET, |v| rows::new_dataset(v, new, now))?
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            Self::insert_files(&mut tx, new.id, files).await?;
        }
        for p in provenance {
            Self::insert_entry(&mut tx, p, Uuid::now_v7(), now).await?;
        }
        let mut out = Vec::with_capacity(datasets.len());
        for (new, _) in datasets {
            out.push(Self::fetch_dataset(&mut tx, new.id).await?);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn get_dataset(&self, id: DatasetId) -> Result<Dataset, CatalogError> {
        let row = query(sql::SELECT_DATASET, |v| v.id(id.0))?
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .ok_or_else(|| CatalogError::NotFound(format!("dataset {id}")))?;
        rows::dataset(&row)
    }

    async fn search(&self, q: &SearchQuery) -> Result<Page<Dataset>, CatalogError> {
        // Built per request with only the filters in use, so every query gets a plan that can use
        // its index (a generic "$n IS NULL OR ..." plan could not).
        let mut b: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {} FROM datasets WHERE status = ",
            sql::DATASET_COLS
        ));
        search_filters(&mut b, q);
        if let Some(after) = q.after {
            b.push(" AND id < ").push_bind(after.0);
        }
        b.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(q.limit) + 1);
        b.push(" OFFSET ")
            .push_bind(i64::try_from(q.offset).unwrap_or(i64::MAX));
        let found = b.build().fetch_all(&self.pool).await.map_err(db_err)?;
        let items = found
            .iter()
            .map(rows::dataset)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_of(items, q.limit))
    }

    async fn count(&self, q: &SearchQuery, at_most: i64) -> Result<Count, CatalogError> {
        if q.counted_by_totals() {
            let mut b: QueryBuilder<Postgres> = QueryBuilder::new(
                "SELECT CAST(coalesce(sum(datasets), 0) AS BIGINT) FROM dataset_totals WHERE 1 = 1",
            );
            totals_filters(&mut b, q);
            let row = b.build().fetch_one(&self.pool).await.map_err(db_err)?;
            let found = row.try_get::<i64, _>(0).map_err(db_err)?;
            return Ok(Count { found, more: false });
        }
        let mut b: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM datasets WHERE status = ");
        search_filters(&mut b, q);
        b.push(" LIMIT ")
            .push_bind(at_most.saturating_add(1))
            .push(") AS found");
        let row = b.build().fetch_one(&self.pool).await.map_err(db_err)?;
        let n = row.try_get::<i64, _>(0).map_err(db_err)?;
        Ok(Count::bounded(n, at_most))
    }

    async fn stats(&self) -> Result<Stats, CatalogError> {
        let layers = self.group_stats("layer").await?;
        Ok(stats_of(&layers, self.group_stats("source").await?))
    }

    async fn list_files(&self, id: DatasetId) -> Result<Vec<FileRecord>, CatalogError> {
        self.get_dataset(id).await?;
        let found = query(sql::SELECT_FILES, |v| v.id(id.0))?
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        found.iter().map(rows::file_record).collect()
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
        let updated = query(sql::SET_STATUS, |v| {
            v.text(status.as_str());
            v.time(now);
            v.id(id.0)
        })?
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Err(CatalogError::NotFound(format!("dataset {id}")));
        }
        Self::insert_files(&mut tx, id, files).await?;
        if let Some(p) = provenance {
            Self::insert_entry(&mut tx, p, Uuid::now_v7(), now).await?;
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
        query(sql::DELETE_STALE_CLAIM, |v| {
            v.id(id.0);
            v.text(name);
            v.time(stale)
        })?
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        // Claim first, then look for a committed file: a claim can only be won after the previous
        // holder committed (or gave up), so this check always sees its file.
        query(sql::INSERT_CLAIM, |v| {
            v.id(id.0);
            v.text(name);
            v.time(now)
        })?
        .execute(&mut *tx)
        .await
        .map_err(|e| rules::claim_refused(id, name, db_err(e)))?;
        tx.commit().await.map_err(db_err)?;
        let exists = query(sql::FILE_EXISTS, |v| {
            v.id(id.0);
            v.text(name)
        })?
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?
        .is_some();
        if exists {
            self.release_claim(id, name).await?;
            return Err(rules::file_exists(id, name));
        }
        Ok(())
    }

    async fn release_claim(&self, id: DatasetId, name: &str) -> Result<(), CatalogError> {
        query(sql::DELETE_CLAIM, |v| {
            v.id(id.0);
            v.text(name)
        })?
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn set_status(&self, id: DatasetId, status: DatasetStatus) -> Result<(), CatalogError> {
        let r = query(sql::SET_STATUS, |v| {
            v.text(status.as_str());
            v.time(Utc::now());
            v.id(id.0)
        })?
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        if r.rows_affected() == 0 {
            return Err(CatalogError::NotFound(format!("dataset {id}")));
        }
        Ok(())
    }

    async fn dataset_at(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Option<Dataset>, CatalogError> {
        let row = query(sql::DATASET_AT, |v| {
            v.text(bucket);
            v.text(prefix)
        })?
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.as_ref().map(rows::dataset).transpose()
    }

    async fn find_promotion(
        &self,
        source: DatasetId,
        layer: Layer,
    ) -> Result<Option<Dataset>, CatalogError> {
        let row = query(sql::FIND_PROMOTION, |v| {
            v.id(source.0);
            v.text(layer.as_str())
        })?
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.as_ref().map(rows::dataset).transpose()
    }
}

#[async_trait::async_trait]
impl ProvenanceLog for PostgresCatalog {
    async fn append_provenance(
        &self,
        entry: &NewProvenance,
    ) -> Result<ProvenanceEntry, CatalogError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let e = Self::insert_entry(&mut tx, entry, Uuid::now_v7(), Utc::now()).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(e)
    }

    async fn provenance_of(&self, ids: &[DatasetId]) -> Result<Vec<ProvenanceEntry>, CatalogError> {
        let ids: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
        let found = sqlx::query(
            "SELECT DISTINCT entry_id FROM provenance_datasets WHERE dataset_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let entry_ids = found
            .iter()
            .map(|r| r.id("entry_id"))
            .collect::<Result<Vec<_>, _>>()?;
        self.entries_by_ids(&entry_ids).await
    }

    async fn entries_by_action(
        &self,
        action: Action,
        limit: u32,
    ) -> Result<Vec<ProvenanceEntry>, CatalogError> {
        let ids = self
            .ids_of(sql::ENTRY_IDS_BY_ACTION, |v| {
                v.text(action.as_str());
                v.int(i64::from(limit))
            })
            .await?;
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

    async fn lineage(
        &self,
        id: DatasetId,
        depth: u32,
        direction: Direction,
    ) -> Result<LineageGraph, CatalogError> {
        let root = self.get_dataset(id).await?;
        let mut graph = GraphBuilder::new(&root, depth);
        for (next, here, sign) in lineage_walks(direction) {
            // One statement per direction: each walk row remembers the edge it arrived by, and the
            // dataset columns are joined in, so a deep lineage costs one round trip, not one per node.
            // UNION (not UNION ALL) keeps diamonds from multiplying rows.
            let found = sqlx::query(&format!(
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
            for r in &found {
                graph.add(rows::walk_row(r, *sign)?);
            }
        }
        Ok(graph.finish())
    }
}

#[async_trait::async_trait]
impl Dump for PostgresCatalog {
    async fn export(&self) -> Result<CatalogDump, CatalogError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // One snapshot for every read below.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let found = sqlx::query(sql::ALL_DATASETS)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let datasets = found
            .iter()
            .map(rows::dataset)
            .collect::<Result<Vec<_>, _>>()?;
        let found = sqlx::query(sql::ALL_FILES)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let files = found
            .iter()
            .map(rows::dump_file)
            .collect::<Result<Vec<_>, _>>()?;
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
        let held: i64 = sqlx::query_scalar(sql::HELD_ROWS)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        if held > 0 {
            return Err(rules::not_empty());
        }
        for d in &dump.datasets {
            query(sql::IMPORT_DATASET, |v| rows::dumped_dataset(v, d))?
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        for f in &dump.files {
            query(sql::INSERT_FILE, |v| rows::file(v, f.dataset_id, &f.file))?
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        for e in &dump.provenance {
            Self::insert_entry(&mut tx, &rows::as_new(e), e.id, e.created_at).await?;
        }
        tx.commit().await.map_err(db_err)
    }
}

super::impl_tokens!(PostgresCatalog);
super::impl_audit!(PostgresCatalog);
super::impl_table_names!(PostgresCatalog);
super::impl_integrity!(PostgresCatalog);

#[async_trait::async_trait]
impl JobQueue for PostgresCatalog {
    async fn insert_job(&self, job: &NewJob) -> Result<Job, CatalogError> {
        query(sql::INSERT_JOB, |v| rows::new_job(v, job, Utc::now()))?
            .execute(&self.pool)
            .await
            .map_err(|e| rules::job_refused(job, db_err(e)))?;
        self.get_job(job.id).await
    }

    async fn start_job(&self, id: Uuid) -> Result<Job, CatalogError> {
        let done = query(
            "UPDATE jobs SET status = 'running', started_at = $2, heartbeat_at = now() \
             WHERE id = $1 AND status = 'queued'",
            |v| {
                v.id(id);
                v.time(Utc::now())
            },
        )?
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        rules::started(id, self.get_job(id).await?, done.rows_affected() > 0)
    }

    async fn finish_job(
        &self,
        id: Uuid,
        status: JobStatus,
        result: Option<&Value>,
        error: Option<&str>,
    ) -> Result<Job, CatalogError> {
        rules::check_finish_status(status)?;
        let done = query(sql::FINISH_JOB, |v| {
            rows::finished_job(v, id, status, result, error, Utc::now())
        })?
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        rules::finished(id, self.get_job(id).await?, done.rows_affected() > 0)
    }

    async fn heartbeat_job(&self, id: Uuid) -> Result<(), CatalogError> {
        // The database's clock, so replicas' clocks never disagree about silence.
        query(
            "UPDATE jobs SET heartbeat_at = now() WHERE id = $1 AND status = 'running'",
            |v| v.id(id),
        )?
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn fail_stale_jobs(
        &self,
        silent_for: std::time::Duration,
    ) -> Result<Vec<Job>, CatalogError> {
        let sql = format!(
            "UPDATE jobs SET status = 'failed', finished_at = $2, error = $3 \
             WHERE status IN ('queued', 'running') \
             AND coalesce(heartbeat_at, started_at, created_at) < now() - make_interval(secs => $1) \
             RETURNING {}",
            sql::JOB_COLS
        );
        let found = sqlx::query(&sql)
            .bind(silent_for.as_secs_f64())
            .bind(Utc::now())
            .bind(rules::ABANDONED)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        found.iter().map(rows::job).collect()
    }

    async fn get_job(&self, id: Uuid) -> Result<Job, CatalogError> {
        let row = query(sql::SELECT_JOB, |v| v.id(id))?
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .ok_or_else(|| CatalogError::NotFound(format!("job {id}")))?;
        rows::job(&row)
    }

    async fn list_jobs(&self, kind: &str, limit: u32) -> Result<Vec<Job>, CatalogError> {
        let found = query(sql::LIST_JOBS, |v| {
            v.text(kind);
            v.int(i64::from(limit))
        })?
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        found.iter().map(rows::job).collect()
    }
}

/// The layer and source filters of `q`: over `datasets`, and over `dataset_totals`.
fn totals_filters(b: &mut QueryBuilder<'_, Postgres>, q: &SearchQuery) {
    if let Some(l) = q.layer {
        b.push(" AND layer = ").push_bind(l.as_str());
    }
    for l in &q.hidden_layers {
        b.push(" AND layer <> ").push_bind(l.as_str());
    }
    if let Some(s) = &q.source {
        b.push(" AND source = ").push_bind(s.clone());
    }
}

/// The `WHERE` conditions of a search after `status = `, its cursor and paging aside: the same
/// for a page and for its count.
fn search_filters(b: &mut QueryBuilder<'_, Postgres>, q: &SearchQuery) {
    b.push_bind(q.status.as_str());
    totals_filters(b, q);
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
    if let Some(t) = q.created_after {
        b.push(" AND created_at >= ").push_bind(t);
    }
    if let Some(t) = q.created_before {
        b.push(" AND created_at < ").push_bind(t);
    }
}
