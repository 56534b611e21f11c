-- Mirroring experiments and runs into MLflow; see the PostgreSQL migration for the design.
-- Times are milliseconds since the Unix epoch. run_metrics is a rowid table: its rowid is the
-- metric's sequence number, and runs.mlflow_metric_seq the highest one already sent.

ALTER TABLE experiments ADD COLUMN mlflow_id TEXT;
ALTER TABLE experiments ADD COLUMN mlflow_synced_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE experiments ADD COLUMN mlflow_synced_at INTEGER;
ALTER TABLE experiments ADD COLUMN mlflow_error TEXT;
ALTER TABLE experiments ADD COLUMN mlflow_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE experiments ADD COLUMN mlflow_next_attempt_at INTEGER;
ALTER TABLE experiments ADD COLUMN mlflow_claimed_by TEXT;
ALTER TABLE experiments ADD COLUMN mlflow_claimed_until INTEGER;

ALTER TABLE runs ADD COLUMN mlflow_id TEXT;
ALTER TABLE runs ADD COLUMN mlflow_synced_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN mlflow_synced_at INTEGER;
ALTER TABLE runs ADD COLUMN mlflow_error TEXT;
ALTER TABLE runs ADD COLUMN mlflow_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN mlflow_next_attempt_at INTEGER;
ALTER TABLE runs ADD COLUMN mlflow_claimed_by TEXT;
ALTER TABLE runs ADD COLUMN mlflow_claimed_until INTEGER;
ALTER TABLE runs ADD COLUMN mlflow_metric_seq INTEGER NOT NULL DEFAULT 0;

CREATE INDEX experiments_mlflow_pending_idx ON experiments (tenant_id, id)
    WHERE version > mlflow_synced_version;
CREATE INDEX runs_mlflow_pending_idx ON runs (tenant_id, id)
    WHERE version > mlflow_synced_version;
