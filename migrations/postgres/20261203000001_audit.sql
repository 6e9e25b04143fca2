-- Who acted, through what, and why: the user is `actor`; the token (or sign-in session) they acted
-- through and the reason they gave sit beside it, so PROV-JSON can name each as an agent.
ALTER TABLE provenance ADD COLUMN actor_token TEXT;
ALTER TABLE provenance ADD COLUMN reason TEXT;

-- The audit log: every mutating request and every refusal (401, 403, 429), append-only like
-- provenance (the triggers below refuse UPDATE and DELETE).
CREATE TABLE audit (
    seq        BIGSERIAL PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    request_id TEXT NOT NULL,
    principal  TEXT,                                   -- the user, when known
    token_id   TEXT,                                   -- the token or session, when known
    client     TEXT,                                   -- the client's address
    method     TEXT NOT NULL,
    route      TEXT NOT NULL,                          -- the route pattern, e.g. /catalog/{id}
    resource   TEXT NOT NULL,                          -- the path asked for
    action     TEXT NOT NULL,                          -- the right the request needed
    decision   TEXT NOT NULL CHECK (decision IN ('allowed', 'refused')),
    reason     TEXT,
    status     BIGINT NOT NULL
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_principal ON audit (principal, seq);
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION lake_append_only();
