-- Deployments, their history, reported traffic and the stable version of each model per
-- environment; see the PostgreSQL migration. Times are epoch milliseconds, JSON is text.

CREATE TABLE deployments (
    tenant_id          BLOB    NOT NULL,
    id                 BLOB    NOT NULL,
    model_id           BLOB    NOT NULL,
    model_version      INTEGER NOT NULL,
    baseline_version   INTEGER,
    target_environment TEXT    NOT NULL,
    strategy           TEXT    NOT NULL
        CHECK (strategy IN ('canary', 'ab_test', 'shadow', 'blue_green')),
    status             TEXT    NOT NULL
        CHECK (status IN ('pending', 'progressing', 'paused', 'succeeded', 'rolled_back',
                          'failed')),
    spec               TEXT    NOT NULL,
    state              TEXT    NOT NULL,
    created_by         TEXT    NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    version            INTEGER NOT NULL,
    next_tick_at       INTEGER,
    claimed_by         TEXT,
    claimed_until      INTEGER,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, model_id) REFERENCES models (tenant_id, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX deployments_one_active_idx
    ON deployments (tenant_id, model_id, target_environment)
    WHERE status IN ('pending', 'progressing', 'paused');
CREATE INDEX deployments_due_idx ON deployments (next_tick_at) WHERE next_tick_at IS NOT NULL;

CREATE TABLE deployment_history (
    tenant_id         BLOB    NOT NULL,
    deployment_id     BLOB    NOT NULL,
    id                BLOB    NOT NULL,
    at                INTEGER NOT NULL,
    kind              TEXT    NOT NULL,
    actor             TEXT    NOT NULL,
    from_status       TEXT    NOT NULL,
    to_status         TEXT    NOT NULL,
    candidate_percent INTEGER NOT NULL,
    mirror_percent    INTEGER NOT NULL,
    step              INTEGER NOT NULL,
    reason            TEXT,
    evidence          TEXT,
    outcome           TEXT,
    PRIMARY KEY (tenant_id, deployment_id, id),
    FOREIGN KEY (tenant_id, deployment_id) REFERENCES deployments (tenant_id, id)
        ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE deployment_reports (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id      BLOB    NOT NULL,
    deployment_id  BLOB    NOT NULL,
    role           TEXT    NOT NULL CHECK (role IN ('baseline', 'candidate')),
    requests       INTEGER NOT NULL,
    errors         INTEGER NOT NULL,
    latency_p99_ms REAL,
    window_seconds REAL    NOT NULL,
    metrics        TEXT    NOT NULL DEFAULT '{}',
    received_at    INTEGER NOT NULL,
    FOREIGN KEY (tenant_id, deployment_id) REFERENCES deployments (tenant_id, id)
        ON DELETE CASCADE
);
CREATE INDEX deployment_reports_received_idx
    ON deployment_reports (tenant_id, deployment_id, received_at);

CREATE TABLE model_stable_versions (
    tenant_id          BLOB    NOT NULL,
    model_id           BLOB    NOT NULL,
    target_environment TEXT    NOT NULL,
    version            INTEGER NOT NULL,
    deployment_id      BLOB    NOT NULL,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, model_id, target_environment)
) WITHOUT ROWID;
