-- Registered models: runs promoted into MLflow's model registry, by name, with their versions
-- and the aliases pointing at them. Deployments name a model and a version.

CREATE TABLE models (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    name        text        NOT NULL,
    -- The registered model's name in MLflow (namespaced by tenant).
    mlflow_name text        NOT NULL,
    -- Alias -> version number.
    aliases     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL DEFAULT 1,
    CONSTRAINT models_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT models_tenant_name_key UNIQUE (tenant_id, name)
);

CREATE TABLE model_versions (
    tenant_id     uuid        NOT NULL,
    model_id      uuid        NOT NULL,
    -- MLflow's version number.
    version       bigint      NOT NULL,
    run_id        uuid        NOT NULL,
    experiment_id uuid        NOT NULL,
    mlflow_run_id text        NOT NULL,
    source        text        NOT NULL,
    created_at    timestamptz NOT NULL,
    CONSTRAINT model_versions_pkey PRIMARY KEY (tenant_id, model_id, version),
    CONSTRAINT model_versions_model_fkey FOREIGN KEY (tenant_id, model_id)
        REFERENCES models (tenant_id, id) ON DELETE CASCADE
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['models', 'model_versions']
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
