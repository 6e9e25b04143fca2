-- Bearer tokens (`lake_<id>_<secret>`): only the secret's SHA-256 is kept, so the catalog never
-- holds a usable credential. Every replica sees the same tokens; a revocation on one is seen by all.
CREATE TABLE tokens (
    id           UUID PRIMARY KEY,
    name         TEXT NOT NULL,
    owner        TEXT NOT NULL,                     -- the user (or service account) it acts for
    role         TEXT NOT NULL CHECK (role IN ('reader', 'contributor', 'curator', 'admin')),
    digest       TEXT NOT NULL,                     -- SHA-256 of the secret, hex
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX tokens_owner ON tokens (owner, id);
