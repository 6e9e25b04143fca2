//! Parallel invocation: one plugin run on several sandboxed instances at once, with exactly the
//! one-instance result. A parser whose manifest opts in ([`Parallel::DelimitedRecords`]) has a
//! large plain input cut at record boundaries ([`super::split`]) and parsed a segment per instance
//! (a gzip input streamed into a sink is inflated by the host first, then cut the same way);
//! [`Plugins::step_split`] spreads one input of a step (the merge join) over instances. Whether a
//! parser is split is decided by its opt-in alone, never by its name: a bundled plugin's comes
//! from `plugins/bundled.txt` (the `parallel` column), and `[plugins.overrides.NAME] parallel` in
//! lake.toml sets or withdraws any plugin's. Any failure of a split parse parses the whole input
//! again in one instance, so errors read exactly as a serial parse reports them.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::split::{self, text_encoding};
use super::{Invocation, InvokeError, Plugins, Sink, StepInput, Table, Usage, runtime};
use crate::blob::ByteStream;

/// Which input a parser accepts in pieces, so the host may parse a large input on several
/// instances at once (a manifest's `parallel`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Parallel {
    /// Every input is parsed whole, in one instance.
    #[default]
    None,
    /// Delimited text cut after a record's newline outside quotes (quotes escaped by doubling),
    /// each later segment with the header record in front. The parser takes the bundled `csv`
    /// parser's parameters with their meaning (`quote`, `header`, `escape`, `infer_rows`,
    /// `delimiter`, `encoding`, `types`, ...): later segments are pinned to the first segment's
    /// schema through `types`.
    DelimitedRecords,
}

impl Parallel {
    /// The name lake.toml and `plugins/bundled.txt` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Parallel::None => "none",
            Parallel::DelimitedRecords => "delimited-records",
        }
    }

    /// A `parallel` column of `plugins/bundled.txt` (`-` for none); `host/build.rs` refuses any
    /// other value.
    fn from_bundled(s: &str) -> Self {
        match s {
            "delimited-records" => Parallel::DelimitedRecords,
            _ => Parallel::None,
        }
    }
}

impl std::fmt::Display for Parallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The list of bundled plugins, `name package kind parallel` per line (`host/build.rs` builds what
/// it lists and refuses a `parallel` value other than `-` and `delimited-records`).
const BUNDLED_LIST: &str = include_str!("../../../plugins/bundled.txt");

/// A bundled plugin's `parallel` column; none for a name the list does not have.
fn bundled_opt_in(name: &str) -> Parallel {
    BUNDLED_LIST
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(3).copied())
        .map_or(Parallel::None, Parallel::from_bundled)
}

/// A loaded plugin's opt-in: lake.toml's `parallel` for it when set, else the bundled list's for a
/// bundled plugin, else none (a third-party component is split only when lake.toml says so).
pub(super) fn opt_in(name: &str, source: &str, configured: Option<Parallel>) -> Parallel {
    configured.unwrap_or_else(|| match source {
        "bundled" => bundled_opt_in(name),
        _ => Parallel::None,
    })
}

/// How a parse with these parameters is cut, for a parser with this opt-in; `None` keeps it whole.
fn plan_for(parallel: Parallel, params: &[(String, String)]) -> Option<split::CsvPlan> {
    match parallel {
        Parallel::None => None,
        Parallel::DelimitedRecords => split::CsvPlan::from_params(params),
    }
}

impl Plugins {
    /// How a parse of `name` may be cut: `None` when the plugin did not opt in, its parameters
    /// ask for something the cutter cannot follow, or one instance is all the lake runs.
    pub(super) async fn segment_plan(
        &self,
        name: &str,
        params: &[(String, String)],
    ) -> Option<split::CsvPlan> {
        let entry = self.ready(name).await?;
        plan_for(entry.manifest.parallel, params).filter(|_| self.workers > 1)
    }

    /// A parse that may be cut: a large plain input parses in segments, anything else in one
    /// instance.
    pub(super) async fn parse_in_segments(
        &self,
        name: &str,
        params: Vec<(String, String)>,
        plan: split::CsvPlan,
        input: ByteStream,
    ) -> Invocation {
        let (input, ahead) = look_ahead(input).await;
        if ahead == Ahead::Large {
            return self.parse_parallel(name, params, plan, input).await;
        }
        self.parse_serial(name, params, input).await
    }

    /// A parser over a large input in segments, the table held in memory: the parse into a sink
    /// ([`Plugins::parse_into_cut`]) whose sink keeps the batches. A split parse that fails parses
    /// the whole input again in one instance, so errors read exactly as a serial parse reports
    /// them; every input byte read is kept for that (the input's own buffers, not copies) and the
    /// rest of the input follows it.
    async fn parse_parallel(
        &self,
        name: &str,
        params: Vec<(String, String)>,
        plan: split::CsvPlan,
        input: ByteStream,
    ) -> Invocation {
        use bytes::Bytes;
        use std::sync::Mutex;
        let kept: Arc<Mutex<Vec<Bytes>>> = Arc::default();
        let failed: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
        // The input stays here, so a serial parse can go on with what the split one left unread.
        let rest = Arc::new(tokio::sync::Mutex::new(input));
        let read = {
            let (kept, failed, rest) = (kept.clone(), failed.clone(), rest.clone());
            futures::stream::unfold(rest, |rest| async move {
                let next = rest.lock().await.next().await;
                next.map(|c| (c, rest))
            })
            .map(move |c| match c {
                Ok(b) => {
                    held(&kept).push(b.clone());
                    Ok(b)
                }
                Err(e) => {
                    let again = std::io::Error::new(e.kind(), e.to_string());
                    *held(&failed) = Some(e);
                    Err(again)
                }
            })
        };
        let batches: Arc<Mutex<Vec<RecordBatch>>> = Arc::default();
        let into = batches.clone();
        let sink: Sink = Box::new(move |_, b| {
            held(&into).extend(b);
            Ok(())
        });
        let inv = self
            .parse_into_cut(name, params.clone(), plan, Box::pin(read), true, sink)
            .await;
        if inv.result.is_err() && inv.usage.instances > 1 {
            let kept = std::mem::take(&mut *held(&kept));
            let failed = held(&failed).take();
            let rest: ByteStream = match failed {
                Some(e) => Box::pin(futures::stream::once(async { Err(e) })),
                None => {
                    std::mem::replace(&mut *rest.lock().await, Box::pin(futures::stream::empty()))
                }
            };
            let replay = futures::stream::iter(kept.into_iter().map(Ok)).chain(rest);
            return self.parse_serial(name, params, Box::pin(replay)).await;
        }
        let batches = std::mem::take(&mut *held(&batches));
        Invocation {
            manifest: inv.manifest,
            limits: inv.limits,
            usage: inv.usage,
            result: inv.result.map(|schema| Table { schema, batches }),
        }
    }

    /// [`Plugins::parse_into`] for a parser that opted in to segments: a large plain input is
    /// parsed on `self.workers` instances at once and its batches reach `sink` in input order
    /// (from a thread of their own), so the table is never whole in memory: at most
    /// [`WINDOW`] segments per worker are parsed ahead of the one being written. Anything else
    /// parses in one instance. Unlike [`Plugins::parse`], a failure is not parsed again here
    /// (the sink already has part of the table): the invocation's `usage.instances` above one
    /// tells the caller to discard what the sink took and parse serially for the serial error.
    ///
    /// A gzip input is inflated here first, on a thread of its own as it arrives (memory-safe
    /// Rust, 1 MiB at a time), so a compressed upload is cut and parsed on every core like a plain
    /// one instead of being inflated and parsed in one instance. The parser sees the plain text; a
    /// stream that does not inflate is the input's fault ([`InvokeError::Plugin`], invalid input).
    pub(super) async fn parse_into_in_segments(
        &self,
        name: &str,
        params: Vec<(String, String)>,
        plan: split::CsvPlan,
        input: ByteStream,
        sink: Sink,
    ) -> Invocation<SchemaRef> {
        let (input, ahead) = look_ahead(input).await;
        if ahead != Ahead::Gzip {
            return self
                .parse_into_cut(name, params, plan, input, ahead == Ahead::Large, sink)
                .await;
        }
        let inflate_failed = Arc::new(std::sync::OnceLock::new());
        let (plain, ahead) = look_ahead(inflate(input, inflate_failed.clone())).await;
        let large = ahead == Ahead::Large;
        let mut inv = self
            .parse_into_cut(name, params, plan, plain, large, sink)
            .await;
        if let Some(why) = inflate_failed.get() {
            inv.result = Err(InvokeError::Plugin {
                kind: super::PluginErrorKind::InvalidInput,
                message: why.clone(),
            });
        }
        inv
    }

    /// [`Plugins::parse_into_in_segments`] over plain text (`large` says whether to cut it).
    async fn parse_into_cut(
        &self,
        name: &str,
        params: Vec<(String, String)>,
        plan: split::CsvPlan,
        mut input: ByteStream,
        large: bool,
        sink: Sink,
    ) -> Invocation<SchemaRef> {
        use bytes::Bytes;
        if !large {
            tracing::debug!(
                plugin = name,
                "A small or encoded input parses in one instance"
            );
            return self.parse_into_serial(name, params, input, sink).await;
        }
        let started = std::time::Instant::now();
        let mut cutter = split::Cutter::new(plan);
        // The input read so far, for a serial parse when the head cannot be sampled.
        let mut kept: Vec<Bytes> = Vec::new();
        let serially = |kept: Vec<Bytes>, rest: ByteStream, sink: Sink| {
            tracing::debug!(
                plugin = name,
                "A large input parses in one instance after all"
            );
            let replay = futures::stream::iter(kept.into_iter().map(Ok)).chain(rest);
            self.parse_into_serial(name, params.clone(), Box::pin(replay), sink)
        };
        let head = loop {
            if let Some(seg) = cutter.cut_head(split::HEAD_BYTES) {
                break seg;
            }
            if cutter.len() > split::HEAD_LIMIT {
                kept.extend(cutter.rest());
                return serially(kept, input, sink).await;
            }
            match input.next().await {
                Some(Ok(c)) => cutter.push(c),
                Some(Err(e)) => {
                    kept.extend(cutter.rest());
                    let failed = futures::stream::once(async { Err::<Bytes, _>(e) });
                    return serially(kept, Box::pin(failed), sink).await;
                }
                None => {
                    kept.extend(cutter.rest());
                    return serially(kept, Box::pin(futures::stream::empty()), sink).await;
                }
            }
        };
        kept.extend(head.iter().cloned());
        let first = self
            .parse_serial(
                name,
                params.clone(),
                Box::pin(futures::stream::iter(
                    head.into_iter().map(Ok::<_, std::io::Error>),
                )),
            )
            .await;
        let (Ok(first_table), Some(entry)) = (&first.result, self.entry(name)) else {
            tracing::debug!(plugin = name, "The first segment did not parse");
            return serially(kept, input, sink).await;
        };
        let Some(pinned) = split::pinned_params(&params, first_table) else {
            tracing::debug!(
                plugin = name,
                schema = ?first_table.schema,
                "The first segment's types cannot be pinned"
            );
            return serially(kept, input, sink).await;
        };
        cutter.learn_header(&kept);
        drop(kept);

        let schema = first_table.schema.clone();
        let limits = first.limits.clone();
        // A segment is fed only with a permit, which its table gives back once written.
        let window = Arc::new(tokio::sync::Semaphore::new(self.workers * WINDOW));
        let permits: Permits = Arc::default();
        let (out_tx, out_rx) = std::sync::mpsc::channel::<Option<(usize, Table)>>();
        let _ = out_tx.send(Some((0, first_table.clone())));
        let writer = {
            let (schema, window, permits) = (schema.clone(), window.clone(), permits.clone());
            tokio::task::spawn_blocking(move || {
                let mut busy = std::time::Duration::ZERO;
                let written = write_in_order(&schema, out_rx, &permits, sink, &mut busy);
                // Whatever ended the writing, the feeder stops waiting for room.
                window.close();
                (written, busy)
            })
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<(usize, Vec<Bytes>)>(self.workers * 2);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let slots = self.slots.take(name, self.workers as u32).await;
        // Dropping this future (the caller went away) stops every worker at its next tick.
        let cancel = runtime::Cancel::default();
        let stop = cancel.on_drop();
        let mut workers = Vec::new();
        for _ in 0..self.workers {
            let (rx, runtime, e, l, pinned, cancel, out) = (
                rx.clone(),
                self.runtime.clone(),
                entry.clone(),
                limits.clone(),
                pinned.clone(),
                cancel.clone(),
                out_tx.clone(),
            );
            workers.push(tokio::task::spawn_blocking(move || {
                let mut next = || rx.lock().unwrap_or_else(|p| p.into_inner()).blocking_recv();
                // Set when the writer stopped first: another failure is the invocation's error.
                let mut writer_gone = false;
                let mut hand_on = |i: usize, t: Table| {
                    out.send(Some((i, t))).map_err(|_| {
                        writer_gone = true;
                        InvokeError::Sink("the table's writer stopped".into())
                    })
                };
                let (r, usage) = cancel.watching(|| {
                    runtime.parse_each(
                        &e.pre,
                        &e.manifest.name,
                        &pinned,
                        &mut next,
                        &mut hand_on,
                        &l,
                    )
                });
                if r.is_err() && !writer_gone {
                    // The writer stops at once instead of waiting for this worker's segment.
                    let _ = out.send(None);
                }
                (r.map_err(|e| (e, writer_gone)), usage)
            }));
        }
        drop(out_tx);
        // Once every worker is gone, feeding them fails instead of waiting.
        drop(rx);
        let mut sent = 0;
        let mut failed_input = None;
        'feed: loop {
            while let Some(seg) = cutter.cut(split::SEGMENT_BYTES) {
                let Ok(permit) = window.clone().acquire_owned().await else {
                    break 'feed;
                };
                permits
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(sent + 1, permit);
                if tx.send((sent + 1, cutter.framed(&seg))).await.is_err() {
                    break 'feed;
                }
                sent += 1;
            }
            match input.next().await {
                Some(Ok(c)) => cutter.push(c),
                Some(Err(e)) => {
                    failed_input = Some(e);
                    break;
                }
                None => {
                    let rest = cutter.rest();
                    if !rest.is_empty() && tx.send((sent + 1, cutter.framed(&rest))).await.is_ok() {
                        sent += 1;
                    }
                    break;
                }
            }
        }
        drop(tx);
        let mut usage = first.usage.clone();
        let mut error = None;
        let mut workers_wall = std::time::Duration::ZERO;
        for w in workers {
            match w.await {
                Ok((r, u)) => {
                    workers_wall += u.wall;
                    usage.add_instances(&u);
                    usage.peak_memory_bytes = usage.peak_memory_bytes.max(u.peak_memory_bytes);
                    // A worker that found the writer gone reports no error of its own.
                    if let Err((e, false)) = r {
                        error.get_or_insert(e);
                    }
                }
                Err(e) => {
                    error.get_or_insert(InvokeError::Trap(format!("a segment worker failed: {e}")));
                }
            }
        }
        stop.disarm();
        drop(slots);
        let (written, sink_busy) = writer.await.unwrap_or_else(|e| {
            (
                Err(InvokeError::Sink(format!("the table's writer failed: {e}"))),
                std::time::Duration::ZERO,
            )
        });
        usage.wall = started.elapsed();
        // Where the time went: the first segment alone, the instances' parse (the boundary
        // transfer included), and the sink (Parquet encoding, waiting for the store).
        tracing::info!(
            plugin = name,
            segments = sent + 1,
            wall_ms = usage.wall.as_millis() as u64,
            head_ms = first.usage.wall.as_millis() as u64,
            parse_ms = workers_wall.as_millis() as u64,
            sink_ms = sink_busy.as_millis() as u64,
            "Parsed in segments"
        );
        let result = match (failed_input, error, written) {
            (Some(e), _, _) => Err(InvokeError::Input(e.to_string())),
            // A sink error is the store's, whoever noticed it first.
            (_, _, Err(e @ InvokeError::Sink(_))) => Err(e),
            (_, Some(e), _) | (_, None, Err(e)) => Err(e),
            (None, None, Ok(n)) if n == sent + 1 => Ok(schema),
            (None, None, Ok(n)) => Err(InvokeError::Output(format!(
                "{n} of {} segments reached the table",
                sent + 1
            ))),
        };
        Invocation {
            manifest: first.manifest.clone(),
            limits,
            usage,
            result,
        }
    }

    /// Runs a step on `workers` instances at once: every instance is handed all of `shared` (the
    /// same batches) and then takes batches of `split` as it is free; what the pushes of `split`'s
    /// batches return comes back in `split`'s order, after what the pushes of `shared` returned and
    /// before what `finish` returned (both of every instance, in instance order). So it gives the
    /// serial result only for a step whose rows come from the `split` batches alone, each from
    /// its batch and the shared inputs: the merge step with `right_first` in an inner or left join.
    /// Every instance holds the shared inputs; the usage adds their peaks. One worker (or one
    /// core) runs the plain [`Plugins::step`] with `split` as the last input.
    pub async fn step_split(
        &self,
        name: &str,
        params: Vec<(String, String)>,
        shared: Vec<StepInput>,
        split: StepInput,
        workers: usize,
    ) -> Invocation {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

        let workers = workers.clamp(1, self.slots.share() as usize);
        let Some(entry) = self.entry(name).filter(|_| workers > 1) else {
            let mut inputs = shared;
            inputs.push(split);
            return self.step(name, params, inputs).await;
        };
        let limits = self.limits_for(name);
        let started = std::time::Instant::now();
        let schemas: Arc<Vec<SchemaRef>> = Arc::new(
            shared
                .iter()
                .map(|s| s.schema.clone())
                .chain([split.schema.clone()])
                .collect(),
        );
        let slots = self.slots.take(name, workers as u32).await;
        // Dropping this future (the caller went away) stops every instance at its next tick.
        let cancel = runtime::Cancel::default();
        let stop = cancel.on_drop();
        type Job = Result<runtime::StepJob, String>;
        // A failed instance stops the others taking more batches.
        let failed = Arc::new(AtomicBool::new(false));
        let (split_tx, split_rx) = sync_channel::<Job>(workers * 2);
        let split_rx = Arc::new(std::sync::Mutex::new(split_rx));
        let mut own_txs: Vec<SyncSender<Job>> = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..workers {
            let (own_tx, own_rx) = sync_channel::<Job>(2);
            own_txs.push(own_tx);
            let (runtime, e, l, schemas, params, split_rx, failed, cancel) = (
                self.runtime.clone(),
                entry.clone(),
                limits.clone(),
                schemas.clone(),
                params.clone(),
                split_rx.clone(),
                failed.clone(),
                cancel.clone(),
            );
            handles.push(tokio::task::spawn_blocking(move || {
                let mut own: Option<Receiver<Job>> = Some(own_rx);
                let mut next = || {
                    if failed.load(Ordering::Relaxed) {
                        return None;
                    }
                    if let Some(rx) = &own {
                        match rx.recv() {
                            Ok(job) => return Some(job),
                            Err(_) => own = None,
                        }
                    }
                    let rx = split_rx.lock().unwrap_or_else(|p| p.into_inner());
                    rx.recv().ok()
                };
                let (result, usage) = cancel.watching(|| {
                    runtime.step_jobs(&e.pre, &e.manifest.name, &params, &schemas, &mut next, &l)
                });
                if result.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                (result, usage)
            }));
        }
        let shared_inputs = shared.len() as u32;
        // Every batch is encoded once, here: each instance is handed the same bytes of a shared
        // input's batch (a clone of the job shares them).
        let feeder = tokio::task::spawn_blocking(move || {
            for (i, input) in shared.into_iter().enumerate() {
                let schema = input.schema;
                for batch in input.batches {
                    let job =
                        batch.and_then(|batch| runtime::StepJob::new(i as u32, 0, &schema, &batch));
                    let stop = job.is_err();
                    if own_txs.iter().any(|tx| tx.send(job.clone()).is_err()) || stop {
                        return;
                    }
                }
            }
            drop(own_txs);
            let schema = split.schema;
            for (seq, batch) in split.batches.enumerate() {
                let job = batch.and_then(|batch| {
                    runtime::StepJob::new(shared_inputs, seq + 1, &schema, &batch)
                });
                let stop = job.is_err();
                if split_tx.send(job).is_err() || stop {
                    return;
                }
            }
        });
        let mut usage = Usage::default();
        let mut outputs = Vec::new();
        let mut error = None;
        for h in handles {
            let (result, u) = h.await.unwrap_or_else(|e| {
                (
                    Err(InvokeError::Trap(format!("invocation thread failed: {e}"))),
                    Usage::default(),
                )
            });
            usage.add_instances(&u);
            // The instances ran side by side: their memory adds up.
            usage.peak_memory_bytes += u.peak_memory_bytes;
            match result {
                Ok(out) => outputs.extend(out),
                Err(e) => {
                    // An input that failed is the cause; the others only stopped.
                    if error.is_none() || matches!(e, InvokeError::Input(_)) {
                        error = Some(e);
                    }
                }
            }
        }
        let _ = feeder.await;
        stop.disarm();
        drop(slots);
        usage.wall = started.elapsed();
        // Stable: each instance's outputs stay in their order under one `seq`.
        outputs.sort_by_key(|(seq, _)| *seq);
        let result = match error {
            Some(e) => Err(e),
            None => runtime::decode(outputs.into_iter().map(|(_, o)| o), &limits),
        };
        Invocation {
            manifest: Some(entry.manifest.clone()),
            limits,
            usage,
            result,
        }
    }
}

/// Segments parsed ahead of the one being written, per worker.
const WINDOW: usize = 2;

/// The feeder's permits, by segment index, until the segment's table is written.
type Permits =
    Arc<std::sync::Mutex<std::collections::HashMap<usize, tokio::sync::OwnedSemaphorePermit>>>;

/// Hands segments' tables to `sink` in index order (0, 1, 2, ...) as they arrive in any order,
/// giving each segment's permit back once written. `None` from a worker means it failed: the
/// writing stops. Returns how many segments were written; a table whose columns differ from the
/// first segment's is the plugin's error.
fn write_in_order(
    schema: &SchemaRef,
    tables: std::sync::mpsc::Receiver<Option<(usize, Table)>>,
    permits: &Permits,
    mut sink: Sink,
    busy: &mut std::time::Duration,
) -> Result<usize, InvokeError> {
    let mut waiting = std::collections::BTreeMap::new();
    let mut next = 0;
    sink(schema, None).map_err(InvokeError::Sink)?;
    for got in tables {
        let Some((i, t)) = got else {
            return Ok(next);
        };
        let started = std::time::Instant::now();
        waiting.insert(i, t);
        while let Some(t) = waiting.remove(&next) {
            if t.schema.fields() != schema.fields() {
                return Err(InvokeError::Output(format!(
                    "segment {next} of the input parsed to other columns than the first"
                )));
            }
            for b in t.batches {
                sink(schema, Some(b)).map_err(InvokeError::Sink)?;
            }
            permits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&next);
            next += 1;
        }
        *busy += started.elapsed();
    }
    Ok(next)
}

/// A lock's guard, poisoned or not (what it guards is whole after any panic: a list or a value).
fn held<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What [`look_ahead`] found at the start of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ahead {
    /// Plain text of at least [`split::MIN_BYTES`]: it may be cut at raw byte offsets.
    Large,
    /// gzip: inflate it first.
    Gzip,
    /// Small, or wrapped in something else (another compression, UTF-16): one instance.
    Serial,
}

/// Reads ahead far enough to know whether `input` is large and plain text (so it may be cut at
/// raw byte offsets) or gzip; returns the whole stream again with the answer.
async fn look_ahead(mut input: ByteStream) -> (ByteStream, Ahead) {
    let mut head: Vec<std::io::Result<bytes::Bytes>> = Vec::new();
    let mut size = 0;
    while size < split::MIN_BYTES {
        match input.next().await {
            Some(Ok(c)) => {
                size += c.len();
                head.push(Ok(c));
            }
            Some(Err(e)) => {
                head.push(Err(e));
                break;
            }
            None => break,
        }
    }
    // Compressed or UTF-16 input cannot be cut at raw byte offsets: the parser decodes it in
    // one stream, except gzip, which the host inflates.
    let mut start = Vec::with_capacity(16);
    for c in head.iter().flatten() {
        start.extend_from_slice(&c[..c.len().min(16 - start.len())]);
        if start.len() == 16 {
            break;
        }
    }
    let ahead = match text_encoding(&start) {
        Some("gzip") => Ahead::Gzip,
        Some(_) => Ahead::Serial,
        None if size >= split::MIN_BYTES => Ahead::Large,
        None => Ahead::Serial,
    };
    let input: ByteStream = Box::pin(futures::stream::iter(head).chain(input));
    (input, ahead)
}

/// The bytes of a byte stream, read from a blocking thread without copying them first.
struct StreamRead<F> {
    next: F,
    chunk: bytes::Bytes,
    /// Set when the stream itself failed (the client or the store), not the inflating.
    failed: bool,
    /// Set once the stream ended: it is not asked again.
    ended: bool,
}

impl<F: FnMut() -> Option<std::io::Result<bytes::Bytes>>> std::io::Read for StreamRead<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::io::BufRead::fill_buf(self)?.len().min(buf.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        std::io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl<F: FnMut() -> Option<std::io::Result<bytes::Bytes>>> std::io::BufRead for StreamRead<F> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.chunk.is_empty() && !self.ended {
            match (self.next)() {
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                None => self.ended = true,
            }
        }
        Ok(&self.chunk)
    }
    fn consume(&mut self, n: usize) {
        let n = n.min(self.chunk.len());
        bytes::Buf::advance(&mut self.chunk, n);
    }
}

/// Inflates a gzip stream (every member, as `gzip -d` does) on a blocking thread as it arrives,
/// [`INFLATED_PIECE`] at a time, at most a few pieces ahead of the reader. When the compressed
/// bytes do not inflate, `failed` says why (for a person) and the stream ends with an error; a
/// failure of the input itself passes through as it came.
fn inflate(input: ByteStream, failed: Arc<std::sync::OnceLock<String>>) -> ByteStream {
    use std::io::Read;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    let next = super::blocking_chunks(input);
    tokio::task::spawn_blocking(move || {
        let read = StreamRead {
            next,
            chunk: bytes::Bytes::new(),
            failed: false,
            ended: false,
        };
        let mut gz = flate2::bufread::MultiGzDecoder::new(read);
        loop {
            let mut piece = vec![0u8; INFLATED_PIECE];
            let mut filled = 0;
            let mut error = None;
            while filled < piece.len() {
                match gz.read(&mut piece[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            let end = filled < piece.len();
            piece.truncate(filled);
            if filled > 0 && tx.blocking_send(Ok(piece.into())).is_err() {
                return;
            }
            if let Some(e) = error {
                if !gz.get_ref().failed {
                    // Worded as the parsers' own gzip reader words it.
                    let _ = failed.set(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        "the gzip-compressed input ends early: the file was cut short".into()
                    } else {
                        format!("the gzip-compressed input is corrupt: {e}")
                    });
                }
                let _ = tx.blocking_send(Err(e));
                return;
            }
            if end {
                return;
            }
        }
    });
    // Fused: a reader asks again after the end.
    Box::pin(
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|piece| (piece, rx))
        })
        .fuse(),
    )
}

/// How much inflated text [`inflate`] hands on at a time.
const INFLATED_PIECE: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(values: &[i64]) -> Result<Table, String> {
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "n",
            arrow_schema::DataType::Int64,
            false,
        )]));
        let col = Arc::new(arrow_array::Int64Array::from(values.to_vec()));
        let batch = arrow_array::RecordBatch::try_new(schema.clone(), vec![col])
            .map_err(|e| e.to_string())?;
        Ok(Table {
            schema,
            batches: vec![batch],
        })
    }

    /// Segments finished out of order reach the sink in input order, each giving its permit
    /// back once written; a segment with other columns is the plugin's error.
    #[test]
    fn segments_reach_the_sink_in_input_order() -> Result<(), String> {
        let mut busy = std::time::Duration::ZERO;
        let first = segment(&[0])?;
        let schema = first.schema.clone();
        let window = Arc::new(tokio::sync::Semaphore::new(4));
        let permits: Permits = Arc::default();
        for i in 1..=3 {
            let p = window
                .clone()
                .try_acquire_owned()
                .map_err(|e| e.to_string())?;
            permits.lock().map_err(|e| e.to_string())?.insert(i, p);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, t) in [
            (2, segment(&[2, 2])?),
            (0, first),
            (3, segment(&[3])?),
            (1, segment(&[1])?),
        ] {
            tx.send(Some((i, t))).map_err(|e| e.to_string())?;
        }
        drop(tx);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = seen.clone();
        let sink: Sink = Box::new(move |_, b: Option<arrow_array::RecordBatch>| {
            if let Some(b) = b {
                let col = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow_array::Int64Array>();
                into.lock()
                    .map_err(|e| e.to_string())?
                    .extend(col.into_iter().flat_map(|c| c.values().to_vec()));
            }
            Ok(())
        });
        let written =
            write_in_order(&schema, rx, &permits, sink, &mut busy).map_err(|e| e.to_string())?;
        assert_eq!(written, 4);
        assert_eq!(
            *seen.lock().map_err(|e| e.to_string())?,
            vec![0, 1, 2, 2, 3]
        );
        assert!(permits.lock().map_err(|e| e.to_string())?.is_empty());
        assert_eq!(window.available_permits(), 4);

        // Segment 1 with another column: refused, nothing after it written.
        let other = Table {
            schema: Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
                "m",
                arrow_schema::DataType::Int64,
                false,
            )])),
            batches: vec![],
        };
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, t) in [(0, segment(&[0])?), (1, other), (2, segment(&[2])?)] {
            tx.send(Some((i, t))).map_err(|e| e.to_string())?;
        }
        drop(tx);
        let sink: Sink = Box::new(|_, _| Ok(()));
        let refused = write_in_order(&schema, rx, &permits, sink, &mut busy);
        assert!(
            matches!(&refused, Err(InvokeError::Output(m)) if m.contains("segment 1")),
            "{refused:?}"
        );

        // A worker that failed ends the writing at once, before the segment it held.
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(Some((0, segment(&[0])?)))
            .map_err(|e| e.to_string())?;
        tx.send(Some((2, segment(&[2])?)))
            .map_err(|e| e.to_string())?;
        tx.send(None).map_err(|e| e.to_string())?;
        let sink: Sink = Box::new(|_, _| Ok(()));
        assert_eq!(
            write_in_order(&schema, rx, &permits, sink, &mut busy).ok(),
            Some(1)
        );
        Ok(())
    }

    #[test]
    fn a_parser_that_does_not_opt_in_is_never_cut() {
        let params = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        for p in [
            params(&[]),
            params(&[("header", "true"), ("quote", "\"'\"")]),
        ] {
            assert!(plan_for(Parallel::None, &p).is_none(), "{p:?}");
            assert!(plan_for(Parallel::DelimitedRecords, &p).is_some(), "{p:?}");
        }
        // Parameters the cutter cannot follow keep even an opted-in parse whole.
        let escaped = params(&[("escape", "\"\\\\\"")]);
        assert!(plan_for(Parallel::DelimitedRecords, &escaped).is_none());
    }

    #[test]
    fn the_opt_in_comes_from_the_manifest_sources_not_the_name() {
        // A third-party component called csv is not the bundled csv: it is split only when
        // lake.toml says so.
        assert_eq!(opt_in("csv", "/plugins/csv.wasm", None), Parallel::None);
        assert_eq!(
            opt_in(
                "mine",
                "/plugins/mine.wasm",
                Some(Parallel::DelimitedRecords)
            ),
            Parallel::DelimitedRecords
        );
        // lake.toml withdraws a bundled plugin's opt-in.
        assert_eq!(
            opt_in("csv", "bundled", Some(Parallel::None)),
            Parallel::None
        );
        // The bundled list's column: csv opts in, the other bundled plugins do not.
        assert_eq!(opt_in("csv", "bundled", None), Parallel::DelimitedRecords);
        for name in [
            "xlsx", "geo-soft", "pubmed", "select", "merge", "ncbi", "nosuch",
        ] {
            assert_eq!(opt_in(name, "bundled", None), Parallel::None, "{name}");
        }
        assert_eq!(Parallel::DelimitedRecords.to_string(), "delimited-records");
        assert_eq!(
            serde_json::to_value(Parallel::DelimitedRecords).ok(),
            Some(serde_json::json!("delimited-records"))
        );
    }
}
