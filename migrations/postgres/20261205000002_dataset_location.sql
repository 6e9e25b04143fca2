-- A registration looks up whether a dataset already keeps a prefix (a prefix belongs to one
-- dataset).
CREATE INDEX datasets_location ON datasets (bucket, prefix);
