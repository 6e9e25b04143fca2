-- The lake catalog, PostgreSQL dialect. Keep in step with ../sqlite.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE datasets (
    id            UUID PRIMARY KEY,                 -- UUIDv7: sorts by creation time
    name          TEXT NOT NULL,
    source        TEXT NOT NULL,
    external_id   TEXT,
    layer         TEXT NOT NULL CHECK (layer IN ('raw', 'processed', 'curated', 'archive')),
    bucket        TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    file_count    BIGINT NOT NULL DEFAULT 0,
    total_size    BIGINT NOT NULL DEFAULT 0,
    metadata      JSONB NOT NULL DEFAULT '{}',
    tags          TEXT[] NOT NULL DEFAULT '{}',
    status        TEXT NOT NULL CHECK (status IN ('pending', 'ready', 'failed', 'deleted')),
    promoted_from UUID REFERENCES datasets (id),
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    search_text   TEXT GENERATED ALWAYS AS (lower(name || ' ' || coalesce(external_id, '') || ' ' || metadata::text)) STORED
);
-- One promotion target per (source dataset, layer): makes retried promotions idempotent.
CREATE UNIQUE INDEX datasets_promotion ON datasets (promoted_from, layer) WHERE promoted_from IS NOT NULL;
CREATE INDEX datasets_status_id ON datasets (status, id);
CREATE INDEX datasets_layer ON datasets (layer, status, id);
CREATE INDEX datasets_source ON datasets (source, status, id);
CREATE INDEX datasets_tags ON datasets USING gin (tags);
CREATE INDEX datasets_search ON datasets USING gin (search_text gin_trgm_ops);

CREATE TABLE files (
    dataset_id   UUID NOT NULL REFERENCES datasets (id),
    name         TEXT NOT NULL,
    size         BIGINT NOT NULL CHECK (size >= 0),
    sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
    content_type TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (dataset_id, name)
);

-- An upload in progress holds a claim on its file name, so two uploads of one name never write the
-- same object; the row that records the file removes the claim in the same transaction. A claim
-- left by a crashed server goes stale and can be taken over.
CREATE TABLE file_claims (
    dataset_id UUID NOT NULL REFERENCES datasets (id),
    name       TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (dataset_id, name)
);

-- Provenance is append-only: the triggers below refuse UPDATE and DELETE.
CREATE TABLE provenance (
    seq        BIGSERIAL PRIMARY KEY,
    id         UUID NOT NULL UNIQUE,
    action     TEXT NOT NULL,
    parameters JSONB NOT NULL DEFAULT '{}',
    notes      TEXT,
    actor      TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE provenance_datasets (
    entry_id   UUID NOT NULL REFERENCES provenance (id),
    dataset_id UUID NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('input', 'output')),
    position   INTEGER NOT NULL,
    PRIMARY KEY (entry_id, role, dataset_id)
);
CREATE INDEX provenance_datasets_dataset ON provenance_datasets (dataset_id);
CREATE TABLE lineage_edges (
    parent_id UUID NOT NULL,
    child_id  UUID NOT NULL,
    entry_id  UUID NOT NULL REFERENCES provenance (id),
    action    TEXT NOT NULL,
    PRIMARY KEY (parent_id, child_id, entry_id)
);
CREATE INDEX lineage_edges_child ON lineage_edges (child_id);

CREATE FUNCTION lake_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'provenance is append-only (% on %)', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER provenance_append_only BEFORE UPDATE OR DELETE ON provenance
    FOR EACH ROW EXECUTE FUNCTION lake_append_only();
CREATE TRIGGER provenance_datasets_append_only BEFORE UPDATE OR DELETE ON provenance_datasets
    FOR EACH ROW EXECUTE FUNCTION lake_append_only();
CREATE TRIGGER lineage_edges_append_only BEFORE UPDATE OR DELETE ON lineage_edges
    FOR EACH ROW EXECUTE FUNCTION lake_append_only();

-- Raw datasets are never deleted, by anyone: not even a direct SQL DELETE.
CREATE FUNCTION lake_raw_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.layer = 'raw' THEN
        RAISE EXCEPTION 'raw datasets are never deleted';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER datasets_raw_no_delete BEFORE DELETE ON datasets
    FOR EACH ROW EXECUTE FUNCTION lake_raw_no_delete();
