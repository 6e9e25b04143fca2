//! The SQL text both catalog databases accept, written once: numbered `$n` parameters (PostgreSQL's
//! own, and SQLite's `$NNN`), standard functions only. Statements that differ between the dialects
//! (array and JSON operators, the database clock, upserts, recursive walks) stay in their adapter.
//! Parameters are bound in the order of the matching function of `catalog/rows.rs`.

/// The dataset columns, in the order `rows::dataset` reads them.
macro_rules! dataset_cols {
    () => {
        "id, name, source, external_id, layer, bucket, prefix, file_count, total_size, metadata, tags, \
         status, promoted_from, created_at, updated_at"
    };
}

/// The job columns, in the order `rows::job` reads them.
macro_rules! job_cols {
    () => {
        "id, kind, status, request, result, error, schedule_key, created_at, started_at, \
         heartbeat_at, finished_at"
    };
}

/// The dataset columns, for statements an adapter builds.
pub(super) const DATASET_COLS: &str = dataset_cols!();
/// The job columns, for statements an adapter builds.
pub(super) const JOB_COLS: &str = job_cols!();

// Datasets.

/// Binds `rows::new_dataset`.
pub(super) const INSERT_DATASET: &str = "INSERT INTO datasets (id, name, source, external_id, layer, \
     bucket, prefix, metadata, tags, status, promoted_from, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)";
/// Binds `rows::dumped_dataset`: every column, as exported.
pub(super) const IMPORT_DATASET: &str = concat!(
    "INSERT INTO datasets (",
    dataset_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
);
/// `$1`: dataset id.
pub(super) const SELECT_DATASET: &str =
    concat!("SELECT ", dataset_cols!(), " FROM datasets WHERE id = $1");
/// `$1`: source dataset id, `$2`: layer.
/// `$1`: bucket, `$2`: prefix. A dataset (not deleted) whose objects are under that prefix.
pub(super) const DATASET_AT: &str = concat!(
    "SELECT ",
    dataset_cols!(),
    " FROM datasets WHERE bucket = $1 AND prefix = $2 AND status <> 'deleted' LIMIT 1"
);
pub(super) const FIND_PROMOTION: &str = concat!(
    "SELECT ",
    dataset_cols!(),
    " FROM datasets WHERE promoted_from = $1 AND layer = $2"
);
/// `$1`: status, `$2`: now, `$3`: dataset id.
pub(super) const SET_STATUS: &str =
    "UPDATE datasets SET status = $1, updated_at = $2 WHERE id = $3";
/// `$1`: dataset id.
pub(super) const RECOUNT_FILES: &str = "UPDATE datasets SET file_count = (SELECT count(*) FROM files WHERE dataset_id = $1), \
     total_size = (SELECT coalesce(sum(size), 0) FROM files WHERE dataset_id = $1) WHERE id = $1";
/// Ready datasets grouped by `{column}` (`layer` or `source`): key `k`, count `n`, bytes `b`.
/// Read from the totals the catalog's triggers keep, so it costs the same at any catalog size.
pub(super) fn group_stats(column: &str) -> String {
    format!(
        "SELECT {column} AS k, CAST(sum(datasets) AS BIGINT) AS n, CAST(sum(bytes) AS BIGINT) AS b \
         FROM dataset_totals GROUP BY {column} HAVING sum(datasets) > 0 ORDER BY n DESC, k"
    )
}

// Files and claims.

/// The head of an insert into `files`; the values follow `rows::file`.
pub(super) const INSERT_FILES: &str =
    "INSERT INTO files (dataset_id, name, size, sha256, content_type, created_at) ";
/// Binds `rows::file` for one file.
pub(super) const INSERT_FILE: &str = "INSERT INTO files (dataset_id, name, size, sha256, \
     content_type, created_at) VALUES ($1, $2, $3, $4, $5, $6)";
/// `$1`: dataset id.
pub(super) const SELECT_FILES: &str = "SELECT name, size, sha256, content_type, created_at FROM files \
     WHERE dataset_id = $1 ORDER BY name";
/// `$1`: dataset id, `$2`: name.
pub(super) const FILE_EXISTS: &str = "SELECT 1 FROM files WHERE dataset_id = $1 AND name = $2";
/// `$1`: dataset id, `$2`: name, `$3`: claimed at.
pub(super) const INSERT_CLAIM: &str =
    "INSERT INTO file_claims (dataset_id, name, claimed_at) VALUES ($1, $2, $3)";
/// `$1`: dataset id, `$2`: name.
pub(super) const DELETE_CLAIM: &str = "DELETE FROM file_claims WHERE dataset_id = $1 AND name = $2";
/// `$1`: dataset id, `$2`: name, `$3`: claims older than this are stale.
pub(super) const DELETE_STALE_CLAIM: &str =
    "DELETE FROM file_claims WHERE dataset_id = $1 AND name = $2 AND claimed_at < $3";

// Provenance.

/// Binds `rows::entry`.
pub(super) const INSERT_ENTRY: &str = "INSERT INTO provenance (id, action, parameters, notes, actor, \
     actor_token, reason, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
/// `$1`: action, `$2`: limit.
pub(super) const ENTRY_IDS_BY_ACTION: &str =
    "SELECT id FROM provenance WHERE action = $1 ORDER BY seq DESC LIMIT $2";
/// Every entry, oldest first (for `rows::entries`).
pub(super) const ALL_ENTRIES: &str = "SELECT id, action, parameters, notes, actor, actor_token, reason, created_at FROM provenance \
     ORDER BY seq";
/// Every entry's datasets, in order (for `rows::entries`).
pub(super) const ALL_ENTRY_LINKS: &str =
    "SELECT entry_id, dataset_id, role FROM provenance_datasets ORDER BY position";

// Dump.

/// Every dataset, by id.
pub(super) const ALL_DATASETS: &str =
    concat!("SELECT ", dataset_cols!(), " FROM datasets ORDER BY id");
/// Every file, by dataset and name.
pub(super) const ALL_FILES: &str = "SELECT dataset_id, name, size, sha256, content_type, created_at \
     FROM files ORDER BY dataset_id, name";
/// What makes a catalog not empty for an import: datasets, and provenance other than backups.
pub(super) const HELD_ROWS: &str = "SELECT (SELECT count(*) FROM datasets) + \
     (SELECT count(*) FROM provenance WHERE action NOT IN ('backup', 'restore'))";

// Jobs.

/// Binds `rows::new_job`.
pub(super) const INSERT_JOB: &str = "INSERT INTO jobs (id, kind, status, request, schedule_key, \
     created_at) VALUES ($1, $2, 'queued', $3, $4, $5)";
/// Binds `rows::finished_job`.
pub(super) const FINISH_JOB: &str = "UPDATE jobs SET status = $2, result = $3, error = $4, \
     finished_at = $5 WHERE id = $1 AND status IN ('queued', 'running')";
/// `$1`: job id.
pub(super) const SELECT_JOB: &str = concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = $1");
/// `$1`: kind, `$2`: limit.
pub(super) const LIST_JOBS: &str = concat!(
    "SELECT ",
    job_cols!(),
    " FROM jobs WHERE kind = $1 ORDER BY id DESC LIMIT $2"
);

// Tokens.

/// The token columns, in the order `rows::token` reads them.
macro_rules! token_cols {
    () => {
        "t.id, t.name, t.owner, t.role, t.digest, t.created_at, t.expires_at, t.last_used_at, \
         t.revoked_at, u.disabled_at AS owner_disabled_at FROM tokens t \
         LEFT JOIN users u ON u.name = t.owner"
    };
}

/// Binds `rows::new_token`.
pub(super) const INSERT_TOKEN: &str = "INSERT INTO tokens (id, name, owner, role, digest, \
     created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// `$1`: token id.
pub(super) const SELECT_TOKEN: &str = concat!("SELECT ", token_cols!(), " WHERE t.id = $1");
/// Every token, newest first.
pub(super) const LIST_TOKENS: &str = concat!("SELECT ", token_cols!(), " ORDER BY t.id DESC");
/// `$1`: owner; that owner's tokens, newest first.
pub(super) const LIST_OWNER_TOKENS: &str = concat!(
    "SELECT ",
    token_cols!(),
    " WHERE t.owner = $1 ORDER BY t.id DESC"
);
/// `$1`: token id, `$2`: now. Keeps the first revocation.
pub(super) const REVOKE_TOKEN: &str =
    "UPDATE tokens SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1";
/// `$1`: token id, `$2`: now.
pub(super) const TOUCH_TOKEN: &str = "UPDATE tokens SET last_used_at = $2 WHERE id = $1";

// Users.

/// Binds `rows::new_user`.
pub(super) const INSERT_USER: &str =
    "INSERT INTO users (name, kind, role, created_at) VALUES ($1, $2, $3, $4)";
/// `$1`: name.
pub(super) const SELECT_USER: &str =
    "SELECT name, kind, role, created_at, disabled_at FROM users WHERE name = $1";
/// Every user, by name.
pub(super) const LIST_USERS: &str =
    "SELECT name, kind, role, created_at, disabled_at FROM users ORDER BY name";
/// `$1`: name, `$2`: now. Keeps the first time.
pub(super) const DISABLE_USER: &str =
    "UPDATE users SET disabled_at = coalesce(disabled_at, $2) WHERE name = $1";

// Audit.

/// Binds `rows::new_audit`.
pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit (at, request_id, principal, token_id, \
     client, method, route, resource, action, decision, reason, status) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
/// Binds `rows::audit_query`: `$1` decision or '', `$2` principal or '', `$3`..`$4` the time
/// range, `$5` entries before this seq, `$6` limit. Newest first.
pub(super) const SELECT_AUDIT: &str = "SELECT seq, at, request_id, principal, token_id, client, \
     method, route, resource, action, decision, reason, status FROM audit \
     WHERE ($1 = '' OR decision = $1) AND ($2 = '' OR principal = $2) \
     AND at >= $3 AND at < $4 AND seq < $5 ORDER BY seq DESC LIMIT $6";

// Table names (the Iceberg catalog's).

/// `$1`: layer, `$2`: limit. Chains of tabular datasets (ready, one Parquet file) without a name,
/// as (source, name), the oldest chain first.
pub(super) const UNNAMED_TABLES: &str = "SELECT d.source, d.name, min(d.created_at) AS first \
     FROM datasets d WHERE d.layer = $1 AND d.status = 'ready' AND d.file_count = 1 \
     AND EXISTS (SELECT 1 FROM files f WHERE f.dataset_id = d.id AND f.name LIKE '%.parquet') \
     AND NOT EXISTS (SELECT 1 FROM table_names t WHERE t.layer = d.layer \
     AND t.source = d.source AND t.dataset_name = d.name) \
     GROUP BY d.source, d.name ORDER BY first, d.source, d.name LIMIT $2";
/// Binds `rows::new_table_name`.
pub(super) const INSERT_TABLE_NAME: &str = "INSERT INTO table_names (layer, name, source, \
     dataset_name, created_at) VALUES ($1, $2, $3, $4, $5)";
/// `$1`: layer, `$2`: names after this one, `$3`: limit. By name.
pub(super) const LIST_TABLE_NAMES: &str = "SELECT layer, name, source, dataset_name FROM \
     table_names WHERE layer = $1 AND name > $2 ORDER BY name LIMIT $3";
/// `$1`: layer, `$2`: name.
pub(super) const SELECT_TABLE_NAME: &str = "SELECT layer, name, source, dataset_name FROM \
     table_names WHERE layer = $1 AND name = $2";
/// `$1`: layer, `$2`: source, `$3`: dataset name.
pub(super) const SELECT_TABLE_NAME_OF: &str = "SELECT layer, name, source, dataset_name FROM \
     table_names WHERE layer = $1 AND source = $2 AND dataset_name = $3";
/// `$1`: layer, `$2`: source, `$3`: dataset name. Every status, oldest first.
pub(super) const TABLE_VERSIONS: &str = concat!(
    "SELECT ",
    dataset_cols!(),
    " FROM datasets WHERE layer = $1 AND source = $2 AND name = $3 ORDER BY created_at, id"
);

// Integrity.

/// `$1`, `$2`: the (dataset id, name) to continue after; `$3`: limit. A row-value comparison, so
/// both databases walk the primary key from there instead of sorting every file for each page.
pub(super) const FILES_AFTER: &str = "SELECT d.id, d.status, d.bucket, d.prefix, f.name, f.size, f.sha256 \
     FROM files f JOIN datasets d ON d.id = f.dataset_id \
     WHERE (f.dataset_id, f.name) > ($1, $2) \
     ORDER BY f.dataset_id, f.name LIMIT $3";
/// `$1`: bucket, `$2`: prefix, `$3`: file name, `$4`: claims made after this are live.
pub(super) const OWNERS_OF: &str = "SELECT d.id, d.status, \
     (SELECT count(*) FROM files f WHERE f.dataset_id = d.id AND f.name = $3) AS cataloged, \
     (SELECT count(*) FROM file_claims c WHERE c.dataset_id = d.id AND c.name = $3 AND c.claimed_at >= $4) AS claimed \
     FROM datasets d WHERE d.bucket = $1 AND d.prefix = $2";
/// `$1`: claimed before, `$2`: limit.
pub(super) const STALE_CLAIMS: &str = "SELECT dataset_id, name, claimed_at FROM file_claims \
     WHERE claimed_at < $1 ORDER BY claimed_at LIMIT $2";
/// `$1`: created before, `$2`: limit.
pub(super) const STALLED_DATASETS: &str = concat!(
    "SELECT ",
    dataset_cols!(),
    " FROM datasets WHERE status = 'pending' AND created_at < $1 ORDER BY id LIMIT $2"
);
/// `$1`: silent since before, `$2`: limit.
pub(super) const SILENT_JOBS: &str = concat!(
    "SELECT ",
    job_cols!(),
    " FROM jobs WHERE status IN ('queued', 'running') \
     AND coalesce(heartbeat_at, started_at, created_at) < $1 ORDER BY id LIMIT $2"
);
/// `$1`: limit.
pub(super) const DANGLING_REFERENCES: &str = "SELECT entry_id, dataset_id FROM ( \
     SELECT p.entry_id, p.dataset_id FROM provenance_datasets p \
     WHERE NOT EXISTS (SELECT 1 FROM datasets d WHERE d.id = p.dataset_id) \
     UNION SELECT e.entry_id, e.parent_id FROM lineage_edges e \
     WHERE NOT EXISTS (SELECT 1 FROM datasets d WHERE d.id = e.parent_id) \
     UNION SELECT e.entry_id, e.child_id FROM lineage_edges e \
     WHERE NOT EXISTS (SELECT 1 FROM datasets d WHERE d.id = e.child_id)) AS r LIMIT $1";
