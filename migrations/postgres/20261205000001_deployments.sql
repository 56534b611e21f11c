-- Deployments: one model version rolled out into one target environment, a persisted state
-- machine that the rollout controller drives. `spec` (what was asked for) never changes;
-- `state` changes with every decision, saved with a check on `version`, so the API and the
-- controller never overwrite each other's step.
--
-- The controller claims due deployments of every tenant through the SECURITY DEFINER
-- function below (the owner's policy admits all rows); it reads and saves each one inside its
-- tenant's own transaction, under row-level security.

CREATE TABLE deployments (
    tenant_id          uuid        NOT NULL,
    id                 uuid        NOT NULL,
    model_id           uuid        NOT NULL,
    model_version      bigint      NOT NULL,
    baseline_version   bigint,
    target_environment text        NOT NULL,
    strategy           text        NOT NULL
        CHECK (strategy IN ('canary', 'ab_test', 'shadow', 'blue_green')),
    status             text        NOT NULL
        CHECK (status IN ('pending', 'progressing', 'paused', 'succeeded', 'rolled_back',
                          'failed')),
    spec               jsonb       NOT NULL,
    state              jsonb       NOT NULL,
    created_by         text        NOT NULL,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    version            bigint      NOT NULL,
    -- When the controller looks next; NULL once the deployment has ended.
    next_tick_at       timestamptz,
    claimed_by         text,
    claimed_until      timestamptz,
    CONSTRAINT deployments_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT deployments_model_fkey FOREIGN KEY (tenant_id, model_id)
        REFERENCES models (tenant_id, id)
);
-- At most one active deployment per model and environment.
CREATE UNIQUE INDEX deployments_one_active_idx
    ON deployments (tenant_id, model_id, target_environment)
    WHERE status IN ('pending', 'progressing', 'paused');
CREATE INDEX deployments_due_idx ON deployments (next_tick_at) WHERE next_tick_at IS NOT NULL;

-- Every decision with its evidence.
CREATE TABLE deployment_history (
    tenant_id         uuid        NOT NULL,
    deployment_id     uuid        NOT NULL,
    id                uuid        NOT NULL,
    at                timestamptz NOT NULL,
    kind              text        NOT NULL,
    actor             text        NOT NULL,
    from_status       text        NOT NULL,
    to_status         text        NOT NULL,
    candidate_percent smallint    NOT NULL,
    mirror_percent    smallint    NOT NULL,
    step              integer     NOT NULL,
    reason            text,
    evidence          jsonb,
    outcome           jsonb,
    CONSTRAINT deployment_history_pkey PRIMARY KEY (tenant_id, deployment_id, id),
    CONSTRAINT deployment_history_deployment_fkey FOREIGN KEY (tenant_id, deployment_id)
        REFERENCES deployments (tenant_id, id) ON DELETE CASCADE
);

-- Traffic the serving layer reports; rows older than the analysis window are dropped when
-- the deployment is saved.
CREATE TABLE deployment_reports (
    tenant_id      uuid             NOT NULL,
    deployment_id  uuid             NOT NULL,
    seq            bigint           GENERATED ALWAYS AS IDENTITY,
    role           text             NOT NULL CHECK (role IN ('baseline', 'candidate')),
    requests       bigint           NOT NULL,
    errors         bigint           NOT NULL,
    latency_p99_ms double precision,
    window_seconds double precision NOT NULL,
    metrics        jsonb            NOT NULL DEFAULT '{}'::jsonb,
    received_at    timestamptz      NOT NULL,
    CONSTRAINT deployment_reports_pkey PRIMARY KEY (tenant_id, deployment_id, seq),
    CONSTRAINT deployment_reports_deployment_fkey FOREIGN KEY (tenant_id, deployment_id)
        REFERENCES deployments (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX deployment_reports_received_idx
    ON deployment_reports (tenant_id, deployment_id, received_at);

-- The version of each model that serves in each environment, and the deployment that made it.
CREATE TABLE model_stable_versions (
    tenant_id          uuid        NOT NULL,
    model_id           uuid        NOT NULL,
    target_environment text        NOT NULL,
    version            bigint      NOT NULL,
    deployment_id      uuid        NOT NULL,
    updated_at         timestamptz NOT NULL,
    CONSTRAINT model_stable_versions_pkey PRIMARY KEY (tenant_id, model_id, target_environment)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['deployments', 'deployment_history', 'deployment_reports',
                             'model_stable_versions']
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
CREATE POLICY rollout_controller_owner ON deployments TO CURRENT_USER
    USING (true) WITH CHECK (true);

-- Leases up to `max_rows` deployments whose next look is due and that no other controller
-- holds, most overdue first, and returns them whole.
CREATE FUNCTION deployments_claim_due(worker text, max_rows integer, lease_ms integer)
RETURNS SETOF deployments
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    WITH due AS (
        SELECT d.tenant_id, d.id
        FROM deployments d
        WHERE d.next_tick_at <= now()
          AND (d.claimed_until IS NULL OR d.claimed_until < now())
        ORDER BY d.next_tick_at
        LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    )
    UPDATE deployments d
    SET claimed_by = worker,
        claimed_until = now() + make_interval(secs => lease_ms / 1000.0)
    FROM due
    WHERE d.tenant_id = due.tenant_id AND d.id = due.id
    RETURNING d.*
$$;

REVOKE ALL ON FUNCTION deployments_claim_due(text, integer, integer) FROM PUBLIC;
