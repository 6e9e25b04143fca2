-- One raw dataset per collected (source, external id, version): two replicas collecting the same
-- upstream record at once cannot both write version N+1; the second decides again.
CREATE UNIQUE INDEX datasets_collection_version
    ON datasets (source, external_id, json_extract(metadata, '$.version'))
    WHERE layer = 'raw' AND json_extract(metadata, '$.content_sha256') IS NOT NULL;
