//! Plugins: the registry of components (bundled ones and a directory of third-party `.wasm` files),
//! their manifests, limits and grants, and invocation.
//!
//! Components run in [`runtime`], the only module that names wasmtime. Invocations run on blocking
//! threads (guest code is CPU-bound), each in a fresh store, so a plugin that traps, panics, runs
//! out of time or memory, or asks for something it was not granted fails only its own invocation.
//! Running one invocation on several instances at once (a large parse cut into segments, a merge
//! spread over instances) is [`parallel`]'s.

mod ipc;
mod local;
mod parallel;
mod policy;
mod redact;
mod runtime;
mod slots;
mod split;

pub use parallel::Parallel;
pub use policy::Fetch;
pub use split::text_encoding;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::blob::ByteStream;
use crate::config::PluginsConfig;

/// The components built from `plugins/` by `host/build.rs`, embedded in the binary.
mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled_plugins.rs"));
}

/// The kind of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Fetches from an upstream source.
    Connector,
    /// Bytes to table.
    Parser,
    /// Tables to table.
    Step,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Connector => "connector",
            Kind::Parser => "parser",
            Kind::Step => "step",
        })
    }
}

/// What the registry knows of a plugin.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Manifest {
    /// Unique name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// Its kind.
    pub kind: Kind,
    /// The interface version it was built against.
    pub wit_version: String,
    /// One line for people.
    pub description: String,
    /// SHA-256 of the component bytes.
    pub sha256: String,
    /// Capabilities it declares.
    pub capabilities: Vec<String>,
    /// The interfaces it imports (checked against grants at load).
    pub imports: Vec<String>,
    /// `bundled` or the path it was loaded from.
    pub source: String,
    /// The input it accepts in pieces, so a large parse may run on several instances at once:
    /// lake.toml's `[plugins.overrides.NAME] parallel`, else the bundled list's, else none.
    pub parallel: Parallel,
}

/// The longest plugin name.
const NAME_MAX: usize = 64;
/// The longest description and version a plugin may declare, in characters.
const DESCRIPTION_MAX: usize = 4096;
const VERSION_MAX: usize = 64;

/// Checks what a component says of itself: a name that is a plain identifier (it names the
/// plugin in URLs, lake.toml and logs), a description and version of sane size.
fn check_manifest(m: &Manifest) -> Result<(), String> {
    let name_ok = !m.name.is_empty()
        && m.name.len() <= NAME_MAX
        && m.name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && m.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        let shown: String = m
            .name
            .chars()
            .take(80)
            .flat_map(char::escape_debug)
            .collect();
        return Err(format!(
            "its name \"{shown}\" is not 1 to {NAME_MAX} letters, digits, '-', '_' or '.' starting with a letter or digit"
        ));
    }
    if m.description.chars().count() > DESCRIPTION_MAX {
        return Err(format!(
            "its description is longer than {DESCRIPTION_MAX} characters"
        ));
    }
    if m.version.is_empty()
        || m.version.chars().count() > VERSION_MAX
        || m.version.chars().any(char::is_control)
    {
        return Err(format!(
            "its version is not 1 to {VERSION_MAX} printable characters"
        ));
    }
    Ok(())
}

/// A component that could not be loaded, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rejected {
    /// Where it came from.
    pub source: String,
    /// Why it was refused.
    pub reason: String,
}

/// Limits of one invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Limits {
    /// Largest linear memory, bytes.
    pub memory_bytes: u64,
    /// Wall-clock limit.
    #[serde(serialize_with = "secs")]
    #[schema(value_type = f64)]
    pub timeout: Duration,
    /// Fuel, when metering is on.
    pub fuel: Option<u64>,
    /// Captured stderr cap, bytes.
    pub stderr_bytes: usize,
    /// Arrow IPC bytes one invocation may return in all.
    pub output_bytes: u64,
    /// Batches one invocation may return in all.
    pub output_batches: u64,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What an invocation used.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// Wall-clock time.
    #[serde(serialize_with = "secs")]
    #[schema(value_type = f64)]
    pub wall: Duration,
    /// Peak linear memory, bytes.
    pub peak_memory_bytes: u64,
    /// Fuel consumed, when metering is on.
    pub fuel_used: Option<u64>,
    /// Sandboxed instances the invocation ran in (more than one for a parse cut into segments or
    /// a merge split over instances).
    pub instances: u32,
    /// Log messages dropped because the plugin logged more than an invocation may.
    #[serde(skip_serializing_if = "is_zero")]
    pub logs_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Counts another instance's run into this invocation's: its instances and fuel (the caller
    /// decides how peak memories combine).
    fn add_instances(&mut self, other: &Usage) {
        self.instances += other.instances;
        self.logs_dropped += other.logs_dropped;
        self.fuel_used = match (self.fuel_used, other.fuel_used) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
}

/// A table: a schema and its batches.
#[derive(Debug, Clone)]
pub struct Table {
    /// The schema.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
}

impl Table {
    /// Total rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A table handed to a step: its schema, then its batches as they come. A table read from
/// storage decodes while the plugin takes the batches before, so the host holds only a few of its
/// batches at once, not the whole table next to the plugin's copy.
pub struct StepInput {
    /// The schema.
    pub schema: SchemaRef,
    /// How many rows will come, when known beforehand (from Parquet metadata, say).
    pub rows: Option<u64>,
    /// The rows, batch by batch; an error ends the invocation.
    pub batches: Box<dyn Iterator<Item = Result<RecordBatch, String>> + Send>,
}

impl std::fmt::Debug for StepInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepInput")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl From<Table> for StepInput {
    fn from(t: Table) -> Self {
        StepInput {
            rows: Some(t.num_rows() as u64),
            schema: t.schema,
            batches: Box::new(t.batches.into_iter().map(Ok)),
        }
    }
}

/// One piece of an object a connector collected; objects come one after another, each in one or
/// more pieces, the last marked `last` and carrying the content type and upstream facts.
#[derive(Debug, Clone, Default)]
pub struct Part {
    /// Object name inside the collected dataset.
    pub name: String,
    /// The next bytes of the object, as the upstream sent them.
    pub bytes: Vec<u8>,
    /// True on the object's last piece.
    pub last: bool,
    /// On the last piece: the content type, when known.
    pub content_type: Option<String>,
    /// On the last piece: upstream version facts (etag, last-modified, release).
    pub facts: Vec<(String, String)>,
}

/// The kinds of a plugin's own `plugin-error`, mirroring the WIT variant; spelt in snake case
/// (`invalid_input`, ...) in messages, JSON and provenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginErrorKind {
    /// The input is malformed.
    InvalidInput,
    /// A parameter is missing, unknown or has a wrong value.
    InvalidParams,
    /// The plugin does not support what was asked.
    Unsupported,
    /// An input is larger than the plugin accepts.
    TooLarge,
    /// An unexpected state inside the plugin.
    Internal,
}

impl PluginErrorKind {
    /// The stable spelling: `invalid_input`, `invalid_params`, `unsupported`, `too_large` or
    /// `internal`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginErrorKind::InvalidInput => "invalid_input",
            PluginErrorKind::InvalidParams => "invalid_params",
            PluginErrorKind::Unsupported => "unsupported",
            PluginErrorKind::TooLarge => "too_large",
            PluginErrorKind::Internal => "internal",
        }
    }

    /// Whether the caller's input or parameters are at fault, rather than the plugin.
    pub fn is_caller_fault(self) -> bool {
        !matches!(self, PluginErrorKind::Internal)
    }
}

impl fmt::Display for PluginErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure an [`InvokeError`] is, one per variant (the plugin's own errors by their
/// [`PluginErrorKind`]): the stable code APIs and provenance carry, for callers to match on
/// instead of strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `unknown_plugin`.
    UnknownPlugin,
    /// `capability_denied`.
    CapabilityDenied,
    /// `load_failed`.
    LoadFailed,
    /// `timeout`.
    Timeout,
    /// `cancelled`.
    Cancelled,
    /// `memory_limit`.
    MemoryLimit,
    /// `fuel_exhausted`.
    FuelExhausted,
    /// `panic`.
    Panic,
    /// `trap`.
    Trap,
    /// The plugin's own error, by its kind (`invalid_input`, ...).
    Plugin(PluginErrorKind),
    /// `input_failed`.
    InputFailed,
    /// `invalid_output`.
    InvalidOutput,
    /// `output_not_stored`.
    OutputNotStored,
}

impl ErrorKind {
    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UnknownPlugin => "unknown_plugin",
            ErrorKind::CapabilityDenied => "capability_denied",
            ErrorKind::LoadFailed => "load_failed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::FuelExhausted => "fuel_exhausted",
            ErrorKind::Panic => "panic",
            ErrorKind::Trap => "trap",
            ErrorKind::Plugin(k) => k.as_str(),
            ErrorKind::InputFailed => "input_failed",
            ErrorKind::InvalidOutput => "invalid_output",
            ErrorKind::OutputNotStored => "output_not_stored",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why an invocation failed; each variant has its own clear message.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum InvokeError {
    /// No such plugin.
    #[error("no plugin named {0:?}")]
    Unknown(String),
    /// The component imports something it was not granted.
    #[error("capability denied: {0}")]
    Denied(String),
    /// The component could not be compiled or linked.
    #[error("plugin failed to load: {0}")]
    Load(String),
    /// The wall-clock limit passed.
    #[error("plugin timed out after {0:?}")]
    Timeout(Duration),
    /// Whoever awaited the invocation went away (an HTTP client hung up), so it was stopped.
    #[error("plugin stopped: its caller went away")]
    Cancelled,
    /// The memory limit was hit.
    #[error("plugin ran out of memory: {0}")]
    MemoryLimit(String),
    /// The fuel limit was hit.
    #[error("plugin ran out of fuel")]
    FuelExhausted,
    /// The guest panicked.
    #[error("plugin panicked: {0}")]
    Panic(String),
    /// Another trap.
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The plugin refused the input or parameters (its own `plugin-error`).
    #[error("{kind}: {message}")]
    Plugin {
        /// Which `plugin-error` it returned.
        kind: PluginErrorKind,
        /// The plugin's message.
        message: String,
    },
    /// Reading the input failed.
    #[error("reading the input failed: {0}")]
    Input(String),
    /// The plugin's output was not a valid table.
    #[error("invalid plugin output: {0}")]
    Output(String),
    /// The caller could not take the output (its store failed); not the plugin's fault.
    #[error("storing the output failed: {0}")]
    Sink(String),
}

impl InvokeError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            InvokeError::Unknown(_) => ErrorKind::UnknownPlugin,
            InvokeError::Denied(_) => ErrorKind::CapabilityDenied,
            InvokeError::Sink(_) => ErrorKind::OutputNotStored,
            InvokeError::Load(_) => ErrorKind::LoadFailed,
            InvokeError::Timeout(_) => ErrorKind::Timeout,
            InvokeError::Cancelled => ErrorKind::Cancelled,
            InvokeError::MemoryLimit(_) => ErrorKind::MemoryLimit,
            InvokeError::FuelExhausted => ErrorKind::FuelExhausted,
            InvokeError::Panic(_) => ErrorKind::Panic,
            InvokeError::Trap(_) => ErrorKind::Trap,
            InvokeError::Plugin { kind, .. } => ErrorKind::Plugin(*kind),
            InvokeError::Input(_) => ErrorKind::InputFailed,
            InvokeError::Output(_) => ErrorKind::InvalidOutput,
        }
    }

    /// A short code for APIs and provenance: [`InvokeError::kind`] spelt out.
    pub fn code(&self) -> &'static str {
        self.kind().as_str()
    }

    /// Whether the caller's input or parameters are at fault (a 4xx), rather than the plugin.
    pub fn is_caller_fault(&self) -> bool {
        match self {
            InvokeError::Unknown(_) => true,
            InvokeError::Plugin { kind, .. } => kind.is_caller_fault(),
            _ => false,
        }
    }
}

struct Entry {
    manifest: Manifest,
    pre: runtime::Pre,
}

/// The plugin registry and runner.
#[derive(Clone)]
pub struct Plugins {
    runtime: Arc<runtime::Runtime>,
    entries: Arc<RwLock<BTreeMap<String, Arc<Entry>>>>,
    rejected: Arc<RwLock<Vec<Rejected>>>,
    cfg: Arc<PluginsConfig>,
    /// Bounds invocations in flight to the instance pool, and each plugin to its share of it
    /// (more wait their turn).
    slots: Arc<slots::Slots>,
    /// Instances one large parse cut into segments runs on at once (the cores).
    workers: usize,
    /// Per-plugin request spacing for connectors, shared by all invocations.
    rates: Arc<std::sync::Mutex<BTreeMap<String, Arc<policy::RateLimiter>>>>,
    /// How far loading has come; waiters on a plugin not yet loaded watch it.
    loading: Arc<tokio::sync::watch::Sender<LoadState>>,
}

/// Progress of loading the components (see [`Plugins::start`]).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct LoadState {
    /// True once every component (bundled and third-party) has been loaded or refused.
    pub done: bool,
    /// Bundled plugins not yet compiled and loaded, in the order they will be.
    pub pending: Vec<String>,
    /// Components handled so far, of `total`.
    pub loaded: usize,
    /// Components to load: the bundled ones and the `.wasm` files in the plugin directory.
    pub total: usize,
}

impl fmt::Debug for Plugins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugins")
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

/// The outcome of one invocation, for provenance: a table for parsers and steps, the requests made
/// for connectors (whose objects went to the caller's channel as they came).
#[derive(Debug)]
pub struct Invocation<T = Table> {
    /// The plugin's manifest (absent when the name was unknown).
    pub manifest: Option<Manifest>,
    /// Limits granted.
    pub limits: Limits,
    /// What was used.
    pub usage: Usage,
    /// The table, or why there is none.
    pub result: Result<T, InvokeError>,
}

impl Plugins {
    /// Starts the engine and loads the bundled plugins and every `.wasm` in the plugin directory
    /// before returning (the command line and tests). A component that fails to load is listed as
    /// rejected, with its reason; it never stops the lake.
    pub fn open(cfg: &PluginsConfig) -> Result<Self, InvokeError> {
        let plugins = Self::new(cfg)?;
        plugins.load_all(plugin_files(&cfg.dir), false);
        Ok(plugins)
    }

    /// Starts the engine and returns at once; the components load on a thread of their own, so a
    /// server answers while a cold cache compiles them (a minute or more on two cores). A request
    /// for a plugin not yet loaded waits for it ([`Plugins::ready`]); [`Plugins::load_state`]
    /// says how far loading has come.
    pub fn start(cfg: &PluginsConfig) -> Result<Self, InvokeError> {
        let plugins = Self::new(cfg)?;
        let files = plugin_files(&cfg.dir);
        plugins
            .loading
            .send_modify(|s| s.total = bundled::BUNDLED.len() + files.len());
        let loader = plugins.clone();
        std::thread::Builder::new()
            .name("plugin-loader".into())
            .spawn(move || loader.load_all(files, true))
            .map_err(|e| InvokeError::Load(format!("starting the plugin loader: {e}")))?;
        Ok(plugins)
    }

    fn new(cfg: &PluginsConfig) -> Result<Self, InvokeError> {
        let runtime = Arc::new(runtime::Runtime::new(
            &cfg.cache_dir,
            cfg.fuel.is_some(),
            cfg.instance_pool,
        )?);
        Ok(Plugins {
            runtime,
            entries: Arc::default(),
            rejected: Arc::default(),
            cfg: Arc::new(cfg.clone()),
            slots: Arc::new(slots::Slots::new(runtime::POOL_INSTANCES / 2)),
            rates: Arc::default(),
            workers: crate::config::instances(cfg.parse_parallelism),
            // Every bundled plugin is pending from the start, so a request may reorder them
            // before the loader begins.
            loading: Arc::new(tokio::sync::watch::Sender::new(LoadState {
                pending: bundled::BUNDLED
                    .iter()
                    .map(|(n, _)| (*n).to_owned())
                    .collect(),
                total: bundled::BUNDLED.len(),
                ..LoadState::default()
            })),
        })
    }

    /// Loads the bundled components, then the plugin directory's, logging each with its progress.
    /// The bundled ones go in the order of `pending`, which a request for one not yet loaded
    /// reorders (see [`Plugins::ready`]): a cold server compiles first what it is asked for. A
    /// `detached` loader (its own thread) stops once nobody else holds the registry.
    fn load_all(&self, files: Vec<std::path::PathBuf>, detached: bool) {
        let total = bundled::BUNDLED.len() + files.len();
        self.loading.send_modify(|s| s.total = total);
        let started = std::time::Instant::now();
        let mut n = 0;
        let mut step = |what: &str, load: &mut dyn FnMut()| {
            n += 1;
            let t = std::time::Instant::now();
            tracing::info!(plugin = %what, n, total, "Loading plugin");
            load();
            tracing::debug!(plugin = %what, ms = t.elapsed().as_millis() as u64, "Plugin loaded");
            self.loading.send_modify(|s| {
                s.pending.retain(|p| p != what);
                s.loaded = n;
            });
        };
        let abandoned = || detached && Arc::strong_count(&self.loading) == 1;
        loop {
            // Read apart from the loop's body: the body writes the state this reads.
            let next = self.loading.borrow().pending.first().cloned();
            let Some(next) = next else {
                break;
            };
            if abandoned() {
                return;
            }
            let Some((name, bytes)) = bundled::BUNDLED.iter().find(|(n, _)| *n == next) else {
                self.loading
                    .send_modify(|s| s.pending.retain(|p| *p != next));
                continue;
            };
            step(name, &mut || {
                self.add(bytes, "bundled", name);
            });
        }
        for p in files {
            if abandoned() {
                return;
            }
            let source = p.display().to_string();
            step(&source, &mut || match read_component(&p) {
                Ok(bytes) => {
                    self.add(&bytes, &source, "");
                }
                Err(why) => self.reject(source.clone(), why),
            });
        }
        self.loading.send_modify(|s| {
            s.done = true;
            s.pending.clear();
        });
        tracing::info!(
            loaded = self.list().len(),
            rejected = self.rejected().len(),
            ms = started.elapsed().as_millis() as u64,
            "Plugins ready"
        );
    }

    /// How far loading has come.
    pub fn load_state(&self) -> LoadState {
        self.loading.borrow().clone()
    }

    /// Waits until every component has been loaded or refused.
    pub async fn loaded(&self) {
        let mut rx = self.loading.subscribe();
        // The sender lives as long as `self`, so this only ends when loading is done.
        let _ = rx.wait_for(|s| s.done).await;
    }

    fn reject(&self, source: String, reason: String) {
        tracing::warn!(source = %source, reason = %reason, "Plugin rejected");
        self.rejected
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Rejected { source, reason });
    }

    /// Loads one component; returns its manifest, or records why it was rejected.
    pub fn add(&self, bytes: &[u8], source: &str, expected_name: &str) -> Option<Manifest> {
        let sha = crate::blob::Sha256::of(bytes).to_hex();
        // Grants are looked up by the name the component declares, so load once to learn it.
        let granted_for = |name: &str| {
            self.cfg
                .overrides
                .get(name)
                .map(|o| o.grants.clone())
                .unwrap_or_default()
        };
        let all_grants: Vec<String> = self
            .cfg
            .overrides
            .values()
            .flat_map(|o| o.grants.clone())
            .collect();
        let loaded = self
            .runtime
            .load(bytes, &sha, &all_grants)
            .and_then(|(m, pre)| {
                // The load above allowed every grant in the file; hold this plugin to its own.
                if let Some(denied) =
                    runtime::denied_imports(&m.imports, &granted_for(&m.name), m.kind)
                {
                    return Err(InvokeError::Denied(format!("{}: {denied}", m.name)));
                }
                Ok((m, pre))
            });
        match loaded {
            Ok((mut manifest, pre)) => {
                if !expected_name.is_empty() && manifest.name != expected_name {
                    self.reject(
                        source.to_owned(),
                        format!(
                            "built as {expected_name} but calls itself {}",
                            manifest.name
                        ),
                    );
                    return None;
                }
                if let Err(why) = check_manifest(&manifest) {
                    self.reject(source.to_owned(), why);
                    return None;
                }
                if manifest.wit_version != crate::plugins::WIT_VERSION {
                    self.reject(
                        source.to_owned(),
                        format!(
                            "built against lake:plugin@{}, this lake speaks {}",
                            manifest.wit_version, WIT_VERSION
                        ),
                    );
                    return None;
                }
                manifest.source = source.to_owned();
                manifest.parallel = parallel::opt_in(
                    &manifest.name,
                    source,
                    self.cfg
                        .overrides
                        .get(&manifest.name)
                        .and_then(|o| o.parallel),
                );
                let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
                if entries
                    .get(&manifest.name)
                    .is_some_and(|e| e.manifest.source == "bundled")
                    && source != "bundled"
                {
                    drop(entries);
                    self.reject(
                        source.to_owned(),
                        format!("the name {} belongs to a bundled plugin", manifest.name),
                    );
                    return None;
                }
                // A second component may not take a loaded one's name (and with it the hosts and
                // credentials lake.toml grants that name): the first keeps it.
                if let Some(first) = entries.get(&manifest.name)
                    && first.manifest.source != source
                {
                    let taken_by = first.manifest.source.clone();
                    drop(entries);
                    self.reject(
                        source.to_owned(),
                        format!(
                            "the name {} is taken by {taken_by}; rename one of them",
                            manifest.name
                        ),
                    );
                    return None;
                }
                entries.insert(
                    manifest.name.clone(),
                    Arc::new(Entry {
                        manifest: manifest.clone(),
                        pre,
                    }),
                );
                Some(manifest)
            }
            Err(e) => {
                self.reject(source.to_owned(), e.to_string());
                None
            }
        }
    }

    /// Every loaded plugin, by name.
    pub fn list(&self) -> Vec<Manifest> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|e| e.manifest.clone())
            .collect()
    }

    /// Components that could not be loaded.
    pub fn rejected(&self) -> Vec<Rejected> {
        self.rejected
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One loaded plugin's manifest, now (`None` also while it may still be loading).
    pub fn get(&self, name: &str) -> Option<Manifest> {
        self.entry(name).map(|e| e.manifest.clone())
    }

    /// One plugin's manifest, waiting while it may still be loading (see [`Plugins::ready`]).
    pub async fn manifest(&self, name: &str) -> Option<Manifest> {
        self.ready(name).await.map(|e| e.manifest.clone())
    }

    /// Instance slots held now by invocations in flight (each segment worker holds one).
    pub fn invocations_in_flight(&self) -> usize {
        self.slots.in_use()
    }

    /// The limits a plugin runs with: defaults, then its overrides from lake.toml.
    pub fn limits_for(&self, name: &str) -> Limits {
        let o = self.cfg.overrides.get(name);
        Limits {
            memory_bytes: o.and_then(|o| o.memory).unwrap_or(self.cfg.memory).0,
            timeout: Duration::from_secs_f64(
                o.and_then(|o| o.timeout_secs)
                    .unwrap_or(self.cfg.timeout_secs),
            ),
            fuel: o.and_then(|o| o.fuel).or(self.cfg.fuel),
            stderr_bytes: self.cfg.stderr_bytes.0 as usize,
            output_bytes: self.cfg.max_output_bytes.0,
            output_batches: self.cfg.max_output_batches,
        }
    }

    fn entry(&self, name: &str) -> Option<Arc<Entry>> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The loaded plugin `name`, waiting while loading goes on: a bundled plugin not yet compiled
    /// is on its way, and any name may still turn up in the plugin directory. `None` once loading
    /// is done and no component has the name.
    async fn ready(&self, name: &str) -> Option<Arc<Entry>> {
        let mut rx = self.loading.subscribe();
        // A bundled plugin still to be compiled goes next (after the one being compiled now).
        self.loading
            .send_if_modified(|s| match s.pending.iter().position(|p| p == name) {
                Some(i) if i > 1 => {
                    let wanted = s.pending.remove(i);
                    s.pending.insert(1, wanted);
                    true
                }
                _ => false,
            });
        loop {
            if let Some(e) = self.entry(name) {
                return Some(e);
            }
            if rx.borrow_and_update().done {
                // Loaded between the lookup and the check: look once more.
                return self.entry(name);
            }
            if rx.changed().await.is_err() {
                return self.entry(name);
            }
        }
    }

    /// Runs `f` for the plugin `name` on a blocking thread (guest code is CPU-bound), once an
    /// instance slot is free, and wraps what it returns with the manifest and limits.
    async fn invoke<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&runtime::Runtime, &Entry, &Limits) -> (Result<T, InvokeError>, Usage)
        + Send
        + 'static,
    ) -> Invocation<T> {
        let limits = self.limits_for(name);
        let Some(entry) = self.ready(name).await else {
            return Invocation {
                manifest: None,
                limits,
                usage: Usage::default(),
                result: Err(InvokeError::Unknown(name.to_owned())),
            };
        };
        let runtime = self.runtime.clone();
        let (e, l) = (entry.clone(), limits.clone());
        let slot = self.slots.take(name, 1).await;
        // Dropping this future (the caller went away) stops the guest at its next tick.
        let cancel = runtime::Cancel::default();
        let stop = cancel.on_drop();
        let joined = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let done = cancel.watching(|| f(&runtime, &e, &l));
            if let (Err(InvokeError::Cancelled), usage) = &done {
                tracing::warn!(
                    plugin = %e.manifest.name,
                    wall_ms = usage.wall.as_millis() as u64,
                    "Stopped a plugin invocation: its caller went away"
                );
            }
            done
        })
        .await;
        stop.disarm();
        let (result, usage) = joined.unwrap_or_else(|e| {
            (
                Err(InvokeError::Trap(format!("invocation thread failed: {e}"))),
                Usage::default(),
            )
        });
        Invocation {
            manifest: Some(entry.manifest.clone()),
            limits,
            usage,
            result,
        }
    }

    /// Runs a parser over a byte stream. A large input to a parser that opted in to segments
    /// (its manifest's `parallel`) is cut at record boundaries and parsed on every core at once
    /// (see [`parallel`]); the table is the same.
    pub async fn parse(
        &self,
        name: &str,
        params: Vec<(String, String)>,
        input: ByteStream,
    ) -> Invocation {
        match self.segment_plan(name, &params).await {
            Some(plan) => self.parse_in_segments(name, params, plan, input).await,
            None => self.parse_serial(name, params, input).await,
        }
    }

    /// Runs a parser over a byte stream, handing the schema and then each batch, in input order, to
    /// `sink` as the plugin returns them (on a blocking thread), so neither side ever holds the
    /// whole table. A sink error ends the run as [`InvokeError::Sink`].
    ///
    /// A large input to a parser that opted in to segments is parsed on every core at once (see
    /// [`parallel`]). Such a parse that fails has handed `sink` part of the table and reports an
    /// error worded for one segment: when the invocation failed with `usage.instances` above one,
    /// discard what the sink took and run [`Plugins::parse_into_serial`] for the error a person
    /// should read.
    pub async fn parse_into(
        &self,
        name: &str,
        params: Vec<(String, String)>,
        input: ByteStream,
        sink: impl FnMut(&SchemaRef, Option<RecordBatch>) -> Result<(), String> + Send + 'static,
    ) -> Invocation<SchemaRef> {
        let sink: Sink = Box::new(sink);
        match self.segment_plan(name, &params).await {
            Some(plan) => {
                self.parse_into_in_segments(name, params, plan, input, sink)
                    .await
            }
            None => self.parse_into_serial(name, params, input, sink).await,
        }
    }

    /// [`Plugins::parse_into`] in one instance, whatever the input.
    pub async fn parse_into_serial(
        &self,
        name: &str,
        params: Vec<(String, String)>,
        input: ByteStream,
        mut sink: Sink,
    ) -> Invocation<SchemaRef> {
        let mut next = blocking_chunks(input);
        self.invoke(name, move |runtime, e, l| {
            let mut sink =
                |s: &SchemaRef, b: Option<RecordBatch>| sink(s, b).map_err(InvokeError::Sink);
            runtime.parse_into(&e.pre, &e.manifest.name, &params, &mut next, &mut sink, l)
        })
        .await
    }

    /// Runs a parser over a byte stream in one instance.
    async fn parse_serial(
        &self,
        name: &str,
        params: Vec<(String, String)>,
        input: ByteStream,
    ) -> Invocation {
        let mut next = blocking_chunks(input);
        self.invoke(name, move |runtime, e, l| {
            runtime.parse(&e.pre, &e.manifest.name, &params, &mut next, l)
        })
        .await
    }

    /// Runs a step over tables.
    pub async fn step(
        &self,
        name: &str,
        params: Vec<(String, String)>,
        inputs: Vec<StepInput>,
    ) -> Invocation {
        self.invoke(name, move |runtime, e, l| {
            runtime.step(&e.pre, &e.manifest.name, &params, inputs, l)
        })
        .await
    }

    /// Runs a connector. Each part goes to `parts` as it comes (the caller stores it); the result
    /// lists every request the connector made. Its HTTP is policed by the `hosts`,
    /// `requests_per_sec` and `credentials` lake.toml sets for it.
    pub async fn collect(
        &self,
        name: &str,
        params: Vec<(String, String)>,
        parts: tokio::sync::mpsc::Sender<Part>,
    ) -> Invocation<Vec<Fetch>> {
        self.collect_recorded(name, params, parts).await.0
    }

    /// [`Plugins::collect`], also returning the requests made when the connector failed (a refused
    /// request is what provenance must show).
    pub async fn collect_recorded(
        &self,
        name: &str,
        params: Vec<(String, String)>,
        parts: tokio::sync::mpsc::Sender<Part>,
    ) -> (Invocation<Vec<Fetch>>, Vec<Fetch>) {
        let cfg = self.cfg.clone();
        let rates = self.rates.clone();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        let inv = self
            .invoke(name, move |runtime, e, l| {
                let plugin = &e.manifest.name;
                let rate = rates
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(plugin.clone())
                    .or_default()
                    .clone();
                let policy = policy::HttpPolicy::for_plugin(
                    plugin,
                    cfg.overrides.get(plugin),
                    rate,
                    std::time::Instant::now() + l.timeout,
                );
                let mut check = PartCheck::default();
                let mut sink = |p: Part| {
                    check.accept(&p)?;
                    parts
                        .blocking_send(p)
                        .map_err(|_| InvokeError::Input("the collection was abandoned".into()))
                };
                let (result, usage, fetches) =
                    runtime.collect(&e.pre, plugin, &params, policy, &mut sink, l);
                *seen.lock().unwrap_or_else(|p| p.into_inner()) = fetches;
                (result.and_then(|f| check.finish().map(|()| f)), usage)
            })
            .await;
        let requests = std::mem::take(&mut *requests.lock().unwrap_or_else(|p| p.into_inner()));
        (inv, requests)
    }
}

/// Checks the parts a connector hands over: sensible names, one object at a time.
#[derive(Default)]
struct PartCheck {
    open: Option<String>,
    objects: usize,
}

/// Objects one collection may produce.
const MAX_OBJECTS: usize = 100_000;

impl PartCheck {
    fn accept(&mut self, p: &Part) -> Result<(), InvokeError> {
        let bad = |why: &str| InvokeError::Output(format!("part {:?}: {why}", p.name));
        if p.name.is_empty()
            || p.name.len() > 512
            || p.name.starts_with('/')
            || p.name
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
            || p.name.chars().any(char::is_control)
        {
            return Err(bad(
                "an object name must be a relative path without . or .. segments",
            ));
        }
        match &self.open {
            Some(open) if *open != p.name => {
                return Err(bad(&format!(
                    "object {open:?} was not finished (no last part)"
                )));
            }
            Some(_) => {}
            None => {
                self.objects += 1;
                if self.objects > MAX_OBJECTS {
                    return Err(bad(&format!("more than {MAX_OBJECTS} objects")));
                }
            }
        }
        self.open = (!p.last).then(|| p.name.clone());
        Ok(())
    }

    fn finish(self) -> Result<(), InvokeError> {
        match self.open {
            Some(name) => Err(InvokeError::Output(format!(
                "object {name:?} was not finished (no last part)"
            ))),
            None => Ok(()),
        }
    }
}

/// Where a parse's batches go, in order: the schema with no batch first, then each batch.
pub type Sink = Box<dyn FnMut(&SchemaRef, Option<RecordBatch>) -> Result<(), String> + Send>;

/// The interface version this host speaks.
pub const WIT_VERSION: &str = "0.1.0";

/// The largest component file read from the plugin directory.
const COMPONENT_MAX_BYTES: u64 = 256 << 20;

/// A component file's bytes: only a regular file (a FIFO would block the read forever, a link to
/// `/dev/zero` would never end) of at most [`COMPONENT_MAX_BYTES`], read no further than that.
fn read_component(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.file_type().is_file() {
        return Err("not a regular file (a link, FIFO or device is never read)".into());
    }
    if meta.len() > COMPONENT_MAX_BYTES {
        return Err(format!(
            "{} bytes, larger than the {} MiB a component may be",
            meta.len(),
            COMPONENT_MAX_BYTES >> 20
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(COMPONENT_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > COMPONENT_MAX_BYTES {
        return Err(format!(
            "grew past the {} MiB a component may be while it was read",
            COMPONENT_MAX_BYTES >> 20
        ));
    }
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    Ok(bytes)
}

/// The `.wasm` files of the plugin directory, sorted (none when it does not exist).
fn plugin_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    paths.sort();
    paths
}

/// Turns a JSON object of parameters into the name/value pairs the interface carries.
pub fn params_from_json(v: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    match v {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Object(o) => {
            Ok(o.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
        }
        _ => Err("params must be a JSON object".into()),
    }
}

/// Pulls an async byte stream from a blocking thread: the guest runs on one, and each call waits
/// for the next chunk.
pub(super) fn blocking_chunks(
    mut input: ByteStream,
) -> impl FnMut() -> Option<std::io::Result<bytes::Bytes>> + Send {
    let handle = tokio::runtime::Handle::current();
    move || {
        handle
            .block_on(input.next())
            .map(|r| r.map_err(std::io::Error::other))
    }
}
