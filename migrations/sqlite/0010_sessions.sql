-- Dashboard sessions and one-time login codes, in the registry so that every server sharing it
-- knows them. Only digests are kept: a session under the SHA-256 of its cookie value, a code
-- under the SHA-256 of the code (lowercase hex, like agents.token_hash). The oldest session is
-- the one with the lowest id.

CREATE TABLE dashboard_sessions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    key        TEXT    NOT NULL UNIQUE,   -- SHA-256 of the cookie value, hex
    token_hash TEXT    NOT NULL,          -- SHA-256 of the token it acts as, hex
    csrf       TEXT    NOT NULL,
    owner      TEXT    NOT NULL,          -- the principal's name
    expires_at INTEGER NOT NULL
);

CREATE INDEX dashboard_sessions_owner ON dashboard_sessions (owner, id);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);

CREATE TABLE login_codes (
    code_hash  TEXT    PRIMARY KEY,       -- SHA-256 of the code, hex
    token_hash TEXT    NOT NULL,          -- SHA-256 of the token it logs in as, hex
    expires_at INTEGER NOT NULL
);
