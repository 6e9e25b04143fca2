//! The SQLite catalog: the embedded default.
//!
//! Ids are stored as hyphenated UUID text (UUIDv7 text sorts by time), JSON as text, timestamps as
//! RFC 3339 text. Write transactions start with a write so that SQLite takes its write lock up front
//! and waits on `busy_timeout` instead of failing a read-to-write upgrade. The statements both
//! databases share are in `catalog/sql.rs`, the row mapping in `catalog/rows.rs`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Arguments as _, QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::rows::{self, Columns, Values, bad_row};
use super::{
    Catalog, CatalogDump, CatalogError, Constraint, Count, Dataset, DatasetId, DatasetStatus,
    Datasets, Dump, FileRecord, GraphBuilder, Job, JobQueue, JobStatus, NewDataset, NewJob, Page,
    ProvenanceLog, SearchQuery, Stats, like_pattern, lineage_walks, page_of, rules, sql, stats_of,
};
use crate::layers::Layer;
use crate::provenance::{Action, Direction, LineageGraph, NewProvenance, ProvenanceEntry};

/// The SQLite catalog.
#[derive(Debug, Clone)]
pub struct SqliteCatalog {
    pool: SqlitePool,
}

/// Which rule a unique violation broke, from SQLite's message: it names an expression index
/// (`index 'name'`), or the columns of a key (`table.column, ...`).
fn constraint_of(message: &str) -> Constraint {
    let what = message
        .rsplit_once("constraint failed: ")
        .map_or(message, |(_, w)| w);
    match what {
        "index 'datasets_collection_version'" => Constraint::CollectionVersion,
        "datasets.promoted_from, datasets.layer" => Constraint::PromotionTarget,
        "datasets.id" => Constraint::DatasetId,
        "files.dataset_id, files.name" => Constraint::FileName,
        "file_claims.dataset_id, file_claims.name" => Constraint::FileClaim,
        "jobs.schedule_key" => Constraint::ScheduleKey,
        "jobs.id" | "provenance.id" => Constraint::RecordId,
        "table_names.layer, table_names.name" => Constraint::TableName,
        "table_names.layer, table_names.source, table_names.dataset_name" => Constraint::TableChain,
        "users.name" => Constraint::UserName,
        _ => Constraint::Other,
    }
}

fn db_err(e: sqlx::Error) -> CatalogError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            CatalogError::conflict(constraint_of(d.message()), d.message())
        }
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            CatalogError::Invalid(d.message().to_owned())
        }
        _ => CatalogError::Unavailable(e.to_string()),
    }
}

fn get<'r, T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>>(
    row: &'r SqliteRow,
    col: &str,
) -> Result<T, CatalogError> {
    row.try_get(col).map_err(bad_row)
}

/// Ids, JSON and tags are text here.
impl Columns for SqliteRow {
    fn text(&self, col: &str) -> Result<String, CatalogError> {
        get(self, col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, CatalogError> {
        get(self, col)
    }
    fn int(&self, col: &str) -> Result<i64, CatalogError> {
        get(self, col)
    }
    fn id(&self, col: &str) -> Result<Uuid, CatalogError> {
        get::<String>(self, col)?.parse().map_err(bad_row)
    }
    fn opt_id(&self, col: &str) -> Result<Option<Uuid>, CatalogError> {
        get::<Option<String>>(self, col)?
            .map(|s| s.parse())
            .transpose()
            .map_err(bad_row)
    }
    fn json(&self, col: &str) -> Result<Value, CatalogError> {
        serde_json::from_str(&get::<String>(self, col)?).map_err(bad_row)
    }
    fn opt_json(&self, col: &str) -> Result<Option<Value>, CatalogError> {
        get::<Option<String>>(self, col)?
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(bad_row)
    }
    fn tags(&self, col: &str) -> Result<Vec<String>, CatalogError> {
        serde_json::from_str(&get::<String>(self, col)?).map_err(bad_row)
    }
    fn time(&self, col: &str) -> Result<DateTime<Utc>, CatalogError> {
        get(self, col)
    }
    fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>, CatalogError> {
        get(self, col)
    }
}

/// Parameters for one statement; the first value that cannot be encoded is kept as the error.
#[derive(Default)]
struct Args {
    args: SqliteArguments<'static>,
    error: Option<String>,
}

impl Args {
    fn add<T: sqlx::Encode<'static, Sqlite> + sqlx::Type<Sqlite> + 'static>(&mut self, v: T) {
        if let Err(e) = self.args.add(v) {
            self.error.get_or_insert(e.to_string());
        }
    }

    /// Fills the parameters with `bind`.
    fn of(bind: impl FnOnce(&mut Self)) -> Result<SqliteArguments<'static>, CatalogError> {
        let mut a = Args::default();
        bind(&mut a);
        match a.error {
            Some(e) => Err(CatalogError::Invalid(format!("an unstorable value: {e}"))),
            None => Ok(a.args),
        }
    }
}

impl Values for Args {
    fn text(&mut self, v: &str) {
        self.add(v.to_owned())
    }
    fn opt_text(&mut self, v: Option<&str>) {
        self.add(v.map(str::to_owned))
    }
    fn int(&mut self, v: i64) {
        self.add(v)
    }
    fn id(&mut self, v: Uuid) {
        self.add(v.to_string())
    }
    fn opt_id(&mut self, v: Option<Uuid>) {
        self.add(v.map(|v| v.to_string()))
    }
    fn json(&mut self, v: &Value) {
        self.add(v.to_string())
    }
    fn opt_json(&mut self, v: Option<&Value>) {
        self.add(v.map(Value::to_string))
    }
    fn tags(&mut self, v: &[String]) {
        self.add(serde_json::to_string(v).unwrap_or_else(|_| "[]".into()))
    }
    fn time(&mut self, v: DateTime<Utc>) {
        self.add(v)
    }
}

/// A statement of `catalog/sql.rs` with its parameters.
fn query<'q>(
    sql: &'q str,
    bind: impl FnOnce(&mut Args),
) -> Result<sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>, CatalogError> {
    Ok(sqlx::query_with(sql, Args::of(bind)?))
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

    async fn fetch_dataset(
        tx: &mut Transaction<'_, Sqlite>,
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
        tx: &mut Transaction<'_, Sqlite>,
        id: DatasetId,
        files: &[FileRecord],
    ) -> Result<(), CatalogError> {
        for f in files {
            query(sql::INSERT_FILE, |v| rows::file(v, id, f))?
                .execute(&mut **tx)
                .await
                .map_err(|e| match db_err(e) {
                    CatalogError::Conflict(_) => rules::file_taken(id, &f.name),
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
        tx: &mut Transaction<'_, Sqlite>,
        p: &NewProvenance,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<ProvenanceEntry, CatalogError> {
        query(sql::INSERT_ENTRY, |v| rows::entry(v, p, id, at))?
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
        Ok(p.recorded(id, at))
    }

    /// Entries by id, oldest first, with their inputs and outputs.
    async fn entries_by_ids(&self, ids: &[Uuid]) -> Result<Vec<ProvenanceEntry>, CatalogError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        Self::entries_in(&mut conn, Some(ids)).await
    }

    /// Entries with these ids (all of them with `None`), oldest first, over one connection.
    async fn entries_in(
        conn: &mut sqlx::SqliteConnection,
        ids: Option<&[Uuid]>,
    ) -> Result<Vec<ProvenanceEntry>, CatalogError> {
        // Separate statements for "all" and "these", so a lookup by id keeps its index.
        let ids_json = json_ids(ids.unwrap_or_default().iter().copied());
        let (entries_sql, links_sql) = match ids {
            Some(_) => (
                "SELECT id, action, parameters, notes, actor, actor_token, reason, created_at FROM provenance \
                 WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY seq",
                "SELECT entry_id, dataset_id, role FROM provenance_datasets \
                 WHERE entry_id IN (SELECT value FROM json_each(?1)) ORDER BY position",
            ),
            None => (sql::ALL_ENTRIES, sql::ALL_ENTRY_LINKS),
        };
        let entries = sqlx::query(entries_sql)
            .bind(&ids_json)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        let links = sqlx::query(links_sql)
            .bind(&ids_json)
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

/// A JSON array of ids, for `json_each`.
fn json_ids(ids: impl IntoIterator<Item = impl ToString>) -> String {
    Value::Array(
        ids.into_iter()
            .map(|i| Value::String(i.to_string()))
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
}

#[async_trait::async_trait]
impl Datasets for SqliteCatalog {
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
        let mut b: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {} FROM datasets WHERE status = ",
            sql::DATASET_COLS
        ));
        search_filters(&mut b, q);
        if let Some(after) = q.after {
            b.push(" AND id < ").push_bind(after.to_string());
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
            let mut b: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT CAST(coalesce(sum(datasets), 0) AS BIGINT) FROM dataset_totals WHERE 1 = 1",
            );
            totals_filters(&mut b, q);
            let row = b.build().fetch_one(&self.pool).await.map_err(db_err)?;
            let found = row.try_get::<i64, _>(0).map_err(db_err)?;
            return Ok(Count { found, more: false });
        }
        let mut b: QueryBuilder<Sqlite> =
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
        stale_after: Duration,
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
impl ProvenanceLog for SqliteCatalog {
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
        let ids_json = json_ids(ids.iter().copied());
        let found = sqlx::query(
            "SELECT DISTINCT entry_id FROM provenance_datasets WHERE dataset_id IN (SELECT value FROM json_each(?))",
        )
        .bind(&ids_json)
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
            for r in &found {
                graph.add(rows::walk_row(r, *sign)?);
            }
        }
        Ok(graph.finish())
    }
}

#[async_trait::async_trait]
impl Dump for SqliteCatalog {
    async fn export(&self) -> Result<CatalogDump, CatalogError> {
        // One read transaction: in WAL mode it reads one snapshot throughout.
        let mut tx = self.pool.begin().await.map_err(db_err)?;
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
        // Write first, so the transaction holds the write lock before it reads.
        sqlx::query("DELETE FROM file_claims WHERE claimed_at IS NULL")
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

super::impl_tokens!(SqliteCatalog);
super::impl_audit!(SqliteCatalog);
super::impl_table_names!(SqliteCatalog);
super::impl_integrity!(SqliteCatalog);

#[async_trait::async_trait]
impl JobQueue for SqliteCatalog {
    async fn insert_job(&self, job: &NewJob) -> Result<Job, CatalogError> {
        query(sql::INSERT_JOB, |v| rows::new_job(v, job, Utc::now()))?
            .execute(&self.pool)
            .await
            .map_err(|e| rules::job_refused(job, db_err(e)))?;
        self.get_job(job.id).await
    }

    async fn start_job(&self, id: Uuid) -> Result<Job, CatalogError> {
        let done = query(
            "UPDATE jobs SET status = 'running', started_at = $2, heartbeat_at = $2 \
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
        query(
            "UPDATE jobs SET heartbeat_at = $2 WHERE id = $1 AND status = 'running'",
            |v| {
                v.id(id);
                v.time(Utc::now())
            },
        )?
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn fail_stale_jobs(&self, silent_for: Duration) -> Result<Vec<Job>, CatalogError> {
        let before = Utc::now()
            - chrono::Duration::from_std(silent_for).unwrap_or(chrono::Duration::minutes(1));
        let sql = format!(
            "UPDATE jobs SET status = 'failed', finished_at = $2, error = $3 \
             WHERE status IN ('queued', 'running') AND coalesce(heartbeat_at, started_at, created_at) < $1 \
             RETURNING {}",
            sql::JOB_COLS
        );
        let found = query(&sql, |v| {
            v.time(before);
            v.time(Utc::now());
            v.text(rules::ABANDONED)
        })?
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
fn totals_filters(b: &mut QueryBuilder<'_, Sqlite>, q: &SearchQuery) {
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
fn search_filters(b: &mut QueryBuilder<'_, Sqlite>, q: &SearchQuery) {
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
    for t in &q.tags {
        b.push(" AND EXISTS (SELECT 1 FROM json_each(datasets.tags) WHERE value = ")
            .push_bind(t.clone())
            .push(")");
    }
    if let Some(t) = q.created_after {
        b.push(" AND created_at >= ").push_bind(t);
    }
    if let Some(t) = q.created_before {
        b.push(" AND created_at < ").push_bind(t);
    }
}
