-- Experiments and runs, with row-level security on every tenant table.
--
-- The service connects as a role that owns none of these tables and sets `app.tenant_id` at the
-- start of each transaction. With no tenant set, app_current_tenant() is NULL and no row matches.

CREATE FUNCTION app_current_tenant() RETURNS uuid
LANGUAGE sql STABLE
AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

CREATE TABLE experiments (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    name        text        NOT NULL,
    description text,
    tags        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL DEFAULT 1,
    CONSTRAINT experiments_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT experiments_tenant_name_key UNIQUE (tenant_id, name)
);

-- Params and tags live on the run row: they are small maps read with the run every time, and
-- one row per run keeps logging a complete run to a single insert.
CREATE TABLE runs (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    experiment_id uuid        NOT NULL,
    name          text        NOT NULL,
    status        text        NOT NULL
        CONSTRAINT runs_status_check CHECK (status IN ('RUNNING', 'FINISHED', 'FAILED', 'KILLED')),
    start_time    timestamptz NOT NULL,
    end_time      timestamptz,
    params        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    tags          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    version       bigint      NOT NULL DEFAULT 1,
    CONSTRAINT runs_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT runs_experiment_fkey FOREIGN KEY (tenant_id, experiment_id)
        REFERENCES experiments (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX runs_experiment_start_time_idx
    ON runs (tenant_id, experiment_id, start_time DESC, id DESC);

-- The metric tables carry no foreign key to runs: a run logs tens to thousands of metric rows,
-- and a referential check per row was a third of the cost of logging a run. Rows are only
-- written in the transaction that creates the run or after locking the run's row, so no
-- metric can point at a missing run.

-- Every logged metric value: the history of each key by step.
CREATE TABLE run_metrics (
    tenant_id uuid             NOT NULL,
    run_id    uuid             NOT NULL,
    key       text             NOT NULL,
    value     double precision NOT NULL,
    step      bigint           NOT NULL,
    timestamp timestamptz      NOT NULL
);
CREATE INDEX run_metrics_run_key_idx ON run_metrics (tenant_id, run_id, key, step);

-- The latest value of each metric of each run, kept for ordering and comparing runs.
CREATE TABLE run_latest_metrics (
    tenant_id     uuid             NOT NULL,
    run_id        uuid             NOT NULL,
    experiment_id uuid             NOT NULL,
    key           text             NOT NULL,
    value         double precision NOT NULL,
    step          bigint           NOT NULL,
    timestamp     timestamptz      NOT NULL,
    CONSTRAINT run_latest_metrics_pkey PRIMARY KEY (tenant_id, run_id, key)
);
CREATE INDEX run_latest_metrics_experiment_key_idx
    ON run_latest_metrics (tenant_id, experiment_id, key, value);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['experiments', 'runs', 'run_metrics', 'run_latest_metrics']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant_id = app_current_tenant()) '
            'WITH CHECK (tenant_id = app_current_tenant())', t);
    END LOOP;
END
$$;
