//! Jobs: background work (collections, backups) recorded in the catalog, so every replica sees it.
//!
//! This module alone claims, heartbeats and ends jobs. A job is recorded `queued`
//! ([`Jobs::record`]), claimed by one replica with a conditional `queued -> running` update, run
//! while a heartbeat refreshes `heartbeat_at` every sixth of its lease, and ended once with its result
//! or error ([`Jobs::run`]). A scheduled run carries a `schedule_key` (its source or backup kind
//! and time slot) under a unique index, so one replica runs each slot ([`Jobs::record_scheduled`]).
//! Every scheduler tick on every replica fails the jobs silent for their lease ([`Jobs::lease`], `server.job_lease_secs`): a killed
//! server's job ends `failed`, never `succeeded`. The scheduler ([`Jobs::spawn_scheduler`]) then
//! asks the backup and collection services for their due slots. A server told to stop lets its
//! jobs go on for [`STOP_GRACE`] and then ends the rest as failed ([`Jobs::stop`]).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogError, Constraint, Job, JobStatus, NewJob};
use crate::lake::LakeError;

/// A running job silent this long was abandoned (its server stopped), unless
/// `server.job_lease_secs` says otherwise ([`Jobs::lease`]).
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// A connector's collection ([`crate::collect`]).
    Collection,
    /// A backup ([`crate::backup`]).
    Backup,
}

impl JobKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Collection => "collection",
            JobKind::Backup => "backup",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a job's work ended, as its record keeps it.
#[derive(Debug, Clone)]
pub enum Ended {
    /// Done; the result to record.
    Succeeded(serde_json::Value),
    /// Failed, with what to record beside the error, if anything.
    Failed {
        /// Structured detail (a code, the provenance entry).
        result: Option<serde_json::Value>,
        /// What went wrong.
        error: String,
    },
}

/// How long a stopping server lets the jobs it runs go on before it ends them as failed
/// ([`Jobs::stop`]).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// What a job's record says when its server stopped before it finished.
const STOPPED: &str = "the server stopped before the job finished; run it again";

/// The jobs this server is running, so that a stopping server can wait for them and end the rest
/// ([`Jobs::stop`]).
#[derive(Debug, Default)]
pub struct JobsState {
    running: std::sync::Mutex<std::collections::BTreeSet<uuid::Uuid>>,
    /// Woken whenever a job of this server ends.
    ended: tokio::sync::Notify,
}

impl JobsState {
    fn running(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<uuid::Uuid>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Job `id` counted as running on this server for as long as this lives (however its work ends,
/// dropped included).
struct Running<'a>(&'a JobsState, uuid::Uuid);

impl<'a> Running<'a> {
    fn new(state: &'a JobsState, id: uuid::Uuid) -> Self {
        state.running().insert(id);
        Running(state, id)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running().remove(&self.1);
        self.0.ended.notify_waiters();
    }
}

crate::lake::service! {
    /// The job queue: record, claim, heartbeat, end, the scheduler, and the stop.
    Jobs, jobs, JobsState = jobs
}

impl Jobs<'_> {
    /// Records a queued job.
    pub async fn record(
        &self,
        kind: JobKind,
        request: serde_json::Value,
    ) -> Result<Job, LakeError> {
        Ok(self.insert(kind, request, None).await?)
    }

    /// Records a scheduled run under its slot's key; `None` when another replica (or an earlier
    /// tick) holds the slot.
    pub async fn record_scheduled(
        &self,
        kind: JobKind,
        request: serde_json::Value,
        schedule_key: String,
    ) -> Result<Option<Job>, LakeError> {
        match self.insert(kind, request, Some(schedule_key)).await {
            Ok(job) => Ok(Some(job)),
            Err(CatalogError::Conflict(c)) if c.constraint == Constraint::ScheduleKey => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn insert(
        &self,
        kind: JobKind,
        request: serde_json::Value,
        schedule_key: Option<String>,
    ) -> Result<Job, CatalogError> {
        self.lake
            .catalog
            .insert_job(&NewJob {
                id: uuid::Uuid::now_v7(),
                kind: kind.as_str().to_owned(),
                request,
                schedule_key,
            })
            .await
    }

    /// A job of one kind; another kind's id is not found.
    pub async fn get(&self, id: uuid::Uuid, kind: JobKind) -> Result<Job, LakeError> {
        let job = self.lake.catalog.get_job(id).await?;
        if job.kind != kind.as_str() {
            return Err(LakeError::NotFound(format!("{kind} job {id} not found")));
        }
        Ok(job)
    }

    /// The newest jobs of one kind, newest first.
    pub async fn list(&self, kind: JobKind, limit: u32) -> Result<Vec<Job>, LakeError> {
        Ok(self.lake.catalog.list_jobs(kind.as_str(), limit).await?)
    }

    /// Claims recorded job `id` (only one caller ever wins), runs `work` with a heartbeat, and
    /// records how it ended.
    pub async fn run(
        &self,
        id: uuid::Uuid,
        work: impl Future<Output = Ended>,
    ) -> Result<Job, LakeError> {
        self.lake.catalog.start_job(id).await?;
        let _running = Running::new(self.state, id);
        let ended = self.heartbeating(id, work).await;
        let (status, result, error) = match ended {
            Ended::Succeeded(r) => (JobStatus::Succeeded, Some(r), None),
            Ended::Failed { result, error } => (JobStatus::Failed, result, Some(error)),
        };
        self.end(id, status, result.as_ref(), error.as_deref())
            .await
    }

    /// Records how a job ended. When another replica already marked it failed (its heartbeat
    /// looked silent), that record stands and is returned.
    async fn end(
        &self,
        id: uuid::Uuid,
        status: JobStatus,
        result: Option<&serde_json::Value>,
        error: Option<&str>,
    ) -> Result<Job, LakeError> {
        match self
            .lake
            .catalog
            .finish_job(id, status, result, error)
            .await
        {
            Ok(job) => Ok(job),
            Err(CatalogError::Conflict(c)) if c.constraint == Constraint::JobEnded => {
                tracing::warn!(job = %id, reason = %c, "The job had already been ended elsewhere");
                Ok(self.lake.catalog.get_job(id).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `work` for running job `id`, refreshing its heartbeat meanwhile, so other replicas
    /// know its server is alive.
    async fn heartbeating<T>(&self, id: uuid::Uuid, work: impl Future<Output = T>) -> T {
        let catalog = self.lake.catalog.clone();
        let every = self.lease() / 6;
        let beat = tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.tick().await;
            loop {
                t.tick().await;
                if let Err(e) = catalog.heartbeat_job(id).await {
                    tracing::warn!(job = %id, error = %e, "Job heartbeat failed");
                }
            }
        });
        // Stops the heartbeat however `work` ends, dropped included.
        struct Stop(tokio::task::JoinHandle<()>);
        impl Drop for Stop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let _stop = Stop(beat);
        work.await
    }

    /// Lets the jobs this server runs go on for up to `grace`, then ends each one still running as
    /// failed (its record says the server stopped), so that no job of a stopped server looks alive
    /// until its lease runs out. Returns the jobs still running at the deadline (a record ended
    /// meanwhile, by the job itself or another replica, is kept as it is). A job that ends by
    /// itself after that finds its record already ended and leaves it.
    pub async fn stop(&self, grace: Duration) -> Vec<uuid::Uuid> {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            // Made before the check, so an end between the two still wakes it.
            let ended = self.state.ended.notified();
            if self.state.running().is_empty() {
                return Vec::new();
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                break;
            }
        }
        let left: Vec<uuid::Uuid> = self.state.running().iter().copied().collect();
        for id in &left {
            match self.end(*id, JobStatus::Failed, None, Some(STOPPED)).await {
                // `end` keeps (and says so) a record ended first, here or elsewhere.
                Ok(job) if job.error.as_deref() == Some(STOPPED) => tracing::warn!(
                    job = %id,
                    kind = job.kind,
                    "The server stopped before a job finished; marked failed"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(job = %id, error = %e, "Ending a job at stop failed"),
            }
        }
        left
    }

    /// How long a running job may stay silent: `server.job_lease_secs`; it says it is alive every
    /// sixth of that.
    pub fn lease(&self) -> Duration {
        self.lake.settings.job_lease
    }

    /// Fails every job silent for its lease (its server stopped), on any replica.
    pub async fn fail_silent(&self) {
        match self.fail_abandoned().await {
            Ok(jobs) => {
                for j in jobs {
                    tracing::warn!(job = %j.id, kind = j.kind, "A job's server stopped; marked failed");
                }
            }
            Err(e) => tracing::error!(error = %e, "Checking for abandoned jobs failed"),
        }
    }

    /// Fails every job silent for its lease and returns them (`lake fsck --repair`).
    pub async fn fail_abandoned(&self) -> Result<Vec<Job>, LakeError> {
        Ok(self.lake.catalog.fail_stale_jobs(self.lease()).await?)
    }

    /// Every `tick` for as long as the server runs: fails silent jobs, then starts the due backups
    /// and scheduled collections no replica has run yet.
    pub fn spawn_scheduler(&self, tick: Duration) -> tokio::task::JoinHandle<()> {
        let lake = self.lake.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                lake.jobs().fail_silent().await;
                lake.backups().run_due(Utc::now()).await;
                lake.collections().run_due(Utc::now()).await;
            }
        })
    }
}
