-- The lake catalog, SQLite dialect (embedded default). Keep in step with ../postgres.
CREATE TABLE datasets (
    id            TEXT PRIMARY KEY,                 -- UUIDv7, hyphenated: sorts by creation time
    name          TEXT NOT NULL,
    source        TEXT NOT NULL,
    external_id   TEXT,
    layer         TEXT NOT NULL CHECK (layer IN ('raw', 'processed', 'curated', 'archive')),
    bucket        TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    file_count    INTEGER NOT NULL DEFAULT 0,
    total_size    INTEGER NOT NULL DEFAULT 0,
    metadata      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    tags          TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    status        TEXT NOT NULL CHECK (status IN ('pending', 'ready', 'failed', 'deleted')),
    promoted_from TEXT REFERENCES datasets (id),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    search_text   TEXT GENERATED ALWAYS AS (lower(name || ' ' || coalesce(external_id, '') || ' ' || metadata)) VIRTUAL
);
-- One promotion target per (source dataset, layer): makes retried promotions idempotent.
CREATE UNIQUE INDEX datasets_promotion ON datasets (promoted_from, layer) WHERE promoted_from IS NOT NULL;
CREATE INDEX datasets_status_id ON datasets (status, id);
CREATE INDEX datasets_layer ON datasets (layer, status, id);
CREATE INDEX datasets_source ON datasets (source, status, id);

CREATE TABLE files (
    dataset_id   TEXT NOT NULL REFERENCES datasets (id),
    name         TEXT NOT NULL,
    size         INTEGER NOT NULL CHECK (size >= 0),
    sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
    content_type TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (dataset_id, name)
);

-- An upload in progress holds a claim on its file name, so two uploads of one name never write the
-- same object; the row that records the file removes the claim in the same transaction. A claim
-- left by a crashed server goes stale and can be taken over.
CREATE TABLE file_claims (
    dataset_id TEXT NOT NULL REFERENCES datasets (id),
    name       TEXT NOT NULL,
    claimed_at TEXT NOT NULL,
    PRIMARY KEY (dataset_id, name)
);

-- Provenance is append-only: the triggers below refuse UPDATE and DELETE.
CREATE TABLE provenance (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    action     TEXT NOT NULL,
    parameters TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(parameters)),
    notes      TEXT,
    actor      TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE provenance_datasets (
    entry_id   TEXT NOT NULL REFERENCES provenance (id),
    dataset_id TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('input', 'output')),
    position   INTEGER NOT NULL,
    PRIMARY KEY (entry_id, role, dataset_id)
);
CREATE INDEX provenance_datasets_dataset ON provenance_datasets (dataset_id);
-- One edge per (input, output) pair of an entry; the lineage graph walks these.
CREATE TABLE lineage_edges (
    parent_id TEXT NOT NULL,
    child_id  TEXT NOT NULL,
    entry_id  TEXT NOT NULL REFERENCES provenance (id),
    action    TEXT NOT NULL,
    PRIMARY KEY (parent_id, child_id, entry_id)
);
CREATE INDEX lineage_edges_child ON lineage_edges (child_id);

CREATE TRIGGER provenance_no_update BEFORE UPDATE ON provenance
BEGIN SELECT RAISE(ABORT, 'provenance is append-only'); END;
CREATE TRIGGER provenance_no_delete BEFORE DELETE ON provenance
BEGIN SELECT RAISE(ABORT, 'provenance is append-only'); END;
CREATE TRIGGER provenance_datasets_no_update BEFORE UPDATE ON provenance_datasets
BEGIN SELECT RAISE(ABORT, 'provenance is append-only'); END;
CREATE TRIGGER provenance_datasets_no_delete BEFORE DELETE ON provenance_datasets
BEGIN SELECT RAISE(ABORT, 'provenance is append-only'); END;
CREATE TRIGGER lineage_edges_no_update BEFORE UPDATE ON lineage_edges
BEGIN SELECT RAISE(ABORT, 'provenance is append-only'); END;
CREATE TRIGGER lineage_edges_no_delete BEFORE DELETE ON lineage_edges
BEGIN SELECT RAISE(ABORT, 'provenance is append-only'); END;
-- Raw datasets are never deleted, by anyone: not even a direct SQL DELETE.
CREATE TRIGGER datasets_raw_no_delete BEFORE DELETE ON datasets WHEN OLD.layer = 'raw'
BEGIN SELECT RAISE(ABORT, 'raw datasets are never deleted'); END;
