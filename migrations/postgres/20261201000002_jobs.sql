-- Background work every replica can see: collections now, backups later. A scheduled run carries a
-- schedule_key (source and time slot); its uniqueness makes a slot run once across replicas. A job
-- is claimed by moving it from queued to running, which only one replica can do.
-- Backups use the same table (kind 'backup').
CREATE TABLE jobs (
    id           UUID PRIMARY KEY,                  -- UUIDv7: sorts by creation time
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    request      JSONB NOT NULL DEFAULT '{}',
    result       JSONB,
    error        TEXT,
    schedule_key TEXT UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ,
    -- A running job's replica refreshes this; one that stops refreshing was killed, and any
    -- replica marks its job failed.
    heartbeat_at TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ
);
CREATE INDEX jobs_kind ON jobs (kind, id);
