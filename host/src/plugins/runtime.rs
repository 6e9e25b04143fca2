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
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::{InvokeError, Kind, Limits, Manifest, Table, Usage};

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

use parser_world::lake::plugin::host::Level;
use parser_world::lake::plugin::types::{Kind as WitKind, PluginError as WitError};

/// How often the epoch advances; deadlines are whole ticks.
const TICK: Duration = Duration::from_millis(10);

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

/// Every import outside the defaults and the grants, as one message; `None` when all are allowed.
pub(super) fn denied_imports(imports: &[String], granted: &[String]) -> Option<String> {
    let denied: Vec<&str> = imports
        .iter()
        .filter(|i| !always_allowed(i) && !granted.iter().any(|g| i.starts_with(g.as_str())))
        .map(String::as_str)
        .collect();
    (!denied.is_empty()).then(|| {
        format!(
            "the component imports {}, which lake.toml does not grant it",
            denied.join(", ")
        )
    })
}

/// Per-invocation state of a store.
pub(super) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    plugin: String,
    progress: Option<(u64, Option<u64>)>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl parser_world::lake::plugin::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let message: String = message.chars().take(4096).collect();
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
}

impl std::fmt::Debug for Pre {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pre::Parser(_) => "Pre::Parser",
            Pre::Step(_) => "Pre::Step",
        })
    }
}

/// The engine and what every invocation shares.
pub(super) struct Runtime {
    engine: Engine,
    parser_linker: Linker<HostState>,
    step_linker: Linker<HostState>,
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
    pub(super) fn new(cache_dir: &Path, fuel: bool) -> Result<Self, InvokeError> {
        let mut cfg = Config::new();
        cfg.epoch_interruption(true);
        cfg.consume_fuel(fuel);
        // Plain synchronous calls on a blocking thread: no component-model-async machinery needed.
        cfg.wasm_component_model(true);
        let engine = Engine::new(&cfg).map_err(engine_error)?;
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
        parser_world::ParserPlugin::add_to_linker::<_, HasSelf<_>>(&mut parser_linker, |s| s)
            .map_err(engine_error)?;
        let mut step_linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut step_linker).map_err(engine_error)?;
        step_world::StepPlugin::add_to_linker::<_, HasSelf<_>>(&mut step_linker, |s| s)
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
        if let Some(denied) = denied_imports(&imports, granted) {
            return Err(InvokeError::Denied(denied));
        }
        let pre = if exports.iter().any(|e| e.starts_with("lake:plugin/parser@")) {
            let p = self
                .parser_linker
                .instantiate_pre(&component)
                .map_err(engine_error)?;
            Pre::Parser(parser_world::ParserPluginPre::new(p).map_err(engine_error)?)
        } else if exports.iter().any(|e| e.starts_with("lake:plugin/step@")) {
            let p = self
                .step_linker
                .instantiate_pre(&component)
                .map_err(engine_error)?;
            Pre::Step(step_world::StepPluginPre::new(p).map_err(engine_error)?)
        } else if exports
            .iter()
            .any(|e| e.starts_with("lake:plugin/connector@"))
        {
            return Err(InvokeError::Load(
                "connector components are not run by this host yet: the wasi:http policing they need arrives with the source connectors".into(),
            ));
        } else {
            return Err(InvokeError::Load(format!(
                "the component exports none of the lake:plugin worlds (it exports {exports:?})"
            )));
        };
        let limits = Limits::describe();
        let (mut store, _) = self.store("(loading)", &limits)?;
        let info = match &pre {
            Pre::Parser(p) => p
                .instantiate(&mut store)
                .and_then(|i| i.lake_plugin_plugin().call_describe(&mut store)),
            Pre::Step(p) => p
                .instantiate(&mut store)
                .and_then(|i| i.lake_plugin_plugin().call_describe(&mut store)),
        }
        .map_err(|e| InvokeError::Load(format!("calling describe: {e:#}")))?;
        let kind = match info.kind {
            WitKind::Parser => Kind::Parser,
            WitKind::Step => Kind::Step,
            WitKind::Connector => Kind::Connector,
        };
        let world_kind = match pre {
            Pre::Parser(_) => Kind::Parser,
            Pre::Step(_) => Kind::Step,
        };
        if kind != world_kind {
            return Err(InvokeError::Load(format!(
                "the component says it is a {kind} but exports the {world_kind} world"
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
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| InvokeError::Load(format!("not a valid component: {e:#}")))?;
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
    ) -> Result<(Store<HostState>, MemoryOutputPipe), InvokeError> {
        let stderr = MemoryOutputPipe::new(limits.stderr_bytes);
        // Nothing granted: no preopened directories, no environment, no arguments, no sockets
        // (denied by default in wasmtime 48), stdout discarded, stderr captured for panic messages.
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
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
            },
        );
        store.limiter(|s| &mut s.limiter);
        let ticks = (limits.timeout.as_millis() / TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        if self.fuel {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .map_err(engine_error)?;
        }
        Ok((store, stderr))
    }

    /// Runs `body` in a fresh store with `limits`, turning traps into [`InvokeError`]s, and reports
    /// what the invocation used. The store is dropped afterwards, so a trapped instance is never reused.
    fn invoke(
        &self,
        plugin: &str,
        limits: &Limits,
        body: impl FnOnce(
            &mut Store<HostState>,
            &dyn Fn(wasmtime::Error) -> InvokeError,
        ) -> Result<Table, InvokeError>,
    ) -> (Result<Table, InvokeError>, Usage) {
        let started = Instant::now();
        let (mut store, stderr) = match self.store(plugin, limits) {
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
        let Pre::Parser(pre) = pre else {
            return (
                Err(InvokeError::Load(format!("{plugin} is not a parser"))),
                Usage::default(),
            );
        };
        self.invoke(plugin, limits, |store, trap| {
            let inst = pre.instantiate(&mut *store).map_err(trap)?;
            let parse = inst.lake_plugin_parser().parse();
            let params = params.to_vec();
            let handle = parse
                .call_start(&mut *store, &params)
                .map_err(trap)?
                .map_err(plugin_error)?;
            let mut out = Vec::new();
            while let Some(chunk) = next_chunk() {
                let chunk = chunk.map_err(|e| InvokeError::Input(e.to_string()))?;
                out.extend(
                    parse
                        .call_push(&mut *store, handle, &chunk)
                        .map_err(trap)?
                        .map_err(plugin_error)?,
                );
            }
            out.extend(
                parse
                    .call_finish(&mut *store, handle)
                    .map_err(trap)?
                    .map_err(plugin_error)?,
            );
            let _ = handle.resource_drop(&mut *store);
            decode(out)
        })
    }

    /// Runs a step over input tables.
    pub(super) fn step(
        &self,
        pre: &Pre,
        plugin: &str,
        params: &[(String, String)],
        inputs: &[Table],
        limits: &Limits,
    ) -> (Result<Table, InvokeError>, Usage) {
        let Pre::Step(pre) = pre else {
            return (
                Err(InvokeError::Load(format!("{plugin} is not a step"))),
                Usage::default(),
            );
        };
        self.invoke(plugin, limits, |store, trap| {
            let schemas = inputs
                .iter()
                .map(|t| encode(&t.schema, &[]))
                .collect::<Result<Vec<_>, _>>()?;
            let inst = pre.instantiate(&mut *store).map_err(trap)?;
            let run = inst.lake_plugin_step().run();
            let params = params.to_vec();
            let handle = run
                .call_start(&mut *store, &params, &schemas)
                .map_err(trap)?
                .map_err(plugin_error)?;
            let mut out = Vec::new();
            for (i, table) in inputs.iter().enumerate() {
                for batch in &table.batches {
                    let ipc = encode(&table.schema, std::slice::from_ref(batch))?;
                    out.extend(
                        run.call_push(&mut *store, handle, i as u32, &ipc)
                            .map_err(trap)?
                            .map_err(plugin_error)?,
                    );
                }
            }
            out.extend(
                run.call_finish(&mut *store, handle)
                    .map_err(trap)?
                    .map_err(plugin_error)?,
            );
            let _ = handle.resource_drop(&mut *store);
            decode(out)
        })
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
        }
    }
}

fn plugin_error(e: WitError) -> InvokeError {
    let (kind, message) = match e {
        WitError::InvalidInput(m) => ("invalid_input", m),
        WitError::InvalidParams(m) => ("invalid_params", m),
        WitError::Unsupported(m) => ("unsupported", m),
        WitError::TooLarge(m) => ("too_large", m),
        WitError::Internal(m) => ("internal", m),
    };
    InvokeError::Plugin { kind, message }
}

/// Turns a trap or host error into the reason a person needs.
fn classify(e: wasmtime::Error, stderr: &MemoryOutputPipe, limits: &Limits) -> InvokeError {
    if let Some(m) = e.downcast_ref::<MemoryLimit>() {
        return InvokeError::MemoryLimit(m.to_string());
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

/// Decodes and validates what a plugin returned: every IPC stream must agree on one schema.
fn decode(streams: Vec<Vec<u8>>) -> Result<Table, InvokeError> {
    let mut schema: Option<SchemaRef> = None;
    let mut batches = Vec::new();
    for bytes in streams {
        let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| {
                InvokeError::Output(format!("the plugin returned unreadable Arrow IPC: {e}"))
            })?;
        let s = reader.schema();
        match &schema {
            None => schema = Some(s.clone()),
            Some(first) if first.fields() != s.fields() => {
                return Err(InvokeError::Output(
                    "the plugin returned batches with different schemas".into(),
                ));
            }
            Some(_) => {}
        }
        for b in reader {
            batches.push(b.map_err(|e| {
                InvokeError::Output(format!("the plugin returned an invalid batch: {e}"))
            })?);
        }
    }
    let schema = schema.ok_or_else(|| {
        InvokeError::Output("the plugin returned no table (not even a schema)".into())
    })?;
    Ok(Table { schema, batches })
}

impl Limits {
    fn describe() -> Limits {
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(5),
            fuel: None,
            stderr_bytes: 16 << 10,
        }
    }
}
