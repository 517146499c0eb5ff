-- The outbox: one row per email to a person, sent by the notify loop. Rows are derived from the
-- event log (a cursor records how far), so a trigger committed before a crash is never missed.

CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id         INTEGER REFERENCES tasks(id),           -- NULL for digests
    human           TEXT    NOT NULL,                        -- the person's agent name; links act as them
    to_addr         TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    reason          TEXT    NOT NULL CHECK (reason IN ('routed', 'spawn_fallback', 'failed', 'blocked',
                                                   'stalled', 'digest')),
    dedupe_key      TEXT    NOT NULL UNIQUE,                 -- one task, one reason, one person: one email
    status          TEXT    NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at INTEGER NOT NULL,
    body_text       TEXT,                                    -- digests are rendered when queued;
    body_html       TEXT,                                    -- task emails when sent
    action          TEXT CHECK (action IN ('take', 'decline')),
    acted_at        INTEGER,                                 -- a link works once
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER
);

CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
CREATE INDEX notifications_task ON notifications (task_id) WHERE task_id IS NOT NULL;

-- The last event the notify loop has turned into notifications. Starts at the current end of
-- the log, so upgrading a registry does not mail about its past.
CREATE TABLE notify_cursor (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_id INTEGER NOT NULL
);
INSERT INTO notify_cursor (id, last_event_id) SELECT 1, COALESCE(MAX(id), 0) FROM events;
