-- The webhook outbox: one row per event and webhook, POSTed by the webhook deliverer. Rows are
-- derived from the event log; the cursor moves in the transaction that queues them, so an event
-- committed before a crash is delivered after it, and never queued twice.

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,   -- sent as `taskyard-delivery`
    webhook         TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    secret_env      TEXT,                                -- the variable holding the signing secret
    event_id        INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    body            TEXT    NOT NULL,                    -- exactly what is POSTed
    status          TEXT    NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_status     INTEGER,                             -- the last answer's HTTP status
    last_error      TEXT,                                -- what went wrong, or the refusal's body
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    UNIQUE (webhook, event_id)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);

-- The last event turned into deliveries. Starts at the current end of the log: configuring a
-- webhook does not replay the past.
CREATE TABLE webhook_cursor (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_id INTEGER NOT NULL
);
INSERT INTO webhook_cursor (id, last_event_id) SELECT 1, COALESCE(MAX(id), 0) FROM events;
