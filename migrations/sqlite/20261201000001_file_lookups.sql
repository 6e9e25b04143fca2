-- The file service finds an upload's earlier copies by content and earlier versions by name.
CREATE INDEX files_sha256 ON files (sha256);
CREATE INDEX datasets_external_id ON datasets (external_id, status, id);
