-- The names under which the Iceberg catalog (`/iceberg`) publishes tables: a chain of datasets of
-- one layer, source and name that each hold one Parquet file (the versions of one table). A name
-- is given the first time the catalog sees the chain and kept, so engines' queries keep working.
-- Keep in step with ../sqlite.
CREATE TABLE table_names (
    layer        TEXT NOT NULL,
    name         TEXT NOT NULL,
    source       TEXT NOT NULL,
    dataset_name TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (layer, name),
    UNIQUE (layer, source, dataset_name)
);

-- A chain's versions, oldest first.
CREATE INDEX datasets_chain ON datasets (layer, source, name, created_at);
