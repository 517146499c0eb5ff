-- The spawner: routing decisions on tasks, scoped tokens for spawned runs, and the runs.

ALTER TABLE tasks ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;   -- 0 for top-level tasks
ALTER TABLE tasks ADD COLUMN routed_to TEXT;                     -- human | spawn | pull | wait
ALTER TABLE tasks ADD COLUMN routed_reason TEXT;

-- A run's token may act only on its task and that task's subtasks.
ALTER TABLE agents ADD COLUMN scope_task_id INTEGER;

CREATE TABLE runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id        INTEGER NOT NULL REFERENCES tasks(id),
    agent_type     TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('starting', 'running', 'succeeded', 'failed',
                                                      'timed_out', 'killed', 'lost')),
    holder         TEXT    NOT NULL,     -- the agent name the run holds its lease under
    fence          INTEGER,
    pid            INTEGER,
    pid_started_at INTEGER,              -- the process's start time (s), to recognise it after a restart
    started_at     INTEGER NOT NULL,
    ended_at       INTEGER,
    exit_code      INTEGER,
    cpu_percent    REAL,
    memory_bytes   INTEGER,
    error          TEXT
);

CREATE INDEX runs_live ON runs (status) WHERE status IN ('starting', 'running');
CREATE INDEX runs_task ON runs (task_id, id);
