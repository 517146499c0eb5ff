-- The task registry on PostgreSQL: the same tables as the SQLite schema (migrations/sqlite),
-- in one step. Timestamps are Unix milliseconds (UTC) in BIGINT columns; JSON columns are TEXT
-- holding the same JSON the SQLite backend stores. Lease expiry is judged by the database's
-- clock: `taskyard_now_ms()` is the current transaction's start time.

CREATE FUNCTION taskyard_now_ms() RETURNS BIGINT LANGUAGE sql STABLE
    AS $$ SELECT (extract(epoch FROM now()) * 1000)::BIGINT $$;

CREATE TABLE tasks (
    id                  BIGSERIAL PRIMARY KEY,
    key                 TEXT UNIQUE,
    project             TEXT    NOT NULL DEFAULT 'default',
    title               TEXT    NOT NULL,
    description         TEXT    NOT NULL DEFAULT '',
    priority            BIGINT  NOT NULL CHECK (priority BETWEEN 0 AND 3),
    kind                TEXT    NOT NULL DEFAULT 'implementation',
    capabilities        TEXT    NOT NULL DEFAULT '[]',   -- JSON array of strings
    acceptance_criteria TEXT    NOT NULL DEFAULT '[]',   -- JSON array of strings
    depends_on          TEXT    NOT NULL DEFAULT '[]',   -- JSON array of task ids (mirrors task_deps)
    paths               TEXT    NOT NULL DEFAULT '[]',   -- JSON array of path patterns
    parent_id           BIGINT REFERENCES tasks(id),
    depth               BIGINT  NOT NULL DEFAULT 0,      -- 0 for top-level tasks
    route               TEXT    NOT NULL DEFAULT 'auto'
                        CHECK (route IN ('auto', 'agent', 'human', 'spawn')),
    routed_to           TEXT,                            -- human | spawn | pull | wait
    routed_reason       TEXT,
    status              TEXT    NOT NULL
                        CHECK (status IN ('pending', 'available', 'in_progress', 'blocked',
                                          'completed', 'failed', 'cancelled')),
    status_reason       TEXT,
    attempts            BIGINT  NOT NULL DEFAULT 0,
    max_attempts        BIGINT  NOT NULL DEFAULT 3,
    fence               BIGINT  NOT NULL DEFAULT 0,
    lease_holder        TEXT,
    lease_expires_at    BIGINT,
    lease_ms            BIGINT  NOT NULL DEFAULT 300000, -- length of the current lease; progress renews it
    not_before          BIGINT  NOT NULL DEFAULT 0,      -- retry backoff: not claimable before this
    progress_percent    BIGINT  NOT NULL DEFAULT 0,
    progress_note       TEXT,
    last_progress_at    BIGINT,
    stalled_at          BIGINT,                          -- set while an in-progress task reports nothing
    result              TEXT,                            -- JSON object once completed
    created_by          TEXT,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL,
    claimed_at          BIGINT,
    completed_at        BIGINT,
    CHECK ((status = 'in_progress') = (lease_holder IS NOT NULL)),
    CHECK ((status = 'in_progress') = (lease_expires_at IS NOT NULL))
);

-- Claim-next walks this index in priority-then-age order.
CREATE INDEX tasks_ready ON tasks (priority, id) WHERE status = 'available';
-- The lease reaper and inline reclaim find expired leases here.
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE status = 'in_progress';
CREATE INDEX tasks_status ON tasks (status, id);
-- Long polls find the next retry-backoff expiry here.
CREATE INDEX tasks_backoff ON tasks (not_before) WHERE status = 'available' AND not_before > 0;
CREATE INDEX tasks_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX tasks_project ON tasks (project, id);
CREATE INDEX tasks_holder ON tasks (lease_holder) WHERE status = 'in_progress';
-- Available tasks that declare paths, best first.
CREATE INDEX tasks_declaring_paths ON tasks (priority, id) WHERE status = 'available' AND paths <> '[]';

CREATE TABLE task_deps (
    task_id       BIGINT NOT NULL REFERENCES tasks(id),
    depends_on_id BIGINT NOT NULL REFERENCES tasks(id),
    PRIMARY KEY (task_id, depends_on_id)
);

CREATE INDEX task_deps_reverse ON task_deps (depends_on_id, task_id);

CREATE TABLE agents (
    id             BIGSERIAL PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    kind           TEXT    NOT NULL,
    capabilities   TEXT    NOT NULL DEFAULT '[]',
    role           TEXT    NOT NULL CHECK (role IN ('admin', 'agent', 'viewer')),
    token_hash     TEXT    NOT NULL UNIQUE,               -- SHA-256 of the bearer token, hex
    status         TEXT    NOT NULL DEFAULT 'online' CHECK (status IN ('online', 'offline')),
    last_seen      BIGINT,
    created_at     BIGINT  NOT NULL,
    scope_task_id  BIGINT,                                -- a run's token acts only on this subtree
    deactivated_at BIGINT
);

-- Every event-writing transaction appends under one lock (see the backend's `tx.rs`), so event
-- ids are in commit order and a reader's cursor never passes an event still to commit.
CREATE TABLE events (
    id         BIGSERIAL PRIMARY KEY,
    kind       TEXT    NOT NULL,
    task_id    BIGINT,
    actor      TEXT,
    data       TEXT    NOT NULL DEFAULT '{}',
    created_at BIGINT  NOT NULL
);

CREATE INDEX events_task ON events (task_id, id) WHERE task_id IS NOT NULL;
CREATE INDEX events_time ON events (created_at);
CREATE INDEX events_kind ON events (kind, id);

CREATE TABLE loop_runs (
    id          BIGSERIAL PRIMARY KEY,
    loop_name   TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    started_at  BIGINT  NOT NULL,
    finished_at BIGINT  NOT NULL,
    ok          BOOLEAN NOT NULL,
    summary     TEXT    NOT NULL,
    details     TEXT    NOT NULL DEFAULT '{}'  -- JSON: what the run did
);

CREATE INDEX loop_runs_by_loop ON loop_runs (loop_name, id);

CREATE TABLE runs (
    id             BIGSERIAL PRIMARY KEY,
    task_id        BIGINT  NOT NULL REFERENCES tasks(id),
    agent_type     TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('starting', 'running', 'succeeded', 'failed',
                                                      'timed_out', 'killed', 'lost')),
    holder         TEXT    NOT NULL,
    fence          BIGINT,
    pid            BIGINT,
    pid_started_at BIGINT,
    started_at     BIGINT  NOT NULL,
    ended_at       BIGINT,
    exit_code      BIGINT,
    cpu_percent    DOUBLE PRECISION,
    memory_bytes   BIGINT,
    error          TEXT,
    repo           TEXT,
    worktree       TEXT,
    branch         TEXT,
    base           TEXT,
    branch_head    TEXT,
    branch_commits BIGINT
);

CREATE INDEX runs_live ON runs (status) WHERE status IN ('starting', 'running');
CREATE INDEX runs_task ON runs (task_id, id);

CREATE TABLE notifications (
    id              BIGSERIAL PRIMARY KEY,
    task_id         BIGINT REFERENCES tasks(id),
    human           TEXT    NOT NULL,
    to_addr         TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    reason          TEXT    NOT NULL CHECK (reason IN ('routed', 'spawn_fallback', 'failed', 'blocked',
                                                   'stalled', 'digest')),
    dedupe_key      TEXT    NOT NULL UNIQUE,
    status          TEXT    NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    attempts        BIGINT  NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at BIGINT  NOT NULL,
    body_text       TEXT,
    body_html       TEXT,
    action          TEXT CHECK (action IN ('take', 'decline')),
    acted_at        BIGINT,
    created_at      BIGINT  NOT NULL,
    sent_at         BIGINT
);

CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
CREATE INDEX notifications_task ON notifications (task_id) WHERE task_id IS NOT NULL;

CREATE TABLE notify_cursor (
    id            BIGINT PRIMARY KEY CHECK (id = 1),
    last_event_id BIGINT NOT NULL
);
INSERT INTO notify_cursor (id, last_event_id) VALUES (1, 0);

CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    webhook         TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    secret_env      TEXT,
    event_id        BIGINT  NOT NULL,
    kind            TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'delivered', 'failed')),
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    delivered_at    BIGINT,
    UNIQUE (webhook, event_id)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);

CREATE TABLE webhook_cursor (
    id            BIGINT PRIMARY KEY CHECK (id = 1),
    last_event_id BIGINT NOT NULL
);
INSERT INTO webhook_cursor (id, last_event_id) VALUES (1, 0);

CREATE TABLE reservations (
    id         BIGSERIAL PRIMARY KEY,
    task_id    BIGINT  NOT NULL REFERENCES tasks (id),
    fence      BIGINT  NOT NULL,
    holder     TEXT    NOT NULL,
    paths      TEXT    NOT NULL,                  -- JSON array of patterns
    exclusive  BOOLEAN NOT NULL,
    created_at BIGINT  NOT NULL
);

CREATE INDEX reservations_task ON reservations (task_id);
