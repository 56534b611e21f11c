-- Experiments and runs for the embedded store. Ids are 16-byte UUID blobs, times are
-- milliseconds since the Unix epoch (UTC), params and tags are JSON objects. Isolation rests on every
-- statement filtering by tenant_id: SQLite has no row-level security.

CREATE TABLE experiments (
    tenant_id   BLOB    NOT NULL,
    id          BLOB    NOT NULL,
    name        TEXT    NOT NULL,
    description TEXT,
    tags        TEXT    NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT experiments_tenant_name_key UNIQUE (tenant_id, name)
) WITHOUT ROWID;

CREATE TABLE runs (
    tenant_id     BLOB    NOT NULL,
    id            BLOB    NOT NULL,
    experiment_id BLOB    NOT NULL,
    name          TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('RUNNING', 'FINISHED', 'FAILED', 'KILLED')),
    start_time    INTEGER NOT NULL,
    end_time      INTEGER,
    params        TEXT    NOT NULL DEFAULT '{}',
    tags          TEXT    NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    version       INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, experiment_id) REFERENCES experiments (tenant_id, id)
        ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX runs_experiment_start_time_idx
    ON runs (tenant_id, experiment_id, start_time DESC, id DESC);

CREATE TABLE run_metrics (
    tenant_id BLOB    NOT NULL,
    run_id    BLOB    NOT NULL,
    key       TEXT    NOT NULL,
    value     REAL    NOT NULL,
    step      INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX run_metrics_run_key_idx ON run_metrics (tenant_id, run_id, key, step);

CREATE TABLE run_latest_metrics (
    tenant_id     BLOB    NOT NULL,
    run_id        BLOB    NOT NULL,
    experiment_id BLOB    NOT NULL,
    key           TEXT    NOT NULL,
    value         REAL    NOT NULL,
    step          INTEGER NOT NULL,
    timestamp     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, run_id, key),
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs (tenant_id, id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX run_latest_metrics_experiment_key_idx
    ON run_latest_metrics (tenant_id, experiment_id, key, value);
