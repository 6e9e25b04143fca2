//! The lake's composition root, and the dataset operations the HTTP API and the CLI share.
//!
//! A [`Lake`] owns one catalog and one blob store (both behind their contracts), the plugin
//! registry, the settings and the services' state; each service (`lake.files()`,
//! `lake.pipelines()`, `lake.collections()`, `lake.backups()`, `lake.promotions()`, `lake.jobs()`,
//! `lake.access()`) borrows it through the `service!` macro below. It applies the lake's rules:
//! layer buckets, filled metadata, immutability, and the write order that keeps the catalog and
//! the store consistent. Objects are written before the rows that name them, and a row is only
//! committed after its object is complete; when the commit fails the object is removed, so a
//! reported failure leaves neither a row without its object nor an object without its row.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::blob::{
    self, BlobError, BlobStore, BucketPolicy, BucketReport, ByteStream, Enforcement,
};
use crate::catalog::{
    Catalog, CatalogError, Count, Dataset, DatasetId, DatasetStatus, FileRecord, NewDataset, Page,
    SearchQuery, Stats,
};
use crate::config::{Config, LockMode, StorageBackend};
use crate::identity::Visibility;
use crate::layers::Layer;
use crate::provenance::{
    Action, DeletionRecord, Direction, FileFacts, LineageGraph, NewProvenance, PromotionRecord,
    ProvenanceEntry, RegistrationRecord,
};

/// Errors of lake operations; the HTTP layer maps each to one status.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LakeError {
    /// Unknown dataset, file or object.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or breaks a rule (wrong layer, bad name).
    #[error("{0}")]
    Invalid(String),
    /// The request clashes with existing state (file exists, promotion running).
    #[error("{0}")]
    Conflict(String),
    /// The lake never allows this (deleting raw).
    #[error("{0}")]
    Forbidden(String),
    /// The upload is larger than the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// The client's upload stream broke.
    #[error("{0}")]
    BadBody(String),
    /// A backing service failed; the detail is logged, not shown.
    #[error("{0}")]
    Unavailable(String),
}

impl From<CatalogError> for LakeError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound(m) => LakeError::NotFound(format!("{m} not found")),
            CatalogError::Conflict(c) => LakeError::Conflict(c.message),
            CatalogError::Invalid(m) => LakeError::Invalid(m),
            CatalogError::Unavailable(m) => LakeError::Unavailable(m),
        }
    }
}

impl From<BlobError> for LakeError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound { bucket, key } => {
                LakeError::NotFound(format!("object {bucket}/{key} not found"))
            }
            BlobError::InvalidKey { key, reason } => {
                LakeError::Invalid(format!("invalid object path {key:?}: {reason}"))
            }
            BlobError::Body(io) if io.kind() == std::io::ErrorKind::FileTooLarge => {
                LakeError::TooLarge(io.to_string())
            }
            BlobError::Body(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                LakeError::BadBody(format!("the upload stopped: {io}"))
            }
            BlobError::Body(io) => LakeError::BadBody(format!("the upload stream failed: {io}")),
            other => LakeError::Unavailable(other.to_string()),
        }
    }
}

/// Settings the service needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bucket per layer, in [`Layer::ALL`] order.
    pub buckets: [String; 4],
    /// Copies in flight during one promotion.
    pub promotion_parallelism: usize,
    /// A running job silent this long was abandoned (`server.job_lease_secs`).
    pub job_lease: Duration,
    /// Bytes one collection may store (`plugins.max_collect_bytes`).
    pub max_collect_bytes: u64,
    /// Parquet bytes one step run may read (`plugins.max_step_input_bytes`).
    pub max_step_input_bytes: u64,
    /// How long an upload may send nothing before it is ended (`server.body_idle_secs`).
    pub body_idle: Duration,
    /// Presigned URL lifetime.
    pub presign_ttl: Duration,
    /// Largest upload.
    pub max_upload_bytes: u64,
    /// Object Lock asked for raw, if any.
    pub raw_lock: Option<(u32, &'static str)>,
    /// Expiration asked for archive, if any.
    pub archive_expiration_days: Option<u32>,
    /// The file service's cache and defaults.
    pub files: crate::config::FilesConfig,
    /// Configured upstream collections.
    pub sources: Vec<crate::config::SourceConfig>,
    /// Backup target, schedules and retention.
    pub backup: crate::config::BackupConfig,
    /// Whether requests present tokens, and what each role may do.
    pub access: AccessRules,
    /// How engines reach the store's objects (Iceberg FileIO properties: the S3 endpoint, region
    /// and addressing; nothing for a local store). Credentials are the engine's own.
    pub engine_storage: std::collections::BTreeMap<String, String>,
    /// Where the lake's own runs are sent as OpenLineage events.
    pub lineage: crate::config::LineageConfig,
}

/// Access settings: whether the HTTP API asks for a bearer token, and the rules of the roles.
#[derive(Debug, Clone)]
pub struct AccessRules {
    /// Every request but health, metrics and the API reference presents a live token.
    pub enforce: bool,
    /// What each role may do.
    pub policy: crate::identity::Policy,
    /// `[auth]` as configured: the mode, the rate limits, the OpenID Connect issuer.
    pub auth: crate::config::AuthConfig,
    /// Web origins whose pages may call the API.
    pub cors_origins: Vec<String>,
    /// Uploads received at once.
    pub max_concurrent_uploads: u32,
}

/// The Iceberg FileIO properties that let an engine read the store's objects.
fn engine_storage(cfg: &Config) -> std::collections::BTreeMap<String, String> {
    let mut props = std::collections::BTreeMap::new();
    if cfg.storage.backend == crate::config::StorageBackend::S3 {
        let s3 = &cfg.storage.s3;
        if let Some(ep) = &s3.endpoint {
            props.insert("s3.endpoint".to_owned(), ep.clone());
        }
        props.insert("s3.region".to_owned(), s3.region.clone());
        props.insert(
            "s3.path-style-access".to_owned(),
            s3.force_path_style.to_string(),
        );
    }
    props
}

impl Settings {
    /// Derives the service settings from a configuration.
    pub fn from_config(cfg: &Config) -> Self {
        let b = &cfg.storage.buckets;
        let mode = match cfg.layers.raw_lock_mode {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        };
        Self {
            buckets: [
                b.raw.clone(),
                b.processed.clone(),
                b.curated.clone(),
                b.archive.clone(),
            ],
            promotion_parallelism: cfg.layers.promotion_parallelism,
            job_lease: Duration::from_secs(cfg.server.job_lease_secs),
            max_collect_bytes: cfg.plugins.max_collect_bytes.0,
            max_step_input_bytes: cfg.plugins.max_step_input_bytes.0,
            body_idle: Duration::from_secs(cfg.server.body_idle_secs),
            presign_ttl: Duration::from_secs(cfg.server.presign_ttl_secs),
            max_upload_bytes: cfg.server.max_upload_bytes.0,
            raw_lock: (cfg.layers.raw_retention_days > 0)
                .then_some((cfg.layers.raw_retention_days, mode)),
            archive_expiration_days: (cfg.layers.archive_expiration_days > 0)
                .then_some(cfg.layers.archive_expiration_days),
            files: cfg.files.clone(),
            engine_storage: engine_storage(cfg),
            lineage: cfg.lineage.clone(),
            sources: cfg.sources.clone(),
            access: AccessRules {
                enforce: crate::config::enforces_tokens(&cfg.auth, &cfg.server.listen),
                policy: crate::identity::Policy {
                    raw_download: cfg.auth.raw_download_role,
                },
                auth: cfg.auth.clone(),
                cors_origins: cfg.server.cors_origins.clone(),
                max_concurrent_uploads: cfg.server.max_concurrent_uploads,
            },
            backup: {
                // Configurations built in code skip `config::from_parts`, which resolves `auto`.
                let mut b = cfg.backup.clone();
                crate::config::resolve_backup_target(&mut b, &cfg.storage);
                b
            },
        }
    }
}

/// What a layer enforces and holds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LayerSummary {
    /// The layer.
    pub layer: Layer,
    /// Its bucket or directory.
    pub bucket: String,
    /// Ready datasets.
    pub datasets: i64,
    /// Their bytes.
    pub bytes: i64,
    /// `storage` when the store itself refuses changes (Object Lock), `host` when only the lake does.
    pub immutability: &'static str,
    /// Whether the lake refuses deletes of this layer's datasets.
    pub deletes_refused: bool,
    /// The store's answer for Object Lock and lifecycle.
    pub storage: BucketReport,
}

/// A dataset to register (the seed's and the collector's `POST /catalog` bodies, unified).
#[derive(Debug, Clone, Default)]
pub struct RegisterRequest {
    /// Human name.
    pub name: String,
    /// Source.
    pub source: String,
    /// Upstream identifier.
    pub external_id: Option<String>,
    /// Layer (default raw).
    pub layer: Layer,
    /// The bucket the caller believes the objects are in (the seed's `minio_bucket`): the layer's
    /// bucket, by its configured name or by the layer's name.
    pub bucket: Option<String>,
    /// Existing objects to register, which must be there: `{bucket}/{key}`, `s3://{bucket}/{key}`
    /// or a bare key in the layer's bucket, naming one object or a prefix.
    pub object_path: Option<String>,
    /// A key prefix in the layer's bucket (the seed's `minio_prefix`): whatever is there is
    /// registered, and an empty prefix gives an empty dataset to upload into later.
    pub prefix: Option<String>,
    /// Metadata (a JSON object or null).
    pub metadata: serde_json::Value,
    /// Tags.
    pub tags: Vec<String>,
    /// `registration` by default; connectors use `collection`.
    pub action: Option<Action>,
}

/// How a download is served.
pub enum Download {
    /// Redirect the client to a presigned URL.
    Redirect(String),
    /// Stream the bytes through the host.
    Stream {
        /// The bytes.
        body: ByteStream,
        /// Size.
        size: u64,
        /// MIME type.
        content_type: String,
    },
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Download::Redirect(url) => f.debug_tuple("Redirect").field(url).finish(),
            Download::Stream {
                size, content_type, ..
            } => f
                .debug_struct("Stream")
                .field("size", size)
                .field("content_type", content_type)
                .finish_non_exhaustive(),
        }
    }
}

/// The linear lineage of a dataset: its ancestors' entries and its own, oldest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Lineage {
    /// The dataset asked about.
    #[schema(value_type = String, format = Uuid)]
    pub dataset_id: DatasetId,
    /// Datasets it derives from, nearest first.
    #[schema(value_type = Vec<String>)]
    pub ancestors: Vec<DatasetId>,
    /// Provenance entries naming it or an ancestor, oldest first.
    pub entries: Vec<ProvenanceEntry>,
    /// Ancestors the caller may not see, shown as placeholders (an id made up for this answer).
    pub hidden: usize,
}

/// Declares a service: a type that borrows the [`Lake`] (and the state the lake keeps for it, when
/// it has some), reads the lake's parts through `Deref`, and the lake's one accessor for it. The
/// service's operations go on its own type, in its own module.
macro_rules! service {
    ($(#[$doc:meta])* $name:ident, $accessor:ident $(, $state:ty = $field:ident)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<'a> {
            lake: &'a $crate::lake::Lake,
            $(state: &'a $state,)?
        }

        impl std::ops::Deref for $name<'_> {
            type Target = $crate::lake::Lake;
            fn deref(&self) -> &$crate::lake::Lake {
                self.lake
            }
        }

        impl $crate::lake::Lake {
            $(#[$doc])*
            pub fn $accessor(&self) -> $name<'_> {
                $name {
                    lake: self,
                    $(state: {
                        let state: &$state = &self.$field;
                        state
                    },)?
                }
            }
        }
    };
}
pub(crate) use service;

/// The lake service.
#[derive(Debug, Clone)]
pub struct Lake {
    pub(crate) catalog: Arc<dyn Catalog>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) settings: Arc<Settings>,
    reports: Arc<std::sync::RwLock<Vec<(Layer, BucketReport)>>>,
    plugins: Option<crate::plugins::Plugins>,
    pub(crate) files: Arc<crate::files::FileState>,
    pub(crate) collect: Arc<crate::collect::CollectState>,
    pub(crate) access: Arc<crate::identity::AccessState>,
    pub(crate) jobs: Arc<crate::jobs::JobsState>,
}

/// How long an upload's claim on a file name lasts when its server died mid-upload.
pub const CLAIM_STALE_AFTER: Duration = Duration::from_secs(3600);

/// The filename rules: one path segment a person would type, never a path.
pub fn check_file_name(name: &str) -> Result<(), LakeError> {
    let bad = |why: &str| {
        Err(LakeError::Invalid(format!(
            "invalid file name {name:?}: {why}"
        )))
    };
    if name.is_empty() || name.len() > 255 {
        return bad("must be 1 to 255 bytes");
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\\') {
        return bad("must be a plain name, not a path");
    }
    if name.chars().any(char::is_control) {
        return bad("must not contain control characters");
    }
    if name.contains('\u{fffd}') {
        return bad("is not valid UTF-8 (it holds replacement characters)");
    }
    if name.chars().any(invisible) {
        return bad(
            "must not contain invisible or bidirectional formatting characters (they make a name read as another)",
        );
    }
    Ok(())
}

/// The longest search text, source, tag or external id a search may name.
pub const MAX_SEARCH_TERM: usize = 1000;

/// A search's terms are bounded: a 60 KB `q` made SQLite's LIKE give up (a 503).
fn check_search(q: &SearchQuery) -> Result<(), LakeError> {
    let terms = [
        q.q.as_deref(),
        q.source.as_deref(),
        q.external_id.as_deref(),
    ];
    let long = terms
        .into_iter()
        .flatten()
        .chain(q.tags.iter().map(String::as_str))
        .any(|t| t.chars().count() > MAX_SEARCH_TERM);
    if long || q.tags.len() > 64 {
        return Err(LakeError::Invalid(format!(
            "a search term (q, source, tag, external id) is at most {MAX_SEARCH_TERM} characters, and a search names at most 64 tags"
        )));
    }
    Ok(())
}

/// Zero-width and bidirectional formatting characters: `evil\u{202e}vsc.csv` shows as
/// `evilcsv.csv`.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}'
        | '\u{feff}' | '\u{061c}' | '\u{00ad}')
}

/// Guesses a MIME type from a file name; uploads may say otherwise.
pub fn content_type_for(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit('.').next().unwrap_or("");
    match ext {
        "csv" => "text/csv",
        "tsv" | "tab" => "text/tab-separated-values",
        "txt" | "soft" => "text/plain",
        "json" => "application/json",
        "xml" => "application/xml",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "parquet" => "application/vnd.apache.parquet",
        "arrow" | "feather" => "application/vnd.apache.arrow.file",
        "gz" => "application/gzip",
        "fasta" | "fa" => "text/x-fasta",
        _ => "application/octet-stream",
    }
}

impl Lake {
    /// Builds a lake from configuration: connects the catalog (migrating if configured) and prepares
    /// one bucket per layer, recording what the store enforces. The plugin runtime is not started
    /// here (on a cold cache it compiles every component): callers that run plugins attach it with
    /// [`Lake::with_plugins`].
    pub async fn open(cfg: &Config) -> anyhow::Result<Lake> {
        use anyhow::Context;
        let url = cfg.catalog.url.expose();
        let catalog: Arc<dyn Catalog> = if url.starts_with("sqlite:") {
            Arc::new(
                crate::catalog::sqlite::SqliteCatalog::connect(url, cfg.catalog.max_connections)
                    .await
                    .context("opening the SQLite catalog")?,
            )
        } else {
            Arc::new(
                crate::catalog::postgres::PostgresCatalog::connect(
                    url,
                    cfg.catalog.max_connections,
                )
                .await
                .context("connecting to PostgreSQL")?,
            )
        };
        if cfg.catalog.auto_migrate {
            catalog.migrate().await.context("migrating the catalog")?;
        }
        let blobs: Arc<dyn BlobStore> = match cfg.storage.backend {
            StorageBackend::Local => Arc::new(
                blob::local::LocalStore::open(&cfg.storage.local.root)
                    .await
                    .context("opening the local blob store")?,
            ),
            StorageBackend::S3 => {
                Arc::new(blob::s3::S3Store::new(&cfg.storage.s3).context("configuring S3")?)
            }
        };
        let lake = Lake::new(catalog, blobs, Settings::from_config(cfg));
        lake.prepare_buckets()
            .await
            .context("preparing the layer buckets")?;
        Ok(lake)
    }

    /// Assembles a lake from parts (tests use this with their own adapters).
    pub fn new(catalog: Arc<dyn Catalog>, blobs: Arc<dyn BlobStore>, settings: Settings) -> Lake {
        Lake {
            catalog,
            blobs,
            files: Arc::new(crate::files::FileState::new(&settings.files)),
            access: Arc::new(crate::identity::AccessState::new(&settings.access.auth)),
            settings: Arc::new(settings),
            reports: Arc::default(),
            plugins: None,
            collect: Arc::default(),
            jobs: Arc::default(),
        }
    }

    /// Attaches the plugin runtime.
    pub fn with_plugins(mut self, plugins: crate::plugins::Plugins) -> Lake {
        self.plugins = Some(plugins);
        self
    }

    /// The plugin registry, when the runtime is running.
    pub fn plugins(&self) -> Option<&crate::plugins::Plugins> {
        self.plugins.as_ref()
    }

    /// The plugin registry, or the error every operation that runs a plugin gives without one
    /// (a lake opened by a command that runs no plugins).
    pub fn running_plugins(&self) -> Result<&crate::plugins::Plugins, LakeError> {
        self.plugins
            .as_ref()
            .ok_or_else(|| LakeError::Unavailable("the plugin runtime is not running".into()))
    }

    /// Creates the layer buckets if needed and applies raw's lock and archive's lifecycle.
    pub async fn prepare_buckets(&self) -> Result<(), LakeError> {
        let mut reports = Vec::new();
        for layer in Layer::ALL {
            let policy = BucketPolicy {
                object_lock: if layer == Layer::Raw {
                    self.settings.raw_lock
                } else {
                    None
                },
                expire_after_days: if layer == Layer::Archive {
                    self.settings.archive_expiration_days
                } else {
                    None
                },
                seldom_read: layer == Layer::Raw,
            };
            let report = self
                .blobs
                .prepare_bucket(self.bucket(layer), &policy)
                .await?;
            tracing::info!(layer = %layer, bucket = self.bucket(layer), object_lock = ?report.object_lock, lifecycle = ?report.lifecycle, "Layer bucket ready");
            reports.push((layer, report));
        }
        *self.reports.write().unwrap_or_else(|p| p.into_inner()) = reports;
        Ok(())
    }

    /// The catalog, for callers that need a read the service does not wrap.
    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    /// The blob store.
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// The service settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The bucket of a layer.
    pub fn bucket(&self, layer: Layer) -> &str {
        let i = Layer::ALL.iter().position(|l| *l == layer).unwrap_or(0);
        &self.settings.buckets[i]
    }

    /// Whether `name` is the layer's bucket: its configured name, or the layer's own name.
    fn names_layer_bucket(&self, layer: Layer, name: &str) -> bool {
        name == self.bucket(layer) || name == layer.as_str()
    }

    /// The keys an `object_path` may mean, most likely first: `s3://{bucket}/{key}` is the key in
    /// that bucket (which must be the layer's); a path starting with the layer's bucket (or the
    /// layer's name) is first read as `{bucket}/{key}`, as the seed family's MinIO helpers return
    /// it, then as a bare key; anything else is a bare key.
    fn object_path_keys(&self, layer: Layer, path: &str) -> Result<Vec<String>, LakeError> {
        let path = path.trim();
        let mut keys = Vec::new();
        if let Some(rest) = path.strip_prefix("s3://") {
            let (b, key) = rest.split_once('/').unwrap_or((rest, ""));
            if !self.names_layer_bucket(layer, b) {
                return Err(LakeError::Invalid(format!(
                    "object_path {path:?} is in bucket {b:?}, but a {layer} dataset's objects are in the {layer} layer's bucket {:?}",
                    self.bucket(layer)
                )));
            }
            keys.push(key.to_owned());
        } else {
            let bare = path.trim_start_matches('/');
            if let Some((first, key)) = bare.split_once('/')
                && self.names_layer_bucket(layer, first)
                && !key.trim_matches('/').is_empty()
            {
                keys.push(key.to_owned());
            }
            keys.push(bare.to_owned());
        }
        for key in &keys {
            if key.trim_matches('/').is_empty() {
                return Err(LakeError::Invalid(format!(
                    "object_path {path:?} names no key inside the bucket"
                )));
            }
            blob::check_key(key.trim_end_matches('/'))?;
        }
        Ok(keys)
    }

    /// The objects at `key`: the one object of that name, or else everything under `key/`, with the
    /// prefix the dataset keeps.
    async fn objects_at(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(String, Vec<blob::ObjectInfo>), LakeError> {
        if !key.ends_with('/')
            && let Ok(obj) = self.blobs.head(bucket, key).await
        {
            let dir = key
                .rsplit_once('/')
                .map(|(d, _)| format!("{d}/"))
                .unwrap_or_default();
            return Ok((dir, vec![obj]));
        }
        let prefix = format!("{}/", key.trim_end_matches('/'));
        let objects = self.blobs.list(bucket, &prefix).await?;
        Ok((prefix, objects))
    }

    /// Registers a dataset, cataloging any objects already at `object_path` with their size and
    /// SHA-256 (read once, streamed).
    pub async fn register(&self, req: RegisterRequest) -> Result<Dataset, LakeError> {
        let name = req.name.trim();
        if name.is_empty() || name.len() > 512 {
            return Err(LakeError::Invalid(
                "name: must be 1 to 512 characters".into(),
            ));
        }
        let source = req.source.trim();
        if source.is_empty() || source.len() > 128 || source.contains('/') {
            return Err(LakeError::Invalid(
                "source: must be 1 to 128 characters without '/'".into(),
            ));
        }
        // The source names the first segment of the dataset's prefix: one that cannot be a key
        // segment (`.`, `..`, a control character, a backslash) would give a dataset no file
        // can ever be put into.
        if let Err(e) = blob::check_key(&format!("{source}/x")) {
            return Err(LakeError::Invalid(format!(
                "source: {source:?} cannot name a storage prefix ({e}); use letters, digits, '-', '_' or '.'"
            )));
        }
        let bucket = self.bucket(req.layer).to_owned();
        // Seed deployments name their buckets after the layers (`"minio_bucket": "raw"`), so the
        // layer's name stands for its bucket as well as the configured name does.
        if let Some(b) = req.bucket.as_deref().filter(|b| !b.is_empty())
            && !self.names_layer_bucket(req.layer, b)
        {
            return Err(LakeError::Invalid(format!(
                "bucket {b:?} is not the {} layer's bucket; this lake keeps {} data in {bucket:?} (or name the layer, {:?})",
                req.layer,
                req.layer,
                req.layer.as_str()
            )));
        }
        let tags = normalise_tags(&req.tags)?;
        let id = DatasetId::new();
        let metadata = fill_metadata(req.metadata.clone(), source)?;
        let (prefix, objects) = self.objects_to_register(&req, &bucket, source, id).await?;
        self.check_prefix_is_free(&bucket, &prefix).await?;
        let mut files = Vec::with_capacity(objects.len());
        for obj in &objects {
            let rel = obj.key.strip_prefix(&prefix).unwrap_or(&obj.key);
            let (sha, size) = blob::sha256_of(self.blobs.as_ref(), &bucket, &obj.key).await?;
            files.push(FileRecord {
                name: rel.to_owned(),
                size,
                sha256: sha.to_hex(),
                content_type: content_type_for(rel).to_owned(),
                created_at: Utc::now(),
            });
        }
        let action = req.action.unwrap_or(Action::Registration);
        let new = NewDataset {
            id,
            name: name.to_owned(),
            source: source.to_owned(),
            external_id: req.external_id.filter(|e| !e.trim().is_empty()),
            layer: req.layer,
            bucket,
            prefix: prefix.clone(),
            metadata,
            tags,
            status: DatasetStatus::Ready,
            promoted_from: None,
        };
        let prov = NewProvenance::registration(
            action,
            id,
            &RegistrationRecord::Objects {
                object_path: req.object_path.clone(),
                files: files
                    .iter()
                    .map(|f| FileFacts {
                        name: f.name.clone(),
                        size: f.size,
                        sha256: f.sha256.clone(),
                    })
                    .collect(),
            },
        );
        let d = self
            .catalog
            .insert_dataset(&new, &files, Some(&prov))
            .await?;
        metrics::counter!("lake_datasets_registered_total", "layer" => req.layer.as_str())
            .increment(1);
        Ok(d)
    }

    /// A prefix belongs to one dataset: a registration may not alias another dataset's objects
    /// (its uploads would change bytes the alias cataloged, and deleting the alias would delete
    /// them). Refused when a dataset keeps exactly this prefix, or when the prefix lies inside
    /// one the lake made (its segments name that dataset's id).
    async fn check_prefix_is_free(&self, bucket: &str, prefix: &str) -> Result<(), LakeError> {
        let owner = match self.catalog.dataset_at(bucket, prefix).await? {
            Some(d) => Some(d),
            None => {
                let mut found = None;
                for segment in prefix.split('/') {
                    let Ok(id) = segment.parse::<DatasetId>() else {
                        continue;
                    };
                    match self.catalog.get_dataset(id).await {
                        Ok(d)
                            if d.bucket == bucket
                                && d.status != DatasetStatus::Deleted
                                && (prefix.starts_with(&d.prefix)
                                    || d.prefix.starts_with(prefix)) =>
                        {
                            found = Some(d);
                            break;
                        }
                        Ok(_) | Err(CatalogError::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                found
            }
        };
        match owner {
            Some(d) => Err(LakeError::Conflict(format!(
                "the objects under {bucket}/{prefix} belong to dataset {} ({:?}); a prefix belongs to one dataset, so register another prefix or use that dataset",
                d.id, d.name
            ))),
            None => Ok(()),
        }
    }

    /// The objects a registration catalogs and the prefix its dataset keeps: one object or
    /// everything under a prefix (`object_path`), whatever is under `minio_prefix` (possibly
    /// nothing), or nothing at a new prefix of its own. Nested objects are refused: a dataset is flat.
    async fn objects_to_register(
        &self,
        req: &RegisterRequest,
        bucket: &str,
        source: &str,
        id: DatasetId,
    ) -> Result<(String, Vec<blob::ObjectInfo>), LakeError> {
        let (prefix, objects) = match (req.object_path.as_deref(), req.prefix.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(LakeError::Invalid(
                    "give object_path or minio_prefix, not both".into(),
                ));
            }
            (Some(path), None) => {
                let keys = self.object_path_keys(req.layer, path)?;
                let mut found = None;
                for key in &keys {
                    let (prefix, objects) = self.objects_at(bucket, key).await?;
                    if !objects.is_empty() {
                        found = Some((prefix, objects));
                        break;
                    }
                }
                // A client that names an object believes it is cataloged: an empty dataset would
                // tell it so falsely.
                found.ok_or_else(|| {
                    LakeError::Invalid(format!(
                        "object_path {path:?} names no object and no prefix holding objects in the {} layer's bucket {bucket:?} (looked for {})",
                        req.layer,
                        keys.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(" and ")
                    ))
                })?
            }
            // The seed catalogs a prefix first and uploads into it later, so an empty one is kept.
            (None, Some(p)) if !p.trim().trim_matches('/').is_empty() => {
                let key = p.trim().trim_start_matches('/');
                blob::check_key(key.trim_end_matches('/'))?;
                let prefix = format!("{}/", key.trim_end_matches('/'));
                let objects = self.blobs.list(bucket, &prefix).await?;
                (prefix, objects)
            }
            (None, _) => (format!("{source}/{id}/"), Vec::new()),
        };
        if prefix.is_empty() {
            return Err(LakeError::Invalid(
                "object_path: objects must be inside a prefix such as source/id/".into(),
            ));
        }
        // A dataset is flat: nested objects would need names with '/', so say so instead of
        // silently cataloging only part of what is there.
        if let Some(nested) = objects
            .iter()
            .find(|o| o.key.strip_prefix(&prefix).is_some_and(|r| r.contains('/')))
        {
            return Err(LakeError::Invalid(format!(
                "object_path {prefix:?} holds nested objects such as {:?}; a dataset is one flat prefix, so register each sub-prefix as its own dataset",
                nested.key
            )));
        }
        Ok((prefix, objects))
    }

    /// One dataset that is visible (not pending, failed or deleted).
    pub async fn get_dataset(&self, id: DatasetId) -> Result<Dataset, LakeError> {
        let d = self.catalog.get_dataset(id).await?;
        match d.status {
            DatasetStatus::Ready => Ok(d),
            DatasetStatus::Deleted => Err(LakeError::NotFound(format!("dataset {id} was deleted"))),
            DatasetStatus::Pending | DatasetStatus::Failed => Err(LakeError::NotFound(format!(
                "dataset {id} is not ready (status {})",
                d.status.as_str()
            ))),
        }
    }

    /// A page of datasets.
    pub async fn search(&self, q: &SearchQuery) -> Result<Page<Dataset>, LakeError> {
        check_search(q)?;
        Ok(self.catalog.search(q).await?)
    }

    /// How many datasets a search finds in all (its cursor and page aside), counting no further
    /// than `at_most` unless the kept totals answer it.
    pub async fn count(&self, q: &SearchQuery, at_most: i64) -> Result<Count, LakeError> {
        check_search(q)?;
        Ok(self.catalog.count(q, at_most).await?)
    }

    /// Catalog statistics.
    pub async fn stats(&self) -> Result<Stats, LakeError> {
        Ok(self.catalog.stats().await?)
    }

    /// A visible dataset's files.
    pub async fn dataset_files(&self, id: DatasetId) -> Result<Vec<FileRecord>, LakeError> {
        self.get_dataset(id).await?;
        Ok(self.catalog.list_files(id).await?)
    }

    /// Streams one new file into a dataset, hashing it on the way; a name already taken is a conflict.
    ///
    /// The name is claimed in the catalog first; then the object is written and its row committed
    /// (which releases the claim). If the commit fails the object is removed again, so a reported
    /// failure leaves neither a row without its object nor an object without its row.
    pub async fn put_file(
        &self,
        id: DatasetId,
        name: &str,
        content_type: Option<&str>,
        body: ByteStream,
    ) -> Result<Dataset, LakeError> {
        check_file_name(name)?;
        let d = self.get_dataset(id).await?;
        // The claim decides races for the name before any byte moves, so the upload can go straight
        // to its final key: no staging copy, and nothing extra retained on a locked raw bucket.
        self.catalog.claim_file(id, name, CLAIM_STALE_AFTER).await?;
        let key = format!("{}{}", d.prefix, name);
        let (stream, hash) = blob::hashing(body, Some(self.settings.max_upload_bytes));
        let result = async {
            // A failed put leaves nothing (the store's contract), so only the claim needs undoing.
            let size = self.blobs.put(&d.bucket, &key, stream).await?;
            let (sha, hashed) = hash.finish();
            debug_assert_eq!(size, hashed);
            let file = FileRecord {
                name: name.to_owned(),
                size,
                sha256: sha.to_hex(),
                content_type: content_type.filter(|c| !c.is_empty()).unwrap_or(content_type_for(name)).to_owned(),
                created_at: Utc::now(),
            };
            let prov = NewProvenance::registration(
                Action::Registration,
                id,
                &RegistrationRecord::File {
                    file: name.to_owned(),
                    sha256: file.sha256.clone(),
                    size,
                },
            );
            match self.catalog.commit(id, std::slice::from_ref(&file), DatasetStatus::Ready, Some(&prov)).await {
                Ok(d) => Ok((d, size)),
                Err(e) => {
                    // The claim made this key ours alone, so removing it cannot touch anyone else's bytes.
                    if let Err(e2) = self.blobs.delete(&d.bucket, &key).await {
                        tracing::error!(dataset = %id, file = name, error = %e2, "Object left without its row");
                    }
                    Err(LakeError::from(e))
                }
            }
        }
        .await;
        match result {
            Ok((d, size)) => {
                metrics::counter!("lake_upload_bytes_total").increment(size);
                Ok(d)
            }
            Err(e) => {
                if let Err(e2) = self.catalog.release_claim(id, name).await {
                    tracing::warn!(dataset = %id, file = name, error = %e2, "Upload claim not released; it goes stale");
                }
                Err(e)
            }
        }
    }

    /// Opens a file for download: a presigned redirect where the store has them, else a stream.
    pub async fn download(&self, id: DatasetId, name: &str) -> Result<Download, LakeError> {
        check_file_name(name)?;
        let d = self.get_dataset(id).await?;
        let file = self
            .catalog
            .list_files(id)
            .await?
            .into_iter()
            .find(|f| f.name == name)
            .ok_or_else(|| {
                LakeError::NotFound(format!("dataset {id} has no file named {name:?}"))
            })?;
        let key = format!("{}{}", d.prefix, name);
        if let Some(url) = self
            .blobs
            .presign_get(&d.bucket, &key, self.settings.presign_ttl)
            .await?
        {
            return Ok(Download::Redirect(url));
        }
        let body = self.blobs.get(&d.bucket, &key).await?;
        Ok(Download::Stream {
            body,
            size: file.size,
            content_type: file.content_type,
        })
    }

    /// Deletes a non-raw dataset for a reason (kept in provenance): the row stays, marked
    /// deleted, for lineage; the objects go.
    pub async fn delete(&self, id: DatasetId, reason: Option<&str>) -> Result<(), LakeError> {
        let d = self.catalog.get_dataset(id).await?;
        if d.layer == Layer::Raw {
            return Err(LakeError::Forbidden(format!(
                "dataset {id} is in the raw layer; raw data is immutable and is never deleted"
            )));
        }
        if d.status == DatasetStatus::Deleted {
            return Err(LakeError::NotFound(format!(
                "dataset {id} was already deleted"
            )));
        }
        let reason = crate::provenance::required_reason(reason, "deleting a dataset")
            .map_err(LakeError::Invalid)?;
        let files = self.catalog.list_files(id).await?;
        let prov = NewProvenance::deletion(
            id,
            &DeletionRecord {
                layer: d.layer,
                files: files.len(),
            },
            reason,
        );
        // Mark deleted first: a failure while removing objects leaves orphans, never a visible row
        // whose objects are gone.
        self.catalog
            .commit(id, &[], DatasetStatus::Deleted, Some(&prov))
            .await?;
        for f in files {
            if let Err(e) = self
                .blobs
                .delete(&d.bucket, &format!("{}{}", d.prefix, f.name))
                .await
            {
                tracing::warn!(dataset = %id, file = %f.name, error = %e, "Object left behind after delete");
            }
        }
        // The Iceberg catalog's files describing this version (`iceberg.rs`) go with it.
        let derived = crate::iceberg::metadata_prefix(&d.prefix);
        match self.blobs.list(&d.bucket, &derived).await {
            Ok(objects) => {
                for o in objects {
                    if let Err(e) = self.blobs.delete(&d.bucket, &o.key).await {
                        tracing::warn!(dataset = %id, key = %o.key, error = %e, "Object left behind after delete");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(dataset = %id, error = %e, "Table metadata left behind after delete")
            }
        }
        Ok(())
    }

    /// Records a manual provenance entry.
    pub async fn record_manual(
        &self,
        inputs: Vec<DatasetId>,
        outputs: Vec<DatasetId>,
        notes: String,
    ) -> Result<ProvenanceEntry, LakeError> {
        for id in inputs.iter().chain(&outputs) {
            self.catalog.get_dataset(*id).await?;
        }
        let entry = NewProvenance::manual(inputs, outputs, notes);
        Ok(self.catalog.append_provenance(&entry).await?)
    }

    /// The linear lineage of a dataset, as a caller who sees `vis` finds it (see
    /// [`LineageGraph::restricted`]).
    pub async fn lineage(&self, id: DatasetId, vis: Visibility) -> Result<Lineage, LakeError> {
        let (graph, entries) = self
            .restricted_lineage(id, 10_000, Direction::Ancestors, vis)
            .await?;
        let mut ancestors: Vec<_> = graph.nodes.iter().filter(|n| n.distance < 0).collect();
        ancestors.sort_by_key(|n| -n.distance);
        Ok(Lineage {
            dataset_id: id,
            ancestors: ancestors.into_iter().map(|n| n.id).collect(),
            entries,
            hidden: graph.hidden,
        })
    }

    /// The entries that made a dataset and its ancestors up to `depth` steps back, as a caller who
    /// sees `vis` finds them: the recent history a page shows, where [`Lake::lineage`] walks it all.
    pub async fn history(
        &self,
        id: DatasetId,
        depth: u32,
        vis: Visibility,
    ) -> Result<(Vec<ProvenanceEntry>, usize), LakeError> {
        let (graph, entries) = self
            .restricted_lineage(id, depth, Direction::Ancestors, vis)
            .await?;
        Ok((entries, graph.hidden))
    }

    /// The newest promotions into layers the caller sees, newest first, each with its record.
    pub async fn recent_promotions(
        &self,
        limit: u32,
        vis: Visibility,
    ) -> Result<Vec<(ProvenanceEntry, PromotionRecord)>, LakeError> {
        let entries = self
            .catalog
            .entries_by_action(Action::Promotion, limit)
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|e| {
                let record = e.promotion_record()?;
                vis.sees(record.to_layer).then_some((e, record))
            })
            .collect())
    }

    /// Ancestors and descendants up to `depth` steps, as a caller who sees `vis` finds them.
    pub async fn graph(
        &self,
        id: DatasetId,
        depth: u32,
        direction: Direction,
        vis: Visibility,
    ) -> Result<LineageGraph, LakeError> {
        let graph = self.visible_graph(id, depth, direction, vis).await?;
        Ok(graph.restricted(|l| vis.sees(l)).0)
    }

    /// The dataset, the datasets it was made from up to `depth` steps back and the runs that made
    /// them, as an RO-Crate (Process Run Crate) whose files are downloaded from `base_url`, as a
    /// caller who sees `vis` finds them.
    pub async fn ro_crate(
        &self,
        id: DatasetId,
        depth: u32,
        vis: Visibility,
        base_url: &str,
    ) -> Result<serde_json::Value, LakeError> {
        let root = self.get_dataset(id).await?;
        let (graph, entries) = self
            .restricted_lineage(id, depth, Direction::Ancestors, vis)
            .await?;
        let mut files = std::collections::BTreeMap::new();
        for n in graph.nodes.iter().filter(|n| !n.restricted) {
            files.insert(n.id, self.catalog.list_files(n.id).await?);
        }
        Ok(crate::rocrate::crate_of(&crate::rocrate::CrateInput {
            root: &root,
            graph: &graph,
            entries: &entries,
            files: &files,
            base_url,
        }))
    }

    /// The lineage graph and its entries as W3C PROV-JSON, as a caller who sees `vis` finds them.
    pub async fn prov_json(
        &self,
        id: DatasetId,
        depth: u32,
        vis: Visibility,
    ) -> Result<serde_json::Value, LakeError> {
        let (graph, entries) = self
            .restricted_lineage(id, depth, Direction::Both, vis)
            .await?;
        Ok(crate::provenance::to_prov_json(&graph, &entries))
    }

    /// The lineage graph and the entries of its datasets, as a caller who sees `vis` finds them.
    async fn restricted_lineage(
        &self,
        id: DatasetId,
        depth: u32,
        direction: Direction,
        vis: Visibility,
    ) -> Result<(LineageGraph, Vec<ProvenanceEntry>), LakeError> {
        let graph = self.visible_graph(id, depth, direction, vis).await?;
        let ids: Vec<DatasetId> = graph.nodes.iter().map(|n| n.id).collect();
        let entries = self.catalog.provenance_of(&ids).await?;
        let (graph, stand_in) = graph.restricted(|l| vis.sees(l));
        let entries = crate::provenance::restrict_entries(entries, &stand_in);
        Ok((graph, entries))
    }

    /// The whole lineage graph around a dataset the caller may see; a dataset they may not is
    /// not found, exactly as one that does not exist.
    async fn visible_graph(
        &self,
        id: DatasetId,
        depth: u32,
        direction: Direction,
        vis: Visibility,
    ) -> Result<LineageGraph, LakeError> {
        let graph = self.catalog.lineage(id, depth, direction).await?;
        let root_hidden = graph.nodes.iter().any(|n| n.id == id && !vis.sees(n.layer));
        if root_hidden {
            return Err(LakeError::NotFound(format!("dataset {id} not found")));
        }
        Ok(graph)
    }

    /// Who enforces a layer's immutability: `"storage"` where its bucket applied Object Lock,
    /// `"host"` otherwise. Read from what the store reported at start, with no catalog query.
    pub fn immutability(&self, layer: Layer) -> &'static str {
        let reports = self.reports.read().unwrap_or_else(|p| p.into_inner());
        let by_storage = reports
            .iter()
            .any(|(l, r)| *l == layer && matches!(r.object_lock, Enforcement::Applied { .. }));
        if by_storage { "storage" } else { "host" }
    }

    /// Per-layer counts, bytes and immutability.
    pub async fn layers(&self) -> Result<Vec<LayerSummary>, LakeError> {
        let stats = self.catalog.stats().await?;
        let reports = self
            .reports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(Layer::ALL
            .iter()
            .map(|&layer| {
                let g = stats.by_layer.iter().find(|g| g.key == layer.as_str());
                let report = reports
                    .iter()
                    .find(|(l, _)| *l == layer)
                    .map(|(_, r)| r.clone())
                    .unwrap_or(BucketReport {
                        object_lock: Enforcement::NotRequested,
                        lifecycle: Enforcement::NotRequested,
                    });
                LayerSummary {
                    layer,
                    bucket: self.bucket(layer).to_owned(),
                    datasets: g.map_or(0, |g| g.datasets),
                    bytes: g.map_or(0, |g| g.bytes),
                    immutability: self.immutability(layer),
                    deletes_refused: layer == Layer::Raw,
                    storage: report,
                }
            })
            .collect())
    }

    /// Whether the catalog answers.
    pub async fn ready(&self) -> Result<(), LakeError> {
        Ok(self.catalog.ping().await?)
    }
}

fn normalise_tags(tags: &[String]) -> Result<Vec<String>, LakeError> {
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.trim();
        if t.is_empty() {
            continue;
        }
        if t.len() > 64 || t.contains(',') {
            return Err(LakeError::Invalid(format!(
                "tag {t:?}: must be at most 64 characters without commas"
            )));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    Ok(out)
}

/// Ensures metadata is an object carrying `source`, `date` and `version`.
fn fill_metadata(meta: serde_json::Value, source: &str) -> Result<serde_json::Value, LakeError> {
    let mut obj = match meta {
        serde_json::Value::Null => serde_json::Map::new(),
        serde_json::Value::Object(m) => m,
        other => {
            return Err(LakeError::Invalid(format!(
                "metadata: must be a JSON object, not {}",
                match other {
                    serde_json::Value::Array(_) => "an array",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    _ => "a boolean",
                }
            )));
        }
    };
    obj.entry("source")
        .or_insert_with(|| serde_json::json!(source));
    obj.entry("date")
        .or_insert_with(|| serde_json::json!(Utc::now().format("%Y-%m-%d").to_string()));
    obj.entry("version")
        .or_insert_with(|| serde_json::json!("1"));
    Ok(serde_json::Value::Object(obj))
}
