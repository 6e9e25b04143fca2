-- Ready datasets and their bytes per (layer, source), kept by a trigger in the transaction that
-- changes a dataset, so the dashboard's and `GET /stats`'s totals are exact without scanning the
-- catalog. Keep in step with ../sqlite.
CREATE TABLE dataset_totals (
    layer    TEXT NOT NULL,
    source   TEXT NOT NULL,
    datasets BIGINT NOT NULL,
    bytes    BIGINT NOT NULL,
    PRIMARY KEY (layer, source)
);

-- No dataset changes between the count below and the trigger taking over.
LOCK TABLE datasets IN SHARE MODE;

INSERT INTO dataset_totals (layer, source, datasets, bytes)
SELECT layer, source, count(*), coalesce(sum(total_size), 0)
FROM datasets WHERE status = 'ready'
GROUP BY layer, source;

CREATE FUNCTION lake_dataset_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (OLD.status, OLD.layer, OLD.source, OLD.total_size)
        IS NOT DISTINCT FROM (NEW.status, NEW.layer, NEW.source, NEW.total_size) THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'ready' THEN
        INSERT INTO dataset_totals AS t (layer, source, datasets, bytes)
        VALUES (OLD.layer, OLD.source, -1, -OLD.total_size)
        ON CONFLICT (layer, source) DO UPDATE
        SET datasets = t.datasets + EXCLUDED.datasets, bytes = t.bytes + EXCLUDED.bytes;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status = 'ready' THEN
        INSERT INTO dataset_totals AS t (layer, source, datasets, bytes)
        VALUES (NEW.layer, NEW.source, 1, NEW.total_size)
        ON CONFLICT (layer, source) DO UPDATE
        SET datasets = t.datasets + EXCLUDED.datasets, bytes = t.bytes + EXCLUDED.bytes;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER datasets_totals
AFTER INSERT OR DELETE OR UPDATE OF status, layer, source, total_size ON datasets
FOR EACH ROW EXECUTE FUNCTION lake_dataset_totals();

-- The newest entries of one action (the Layers page's promotions, the runs page) without reading
-- the whole log.
CREATE INDEX provenance_action ON provenance (action, seq);
