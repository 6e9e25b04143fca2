//! Merging two uploaded files' tables in the bundled `merge` step plugin, and the cache of results.
//!
//! The cache weighs each result in Arrow bytes and keeps it for a TTL; the specs behind its keys are
//! remembered longer, so `save_merged` can compute an expired result again from the immutable inputs.

use std::sync::Arc;
use std::time::Duration;

use crate::blob;
use crate::catalog::{Dataset, DatasetId};
use crate::lake::LakeError;
use crate::layers::Layer;
use crate::plugins::{InvokeError, Manifest, PluginErrorKind, Table};

use super::{FileInfo, Files, How, MERGE_PLUGIN, MergeOutcome, MergeSpec, columns_of};

/// A cached merge result.
#[derive(Debug)]
pub(super) struct Merged {
    pub(super) spec: MergeSpec,
    pub(super) table: Table,
    /// The input tables' datasets, for provenance.
    pub(super) inputs: [DatasetId; 2],
    pub(super) manifest: Manifest,
    pub(super) invocation: crate::provenance::InvocationRecord,
}

/// The largest right table an inner or left merge shares out among instances, each of which holds
/// its own index of it. Measured on 2 cores (BENCHMARKS.md): on 2026-12-01 1M x 1M took 0.66-0.87
/// s in two instances against 0.92-1.26 s in one, and 5M x 5M no less time in two (5.8 s against
/// 5.5 s, on that day's machine and build); on 2026-12-06 5M x 5M took 2.6 s in two against 3.5 s
/// in one, for 941 MB of instance memory against 470 MB. Past about 8M rows a side one instance's
/// copy nears the default 1 GiB an invocation may hold, and two copies cost more memory than the
/// second core is worth.
const MERGE_SPLIT_MAX_RIGHT_ROWS: u64 = 8_000_000;

/// Merge results and the specs behind their keys.
#[derive(Debug)]
pub(super) struct MergeCache {
    pub(super) results: moka::future::Cache<String, Arc<Merged>>,
    /// Every merge asked for, by key, so an expired result can be computed again.
    pub(super) specs: moka::sync::Cache<String, Arc<MergeSpec>>,
}

impl MergeCache {
    pub(super) fn new(cfg: &crate::config::FilesConfig) -> Self {
        let results = moka::future::Cache::builder()
            .max_capacity(cfg.merge_cache_bytes.0)
            // What a result really holds (each buffer once: a plugin's batches are slices of
            // the few buffers its output was decoded from).
            .weigher(|_k: &String, v: &Arc<Merged>| {
                u32::try_from(crate::tables::held_bytes(&v.table.batches)).unwrap_or(u32::MAX)
            })
            // Least recently used goes first; a new result is always let in (moka's default
            // TinyLFU may refuse one it has not seen often).
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .time_to_live(Duration::from_secs(cfg.merge_cache_ttl_secs))
            .build();
        let specs = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_idle(Duration::from_secs(30 * 86_400))
            .build();
        Self { results, specs }
    }
}

impl Files<'_> {
    /// Joins two uploaded files' tables in the `merge` plugin, or serves the result from the cache.
    pub async fn merge(
        &self,
        spec: MergeSpec,
        preview: Option<usize>,
    ) -> Result<MergeOutcome, LakeError> {
        if spec.on.is_empty() || spec.on.iter().any(|c| c.trim().is_empty()) {
            return Err(LakeError::Invalid(
                "on: name at least one key column (several: on=a,b)".into(),
            ));
        }
        let preview = preview.unwrap_or(self.state.preview_rows);
        if preview > 10_000 {
            return Err(LakeError::Invalid("preview: at most 10000 rows".into()));
        }
        let (left, right) = tokio::try_join!(self.file(spec.file_id_1), self.file(spec.file_id_2))?;
        for (side, f) in [("file_id_1", &left), ("file_id_2", &right)] {
            for key in &spec.on {
                if !f.schema.is_empty() && !f.schema.iter().any(|c| &c.name == key) {
                    let names: Vec<&str> = f.schema.iter().map(|c| c.name.as_str()).collect();
                    return Err(LakeError::Invalid(format!(
                        "no column {key:?} in {side} ({}); its columns are {names:?}",
                        f.filename
                    )));
                }
            }
        }
        let (cache_key, inputs) = self.merge_key(&spec, &left, &right).await?;
        let state = &self.state.merges;
        state
            .specs
            .insert(cache_key.clone(), Arc::new(spec.clone()));
        // Concurrent requests for one uncached merge share a single computation.
        let computed = std::sync::atomic::AtomicBool::new(false);
        let merged = state
            .results
            .try_get_with(cache_key.clone(), async {
                computed.store(true, std::sync::atomic::Ordering::Relaxed);
                self.compute_merge(&spec, inputs).await.map(Arc::new)
            })
            .await
            .map_err(|e: Arc<LakeError>| (*e).clone())?;
        let cached = !computed.load(std::sync::atomic::Ordering::Relaxed);
        if !cached {
            // Settle the cache's weights and evictions now, not at some later request.
            state.results.run_pending_tasks().await;
        }
        Ok(MergeOutcome {
            cache_key,
            cached,
            rows: merged.table.num_rows() as u64,
            columns: merged.table.schema.fields().len(),
            schema: columns_of(&merged.table.schema),
            bytes: crate::tables::held_bytes(&merged.table.batches) as u64,
            preview: preview_rows(&merged.table, preview)?,
        })
    }

    pub(super) async fn merge_key(
        &self,
        spec: &MergeSpec,
        left: &FileInfo,
        right: &FileInfo,
    ) -> Result<(String, [(Dataset, String); 2]), LakeError> {
        let plugins = self.running_plugins()?;
        let manifest = plugins.manifest(MERGE_PLUGIN).await.ok_or_else(|| {
            LakeError::Unavailable("the bundled merge plugin is not loaded".into())
        })?;
        let (l, r) = tokio::try_join!(self.file_table(left), self.file_table(right))?;
        let key_input = serde_json::json!({
            "v": 1,
            "inputs": [l.1, r.1],
            "on": spec.on, "how": spec.how, "suffixes": spec.suffixes, "nulls_equal": spec.nulls_equal,
            "plugin": manifest.sha256,
        });
        let key = blob::Sha256::of(key_input.to_string().as_bytes()).to_hex();
        Ok((key, [l, r]))
    }

    pub(super) async fn compute_merge(
        &self,
        spec: &MergeSpec,
        inputs: [(Dataset, String); 2],
    ) -> Result<Merged, LakeError> {
        let plugins = self.running_plugins()?;
        let [(l, _), (r, _)] = inputs;
        let started = std::time::Instant::now();
        let (lt, rt) = tokio::try_join!(
            crate::tables::read_dataset(self.catalog.as_ref(), self.blobs.as_ref(), &l),
            crate::tables::read_dataset(self.catalog.as_ref(), self.blobs.as_ref(), &r)
        )?;
        let read = started.elapsed();
        let params = merge_params(spec);
        // Each left batch's rows depend on it and the right table alone in an inner or left join,
        // so its batches can be shared out among instances that each index the right table.
        // Right and outer joins also need every left row to know which right rows went unmatched.
        // Each instance indexes its own copy of the right table: past MERGE_SPLIT_MAX_RIGHT_ROWS
        // the copies cost more memory than the second core saves time.
        let small_right = rt.rows.is_some_and(|n| n <= MERGE_SPLIT_MAX_RIGHT_ROWS);
        let workers = match spec.how {
            How::Inner | How::Left if small_right => self.state.merge_workers,
            _ => 1,
        };
        let inv = plugins
            .step_split(MERGE_PLUGIN, params.clone(), vec![rt], lt, workers)
            .await;
        tracing::info!(
            read_s = read.as_secs_f64(),
            plugin_s = inv.usage.wall.as_secs_f64(),
            total_s = started.elapsed().as_secs_f64(),
            peak_memory = inv.usage.peak_memory_bytes,
            "merge computed"
        );
        let manifest = inv.manifest.clone().ok_or_else(|| {
            LakeError::Unavailable("the bundled merge plugin is not loaded".into())
        })?;
        let invocation = crate::provenance::InvocationRecord::of(
            &inv,
            crate::provenance::params_json(&params),
            None,
            Layer::Processed,
        );
        match inv.result {
            Ok(table) => Ok(Merged {
                spec: spec.clone(),
                table,
                inputs: [l.id, r.id],
                manifest,
                invocation,
            }),
            Err(InvokeError::Plugin {
                kind: PluginErrorKind::InvalidParams | PluginErrorKind::InvalidInput,
                message,
            }) => Err(LakeError::Invalid(message)),
            Err(InvokeError::MemoryLimit(m)) => Err(LakeError::TooLarge(format!(
                "the merge needs more memory than the merge plugin is granted ({m}); raise [plugins.overrides.merge] memory"
            ))),
            Err(InvokeError::Timeout(t)) => Err(LakeError::TooLarge(format!(
                "the merge did not finish within the merge plugin's time limit ({t:?}); raise [plugins.overrides.merge] timeout_secs"
            ))),
            Err(e) => Err(LakeError::Unavailable(format!("the merge failed: {e}"))),
        }
    }
}

fn merge_params(spec: &MergeSpec) -> Vec<(String, String)> {
    let how = match spec.how {
        How::Inner => "inner",
        How::Left => "left",
        How::Right => "right",
        How::Outer => "outer",
    };
    vec![
        ("on".into(), serde_json::json!(spec.on).to_string()),
        ("how".into(), serde_json::json!(how).to_string()),
        (
            "suffixes".into(),
            serde_json::json!([spec.suffixes.0, spec.suffixes.1]).to_string(),
        ),
        ("nulls_equal".into(), spec.nulls_equal.to_string()),
        // The inputs go in as (right, left): the plugin indexes the right table, then joins each
        // left batch as it arrives and hands its rows back at once, so neither the whole left
        // table nor the whole result sits in the plugin's memory.
        ("right_first".into(), "true".into()),
    ]
}

/// The first `n` rows as JSON objects.
fn preview_rows(table: &Table, n: usize) -> Result<Vec<serde_json::Value>, LakeError> {
    let mut left = n;
    let mut out = Vec::new();
    for b in &table.batches {
        if left == 0 {
            break;
        }
        let take = left.min(b.num_rows());
        let slice = b.slice(0, take);
        let mut w = arrow_json::ArrayWriter::new(Vec::new());
        w.write(&slice)
            .and_then(|()| w.finish())
            .map_err(|e| LakeError::Invalid(format!("the preview cannot be shown as JSON: {e}")))?;
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&w.into_inner())
            .map_err(|e| LakeError::Invalid(format!("the preview cannot be shown as JSON: {e}")))?;
        out.extend(rows);
        left -= take;
    }
    Ok(out)
}
