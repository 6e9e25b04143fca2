//! Configuration: `lake.toml`, `LAKE_*` environment overrides and CLI flags, in that order.
//!
//! Precedence, lowest to highest: built-in defaults < `lake.toml` < `LAKE_*` environment variables <
//! command-line flags. With no file at all the defaults describe the embedded lake: a SQLite catalog
//! and a local blob directory under `./lake-data/`, so a newcomer is one command from a working lake.
//!
//! Environment variables name a setting by its path, sections joined by a double underscore:
//! `LAKE_CATALOG__URL`, `LAKE_STORAGE__S3__ENDPOINT`. `LAKE_CONFIG` (the file to read) and
//! `LAKE_LOG` (a log filter), `LAKE_TOKEN` (the command line's bearer token), `LAKE_TEST_*` and
//! `LAKE_BENCH_*` (the test and benchmark harnesses' own variables) are not settings. Any other
//! `LAKE_*` variable that names no setting is an error, so a typo never silently does nothing.
//!
//! Unknown keys are errors. They are collected with `serde_ignored` rather than refused by
//! `deny_unknown_fields`, which would stop at the first one and hide every later problem.
//!
//! Loading never stops at the first problem: [`load`] returns every problem it found, so
//! `lake config check` can print them all at once.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration of one lake host.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The HTTP server.
    pub server: ServerConfig,
    /// The catalog database (datasets, files, provenance).
    pub catalog: CatalogConfig,
    /// Where object bytes live.
    pub storage: StorageConfig,
    /// Immutability and promotion rules per layer.
    pub layers: LayersConfig,
    /// Logging.
    pub log: LogConfig,
    /// WebAssembly plugins: where they are, their limits and grants.
    pub plugins: PluginsConfig,
    /// The file service: uploads and merges.
    pub files: FilesConfig,
    /// Backups: target, schedules, retention.
    pub backup: BackupConfig,
    /// Who may do what: bearer tokens and their roles.
    pub auth: AuthConfig,
    /// Lineage sent out: the lake's own runs as OpenLineage events.
    pub lineage: LineageConfig,
    /// Upstream collections run by `lake ingest`, and on their schedule by `lake serve`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceConfig>,
}

/// One upstream collection (`[[sources]]`): a connector with its parameters, and what to parse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceConfig {
    /// Unique name; `lake ingest --source NAME` and `POST /collections {"source": NAME}` use it.
    pub name: String,
    /// The connector plugin (`geo`, `uniprot`, `ncbi`, or a third-party one).
    pub plugin: String,
    /// The catalog's identifier for what is collected (default: the name).
    #[serde(default)]
    pub external_id: Option<String>,
    /// The connector's parameters: ids or a query, and its options.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Parsers to run over the collected files.
    #[serde(default)]
    pub parse: Vec<ParseConfig>,
    /// Tags given to the collected and parsed datasets.
    #[serde(default)]
    pub tags: Vec<String>,
    /// How often `lake serve` collects it: `hourly`, `daily`, `weekly` or a duration such as `6h`
    /// (runs once per slot across replicas). Unset: only when asked.
    #[serde(default)]
    pub schedule: Option<String>,
}

/// A parser run over some of a collection's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParseConfig {
    /// Which files: a name, or a pattern with `*` (`efetch-*.xml`).
    pub files: String,
    /// The parser plugin.
    pub plugin: String,
    /// Its parameters.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
}

/// Reads a schedule: `hourly`, `daily`, `weekly`, or a number with `m`, `h` or `d` (at least 1m).
pub fn parse_schedule(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let secs = match t {
        "hourly" => 3600,
        "daily" => 86_400,
        "weekly" => 7 * 86_400,
        _ => {
            let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
            let n: u64 = n
                .parse()
                .map_err(|_| format!("{s:?} is not a schedule such as daily or 6h"))?;
            let mult = match unit.trim() {
                "m" | "min" => 60,
                "h" => 3600,
                "d" => 86_400,
                "w" => 7 * 86_400,
                _ => return Err(format!("{s:?} is not a schedule such as daily or 6h")),
            };
            n.checked_mul(mult)
                .ok_or_else(|| format!("{s:?} is too long"))?
        }
    };
    if secs < 60 {
        return Err(format!("{s:?}: a schedule must be at least one minute"));
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// Whether a string may be a collection's external id (it becomes part of object keys).
pub fn check_external_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '+'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "external id {id:?} must be 1 to 200 of A-Z a-z 0-9 . _ - : + (not starting with .)"
        ))
    }
}

/// The file service (`/files`): uploads parsed into tables, merges served from a cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FilesConfig {
    /// Bytes of merge results kept in memory (Arrow), least recently used first out.
    pub merge_cache_bytes: ByteSize,
    /// How long a merge result stays cached, in seconds.
    pub merge_cache_ttl_secs: u64,
    /// Rows a merge returns as its preview unless the request asks for another number.
    pub preview_rows: usize,
    /// Rows per Parquet row group written from an upload (bounds the memory of writing it).
    pub row_group_rows: usize,
    /// Instances an inner or left merge runs on at once, each joining its share of the left
    /// table's batches against its own index of the right table; 0 means one per core (at most
    /// 4), 1 keeps merges in one instance. Each instance holds the right table, so right tables of
    /// more than 2M rows always go to one.
    pub merge_parallelism: usize,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            merge_cache_bytes: ByteSize(1 << 30),
            merge_cache_ttl_secs: 3600,
            preview_rows: 20,
            row_group_rows: 128 * 1024,
            merge_parallelism: 0,
        }
    }
}

/// Whether requests must present a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Tokens on any address but loopback; open on loopback (the embedded default).
    #[default]
    Auto,
    /// Every request but health, metrics and the API reference presents a bearer token.
    Tokens,
    /// Nobody is asked who they are: allowed only on a loopback address.
    Off,
    /// Lake tokens, and also the JWTs of an OpenID Connect issuer (`[auth.oidc]`), checked
    /// against its published keys, their claims mapped to roles.
    Oidc,
}

/// Access (`[auth]`): bearer tokens (`lake token create`) and what each role may do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// "auto" (tokens unless the server listens on loopback), "tokens", or "off" (loopback only).
    pub mode: AuthMode,
    /// The least role that may download raw data, which may hold patient data: "reader",
    /// "contributor" (default), "curator" or "admin".
    pub raw_download_role: crate::identity::Role,
    /// Requests one token (or sign-in) may make a minute; more get 429 with Retry-After (0: no limit).
    pub requests_per_minute: u32,
    /// Failed authentications one client address may make a minute before it gets 429 (0: no limit).
    pub failed_auth_per_minute: u32,
    /// The longest a token may live, in days (tokens live 90 days unless asked otherwise).
    pub max_token_days: u32,
    /// How long, in milliseconds, a token's record read from the catalog is trusted before it is
    /// read again (1000; 0 reads it on every request). A revocation on this replica takes effect
    /// at once; on another replica within this time.
    pub token_cache_ms: u64,
    /// The OpenID Connect issuer of `mode = "oidc"`.
    pub oidc: OidcConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Auto,
            raw_download_role: crate::identity::Role::Contributor,
            requests_per_minute: 3000,
            failed_auth_per_minute: 30,
            max_token_days: crate::identity::MAX_TOKEN_DAYS,
            token_cache_ms: 1000,
            oidc: OidcConfig::default(),
        }
    }
}

/// An OpenID Connect issuer whose JWTs the lake accepts (`[auth.oidc]`, with `mode = "oidc"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OidcConfig {
    /// The issuer URL, exactly as its tokens' `iss` claim says it (its keys are found through
    /// `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// The audience the tokens must be for (`aud`): the lake's client id at the issuer.
    pub audience: String,
    /// The claim that names the user.
    pub user_claim: String,
    /// The claim holding the user's groups (a string or a list of strings).
    pub groups_claim: String,
    /// Group to role: a user gets the highest role any of their groups maps to; a user in no
    /// mapped group is refused.
    pub roles: BTreeMap<String, crate::identity::Role>,
    /// Seconds of clock difference tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// The lake's client secret at the issuer, for the dashboard's "Sign in with" button (sent
    /// with HTTP Basic to the token endpoint; unset: a public client, protected by PKCE alone).
    /// Better set as `LAKE_AUTH__OIDC__CLIENT_SECRET` than written in the file.
    pub client_secret: Option<Secret>,
    /// The scopes the dashboard's sign-in asks for (`openid` always among them).
    pub scopes: Vec<String>,
    /// Where the issuer sends the browser back, as registered there:
    /// `<the lake's URL>/ui/sign-in/oidc/callback`. Empty: built from the request's `Host`
    /// (right unless a proxy in front of the lake changes the scheme or the host).
    pub redirect_url: String,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: "lake".into(),
            user_claim: "sub".into(),
            groups_claim: "groups".into(),
            roles: BTreeMap::new(),
            leeway_secs: 60,
            client_secret: None,
            scopes: vec!["openid".into()],
            redirect_url: String::new(),
        }
    }
}

/// Whether `listen` (`host:port`) is a loopback address, where only this machine reaches the lake.
pub fn is_loopback(listen: &str) -> bool {
    let host = listen
        .rsplit_once(':')
        .map_or(listen, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a server listening on `listen` asks for tokens.
pub fn enforces_tokens(auth: &AuthConfig, listen: &str) -> bool {
    match auth.mode {
        AuthMode::Tokens | AuthMode::Oidc => true,
        AuthMode::Off => false,
        AuthMode::Auto => !is_loopback(listen),
    }
}

/// The instances a `*_parallelism` setting asks for: 0 means one per core, at most 4.
pub fn instances(setting: usize) -> usize {
    match setting {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        n => n,
    }
}

/// WebAssembly plugins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginsConfig {
    /// Directory of third-party `.wasm` components, loaded at start.
    pub dir: PathBuf,
    /// Compiled components, keyed by component SHA-256 and engine version.
    pub cache_dir: PathBuf,
    /// Default memory limit of one invocation.
    pub memory: ByteSize,
    /// Default wall-clock limit of one invocation, in seconds.
    pub timeout_secs: f64,
    /// Fuel per invocation; unset turns metering off (it costs about 20% of speed).
    pub fuel: Option<u64>,
    /// Bytes of a plugin's stderr kept (panic messages come from there).
    pub stderr_bytes: ByteSize,
    /// Arrow IPC bytes one invocation may return in all; past it the invocation fails.
    pub max_output_bytes: ByteSize,
    /// Batches one invocation may return in all; past it the invocation fails.
    pub max_output_batches: u64,
    /// Bytes one collection may store in all; past it the connector is stopped and what it
    /// stored deleted.
    pub max_collect_bytes: ByteSize,
    /// Parquet bytes one step run may read from its inputs in all (an input named twice counts
    /// twice); a run asking for more is refused before anything is read.
    pub max_step_input_bytes: ByteSize,
    /// Instances one large CSV parse may run on at once; 0 means one per core (at most 4), 1 keeps
    /// every parse serial.
    pub parse_parallelism: usize,
    /// Keep a pool of pre-reserved instance slots whose first pages stay resident between
    /// invocations (faster small invocations); off allocates every instance afresh.
    pub instance_pool: bool,
    /// Per-plugin limits and capability grants, keyed by plugin name.
    pub overrides: BTreeMap<String, PluginOverride>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("lake-data/plugins"),
            cache_dir: PathBuf::from("lake-data/plugin-cache"),
            memory: ByteSize(1 << 30),
            timeout_secs: 300.0,
            fuel: None,
            stderr_bytes: ByteSize(64 << 10),
            max_output_bytes: ByteSize(64 << 30),
            max_output_batches: 1_000_000,
            max_collect_bytes: ByteSize(256 << 30),
            max_step_input_bytes: ByteSize(8 << 30),
            parse_parallelism: 0,
            instance_pool: true,
            overrides: BTreeMap::new(),
        }
    }
}

/// Limits and grants of one plugin.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginOverride {
    /// Memory limit.
    pub memory: Option<ByteSize>,
    /// Wall-clock limit, seconds.
    pub timeout_secs: Option<f64>,
    /// Fuel per invocation.
    pub fuel: Option<u64>,
    /// Interfaces it may import beyond the defaults, by prefix (e.g. `wasi:filesystem/`).
    pub grants: Vec<String>,
    /// Origins a connector may reach over HTTP: `https://host` or `http://host:port`; every other
    /// request is refused by the host.
    pub hosts: Vec<String>,
    /// Requests per second to each origin, shared by all of this plugin's invocations (NCBI asks
    /// for at most 3 without an API key, 10 with one).
    pub requests_per_sec: Option<f64>,
    /// Credentials the host adds to every request this plugin sends to its `hosts`; the plugin never
    /// sees them, and provenance records the URL without them.
    pub credentials: Credentials,
    /// Which input this parser accepts in pieces, so a large parse runs on several instances at
    /// once: `"delimited-records"` (CSV-like text cut at record boundaries, the `csv` parser's
    /// parameters) or `"none"`. Unset: the bundled list's setting for a bundled plugin (the
    /// bundled `csv` opts in), none for any other.
    pub parallel: Option<crate::plugins::Parallel>,
}

/// Credentials a connector's requests carry, added by the host.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Credentials {
    /// Query parameters, e.g. `{ api_key = "..." }`.
    pub query: BTreeMap<String, Secret>,
    /// Headers, e.g. `{ Authorization = "Bearer ..." }`.
    pub headers: BTreeMap<String, Secret>,
}

/// The HTTP server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address to listen on. Loopback by default: exposing the lake is a deliberate choice.
    pub listen: String,
    /// Largest single upload accepted (bytes, or a string such as "10GiB"); larger ones get 413.
    pub max_upload_bytes: ByteSize,
    /// How long a presigned download URL stays valid, in seconds (S3 backend only).
    pub presign_ttl_secs: u64,
    /// Web origins (`https://notebook.lab.example`) whose pages may call the API from a browser;
    /// none by default.
    pub cors_origins: Vec<String>,
    /// Uploads received at once; one more gets 429 with Retry-After.
    pub max_concurrent_uploads: u32,
    /// Seconds a running job (a collection, a backup) may stay silent before any replica counts
    /// its server as stopped and marks it failed; a running job says it is alive every sixth of
    /// this.
    pub job_lease_secs: u64,
    /// Seconds an upload may send nothing before it is ended (a client that stops without
    /// closing the connection would otherwise hold the upload open forever).
    pub body_idle_secs: u64,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}
fn default_max_upload() -> ByteSize {
    ByteSize(10 << 30)
}
fn default_presign_ttl() -> u64 {
    900
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_upload_bytes: default_max_upload(),
            presign_ttl_secs: default_presign_ttl(),
            cors_origins: Vec::new(),
            max_concurrent_uploads: 16,
            job_lease_secs: 60,
            body_idle_secs: 60,
        }
    }
}

/// The catalog database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CatalogConfig {
    /// `sqlite:<path>` (embedded default) or `postgres://user@host:port/db`.
    pub url: Secret,
    /// Upper bound of pooled database connections.
    pub max_connections: u32,
    /// Apply pending migrations when the server starts (`lake migrate` does it explicitly).
    pub auto_migrate: bool,
}

fn default_catalog_url() -> Secret {
    Secret("sqlite:lake-data/catalog.db".to_owned())
}
fn default_max_connections() -> u32 {
    16
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            url: default_catalog_url(),
            max_connections: default_max_connections(),
            auto_migrate: true,
        }
    }
}

/// Which blob store backs the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// A local directory (embedded default).
    #[default]
    Local,
    /// Any S3-compatible store: AWS, MinIO, Garage.
    S3,
}

/// Where object bytes live.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// `local` (default) or `s3`.
    pub backend: StorageBackend,
    /// Settings of the local-directory backend.
    pub local: LocalStorageConfig,
    /// Settings of the S3 backend.
    pub s3: S3Config,
    /// One bucket (S3) or directory (local) per layer.
    pub buckets: BucketsConfig,
}

/// The local-directory backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LocalStorageConfig {
    /// Root directory; each layer's bucket is a directory below it.
    pub root: PathBuf,
}

impl Default for LocalStorageConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("lake-data/objects"),
        }
    }
}

/// The S3 backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:3900` for Garage; empty means AWS.
    pub endpoint: Option<String>,
    /// Region name (`garage` for Garage, `us-east-1` for MinIO and most others).
    pub region: String,
    /// Address buckets as `endpoint/bucket/key` (MinIO, Garage) instead of `bucket.endpoint/key`.
    pub force_path_style: bool,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key, by value. Prefer `secret_access_key_file`.
    pub secret_access_key: Option<Secret>,
    /// File holding the secret access key (trailing newline ignored).
    pub secret_access_key_file: Option<PathBuf>,
    /// Objects larger than this are uploaded in parts of this size (at least 5 MiB).
    pub multipart_part_size: ByteSize,
    /// Parts uploaded at once for one large object; bounds memory at part size times this.
    pub multipart_concurrency: usize,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}
fn default_part_size() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_multipart_concurrency() -> usize {
    4
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: default_region(),
            force_path_style: true,
            access_key_id: None,
            secret_access_key: None,
            secret_access_key_file: None,
            multipart_part_size: default_part_size(),
            multipart_concurrency: default_multipart_concurrency(),
        }
    }
}

/// Bucket (S3) or directory (local) name of each layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BucketsConfig {
    /// Raw: upstream bytes exactly as collected or uploaded.
    pub raw: String,
    /// Processed: parsed and normalised tables.
    pub processed: String,
    /// Curated: reviewed datasets ready for analysis.
    pub curated: String,
    /// Archive: long-term copies and backups.
    pub archive: String,
}

impl Default for BucketsConfig {
    fn default() -> Self {
        Self {
            raw: "lake-raw".to_owned(),
            processed: "lake-processed".to_owned(),
            curated: "lake-curated".to_owned(),
            archive: "lake-archive".to_owned(),
        }
    }
}

/// Object Lock retention mode applied to raw objects where the store supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Privileged users may shorten retention; the lake itself never does.
    #[default]
    Governance,
    /// No one, not even the account root, can delete before retention ends.
    Compliance,
}

/// Immutability and promotion rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LayersConfig {
    /// Days of Object Lock retention on raw objects (0 disables the storage lock; the host still
    /// refuses every raw delete).
    pub raw_retention_days: u32,
    /// Object Lock mode for raw.
    pub raw_lock_mode: LockMode,
    /// Days after which the archive bucket's lifecycle rule expires objects (0 disables the rule).
    pub archive_expiration_days: u32,
    /// Objects copied at once during one promotion.
    pub promotion_parallelism: usize,
}

fn default_raw_retention() -> u32 {
    90
}
fn default_archive_expiration() -> u32 {
    180
}
fn default_promotion_parallelism() -> usize {
    8
}

impl Default for LayersConfig {
    fn default() -> Self {
        Self {
            raw_retention_days: default_raw_retention(),
            raw_lock_mode: LockMode::default(),
            archive_expiration_days: default_archive_expiration(),
            promotion_parallelism: default_promotion_parallelism(),
        }
    }
}

/// Where backups are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupTarget {
    /// The safe choice for the storage backend: `dir` on the local backend, `s3` (a bucket of its
    /// own, `bucket`, on the lake's own endpoint unless `backup.s3` says otherwise) on S3. Never
    /// the archive bucket, whose lifecycle rule would expire backup objects.
    #[default]
    Auto,
    /// The archive layer's bucket in the lake's own store. Its lifecycle rule
    /// (`layers.archive_expiration_days`) also expires backup objects.
    Archive,
    /// A local directory of its own (another disk, a mount): `backup.dir`.
    Dir,
    /// A bucket of its own on an S3 endpoint (another region, another provider): `backup.s3`.
    S3,
}

/// Backups (`[backup]`): a consistent copy of the catalog and every object, incremental.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupConfig {
    /// `auto` (default: `dir` on the local backend, `s3` on S3), `archive`, `dir` or `s3`.
    pub target: BackupTarget,
    /// The directory for `target = "dir"`.
    pub dir: PathBuf,
    /// The bucket (a subdirectory with `dir`) for `target = "dir"` or `"s3"`.
    pub bucket: String,
    /// The endpoint and credentials for `target = "s3"` (the `storage.s3` keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
    /// Key prefix of everything a backup writes.
    pub prefix: String,
    /// The daily backup's time, `HH:MM` UTC; empty disables it.
    pub daily_at: String,
    /// The weekly backup's day and time, `sun 03:00` UTC; empty disables it.
    pub weekly_at: String,
    /// Daily backups kept.
    pub keep_daily: u32,
    /// Weekly backups kept.
    pub keep_weekly: u32,
    /// Objects copied at once.
    pub parallelism: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            target: BackupTarget::Auto,
            dir: PathBuf::from("lake-data/backups"),
            bucket: "lake-backups".into(),
            s3: None,
            prefix: "backups".into(),
            daily_at: "02:00".into(),
            weekly_at: "sun 03:00".into(),
            keep_daily: 7,
            keep_weekly: 4,
            parallelism: 8,
        }
    }
}

/// Reads `HH:MM` into minutes after midnight.
pub fn parse_clock(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a time such as 02:00");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Reads `sun 03:00` into (days from Monday, minutes after midnight).
pub fn parse_weekly(s: &str) -> Result<(u32, u32), String> {
    let (day, clock) = s
        .trim()
        .split_once(' ')
        .ok_or_else(|| format!("{s:?} is not a day and time such as \"sun 03:00\""))?;
    let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let d = days
        .iter()
        .position(|x| day.to_ascii_lowercase().starts_with(x))
        .ok_or_else(|| format!("{day:?} is not a day (mon ... sun)"))?;
    Ok((d as u32, parse_clock(clock)?))
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Lineage sent out (`[lineage]`): each pipeline run, collection and promotion as an OpenLineage
/// RunEvent, so a lab that runs Marquez sees the lake's lineage there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LineageConfig {
    /// Where to send events: an OpenLineage endpoint's base (`http://marquez:5000`, events go to
    /// `{url}/api/v1/lineage`), or the full URL ending in `/api/v1/lineage`. Unset: nothing is sent.
    pub openlineage_url: Option<String>,
    /// The namespace of the lake's jobs and datasets in the events.
    pub namespace: String,
}

impl Default for LineageConfig {
    fn default() -> Self {
        Self {
            openlineage_url: None,
            namespace: "lake".to_owned(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `lake_host=debug,tower_http=info`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// A string that never appears in logs or `Debug` output: passwords, keys, URLs with credentials.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that hands it to a driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

/// A number of bytes, written in TOML as an integer or a string such as `"512MiB"` or `"10GB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `123`, `64KiB`, `16MiB`, `10GiB`, `1TB` (case-insensitive, optional space).
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size such as 512MiB"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            other => return Err(format!("unknown size unit {other:?} in {s:?}")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Every problem found while loading a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Flags given on the command line; they override everything else.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    /// `--listen`.
    pub listen: Option<String>,
}

/// Which file to read: `--config`, else `LAKE_CONFIG`, else `./lake.toml` when it exists, else none.
pub fn resolve_path(flag: Option<&Path>, env: &[(String, String)]) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some((_, v)) = env.iter().find(|(k, _)| k == "LAKE_CONFIG") {
        return Some(PathBuf::from(v));
    }
    let local = PathBuf::from("lake.toml");
    local.exists().then_some(local)
}

/// Loads the configuration from an optional file, the environment and CLI flags; returns every
/// problem at once.
pub fn load(
    path: Option<&Path>,
    env: &[(String, String)],
    cli: &CliOverrides,
) -> Result<Config, ConfigErrors> {
    let text = match path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) => {
                return Err(ConfigErrors(vec![format!(
                    "{}: cannot read: {e}",
                    p.display()
                )]));
            }
        },
        None => None,
    };
    from_parts(text.as_deref(), env, cli)
}

/// The pure core of [`load`]: a file's text (if any), the environment as a list, and CLI flags.
pub fn from_parts(
    text: Option<&str>,
    env: &[(String, String)],
    cli: &CliOverrides,
) -> Result<Config, ConfigErrors> {
    let mut problems = Vec::new();
    let mut root = match text.map(|t| t.parse::<toml::Table>()) {
        None => toml::Table::new(),
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            return Err(ConfigErrors(vec![format!(
                "lake.toml is not valid TOML: {e}"
            )]));
        }
    };
    problems.extend(apply_env(&mut root, env));
    if let Some(listen) = &cli.listen {
        set_path(
            &mut root,
            &["server", "listen"],
            toml::Value::String(listen.clone()),
        );
    }

    // Deserialize section by section so that one bad section does not hide the others' problems.
    let mut cfg = Config::default();
    for (section, value) in &root {
        let value = value.clone();
        match section.as_str() {
            "server" => set(&mut cfg.server, section_from(section, value, &mut problems)),
            "catalog" => set(
                &mut cfg.catalog,
                section_from(section, value, &mut problems),
            ),
            "storage" => set(
                &mut cfg.storage,
                section_from(section, value, &mut problems),
            ),
            "layers" => set(&mut cfg.layers, section_from(section, value, &mut problems)),
            "log" => set(&mut cfg.log, section_from(section, value, &mut problems)),
            "plugins" => set(
                &mut cfg.plugins,
                section_from(section, value, &mut problems),
            ),
            "files" => set(&mut cfg.files, section_from(section, value, &mut problems)),
            "backup" => set(&mut cfg.backup, section_from(section, value, &mut problems)),
            "auth" => set(&mut cfg.auth, section_from(section, value, &mut problems)),
            "lineage" => set(
                &mut cfg.lineage,
                section_from(section, value, &mut problems),
            ),
            "sources" => set(
                &mut cfg.sources,
                section_from(section, value, &mut problems),
            ),
            other => problems.push(format!("unknown section or key `{other}`")),
        }
    }
    resolve_backup_target(&mut cfg.backup, &cfg.storage);
    problems.extend(validate(&cfg));
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigErrors(problems))
    }
}

/// Turns `backup.target = "auto"` into the safe target for the storage backend: a directory of its
/// own beside a local store; on S3, a bucket of its own (`backup.bucket`) on the endpoint of
/// `backup.s3`, or of the lake's own store when that is not given.
pub fn resolve_backup_target(backup: &mut BackupConfig, storage: &StorageConfig) {
    if backup.target != BackupTarget::Auto {
        return;
    }
    match storage.backend {
        StorageBackend::Local => backup.target = BackupTarget::Dir,
        StorageBackend::S3 => {
            backup.target = BackupTarget::S3;
            if backup.s3.is_none() {
                backup.s3 = Some(storage.s3.clone());
            }
        }
    }
}

/// Keeps the default when a section had problems (they are already recorded).
fn set<T>(slot: &mut T, parsed: Option<T>) {
    if let Some(v) = parsed {
        *slot = v;
    }
}

fn section_from<T: serde::de::DeserializeOwned>(
    section: &str,
    value: toml::Value,
    problems: &mut Vec<String>,
) -> Option<T> {
    let mut unknown = Vec::new();
    let result: Result<T, _> =
        serde_ignored::deserialize(value, |path| unknown.push(path.to_string()));
    for u in &unknown {
        problems.push(format!("unknown key `{section}.{u}`"));
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("[{section}]: {}", e.to_string().trim()));
            None
        }
    }
}

/// Applies `LAKE_*` variables to a parsed TOML table; returns the variables that name no setting.
pub fn apply_env(root: &mut toml::Table, env: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let known = known_paths();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("LAKE_") else {
            continue;
        };
        if name == "LAKE_CONFIG"
            || name == "LAKE_LOG"
            || name == "LAKE_TOKEN"
            || rest.starts_with("TEST_")
            || rest.starts_with("BENCH_")
        {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let joined = path.join(".");
        if !known.contains_key(&joined) {
            let hint = known
                .keys()
                .find(|k| k.replace('.', "_") == rest.to_ascii_lowercase())
                .map(|k| {
                    format!(
                        " (did you mean LAKE_{}?)",
                        k.replace('.', "__").to_ascii_uppercase()
                    )
                })
                .unwrap_or_default();
            problems.push(format!("{name}: names no setting{hint}"));
            continue;
        }
        let value = env_value(raw, known[&joined]);
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        set_path(root, &refs, value);
    }
    problems
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
    Size,
}

/// Every settable path and its kind, derived from the defaults so the list never drifts from the
/// structs. Optional settings that default to nothing are listed by hand.
fn known_paths() -> BTreeMap<String, Kind> {
    let mut out = BTreeMap::new();
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    fn walk(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, Kind>) {
        for (k, v) in t {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(inner) => walk(&p, inner, out),
                toml::Value::Integer(_) => {
                    let kind = if k.ends_with("_bytes") || k.ends_with("_size") {
                        Kind::Size
                    } else {
                        Kind::Int
                    };
                    out.insert(p, kind);
                }
                toml::Value::Float(_) => {
                    out.insert(p, Kind::Float);
                }
                toml::Value::Boolean(_) => {
                    out.insert(p, Kind::Bool);
                }
                // Lists of tables (`[[sources]]`) are set in the file, not by variables.
                toml::Value::Array(_) => {}
                _ => {
                    out.insert(p, Kind::Str);
                }
            }
        }
    }
    walk("", &defaults, &mut out);
    for p in [
        "storage.s3.endpoint",
        "storage.s3.access_key_id",
        "storage.s3.secret_access_key",
        "storage.s3.secret_access_key_file",
        "lineage.openlineage_url",
    ] {
        out.insert(p.to_owned(), Kind::Str);
    }
    out.insert("plugins.fuel".to_owned(), Kind::Int);
    out.insert("plugins.timeout_secs".to_owned(), Kind::Float);
    out
}

fn env_value(raw: &str, kind: Kind) -> toml::Value {
    match kind {
        Kind::Int => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| toml::Value::String(raw.to_owned())),
        Kind::Float => raw
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .unwrap_or_else(|_| toml::Value::String(raw.to_owned())),
        Kind::Size => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| toml::Value::String(raw.to_owned())),
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => toml::Value::String(raw.to_owned()),
        },
        Kind::Str => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(root: &mut toml::Table, path: &[&str], value: toml::Value) {
    let (last, parents) = match path.split_last() {
        Some(x) => x,
        None => return,
    };
    let mut table = root;
    for p in parents {
        let entry = table
            .entry((*p).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        table = match entry.as_table_mut() {
            Some(t) => t,
            None => return,
        };
    }
    table.insert((*last).to_owned(), value);
}

/// Checks the meaning of a well-formed configuration; returns every problem.
pub fn validate(cfg: &Config) -> Vec<String> {
    let mut p = Vec::new();
    if let Some(url) = &cfg.lineage.openlineage_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        p.push(format!(
            "lineage.openlineage_url: {url:?} must start with http:// or https://"
        ));
    }
    if cfg.lineage.namespace.trim().is_empty() || cfg.lineage.namespace.len() > 256 {
        p.push("lineage.namespace: must be 1 to 256 bytes".to_owned());
    }
    let b = &cfg.backup;
    if !b.daily_at.trim().is_empty()
        && let Err(e) = parse_clock(&b.daily_at)
    {
        p.push(format!("backup.daily_at: {e}"));
    }
    if !b.weekly_at.trim().is_empty()
        && let Err(e) = parse_weekly(&b.weekly_at)
    {
        p.push(format!("backup.weekly_at: {e}"));
    }
    if b.prefix.trim_matches('/').is_empty() {
        p.push("backup.prefix: must not be empty".to_owned());
    }
    if b.parallelism == 0 {
        p.push("backup.parallelism: must be at least 1".to_owned());
    }
    if b.keep_daily == 0 || b.keep_weekly == 0 {
        p.push("backup.keep_daily, backup.keep_weekly: must be at least 1 (turn a schedule off with daily_at = \"\" or weekly_at = \"\")".to_owned());
    }
    if b.target == BackupTarget::Dir && b.dir.as_os_str().is_empty() {
        p.push("backup.dir: required with backup.target = \"dir\"".to_owned());
    }
    if b.target != BackupTarget::Archive
        && let Err(e) = check_bucket_name(&b.bucket)
    {
        p.push(format!("backup.bucket: {e}"));
    }
    if b.target == BackupTarget::S3 {
        match &b.s3 {
            None => p.push("backup.s3: required with backup.target = \"s3\" (endpoint, region, access_key_id, secret)".to_owned()),
            Some(s3) if s3.access_key_id.as_deref().is_none_or(str::is_empty) => {
                p.push("backup.s3.access_key_id: required with backup.target = \"s3\"".to_owned())
            }
            Some(_) => {}
        }
    }
    for (i, src) in cfg.sources.iter().enumerate() {
        let at = format!("sources[{i}] ({:?})", src.name);
        if src.name.trim().is_empty() {
            p.push(format!("{at}: name must not be empty"));
        }
        if cfg.sources[..i].iter().any(|o| o.name == src.name) {
            p.push(format!("{at}: another source has this name"));
        }
        if let Err(e) = check_external_id(src.external_id.as_deref().unwrap_or(&src.name)) {
            p.push(format!(
                "{at}: {e}{}",
                if src.external_id.is_none() {
                    " (set external_id)"
                } else {
                    ""
                }
            ));
        }
        if let Some(sch) = &src.schedule
            && let Err(e) = parse_schedule(sch)
        {
            p.push(format!("{at}.schedule: {e}"));
        }
        for (j, parse) in src.parse.iter().enumerate() {
            if parse.files.trim().is_empty() {
                p.push(format!("{at}.parse[{j}].files: must name files"));
            }
        }
    }
    if cfg.server.listen.parse::<SocketAddr>().is_err() {
        p.push(format!(
            "server.listen: {:?} is not an address such as 127.0.0.1:8080",
            cfg.server.listen
        ));
    }
    if cfg.server.max_upload_bytes.0 == 0 {
        p.push("server.max_upload_bytes: must be greater than 0".to_owned());
    }
    if cfg.server.presign_ttl_secs == 0 || cfg.server.presign_ttl_secs > 7 * 24 * 3600 {
        p.push(
            "server.presign_ttl_secs: must be between 1 and 604800 (7 days, the S3 maximum)"
                .to_owned(),
        );
    }
    let url = cfg.catalog.url.expose();
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        p.push("catalog.url: must start with sqlite:, postgres:// or postgresql://".to_owned());
    }
    if cfg.catalog.max_connections == 0 {
        p.push("catalog.max_connections: must be at least 1".to_owned());
    }
    let b = &cfg.storage.buckets;
    let names = [
        ("raw", &b.raw),
        ("processed", &b.processed),
        ("curated", &b.curated),
        ("archive", &b.archive),
    ];
    for (layer, name) in names {
        if let Err(e) = check_bucket_name(name) {
            p.push(format!("storage.buckets.{layer}: {e}"));
        }
    }
    for (i, (l1, n1)) in names.iter().enumerate() {
        for (l2, n2) in &names[i + 1..] {
            if n1 == n2 {
                p.push(format!("storage.buckets: {l1} and {l2} share the bucket {n1:?}; each layer needs its own"));
            }
        }
    }
    if cfg.storage.backend == StorageBackend::S3 {
        let s3 = &cfg.storage.s3;
        if s3.region.trim().is_empty() {
            p.push("storage.s3.region: must not be empty".to_owned());
        }
        if let Some(ep) = &s3.endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            p.push(format!(
                "storage.s3.endpoint: {ep:?} must start with http:// or https://"
            ));
        }
        if s3.access_key_id.as_deref().is_none_or(str::is_empty) {
            p.push("storage.s3.access_key_id: required with storage.backend = \"s3\"".to_owned());
        }
        match (&s3.secret_access_key, &s3.secret_access_key_file) {
            (Some(_), Some(_)) => {
                p.push("storage.s3: set secret_access_key or secret_access_key_file, not both".to_owned())
            }
            (None, None) => p.push(
                "storage.s3.secret_access_key (or secret_access_key_file): required with storage.backend = \"s3\""
                    .to_owned(),
            ),
            (None, Some(f)) => {
                if let Err(e) = std::fs::read_to_string(f) {
                    p.push(format!("storage.s3.secret_access_key_file: cannot read {}: {e}", f.display()));
                }
            }
            (Some(_), None) => {}
        }
        if s3.multipart_part_size.0 < 5 << 20 {
            p.push("storage.s3.multipart_part_size: S3 requires at least 5MiB".to_owned());
        }
        if s3.multipart_concurrency == 0 || s3.multipart_concurrency > 64 {
            p.push("storage.s3.multipart_concurrency: must be between 1 and 64".to_owned());
        }
    }
    if cfg.layers.promotion_parallelism == 0 || cfg.layers.promotion_parallelism > 256 {
        p.push("layers.promotion_parallelism: must be between 1 and 256".to_owned());
    }
    if cfg.files.merge_cache_ttl_secs == 0 {
        p.push("files.merge_cache_ttl_secs: must be at least 1".to_owned());
    }
    if !(1..=10_000).contains(&cfg.files.preview_rows) {
        p.push("files.preview_rows: must be between 1 and 10000".to_owned());
    }
    if !(1024..=16 << 20).contains(&cfg.files.row_group_rows) {
        p.push("files.row_group_rows: must be between 1024 and 16777216".to_owned());
    }
    if !(cfg.plugins.timeout_secs > 0.0 && cfg.plugins.timeout_secs <= 86_400.0) {
        p.push("plugins.timeout_secs: must be between 0 and 86400".to_owned());
    }
    if cfg.plugins.memory.0 < (16 << 20) || cfg.plugins.memory.0 > (4 << 30) {
        p.push(
            "plugins.memory: must be between 16MiB and 4GiB (a component's memory is 32-bit)"
                .to_owned(),
        );
    }
    if cfg.files.merge_parallelism > 64 {
        p.push("files.merge_parallelism: must be between 0 (one per core) and 64".to_owned());
    }
    if cfg.auth.mode == AuthMode::Off && !is_loopback(&cfg.server.listen) {
        p.push(format!(
            "auth.mode: \"off\" is allowed only on a loopback address, and server.listen is {:?}: anyone who reaches that address could change the lake. Use \"tokens\" (issue one with `lake admin bootstrap`), or listen on 127.0.0.1",
            cfg.server.listen
        ));
    }
    if cfg.auth.token_cache_ms > 60_000 {
        p.push(
            "auth.token_cache_ms: at most 60000 (a revocation must reach every replica within a minute)"
                .to_owned(),
        );
    }
    if !(1..=3660).contains(&cfg.auth.max_token_days) {
        p.push("auth.max_token_days: must be between 1 and 3660".to_owned());
    }
    if cfg.auth.mode == AuthMode::Oidc {
        let o = &cfg.auth.oidc;
        match o.issuer.split_once("://") {
            Some(("https", _)) => {}
            // The keys that vouch for every sign-in travel unencrypted only on this machine.
            Some(("http", rest)) if is_loopback(rest.split('/').next().unwrap_or_default()) => {}
            Some(("http", _)) => p.push(
                "auth.oidc.issuer: an issuer off this machine must be reached over https (its keys vouch for every sign-in)".to_owned(),
            ),
            _ => p.push("auth.oidc.issuer: mode = \"oidc\" needs the issuer's URL (as its tokens' iss claim says it)".to_owned()),
        }
        if o.audience.trim().is_empty() {
            p.push("auth.oidc.audience: must name the lake's client id at the issuer".to_owned());
        }
        if o.roles.is_empty() {
            p.push("auth.oidc.roles: map at least one group to a role, e.g. { \"lab-curators\" = \"curator\" }".to_owned());
        }
        if o.leeway_secs > 600 {
            p.push("auth.oidc.leeway_secs: at most 600".to_owned());
        }
    }
    if !(1..=3600).contains(&cfg.server.body_idle_secs) {
        p.push("server.body_idle_secs: must be between 1 and 3600".to_owned());
    }
    if !(6..=86_400).contains(&cfg.server.job_lease_secs) {
        p.push("server.job_lease_secs: must be between 6 and 86400".to_owned());
    }
    if !(1..=1024).contains(&cfg.server.max_concurrent_uploads) {
        p.push("server.max_concurrent_uploads: must be between 1 and 1024".to_owned());
    }
    for origin in &cfg.server.cors_origins {
        let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
            && !origin.trim_end_matches('/').contains(['*', ' '])
            && axum::http::HeaderValue::from_str(origin).is_ok();
        if !ok {
            p.push(format!("server.cors_origins: {origin:?} is not an origin such as \"https://notebook.lab.example\""));
        }
    }
    if cfg.plugins.parse_parallelism > 64 {
        p.push("plugins.parse_parallelism: must be between 0 (one per core) and 64".to_owned());
    }
    for (name, o) in &cfg.plugins.overrides {
        if o.memory
            .is_some_and(|m| m.0 < (16 << 20) || m.0 > (4 << 30))
        {
            p.push(format!(
                "plugins.overrides.{name}.memory: must be between 16MiB and 4GiB"
            ));
        }
        if o.timeout_secs.is_some_and(|t| !(t > 0.0 && t <= 86_400.0)) {
            p.push(format!(
                "plugins.overrides.{name}.timeout_secs: must be between 0 and 86400"
            ));
        }
        for h in &o.hosts {
            if let Err(e) = check_origin(h) {
                p.push(format!("plugins.overrides.{name}.hosts: {h:?} {e}"));
            }
        }
        if o.requests_per_sec
            .is_some_and(|r| !(r > 0.0 && r <= 10_000.0))
        {
            p.push(format!(
                "plugins.overrides.{name}.requests_per_sec: must be between 0 and 10000"
            ));
        }
        for h in o.credentials.headers.keys() {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                p.push(format!(
                    "plugins.overrides.{name}.credentials.headers: {h:?} is not a header name"
                ));
            }
        }
    }
    if tracing_subscriber::EnvFilter::try_new(&cfg.log.level).is_err() {
        p.push(format!(
            "log.level: {:?} is not a valid filter such as info or lake_host=debug",
            cfg.log.level
        ));
    }
    p
}

/// An origin as `hosts` takes it: `http(s)://host[:port]`, nothing after the authority.
pub fn check_origin(origin: &str) -> Result<(), String> {
    let uri: http::Uri = origin
        .parse()
        .map_err(|_| "is not a URL such as https://eutils.ncbi.nlm.nih.gov".to_owned())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must start with https:// or http://".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("names no host".into());
    }
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err("must be an origin only, without a path or query".into());
    }
    Ok(())
}

/// S3's bucket naming rules, which the local backend follows too so a lake can move between them.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ok_ends = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !(3..=63).contains(&name.len()) || !ok_chars || !ok_ends || name.contains("..") {
        return Err(format!(
            "{name:?} is not a valid bucket name (3-63 lowercase letters, digits, '-' or '.', starting and ending alphanumeric)"
        ));
    }
    Ok(())
}

impl S3Config {
    /// The secret access key, read from the file when given that way.
    pub fn secret(&self) -> Option<Secret> {
        if let Some(s) = &self.secret_access_key {
            return Some(s.clone());
        }
        let f = self.secret_access_key_file.as_ref()?;
        std::fs::read_to_string(f)
            .ok()
            .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_owned()))
    }
}

impl Config {
    /// The configuration as TOML with secrets redacted: what `lake config check` prints.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}
