-- Scheduled loops: one row per run, and the stall flag the stall detector sets.

CREATE TABLE loop_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    loop_name   TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    ok          INTEGER NOT NULL,              -- 1 ok, 0 error (or panic)
    summary     TEXT    NOT NULL,
    details     TEXT    NOT NULL DEFAULT '{}'  -- JSON: what the run did
);

CREATE INDEX loop_runs_by_loop ON loop_runs (loop_name, id);

-- Set while an in-progress task has reported nothing for too long; cleared by progress.
ALTER TABLE tasks ADD COLUMN stalled_at INTEGER;
