-- The transactional outbox (see the PostgreSQL migration). `seq` follows commit order because
-- SQLite has a single writer.

CREATE TABLE outbox_events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             BLOB    NOT NULL,
    tenant_id      BLOB    NOT NULL,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   BLOB    NOT NULL,
    event_type     TEXT    NOT NULL,
    data           TEXT    NOT NULL,
    occurred_at    INTEGER NOT NULL,
    recorded_at    INTEGER NOT NULL,
    published_at   INTEGER,
    claimed_by     TEXT,
    claimed_until  INTEGER,
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT
);
CREATE INDEX outbox_events_pending_idx
    ON outbox_events (aggregate_id, seq) WHERE published_at IS NULL;
CREATE INDEX outbox_events_tenant_idx ON outbox_events (tenant_id, seq);
