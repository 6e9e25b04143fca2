-- Ready datasets and their bytes per (layer, source), kept by triggers in the transaction that
-- changes a dataset, so the dashboard's and `GET /stats`'s totals are exact without scanning the
-- catalog. Keep in step with ../postgres.
CREATE TABLE dataset_totals (
    layer    TEXT NOT NULL,
    source   TEXT NOT NULL,
    datasets INTEGER NOT NULL,
    bytes    INTEGER NOT NULL,
    PRIMARY KEY (layer, source)
);

INSERT INTO dataset_totals (layer, source, datasets, bytes)
SELECT layer, source, count(*), coalesce(sum(total_size), 0)
FROM datasets WHERE status = 'ready'
GROUP BY layer, source;

CREATE TRIGGER datasets_totals_insert AFTER INSERT ON datasets
WHEN NEW.status = 'ready'
BEGIN
    INSERT INTO dataset_totals (layer, source, datasets, bytes)
    VALUES (NEW.layer, NEW.source, 1, NEW.total_size)
    ON CONFLICT (layer, source) DO UPDATE
    SET datasets = datasets + excluded.datasets, bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER datasets_totals_delete AFTER DELETE ON datasets
WHEN OLD.status = 'ready'
BEGIN
    INSERT INTO dataset_totals (layer, source, datasets, bytes)
    VALUES (OLD.layer, OLD.source, -1, -OLD.total_size)
    ON CONFLICT (layer, source) DO UPDATE
    SET datasets = datasets + excluded.datasets, bytes = bytes + excluded.bytes;
END;

-- An update is the old row leaving its total and the new one joining its own; the two triggers
-- fire in one statement, so no reader sees one without the other.
CREATE TRIGGER datasets_totals_update_old AFTER UPDATE OF status, layer, source, total_size ON datasets
WHEN OLD.status = 'ready'
     AND NOT (NEW.status IS OLD.status AND NEW.layer IS OLD.layer
              AND NEW.source IS OLD.source AND NEW.total_size IS OLD.total_size)
BEGIN
    INSERT INTO dataset_totals (layer, source, datasets, bytes)
    VALUES (OLD.layer, OLD.source, -1, -OLD.total_size)
    ON CONFLICT (layer, source) DO UPDATE
    SET datasets = datasets + excluded.datasets, bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER datasets_totals_update_new AFTER UPDATE OF status, layer, source, total_size ON datasets
WHEN NEW.status = 'ready'
     AND NOT (NEW.status IS OLD.status AND NEW.layer IS OLD.layer
              AND NEW.source IS OLD.source AND NEW.total_size IS OLD.total_size)
BEGIN
    INSERT INTO dataset_totals (layer, source, datasets, bytes)
    VALUES (NEW.layer, NEW.source, 1, NEW.total_size)
    ON CONFLICT (layer, source) DO UPDATE
    SET datasets = datasets + excluded.datasets, bytes = bytes + excluded.bytes;
END;

-- The newest entries of one action (the Layers page's promotions, the runs page) without reading
-- the whole log.
CREATE INDEX provenance_action ON provenance (action, seq);
