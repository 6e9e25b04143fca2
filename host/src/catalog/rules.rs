//! What both catalog adapters decide alike: the messages of conflicts (each with its
//! [`Constraint`]) and the job state machine's checks (a job finishes only as succeeded or failed;
//! a start or finish that changed no row lost to another caller).

use uuid::Uuid;

use super::{CatalogError, Constraint, DatasetId, Job, JobStatus, NewJob};

/// Why a failed job was failed by `fail_stale_jobs`.
pub(crate) const ABANDONED: &str =
    "abandoned: the server running it stopped before it finished; the next run completes it";

/// Inserting these files hit an existing one.
pub(crate) fn file_taken(id: DatasetId, name: &str) -> CatalogError {
    CatalogError::conflict(
        Constraint::FileName,
        format!("file {name:?} already exists in dataset {id}"),
    )
}

/// A batch of files, one of whose names the dataset already holds (PostgreSQL's batched insert
/// cannot say which).
pub(crate) fn files_taken(id: DatasetId, names: &[&str]) -> CatalogError {
    CatalogError::conflict(
        Constraint::FileName,
        format!("a file named {names:?} already exists in dataset {id}"),
    )
}

/// Claiming a file name the dataset already holds.
pub(crate) fn file_exists(id: DatasetId, name: &str) -> CatalogError {
    CatalogError::conflict(
        Constraint::FileName,
        format!(
            "dataset {id} already has a file named {name:?}; datasets are immutable, so upload \
             under a new name or into a new dataset"
        ),
    )
}

/// What inserting a claim's row failed with, for the caller: a held claim, or a missing dataset.
pub(crate) fn claim_refused(id: DatasetId, name: &str, e: CatalogError) -> CatalogError {
    match e {
        CatalogError::Conflict(_) => CatalogError::conflict(
            Constraint::FileClaim,
            format!("another upload of {name:?} into dataset {id} is in progress"),
        ),
        CatalogError::Invalid(_) => CatalogError::NotFound(format!("dataset {id}")),
        other => other,
    }
}

/// What inserting a job's row failed with: a taken schedule key reads as such.
pub(crate) fn job_refused(job: &NewJob, e: CatalogError) -> CatalogError {
    match e {
        CatalogError::Conflict(c) if c.constraint == Constraint::ScheduleKey => {
            CatalogError::conflict(
                Constraint::ScheduleKey,
                format!(
                    "a job with schedule key {:?} exists already",
                    job.schedule_key.as_deref().unwrap_or("")
                ),
            )
        }
        other => other,
    }
}

/// The catalog an import was asked into holds data.
pub(crate) fn not_empty() -> CatalogError {
    CatalogError::conflict(
        Constraint::NotEmpty,
        "the catalog is not empty: a restore needs an empty lake",
    )
}

/// A job may finish only as succeeded or failed.
pub(crate) fn check_finish_status(status: JobStatus) -> Result<(), CatalogError> {
    if status.is_finished() {
        Ok(())
    } else {
        Err(CatalogError::Invalid(format!(
            "a job cannot finish as {}",
            status.as_str()
        )))
    }
}

/// The outcome of a start: `claimed` is whether the update moved the job from queued.
pub(crate) fn started(id: Uuid, job: Job, claimed: bool) -> Result<Job, CatalogError> {
    if claimed {
        Ok(job)
    } else {
        Err(CatalogError::conflict(
            Constraint::JobNotQueued,
            format!("job {id} is {}, not queued", job.status.as_str()),
        ))
    }
}

/// The outcome of a finish: `ended` is whether the update ended the job.
pub(crate) fn finished(id: Uuid, job: Job, ended: bool) -> Result<Job, CatalogError> {
    if ended {
        Ok(job)
    } else {
        Err(CatalogError::conflict(
            Constraint::JobEnded,
            format!("job {id} has ended already ({})", job.status.as_str()),
        ))
    }
}
