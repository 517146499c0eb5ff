-- The task registry: tasks, their dependency edges, agents and the event log.
-- Timestamps are Unix milliseconds (UTC); the API renders them as RFC 3339.

CREATE TABLE tasks (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    key                 TEXT UNIQUE,
    project             TEXT    NOT NULL DEFAULT 'default',
    title               TEXT    NOT NULL,
    description         TEXT    NOT NULL DEFAULT '',
    priority            INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 3),
    kind                TEXT    NOT NULL DEFAULT 'implementation',
    capabilities        TEXT    NOT NULL DEFAULT '[]',   -- JSON array of strings
    acceptance_criteria TEXT    NOT NULL DEFAULT '[]',   -- JSON array of strings
    depends_on          TEXT    NOT NULL DEFAULT '[]',   -- JSON array of task ids (mirrors task_deps)
    parent_id           INTEGER REFERENCES tasks(id),
    route               TEXT    NOT NULL DEFAULT 'auto'
                        CHECK (route IN ('auto', 'agent', 'human', 'spawn')),
    status              TEXT    NOT NULL
                        CHECK (status IN ('pending', 'available', 'in_progress', 'blocked',
                                          'completed', 'failed', 'cancelled')),
    status_reason       TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL DEFAULT 3,
    fence               INTEGER NOT NULL DEFAULT 0,
    lease_holder        TEXT,
    lease_expires_at    INTEGER,
    lease_ms            INTEGER NOT NULL DEFAULT 300000, -- length of the current lease; progress renews it
    not_before          INTEGER NOT NULL DEFAULT 0,     -- retry backoff: not claimable before this
    progress_percent    INTEGER NOT NULL DEFAULT 0,
    progress_note       TEXT,
    last_progress_at    INTEGER,
    result              TEXT,                           -- JSON object once completed
    created_by          TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    claimed_at          INTEGER,
    completed_at        INTEGER,
    CHECK ((status = 'in_progress') = (lease_holder IS NOT NULL)),
    CHECK ((status = 'in_progress') = (lease_expires_at IS NOT NULL))
);

-- Claim-next walks this index in priority-then-age order.
CREATE INDEX tasks_ready ON tasks (status, priority, id);
-- The lease reaper and inline reclaim find expired leases here.
CREATE INDEX tasks_lease ON tasks (status, lease_expires_at);
-- Long polls find the next retry-backoff expiry here.
CREATE INDEX tasks_backoff ON tasks (not_before) WHERE status = 'available' AND not_before > 0;
CREATE INDEX tasks_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_project ON tasks (project, id);

CREATE TABLE task_deps (
    task_id       INTEGER NOT NULL REFERENCES tasks(id),
    depends_on_id INTEGER NOT NULL REFERENCES tasks(id),
    PRIMARY KEY (task_id, depends_on_id)
) WITHOUT ROWID;

CREATE INDEX task_deps_reverse ON task_deps (depends_on_id, task_id);

CREATE TABLE agents (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL UNIQUE,
    kind         TEXT    NOT NULL,
    capabilities TEXT    NOT NULL DEFAULT '[]',
    role         TEXT    NOT NULL CHECK (role IN ('admin', 'agent', 'viewer')),
    token_hash   TEXT    NOT NULL UNIQUE,               -- SHA-256 of the bearer token, hex
    status       TEXT    NOT NULL DEFAULT 'online' CHECK (status IN ('online', 'offline')),
    last_seen    INTEGER,
    created_at   INTEGER NOT NULL
);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL,
    task_id    INTEGER,
    actor      TEXT,
    data       TEXT    NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);

CREATE INDEX events_task ON events (task_id, id) WHERE task_id IS NOT NULL;
CREATE INDEX events_time ON events (created_at);
