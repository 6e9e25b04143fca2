//! The wasmtime side of plugins: one engine, compiled components cached on disk, pre-instantiation,
//! and a fresh, limited store per invocation.
//!
//! This is the only module that names wasmtime. Every invocation gets a new `Store` with a memory
//! limit (a resource limiter that also records the peak), a wall-clock deadline (epoch
//! interruption, ticked by one thread per engine), optional fuel, no preopened directories, no
//! sockets, no environment, and stderr captured with a size cap. Whatever goes wrong inside the guest
//! comes back as an [`InvokeError`]; the store is dropped, so a trapped instance is never reused.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

mod deadline;

pub(crate) use deadline::Cancel;
use deadline::Deadline;

use super::policy::{Fetch, HttpPolicy, MAX_RETRIES, retry_after};
use super::{InvokeError, Kind, Limits, Manifest, Parallel, Part, PluginErrorKind, Table, Usage};

/// Bindings of the parser world (host side).
mod parser_world {
    wasmtime::component::bindgen!({ world: "parser-plugin", path: "../wit/plugin@0.1.0" });
}

/// Bindings of the step world; it shares the `types` and `host` interfaces with the parser world.
mod step_world {
    wasmtime::component::bindgen!({
        world: "step-plugin",
        path: "../wit/plugin@0.1.0",
        with: {
            "lake:plugin/types": super::parser_world::lake::plugin::types,
            "lake:plugin/host": super::parser_world::lake::plugin::host,
        },
    });
}

/// Bindings of the connector world: its wasi:http imports are served by wasmtime-wasi-http.
mod connector_world {
    wasmtime::component::bindgen!({
        world: "connector-plugin",
        path: "../wit/plugin@0.1.0",
        with: {
            "lake:plugin/types": super::parser_world::lake::plugin::types,
            "lake:plugin/host": super::parser_world::lake::plugin::host,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::sync::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
        require_store_data_send: true,
    });
}

use parser_world::lake::plugin::host::Level;
use parser_world::lake::plugin::types::{Kind as WitKind, PluginError as WitError};

/// How often the epoch advances; deadlines are whole ticks.
const TICK: Duration = Duration::from_millis(10);

/// Component instances alive at once (in-flight invocations plus loads); more wait for a slot.
pub(super) const POOL_INSTANCES: u32 = 128;

/// Bytes of each pooled linear memory kept resident between invocations: with `pagemap_scan`
/// only the pages an invocation dirtied are zeroed, and the next one touching them takes no page
/// faults (a 1M-row CSV parse touches about 26 MiB per instance).
const KEEP_RESIDENT: usize = 32 << 20;

/// Idle pool slots kept warm before cold ones are used.
const WARM_SLOTS: u32 = 16;

/// Interfaces a plugin may import without a grant: what Rust's standard library needs to run, plus
/// the lake's own host interface. Everything else (files, sockets, HTTP) needs a capability.
const ALWAYS_ALLOWED: &[&str] = &[
    "wasi:io/",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-",
    "wasi:random/",
    "wasi:clocks/",
    "lake:plugin/host",
    "lake:plugin/types",
];

/// Whether an import needs no grant.
pub(super) fn always_allowed(import: &str) -> bool {
    ALWAYS_ALLOWED.iter().any(|p| import.starts_with(p))
}

/// What a connector imports beyond the defaults: HTTP, policed per request by [`HttpPolicy`].
const CONNECTOR_ALLOWED: &[&str] = &["wasi:http/outgoing-handler@", "wasi:http/types@"];

/// Every import outside the defaults and the grants, as one message; `None` when all are allowed.
pub(super) fn denied_imports(imports: &[String], granted: &[String], kind: Kind) -> Option<String> {
    let denied: Vec<&str> = imports
        .iter()
        .filter(|i| {
            let connector_http =
                kind == Kind::Connector && CONNECTOR_ALLOWED.iter().any(|p| i.starts_with(p));
            let granted = granted.iter().any(|g| i.starts_with(g.as_str()));
            !(always_allowed(i) || connector_http || granted)
        })
        .map(String::as_str)
        .collect();
    (!denied.is_empty()).then(|| {
        format!(
            "the component imports {}, which lake.toml does not grant it",
            denied.join(", ")
        )
    })
}

/// The version of the interface `lake:plugin/{interface}` a component exports, if it does.
fn exported_version<'a>(exports: &'a [String], interface: &str) -> Option<&'a str> {
    let prefix = format!("lake:plugin/{interface}@");
    exports.iter().find_map(|e| e.strip_prefix(prefix.as_str()))
}

/// Log lines a plugin may write in one invocation.
pub(super) const LOG_LINES: u32 = 1000;
/// Bytes of log text a plugin may write in one invocation.
pub(super) const LOG_BYTES: usize = 1 << 20;
/// The longest single log message kept, in characters.
const LOG_MESSAGE_CHARS: usize = 4096;

/// What a plugin may still log in this invocation, and what it was refused.
#[derive(Debug, Default)]
pub(super) struct LogBudget {
    lines: u32,
    bytes: usize,
    /// Messages dropped over the budget.
    pub(super) dropped: u64,
}

impl LogBudget {
    /// The message as it may be logged (one line, cut to its limit), or `None` over the budget.
    fn admit(&mut self, message: &str) -> Option<String> {
        let line = one_line(message);
        if self.lines >= LOG_LINES || self.bytes + line.len() > LOG_BYTES {
            self.dropped += 1;
            return None;
        }
        self.lines += 1;
        self.bytes += line.len();
        Some(line)
    }
}

/// A plugin's message as one log line: control characters (a newline would forge a line of the
/// host's own; an escape sequence would recolour a terminal) and bidirectional overrides shown
/// escaped, at most [`LOG_MESSAGE_CHARS`] characters.
pub(super) fn one_line(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(LOG_MESSAGE_CHARS));
    for c in message.chars().take(LOG_MESSAGE_CHARS) {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Per-invocation state of a store.
pub(super) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    plugin: String,
    progress: Option<(u64, Option<u64>)>,
    logs: LogBudget,
    output: OutputBudget,
    http: WasiHttpCtx,
    policy: PolicyHooks,
    /// When the invocation must end, and its caller's cancel token.
    deadline: Deadline,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.policy,
        }
    }
}

/// The host's hand on every request a connector sends: origin allowlist, rate limit, credentials,
/// `Retry-After`, time limits, and a record of the request.
struct PolicyHooks(HttpPolicy);

type HttpIo = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for PolicyHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: HttpIo,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, HttpIo), HttpError>> + Send>
    {
        drop(fut);
        let policy = self.0.clone();
        Box::new(async move {
            let mut fetch = Fetch {
                method: request.method().to_string(),
                url: request.uri().to_string(),
                status: None,
                retries: 0,
                error: None,
            };
            let origin = match policy.check(request.uri()) {
                Ok(o) => o,
                Err(reason) => {
                    tracing::warn!(reason = %reason, "Plugin HTTP request denied");
                    fetch.error = Some(format!("denied: {reason}"));
                    policy.record(fetch);
                    return Err(HttpError::HttpRequestDenied);
                }
            };
            // Each request open holds a connection (a file descriptor) until its answer is read.
            let Some(open) = policy.open_request().await else {
                fetch.error = Some("the invocation's time limit passed".into());
                policy.record(fetch);
                return Err(HttpError::ConnectionTimeout);
            };
            let (mut parts, body) = request.into_parts();
            policy.add_credentials(&mut parts);
            // Only bodiless requests are asked again: their body is known to be empty.
            let repeatable = matches!(parts.method, http::Method::GET | http::Method::HEAD);
            let mut body = Some(body);
            loop {
                policy.wait_turn(&origin).await;
                let left = policy.remaining();
                if left.is_zero() {
                    fetch.error = Some("the invocation's time limit passed".into());
                    policy.record(fetch);
                    return Err(HttpError::ConnectionTimeout);
                }
                let cap = |d: Option<Duration>| Some(d.map_or(left, |d| d.min(left)));
                let opts = RequestOptions {
                    connect_timeout: cap(options.and_then(|o| o.connect_timeout)),
                    first_byte_timeout: cap(options.and_then(|o| o.first_byte_timeout)),
                    between_bytes_timeout: cap(options.and_then(|o| o.between_bytes_timeout)),
                };
                let body = body.take().unwrap_or_else(empty_body);
                let mut req = http::Request::new(body);
                *req.method_mut() = parts.method.clone();
                *req.uri_mut() = parts.uri.clone();
                *req.version_mut() = parts.version;
                *req.headers_mut() = parts.headers.clone();
                match wasmtime_wasi_http::default_send_request(req, Some(opts)).await {
                    Ok((res, io)) => {
                        let status = res.status();
                        let wait = retry_after(res.headers().get(http::header::RETRY_AFTER));
                        if let (true, Some(wait)) = (
                            status == 429 || status == 503,
                            wait.filter(|w| {
                                repeatable && fetch.retries < MAX_RETRIES && *w < policy.remaining()
                            }),
                        ) {
                            fetch.retries += 1;
                            tracing::info!(url = %fetch.url, status = status.as_u16(), wait_secs = wait.as_secs(), "Upstream asked to retry later");
                            drop((res, io));
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        fetch.status = Some(status.as_u16());
                        policy.record(fetch);
                        let mut res = res;
                        if policy.scrub(res.headers_mut()) > 0 {
                            tracing::warn!(
                                status = status.as_u16(),
                                "An upstream's answer repeated the host's credentials; removed before the plugin saw them"
                            );
                        }
                        use http_body_util::BodyExt;
                        let res = res.map(|body| match policy.redact_body(body.boxed_unsync()) {
                            Ok(redacted) => redacted.boxed_unsync(),
                            Err(body) => body,
                        });
                        let io = async move {
                            let done = io.await;
                            drop(open);
                            done
                        };
                        return Ok((res, Box::new(io) as HttpIo));
                    }
                    Err(e) => {
                        fetch.error = Some(format!("{e:?}"));
                        policy.record(fetch);
                        return Err(e);
                    }
                }
            }
        })
    }
}

fn empty_body() -> WasiBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

impl parser_world::lake::plugin::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let Some(message) = self.logs.admit(&message) else {
            if self.logs.dropped == 1 {
                tracing::warn!(
                    plugin = %self.plugin,
                    "the plugin logged more than {LOG_LINES} lines or {LOG_BYTES} bytes in one invocation; the rest are dropped"
                );
            }
            return;
        };
        match level {
            Level::Trace => tracing::trace!(plugin = %self.plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin = %self.plugin, "{message}"),
            Level::Info => tracing::info!(plugin = %self.plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin = %self.plugin, "{message}"),
            Level::Error => tracing::error!(plugin = %self.plugin, "{message}"),
        }
    }
    fn progress(&mut self, done: u64, total: Option<u64>) {
        self.progress = Some((done, total));
    }
}

impl parser_world::lake::plugin::types::Host for HostState {}

/// The memory limit, enforced on every growth, recording the peak.
struct Limiter {
    max_memory: usize,
    peak: usize,
}

/// The error a guest traps with when it asks for more memory than granted.
#[derive(Debug)]
struct MemoryLimit {
    asked: usize,
    limit: usize,
}

impl std::fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory limit of {} MiB exceeded (the plugin asked for {} MiB)",
            self.limit >> 20,
            self.asked >> 20
        )
    }
}

impl std::error::Error for MemoryLimit {}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            return Err(wasmtime::Error::new(MemoryLimit {
                asked: desired,
                limit: self.max_memory,
            }));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// A component compiled and linked, ready to instantiate cheaply.
#[derive(Clone)]
pub(super) enum Pre {
    Parser(parser_world::ParserPluginPre<HostState>),
    Step(step_world::StepPluginPre<HostState>),
    Connector(connector_world::ConnectorPluginPre<HostState>),
}

impl std::fmt::Debug for Pre {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pre::Parser(_) => "Pre::Parser",
            Pre::Step(_) => "Pre::Step",
            Pre::Connector(_) => "Pre::Connector",
        })
    }
}

/// The engine and what every invocation shares.
pub(super) struct Runtime {
    engine: Engine,
    parser_linker: Linker<HostState>,
    step_linker: Linker<HostState>,
    connector_linker: Linker<HostState>,
    cache_dir: PathBuf,
    compat: String,
    fuel: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache_dir", &self.cache_dir)
            .field("compat", &self.compat)
            .finish_non_exhaustive()
    }
}

fn engine_error(e: impl std::fmt::Display) -> InvokeError {
    InvokeError::Load(format!("{e:#}"))
}

impl Runtime {
    /// Builds the engine (epoch interruption on; fuel only when asked) and its epoch ticker.
    pub(super) fn new(cache_dir: &Path, fuel: bool, pooling: bool) -> Result<Self, InvokeError> {
        let mut cfg = Config::new();
        cfg.epoch_interruption(true);
        cfg.consume_fuel(fuel);
        // Plain synchronous calls on a blocking thread: no component-model-async machinery needed.
        cfg.wasm_component_model(true);
        // For profiling plugins with `perf`: WASM_PERFMAP=1 writes /tmp/perf-PID.map.
        if std::env::var_os("WASM_PERFMAP").is_some() {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        // A fresh instance per invocation mostly pays for first touches of its memory. The pooling
        // allocator reuses slots whose first pages stay resident (zeroed, not unmapped), which
        // roughly halves the cost of a small invocation. It reserves address space up front; where
        // that is refused, the default on-demand allocator is used.
        let engine = if pooling {
            let mut pool = wasmtime::PoolingAllocationConfig::new();
            pool.total_component_instances(POOL_INSTANCES)
                .total_core_instances(POOL_INSTANCES * 8)
                .total_memories(POOL_INSTANCES * 2)
                .total_tables(POOL_INSTANCES * 8)
                .max_memory_size(4 << 30)
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(64 << 10)
                // Linux 6.7+: reset only the pages an instance dirtied, not all it kept resident.
                .pagemap_scan(wasmtime::Enabled::Auto)
                // At most this many idle slots keep their resident memory warm for reuse
                // (wasmtime's default is 100): bounds an idle server's RSS after a busy spell.
                .max_unused_warm_slots(WARM_SLOTS);
            let mut pooled = cfg.clone();
            pooled.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
            Engine::new(&pooled).or_else(|e| {
                tracing::warn!(error = %e, "The pooling allocator is unavailable; instances are allocated on demand");
                Engine::new(&cfg)
            })
        } else {
            Engine::new(&cfg)
        }
        .map_err(engine_error)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("lake-epoch".into())
            .spawn(move || {
                while let Some(e) = weak.upgrade() {
                    e.increment_epoch();
                    drop(e);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| InvokeError::Load(format!("starting the epoch ticker: {e}")))?;

        let mut parser_linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut parser_linker).map_err(engine_error)?;
        deadline::cap_sleeps(&mut parser_linker).map_err(engine_error)?;
        parser_world::ParserPlugin::add_to_linker::<_, HasSelf<_>>(&mut parser_linker, |s| s)
            .map_err(engine_error)?;
        let mut step_linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut step_linker).map_err(engine_error)?;
        deadline::cap_sleeps(&mut step_linker).map_err(engine_error)?;
        step_world::StepPlugin::add_to_linker::<_, HasSelf<_>>(&mut step_linker, |s| s)
            .map_err(engine_error)?;
        let mut connector_linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut connector_linker).map_err(engine_error)?;
        deadline::cap_sleeps(&mut connector_linker).map_err(engine_error)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut connector_linker)
            .map_err(engine_error)?;
        parser_world::lake::plugin::host::add_to_linker::<_, HasSelf<_>>(
            &mut connector_linker,
            |s| s,
        )
        .map_err(engine_error)?;

        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        std::fs::create_dir_all(cache_dir).map_err(|e| {
            InvokeError::Load(format!(
                "creating the plugin cache {}: {e}",
                cache_dir.display()
            ))
        })?;
        Ok(Self {
            engine,
            parser_linker,
            step_linker,
            connector_linker,
            cache_dir: cache_dir.to_path_buf(),
            compat: format!("{:016x}", h.finish()),
            fuel,
        })
    }

    /// Compiles (or loads from the cache) a component, checks its imports against the grants, reads
    /// its self-description and pre-instantiates it.
    pub(super) fn load(
        &self,
        bytes: &[u8],
        sha256: &str,
        granted: &[String],
    ) -> Result<(Manifest, Pre), InvokeError> {
        let component = self.compile_cached(bytes, sha256)?;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let (world, built_against) = if let Some(v) = exported_version(&exports, "parser") {
            (Kind::Parser, v)
        } else if let Some(v) = exported_version(&exports, "step") {
            (Kind::Step, v)
        } else if let Some(v) = exported_version(&exports, "connector") {
            (Kind::Connector, v)
        } else {
            return Err(InvokeError::Load(format!(
                "the component exports none of the lake:plugin worlds (it exports {exports:?})"
            )));
        };
        // A component built against another version of the interface would only fail to link,
        // with the linker's words; say what is wrong instead.
        if built_against != super::WIT_VERSION {
            return Err(InvokeError::Load(format!(
                "built against lake:plugin@{built_against}, this lake speaks {}",
                super::WIT_VERSION
            )));
        }
        if let Some(denied) = denied_imports(&imports, granted, world) {
            return Err(InvokeError::Denied(denied));
        }
        let pre = match world {
            Kind::Parser => {
                let p = self
                    .parser_linker
                    .instantiate_pre(&component)
                    .map_err(engine_error)?;
                Pre::Parser(parser_world::ParserPluginPre::new(p).map_err(engine_error)?)
            }
            Kind::Step => {
                let p = self
                    .step_linker
                    .instantiate_pre(&component)
                    .map_err(engine_error)?;
                Pre::Step(step_world::StepPluginPre::new(p).map_err(engine_error)?)
            }
            Kind::Connector => {
                let p = self
                    .connector_linker
                    .instantiate_pre(&component)
                    .map_err(engine_error)?;
                Pre::Connector(connector_world::ConnectorPluginPre::new(p).map_err(engine_error)?)
            }
        };
        let limits = Limits::describe();
        let (mut store, _) = self.store("(loading)", &limits, HttpPolicy::deny_all())?;
        // `describe` runs synchronously, and WASI's synchronous calls (a write to stderr, a
        // sleep) block on a Tokio runtime of their own, which Tokio refuses on a thread that
        // drives or serves a runtime (the server's workers, `spawn_blocking`, a CLI's main). So
        // it runs on a thread of its own, outside any runtime, and a panic there is the
        // component's failure, never the host's.
        let describe = || match &pre {
            Pre::Parser(p) => p
                .instantiate(&mut store)
                .and_then(|i| i.lake_plugin_plugin().call_describe(&mut store)),
            Pre::Step(p) => p
                .instantiate(&mut store)
                .and_then(|i| i.lake_plugin_plugin().call_describe(&mut store)),
            Pre::Connector(p) => p
                .instantiate(&mut store)
                .and_then(|i| i.lake_plugin_plugin().call_describe(&mut store)),
        };
        let info = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("lake-describe".into())
                .spawn_scoped(s, describe)
                .map_err(|e| InvokeError::Load(format!("starting describe: {e}")))?
                .join()
                .map_err(|_| InvokeError::Load("calling describe: the host's call panicked".into()))
        })?
        .map_err(|e| InvokeError::Load(format!("calling describe: {e:#}")))?;
        let kind = match info.kind {
            WitKind::Parser => Kind::Parser,
            WitKind::Step => Kind::Step,
            WitKind::Connector => Kind::Connector,
        };
        if kind != world {
            return Err(InvokeError::Load(format!(
                "the component says it is a {kind} but exports the {world} world"
            )));
        }
        let manifest = Manifest {
            name: info.name,
            version: info.version,
            kind,
            wit_version: info.wit_version,
            description: info.description,
            sha256: sha256.to_owned(),
            capabilities: info.capabilities,
            imports,
            source: String::new(),
            // The registry sets it from lake.toml and the bundled list.
            parallel: Parallel::None,
        };
        Ok((manifest, pre))
    }

    fn compile_cached(&self, bytes: &[u8], sha256: &str) -> Result<Component, InvokeError> {
        let path = self
            .cache_dir
            .join(format!("{sha256}-{}.cwasm", self.compat));
        if path.exists() {
            // SAFETY: the file was written by `serialize` below, from bytes whose SHA-256 is in its
            // name, for an engine whose compatibility hash is in its name, in a directory only the
            // lake writes. A mismatched or damaged artifact is refused by wasmtime's header checks
            // and recompiled.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(&self.engine, &path) };
            match loaded {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "Recompiling a cached component")
                }
            }
        }
        let started = std::time::Instant::now();
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| InvokeError::Load(format!("not a valid component: {e:#}")))?;
        tracing::info!(
            sha256 = %sha256.get(..12).unwrap_or(sha256),
            bytes = bytes.len(),
            ms = started.elapsed().as_millis() as u64,
            "Compiled a component (cached for later starts)"
        );
        match component.serialize() {
            Ok(compiled) => {
                let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
                if std::fs::write(&tmp, compiled)
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .is_err()
                {
                    let _ = std::fs::remove_file(&tmp);
                    tracing::warn!(path = %path.display(), "Could not cache a compiled component");
                }
            }
            Err(e) => tracing::warn!(error = %e, "Could not serialize a compiled component"),
        }
        Ok(component)
    }

    fn store(
        &self,
        plugin: &str,
        limits: &Limits,
        policy: HttpPolicy,
    ) -> Result<(Store<HostState>, MemoryOutputPipe), InvokeError> {
        let stderr = MemoryOutputPipe::new(limits.stderr_bytes);
        // Nothing granted: no preopened directories, no environment, no arguments, no sockets
        // (denied by default in wasmtime 48), stdout discarded, stderr captured for panic messages.
        let deadline = Deadline::after(limits.timeout);
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .monotonic_clock(deadline.clock())
            .build();
        let mut store = Store::new(
            &self.engine,
            HostState {
                wasi,
                table: ResourceTable::new(),
                limiter: Limiter {
                    max_memory: limits.memory_bytes as usize,
                    peak: 0,
                },
                plugin: plugin.to_owned(),
                progress: None,
                logs: LogBudget::default(),
                output: OutputBudget::of(limits),
                http: WasiHttpCtx::new(),
                policy: PolicyHooks(policy),
                deadline,
            },
        );
        store.limiter(|s| &mut s.limiter);
        // What one call may hand back (a step's finished batches, say) is bounded by the memory
        // the plugin is granted, not by wasmtime's default 128 MiB per call.
        store.set_hostcall_fuel(usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX));
        deadline::arm(&mut store);
        if self.fuel {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .map_err(engine_error)?;
        }
        Ok((store, stderr))
    }

    /// Runs `body` in a fresh store with `limits`, turning traps into [`InvokeError`]s, and reports
    /// what the invocation used. The store is dropped afterwards, so a trapped instance is never reused.
    fn invoke<T>(
        &self,
        plugin: &str,
        limits: &Limits,
        policy: HttpPolicy,
        body: impl FnOnce(
            &mut Store<HostState>,
            &dyn Fn(wasmtime::Error) -> InvokeError,
        ) -> Result<T, InvokeError>,
    ) -> (Result<T, InvokeError>, Usage) {
        let started = Instant::now();
        let (mut store, stderr) = match self.store(plugin, limits, policy) {
            Ok(s) => s,
            Err(e) => return (Err(e), Usage::default()),
        };
        let trap = |e: wasmtime::Error| classify(e, &stderr, limits);
        let result = body(&mut store, &trap);
        let usage = self.usage(&mut store, started, limits);
        (result, usage)
    }

    /// Runs a parser over input chunks.
    pub(super) fn parse(
        &self,
        pre: &Pre,
        plugin: &str,
        params: &[(String, String)],
        next_chunk: &mut dyn FnMut() -> Option<std::io::Result<bytes::Bytes>>,
        limits: &Limits,
    ) -> (Result<Table, InvokeError>, Usage) {
        let mut batches = Vec::new();
        let (schema, usage) = self.parse_into(
            pre,
            plugin,
            params,
            next_chunk,
            &mut |_, b| {
                batches.extend(b);
                Ok(())
            },
            limits,
        );
        (schema.map(|schema| Table { schema, batches }), usage)
    }

    /// Runs a parser over input chunks, handing each decoded batch to `sink` as it comes.
    pub(super) fn parse_into(
        &self,
        pre: &Pre,
        plugin: &str,
        params: &[(String, String)],
        next_chunk: &mut dyn FnMut() -> Option<std::io::Result<bytes::Bytes>>,
        sink: &mut BatchSink<'_>,
        limits: &Limits,
    ) -> (Result<SchemaRef, InvokeError>, Usage) {
        let Pre::Parser(pre) = pre else {
            return (
                Err(InvokeError::Load(format!("{plugin} is not a parser"))),
                Usage::default(),
            );
        };
        self.invoke(plugin, limits, HttpPolicy::deny_all(), |store, trap| {
            let inst = pre.instantiate(&mut *store).map_err(trap)?;
            let parse = inst.lake_plugin_parser().parse();
            parse_streamed(
                store,
                &parse,
                &params.to_vec(),
                &mut std::iter::from_fn(next_chunk),
                trap,
                sink,
            )
        })
    }

    /// Runs a parser over several independent inputs in one instance, one `parse` each, handing
    /// each table to `done` with its index, until `next_job` has no more or one fails: the
    /// parallel CSV workers, which so keep their warmed-up memory between segments of the same
    /// file. Returns how many segments it parsed.
    pub(super) fn parse_each(
        &self,
        pre: &Pre,
        plugin: &str,
        params: &[(String, String)],
        next_job: &mut dyn FnMut() -> Option<(usize, Vec<bytes::Bytes>)>,
        done: &mut dyn FnMut(usize, Table) -> Result<(), InvokeError>,
        limits: &Limits,
    ) -> (Result<usize, InvokeError>, Usage) {
        let Pre::Parser(pre) = pre else {
            return (
                Err(InvokeError::Load(format!("{plugin} is not a parser"))),
                Usage::default(),
            );
        };
        self.invoke(plugin, limits, HttpPolicy::deny_all(), |store, trap| {
            let inst = pre.instantiate(&mut *store).map_err(trap)?;
            let parse = inst.lake_plugin_parser().parse();
            let params = params.to_vec();
            let mut parsed = 0;
            while let Some((index, chunks)) = next_job() {
                let mut chunks = chunks.into_iter().map(Ok);
                done(index, parse_one(store, &parse, &params, &mut chunks, trap)?)?;
                parsed += 1;
            }
            Ok(parsed)
        })
    }

    /// Runs a step over input tables in one instance.
    pub(super) fn step(
        &self,
        pre: &Pre,
        plugin: &str,
        params: &[(String, String)],
        inputs: Vec<super::StepInput>,
        limits: &Limits,
    ) -> (Result<Table, InvokeError>, Usage) {
        let schemas: Vec<SchemaRef> = inputs.iter().map(|t| t.schema.clone()).collect();
        let mut batches = inputs.into_iter().enumerate().flat_map(|(i, t)| {
            let schema = t.schema;
            t.batches
                .map(move |b| b.and_then(|batch| StepJob::new(i as u32, 0, &schema, &batch)))
        });
        let (result, usage) = self.step_jobs(
            pre,
            plugin,
            params,
            &schemas,
            &mut || batches.next(),
            limits,
        );
        (
            result.and_then(|out| decode(out.into_iter().map(|(_, o)| o), limits)),
            usage,
        )
    }

    /// Starts a step on `schemas` in one instance, pushes every batch `next_job` hands out (an
    /// `Err` ends the run as [`InvokeError::Input`]) and finishes it. Returns what each push
    /// returned under its job's `seq`, in push order, then what `finish` returned under
    /// `usize::MAX`.
    pub(super) fn step_jobs(
        &self,
        pre: &Pre,
        plugin: &str,
        params: &[(String, String)],
        schemas: &[SchemaRef],
        next_job: &mut dyn FnMut() -> Option<Result<StepJob, String>>,
        limits: &Limits,
    ) -> (Result<StepOutputs, InvokeError>, Usage) {
        let Pre::Step(pre) = pre else {
            return (
                Err(InvokeError::Load(format!("{plugin} is not a step"))),
                Usage::default(),
            );
        };
        self.invoke(plugin, limits, HttpPolicy::deny_all(), |store, trap| {
            let encoded = schemas
                .iter()
                .map(|s| encode(s, &[]))
                .collect::<Result<Vec<_>, _>>()?;
            let inst = pre.instantiate(&mut *store).map_err(trap)?;
            let run = inst.lake_plugin_step().run();
            let params = params.to_vec();
            let handle = run
                .call_start(&mut *store, &params, &encoded)
                .map_err(trap)?
                .map_err(plugin_error)?;
            let mut out = Vec::new();
            // Each job's bytes are dropped once the plugin has its copy (once every instance has,
            // for a shared one), so the host does not hold the inputs while the plugin holds them
            // too.
            while let Some(job) = next_job() {
                let job = job.map_err(InvokeError::Input)?;
                if job.input as usize >= schemas.len() {
                    return Err(InvokeError::Input(format!(
                        "the step has no input {}",
                        job.input
                    )));
                }
                let returned = run
                    .call_push(&mut *store, handle, job.input, &job.ipc)
                    .map_err(trap)?
                    .map_err(plugin_error)?;
                store.data_mut().output.charge_streams(&returned)?;
                out.extend(returned.into_iter().map(|o| (job.seq, o)));
            }
            let returned = run
                .call_finish(&mut *store, handle)
                .map_err(trap)?
                .map_err(plugin_error)?;
            store.data_mut().output.charge_streams(&returned)?;
            out.extend(returned.into_iter().map(|o| (usize::MAX, o)));
            let _ = handle.resource_drop(&mut *store);
            Ok(out)
        })
    }

    /// Runs a connector, handing each part to `sink` as it comes. Returns the requests it made
    /// (on success in the result too), failed or refused ones included.
    pub(super) fn collect(
        &self,
        pre: &Pre,
        plugin: &str,
        params: &[(String, String)],
        policy: HttpPolicy,
        sink: &mut dyn FnMut(Part) -> Result<(), InvokeError>,
        limits: &Limits,
    ) -> (Result<Vec<Fetch>, InvokeError>, Usage, Vec<Fetch>) {
        let Pre::Connector(pre) = pre else {
            return (
                Err(InvokeError::Load(format!("{plugin} is not a connector"))),
                Usage::default(),
                Vec::new(),
            );
        };
        let record = policy.clone();
        let (result, usage) = self.invoke(plugin, limits, policy, |store, trap| {
            let inst = pre.instantiate(&mut *store).map_err(trap)?;
            let collect = inst.lake_plugin_connector().collect();
            let params = params.to_vec();
            let handle = collect
                .call_start(&mut *store, &params)
                .map_err(trap)?
                .map_err(plugin_error)?;
            while let Some(p) = collect
                .call_next(&mut *store, handle)
                .map_err(trap)?
                .map_err(plugin_error)?
            {
                sink(Part {
                    name: p.name,
                    bytes: p.bytes,
                    last: p.last,
                    content_type: p.content_type,
                    facts: p.facts,
                })?;
            }
            let _ = handle.resource_drop(&mut *store);
            Ok(())
        });
        let fetches = record.fetches();
        // A plugin that failed after the host refused one of its requests failed because of it.
        let result = match result {
            // A request cut short by the deadline surfaces in the guest as an HTTP error.
            Err(InvokeError::Plugin { .. } | InvokeError::Trap(_))
                if record.remaining().is_zero() =>
            {
                Err(InvokeError::Timeout(limits.timeout))
            }
            Err(e) if !matches!(e, InvokeError::Timeout(_) | InvokeError::MemoryLimit(_)) => {
                match fetches
                    .iter()
                    .find_map(|f| f.error.as_deref()?.strip_prefix("denied: "))
                {
                    Some(reason) => Err(InvokeError::Denied(reason.to_owned())),
                    None => Err(e),
                }
            }
            other => other.map(|()| fetches.clone()),
        };
        (result, usage, fetches)
    }

    fn usage(&self, store: &mut Store<HostState>, started: Instant, limits: &Limits) -> Usage {
        let fuel_used = if self.fuel {
            store
                .get_fuel()
                .ok()
                .map(|left| limits.fuel.unwrap_or(u64::MAX).saturating_sub(left))
        } else {
            None
        };
        Usage {
            wall: started.elapsed(),
            peak_memory_bytes: store.data().limiter.peak as u64,
            fuel_used,
            instances: 1,
            logs_dropped: store.data().logs.dropped,
        }
    }
}

/// One `parse` resource over `chunks`, in an instance that may serve several.
#[allow(clippy::ptr_arg)] // the generated `call_start` takes `&Vec`
fn parse_one(
    store: &mut Store<HostState>,
    parse: &parser_world::exports::lake::plugin::parser::GuestParse,
    params: &Vec<(String, String)>,
    chunks: &mut dyn Iterator<Item = std::io::Result<bytes::Bytes>>,
    trap: &dyn Fn(wasmtime::Error) -> InvokeError,
) -> Result<Table, InvokeError> {
    let mut batches = Vec::new();
    let schema = parse_streamed(store, parse, params, chunks, trap, &mut |_, b| {
        batches.extend(b);
        Ok(())
    })?;
    Ok(Table { schema, batches })
}

/// One parse whose batches go to `sink` as each push returns them, so the host never holds the
/// whole table. Returns the schema.
fn parse_streamed(
    store: &mut Store<HostState>,
    parse: &parser_world::exports::lake::plugin::parser::GuestParse,
    params: &Vec<(String, String)>,
    chunks: &mut dyn Iterator<Item = std::io::Result<bytes::Bytes>>,
    trap: &dyn Fn(wasmtime::Error) -> InvokeError,
    sink: &mut BatchSink<'_>,
) -> Result<SchemaRef, InvokeError> {
    let handle = parse
        .call_start(&mut *store, params)
        .map_err(trap)?
        .map_err(plugin_error)?;
    let mut decoded = Decoded::within(store.data().output);
    for chunk in chunks {
        let chunk = chunk.map_err(|e| InvokeError::Input(e.to_string()))?;
        let out = parse
            .call_push(&mut *store, handle, &chunk)
            .map_err(trap)?
            .map_err(plugin_error)?;
        decoded.feed(out, sink)?;
    }
    let out = parse
        .call_finish(&mut *store, handle)
        .map_err(trap)?
        .map_err(plugin_error)?;
    decoded.feed(out, sink)?;
    let _ = handle.resource_drop(&mut *store);
    decoded.finish()
}

fn plugin_error(e: WitError) -> InvokeError {
    let (kind, message) = match e {
        WitError::InvalidInput(m) => (PluginErrorKind::InvalidInput, m),
        WitError::InvalidParams(m) => (PluginErrorKind::InvalidParams, m),
        WitError::Unsupported(m) => (PluginErrorKind::Unsupported, m),
        WitError::TooLarge(m) => (PluginErrorKind::TooLarge, m),
        WitError::Internal(m) => (PluginErrorKind::Internal, m),
    };
    InvokeError::Plugin { kind, message }
}

/// Turns a trap or host error into the reason a person needs.
fn classify(e: wasmtime::Error, stderr: &MemoryOutputPipe, limits: &Limits) -> InvokeError {
    if let Some(m) = e.downcast_ref::<MemoryLimit>() {
        return InvokeError::MemoryLimit(m.to_string());
    }
    if e.downcast_ref::<deadline::Cancelled>().is_some() {
        return InvokeError::Cancelled;
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => InvokeError::Timeout(limits.timeout),
        Some(Trap::OutOfFuel) => InvokeError::FuelExhausted,
        _ => {
            let err_text = String::from_utf8_lossy(&stderr.contents()).into_owned();
            if let Some(i) = err_text.find("panicked at") {
                let msg: String = err_text[i..].lines().take(4).collect::<Vec<_>>().join(" ");
                return InvokeError::Panic(msg);
            }
            if err_text.contains("memory allocation of") {
                return InvokeError::MemoryLimit(
                    err_text.lines().next().unwrap_or_default().to_owned(),
                );
            }
            let first = format!("{e}");
            InvokeError::Trap(first.lines().last().unwrap_or("trap").trim().to_owned())
        }
    }
}

fn encode(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, InvokeError> {
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, schema)
        .map_err(|e| InvokeError::Output(e.to_string()))?;
    for b in batches {
        w.write(b).map_err(|e| InvokeError::Output(e.to_string()))?;
    }
    w.finish().map_err(|e| InvokeError::Output(e.to_string()))?;
    drop(w);
    Ok(out)
}

/// What a step instance returned: IPC streams, each under the `seq` of the call that returned it.
pub(super) type StepOutputs = Vec<(usize, Vec<u8>)>;

/// One batch for a step instance: of input `input`, with `seq` ordering what its push returns,
/// as the IPC stream the plugin is handed. It is encoded once: a batch every instance of a split
/// step takes (the right table of a merge) is shared, not encoded again per instance.
#[derive(Debug, Clone)]
pub(super) struct StepJob {
    pub(super) input: u32,
    pub(super) seq: usize,
    pub(super) ipc: Arc<Vec<u8>>,
}

impl StepJob {
    /// Encodes `batch` (shaped `schema`) as input `input`'s job `seq`; the batch itself can be
    /// dropped once this returns.
    pub(super) fn new(
        input: u32,
        seq: usize,
        schema: &SchemaRef,
        batch: &RecordBatch,
    ) -> Result<Self, String> {
        // `encode` words its failures as the plugin's output's; this one is the host's input.
        let ipc = encode(schema, std::slice::from_ref(batch)).map_err(|e| match e {
            InvokeError::Output(m) => format!("encoding input {input} for the plugin: {m}"),
            other => other.to_string(),
        })?;
        Ok(Self {
            input,
            seq,
            ipc: Arc::new(ipc),
        })
    }
}

/// What a parser hands on as it decodes: the table's schema once, then each batch.
pub(super) type BatchSink<'a> =
    dyn FnMut(&SchemaRef, Option<RecordBatch>) -> Result<(), InvokeError> + 'a;

/// Decodes and validates what a plugin returns, as it returns it: every IPC stream must agree on
/// one schema. Arrays are slices of the returned buffers (no second copy); validation stays on for
/// guest data. The sink sees the schema first (with no batch), then every batch in order.
struct Decoded {
    schema: Option<SchemaRef>,
    budget: OutputBudget,
}

/// The widest table a plugin may return (its schema is checked as it arrives; each batch again,
/// as a backstop).
pub const MAX_OUTPUT_COLUMNS: usize = 10_000;
/// The most rows one returned batch may hold.
pub const MAX_BATCH_ROWS: usize = 16 << 20;

/// What one invocation may still return: bytes of Arrow IPC and batches, from its [`Limits`]
/// (`[plugins] max_output_bytes` and `max_output_batches`). Past either, the invocation fails
/// with the plugin's `Output` error and nothing it returned is kept.
#[derive(Debug, Clone, Copy)]
pub(super) struct OutputBudget {
    bytes: u64,
    batches: u64,
    limits: (u64, u64),
}

impl OutputBudget {
    fn of(limits: &Limits) -> Self {
        Self {
            bytes: limits.output_bytes,
            batches: limits.output_batches,
            limits: (limits.output_bytes, limits.output_batches),
        }
    }

    /// Bytes of IPC already returned count whether or not they decode.
    fn charge_bytes(&mut self, n: u64) -> Result<(), InvokeError> {
        self.bytes = self.bytes.checked_sub(n).ok_or_else(|| {
            InvokeError::Output(format!(
                "the plugin returned more than {} bytes of Arrow IPC (counting what view columns point to) in one invocation (plugins.max_output_bytes)",
                self.limits.0
            ))
        })?;
        Ok(())
    }

    fn charge_streams(&mut self, streams: &[Vec<u8>]) -> Result<(), InvokeError> {
        self.charge_bytes(streams.iter().map(|s| s.len() as u64).sum())
    }

    /// One batch: counted, and its shape checked (a batch without columns holds no rows, so 2^44
    /// rows of nothing never reach the Parquet writer).
    fn charge_batch(&mut self, b: &RecordBatch) -> Result<(), InvokeError> {
        self.batches = self.batches.checked_sub(1).ok_or_else(|| {
            InvokeError::Output(format!(
                "the plugin returned more than {} batches in one invocation (plugins.max_output_batches)",
                self.limits.1
            ))
        })?;
        if b.num_columns() > MAX_OUTPUT_COLUMNS {
            return Err(InvokeError::Output(format!(
                "the plugin returned a batch of {} columns; at most {MAX_OUTPUT_COLUMNS} are taken",
                b.num_columns()
            )));
        }
        if b.num_rows() > MAX_BATCH_ROWS {
            return Err(InvokeError::Output(format!(
                "the plugin returned a batch of {} rows; at most {MAX_BATCH_ROWS} per batch are taken",
                b.num_rows()
            )));
        }
        if b.num_columns() == 0 && b.num_rows() > 0 {
            return Err(InvokeError::Output(format!(
                "the plugin returned a batch of {} rows without a column",
                b.num_rows()
            )));
        }
        // A view column's values may all point into one small buffer: what it says it holds
        // (and the Parquet it becomes) counts, not the bytes it came in.
        self.charge_bytes(view_bytes(b))
    }
}

/// The bytes the long values of a batch's view columns (`Utf8View`, `BinaryView`) stand for, each
/// view counted (values of 12 bytes or less live in the view itself, already counted).
fn view_bytes(b: &RecordBatch) -> u64 {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    let long = |views: &[u128]| -> u64 {
        views
            .iter()
            .map(|v| u64::from(*v as u32))
            .filter(|len| *len > 12)
            .sum()
    };
    b.columns()
        .iter()
        .map(|c| match c.data_type() {
            arrow_schema::DataType::Utf8View => long(c.as_string_view().views()),
            arrow_schema::DataType::BinaryView => long(c.as_binary_view().views()),
            _ => 0,
        })
        .sum()
}

impl Decoded {
    fn within(budget: OutputBudget) -> Self {
        Self {
            schema: None,
            budget,
        }
    }

    fn feed(
        &mut self,
        streams: impl IntoIterator<Item = Vec<u8>>,
        sink: &mut BatchSink<'_>,
    ) -> Result<(), InvokeError> {
        let unreadable = |e: arrow_schema::ArrowError| {
            InvokeError::Output(format!("the plugin returned unreadable Arrow IPC: {e}"))
        };
        for bytes in streams {
            self.budget.charge_bytes(bytes.len() as u64)?;
            super::ipc::check_stream(&bytes).map_err(|m| {
                InvokeError::Output(format!("the plugin returned unreadable Arrow IPC: {m}"))
            })?;
            let mut buffer = arrow_buffer::Buffer::from_vec(bytes);
            let mut decoder = arrow_ipc::reader::StreamDecoder::new();
            while !buffer.is_empty() {
                let batch = decoder.decode(&mut buffer).map_err(unreadable)?;
                if let Some(s) = decoder.schema() {
                    match &self.schema {
                        // A table of no rows is held to the same width as one with rows.
                        None if s.fields().len() > MAX_OUTPUT_COLUMNS => {
                            return Err(InvokeError::Output(format!(
                                "the plugin returned a table of {} columns; at most {MAX_OUTPUT_COLUMNS} are taken",
                                s.fields().len()
                            )));
                        }
                        None => {
                            sink(&s, None)?;
                            self.schema = Some(s);
                        }
                        Some(first) if first.fields() != s.fields() => {
                            return Err(InvokeError::Output(
                                "the plugin returned batches with different schemas".into(),
                            ));
                        }
                        Some(_) => {}
                    }
                }
                if let (Some(b), Some(schema)) = (batch, &self.schema) {
                    self.budget.charge_batch(&b)?;
                    sink(schema, Some(b))?;
                }
            }
            decoder.finish().map_err(unreadable)?;
            if decoder.schema().is_none() {
                return Err(InvokeError::Output(
                    "the plugin returned an IPC stream without a schema".into(),
                ));
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<SchemaRef, InvokeError> {
        self.schema.ok_or_else(|| {
            InvokeError::Output("the plugin returned no table (not even a schema)".into())
        })
    }
}

/// Decodes what a plugin returned into one table, within `limits` (its bytes were charged as
/// they came back; the batches are counted here).
pub(super) fn decode(
    streams: impl IntoIterator<Item = Vec<u8>>,
    limits: &Limits,
) -> Result<Table, InvokeError> {
    let mut batches = Vec::new();
    let mut budget = OutputBudget::of(limits);
    budget.bytes = u64::MAX;
    let mut d = Decoded::within(budget);
    d.feed(streams, &mut |_, b| {
        batches.extend(b);
        Ok(())
    })?;
    Ok(Table {
        schema: d.finish()?,
        batches,
    })
}

impl Limits {
    fn describe() -> Limits {
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(5),
            fuel: None,
            stderr_bytes: 16 << 10,
            output_bytes: 0,
            output_batches: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A million views of one 1 KiB value: a few MB of IPC standing for 1 GB of values (and of
    /// Parquet) is charged as 1 GB.
    #[test]
    fn views_into_one_value_are_charged_for_what_they_stand_for()
    -> Result<(), arrow_schema::ArrowError> {
        let long = "x".repeat(1024);
        let views =
            arrow_array::StringViewArray::from_iter_values(std::iter::repeat_n(long.as_str(), 1));
        let index = arrow_array::UInt32Array::from(vec![0u32; 1_000_000]);
        let many = arrow_select::take::take(&views, &index, None)?;
        let schema =
            std::sync::Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
                "s",
                arrow_schema::DataType::Utf8View,
                false,
            )]));
        let batch = RecordBatch::try_new(schema, vec![many])?;
        assert_eq!(view_bytes(&batch), 1024 * 1_000_000);
        let mut limits = Limits::describe();
        limits.output_bytes = 64 << 20;
        limits.output_batches = 10;
        let mut budget = OutputBudget::of(&limits);
        let refused = budget.charge_batch(&batch);
        assert!(
            matches!(&refused, Err(InvokeError::Output(m)) if m.contains("max_output_bytes")),
            "{refused:?}"
        );
        limits.output_bytes = 2 << 30;
        assert!(OutputBudget::of(&limits).charge_batch(&batch).is_ok());
        Ok(())
    }

    /// A table of no rows is held to the column cap too: its schema alone is refused.
    #[test]
    fn a_schema_wider_than_the_column_cap_is_refused_without_a_batch() -> Result<(), InvokeError> {
        let schema = |n: usize| {
            std::sync::Arc::new(arrow_schema::Schema::new(
                (0..n)
                    .map(|i| {
                        arrow_schema::Field::new(
                            format!("c{i}"),
                            arrow_schema::DataType::Int8,
                            true,
                        )
                    })
                    .collect::<Vec<_>>(),
            ))
        };
        let mut limits = Limits::describe();
        limits.output_bytes = 64 << 20;
        limits.output_batches = 10;
        let wide = encode(&schema(MAX_OUTPUT_COLUMNS + 1), &[])?;
        let refused = decode([wide], &limits);
        assert!(
            matches!(&refused, Err(InvokeError::Output(m)) if m.contains(&format!("{} columns", MAX_OUTPUT_COLUMNS + 1))),
            "{refused:?}"
        );
        let widest = encode(&schema(MAX_OUTPUT_COLUMNS), &[])?;
        assert_eq!(
            decode([widest], &limits)?.schema.fields().len(),
            MAX_OUTPUT_COLUMNS
        );
        Ok(())
    }

    #[test]
    fn a_plugin_message_is_one_line_that_forges_nothing() {
        assert_eq!(
            one_line("parsed\n2026-12-04T00:00:00Z ERROR lake_host: forged"),
            "parsed\\n2026-12-04T00:00:00Z ERROR lake_host: forged"
        );
        assert_eq!(
            one_line("a\r\u{1b}[31mred\u{202e}txt"),
            "a\\r\\u{1b}[31mred\\u{202e}txt"
        );
        assert_eq!(
            one_line(&"é".repeat(5000)).chars().count(),
            LOG_MESSAGE_CHARS
        );
    }

    #[test]
    fn an_invocation_logs_within_its_budget() {
        let mut budget = LogBudget::default();
        let kept = (0..LOG_LINES + 500)
            .filter(|i| budget.admit(&format!("line {i}")).is_some())
            .count();
        assert_eq!(kept, LOG_LINES as usize);
        assert_eq!(budget.dropped, 500);
        let mut budget = LogBudget::default();
        let big = "x".repeat(LOG_MESSAGE_CHARS);
        let kept = (0..1000).filter(|_| budget.admit(&big).is_some()).count();
        assert_eq!(kept, LOG_BYTES / LOG_MESSAGE_CHARS);
    }
}
