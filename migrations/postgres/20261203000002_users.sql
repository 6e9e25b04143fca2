-- Users and service accounts: the principals tokens act for. A token's role is at most its user's,
-- and a disabled user's tokens stop working. Every replica sees the same users.
CREATE TABLE users (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('person', 'service')),
    role        TEXT NOT NULL CHECK (role IN ('reader', 'contributor', 'curator', 'admin')),
    created_at  TIMESTAMPTZ NOT NULL,
    disabled_at TIMESTAMPTZ
);

-- The owners of tokens issued before users existed become people with their highest token's role.
INSERT INTO users (name, kind, role, created_at)
SELECT t.owner, 'person',
       (SELECT r.role FROM tokens r WHERE r.owner = t.owner
        ORDER BY CASE r.role WHEN 'admin' THEN 4 WHEN 'curator' THEN 3
                             WHEN 'contributor' THEN 2 ELSE 1 END DESC
        LIMIT 1),
       min(t.created_at)
FROM tokens t
GROUP BY t.owner;
