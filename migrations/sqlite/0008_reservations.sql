-- Path reservations: the files a lease's holder is working on, as glob patterns. A task may
-- declare the patterns it expects to touch (`paths`); a claim reserves them. Rows hold live
-- reservations only: one ends (with a `reservation.released` event) when its lease ends in any
-- way, and is live only while its task is held under its fence with the lease not run out.

ALTER TABLE tasks ADD COLUMN paths TEXT NOT NULL DEFAULT '[]';   -- JSON array of patterns

CREATE TABLE reservations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id    INTEGER NOT NULL REFERENCES tasks (id),
    fence      INTEGER NOT NULL,                  -- the lease it belongs to
    holder     TEXT    NOT NULL,
    paths      TEXT    NOT NULL,                  -- JSON array of patterns
    exclusive  INTEGER NOT NULL CHECK (exclusive IN (0, 1)),
    created_at INTEGER NOT NULL
);

CREATE INDEX reservations_task ON reservations (task_id);

-- Available tasks that declare paths, best first: the first of them are woken when a
-- reservation that may have kept them waiting ends.
CREATE INDEX tasks_declaring_paths ON tasks (priority, id) WHERE status = 'available' AND paths <> '[]';
