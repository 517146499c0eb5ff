-- Nodes: the servers sharing this registry, each registered with a heartbeat; the leader lease
-- that picks the one node running the loops that must run once; and the node each run belongs
-- to (runs recorded before nodes existed belong to no node: the first node to boot takes them).

CREATE TABLE nodes (
    id             TEXT   PRIMARY KEY,
    instance       TEXT   NOT NULL,               -- random per process: no two share an id
    version        TEXT   NOT NULL,
    started_at     BIGINT NOT NULL,
    last_heartbeat BIGINT NOT NULL
);

-- One row: who leads, under which term, until when (judged by the database's clock).
CREATE TABLE leader (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    node       TEXT    NOT NULL,
    term       BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);

ALTER TABLE runs ADD COLUMN node TEXT NOT NULL DEFAULT '';

CREATE INDEX runs_live_by_node ON runs (node) WHERE status IN ('starting', 'running');

-- The node that took an email or a webhook delivery for sending: when it starts again, what it
-- was sending is due at once (another node waits out the sending window).
ALTER TABLE notifications ADD COLUMN taken_by TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN taken_by TEXT;
