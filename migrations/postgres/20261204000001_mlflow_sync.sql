-- Mirroring experiments and runs into MLflow.
--
-- A row is in sync when mlflow_synced_version has caught up with its version: every write bumps
-- version, so no write path needs to touch these columns. mlflow_error holds the last failed
-- attempt's error until an attempt succeeds. The sync worker claims rows with a lease, like the
-- outbox relay, through SECURITY DEFINER functions that alone see every tenant's rows; it reads
-- and records everything else inside the owning tenant's transaction.

ALTER TABLE experiments
    ADD COLUMN mlflow_id              text,
    ADD COLUMN mlflow_synced_version  bigint      NOT NULL DEFAULT 0,
    ADD COLUMN mlflow_synced_at       timestamptz,
    ADD COLUMN mlflow_error           text,
    ADD COLUMN mlflow_attempts        integer     NOT NULL DEFAULT 0,
    ADD COLUMN mlflow_next_attempt_at timestamptz,
    ADD COLUMN mlflow_claimed_by      text,
    ADD COLUMN mlflow_claimed_until   timestamptz;

ALTER TABLE runs
    ADD COLUMN mlflow_id              text,
    ADD COLUMN mlflow_synced_version  bigint      NOT NULL DEFAULT 0,
    ADD COLUMN mlflow_synced_at       timestamptz,
    ADD COLUMN mlflow_error           text,
    ADD COLUMN mlflow_attempts        integer     NOT NULL DEFAULT 0,
    ADD COLUMN mlflow_next_attempt_at timestamptz,
    ADD COLUMN mlflow_claimed_by      text,
    ADD COLUMN mlflow_claimed_until   timestamptz,
    -- The highest run_metrics.seq already logged to MLflow.
    ADD COLUMN mlflow_metric_seq      bigint      NOT NULL DEFAULT 0;

-- Metric rows of one run are written under the run's row lock, so their seq order is their
-- commit order: everything above the run's mlflow_metric_seq is still to be sent.
ALTER TABLE run_metrics ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;

CREATE INDEX experiments_mlflow_pending_idx ON experiments (tenant_id, id)
    WHERE version > mlflow_synced_version;
CREATE INDEX runs_mlflow_pending_idx ON runs (tenant_id, id)
    WHERE version > mlflow_synced_version;

CREATE POLICY mlflow_sync_owner ON experiments TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY mlflow_sync_owner ON runs TO CURRENT_USER USING (true) WITH CHECK (true);

-- Claims up to `max_rows` experiments that are behind MLflow, due for an attempt and not leased
-- by another worker. Each claim counts as an attempt: a worker that finds an earlier attempt
-- on a row it has no MLflow id for looks the object up in MLflow before creating it.
CREATE FUNCTION mlflow_claim_experiments(worker text, max_rows integer, lease_seconds integer)
RETURNS TABLE (tenant_id uuid, id uuid, attempts integer)
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    WITH due AS (
        SELECT e.tenant_id, e.id
        FROM experiments e
        WHERE e.version > e.mlflow_synced_version
          AND (e.mlflow_next_attempt_at IS NULL OR e.mlflow_next_attempt_at <= now())
          AND (e.mlflow_claimed_until IS NULL OR e.mlflow_claimed_until < now()
               OR e.mlflow_claimed_by = worker)
        LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    )
    UPDATE experiments e
    SET mlflow_claimed_by = worker,
        mlflow_claimed_until = now() + make_interval(secs => lease_seconds),
        mlflow_attempts = e.mlflow_attempts + 1
    FROM due
    WHERE e.tenant_id = due.tenant_id AND e.id = due.id
    RETURNING e.tenant_id, e.id, e.mlflow_attempts
$$;

CREATE FUNCTION mlflow_claim_runs(worker text, max_rows integer, lease_seconds integer)
RETURNS TABLE (tenant_id uuid, experiment_id uuid, id uuid, attempts integer)
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    WITH due AS (
        SELECT r.tenant_id, r.id
        FROM runs r
        WHERE r.version > r.mlflow_synced_version
          AND (r.mlflow_next_attempt_at IS NULL OR r.mlflow_next_attempt_at <= now())
          AND (r.mlflow_claimed_until IS NULL OR r.mlflow_claimed_until < now()
               OR r.mlflow_claimed_by = worker)
        LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    )
    UPDATE runs r
    SET mlflow_claimed_by = worker,
        mlflow_claimed_until = now() + make_interval(secs => lease_seconds),
        mlflow_attempts = r.mlflow_attempts + 1
    FROM due
    WHERE r.tenant_id = due.tenant_id AND r.id = due.id
    RETURNING r.tenant_id, r.experiment_id, r.id, r.mlflow_attempts
$$;

-- How far MLflow is behind, across tenants, for /ready.
CREATE FUNCTION mlflow_sync_backlog(OUT pending bigint, OUT oldest timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT count(*), min(updated_at) FROM (
        SELECT updated_at FROM experiments WHERE version > mlflow_synced_version
        UNION ALL
        SELECT updated_at FROM runs WHERE version > mlflow_synced_version) behind
$$;

REVOKE ALL ON FUNCTION mlflow_claim_experiments(text, integer, integer),
    mlflow_claim_runs(text, integer, integer), mlflow_sync_backlog() FROM PUBLIC;
