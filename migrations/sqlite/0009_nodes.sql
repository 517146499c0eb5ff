-- Nodes: the servers sharing this registry, each registered with a heartbeat; the leader lease
-- that picks the one node running the loops that must run once; and the node each run belongs
-- to (runs recorded before nodes existed belong to no node: the first node to boot takes them).

CREATE TABLE nodes (
    id             TEXT    PRIMARY KEY,
    instance       TEXT    NOT NULL,               -- random per process: no two share an id
    version        TEXT    NOT NULL,
    started_at     INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL
);

-- One row: who leads, under which term, until when (judged by the registry's clock).
CREATE TABLE leader (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    node       TEXT    NOT NULL,
    term       INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

ALTER TABLE runs ADD COLUMN node TEXT NOT NULL DEFAULT '';

CREATE INDEX runs_live_by_node ON runs (node) WHERE status IN ('starting', 'running');
