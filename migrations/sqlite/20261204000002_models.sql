-- Registered models and their versions; see the PostgreSQL migration.

CREATE TABLE models (
    tenant_id   BLOB    NOT NULL,
    id          BLOB    NOT NULL,
    name        TEXT    NOT NULL,
    mlflow_name TEXT    NOT NULL,
    aliases     TEXT    NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT models_tenant_name_key UNIQUE (tenant_id, name)
) WITHOUT ROWID;

CREATE TABLE model_versions (
    tenant_id     BLOB    NOT NULL,
    model_id      BLOB    NOT NULL,
    version       INTEGER NOT NULL,
    run_id        BLOB    NOT NULL,
    experiment_id BLOB    NOT NULL,
    mlflow_run_id TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, model_id, version),
    FOREIGN KEY (tenant_id, model_id) REFERENCES models (tenant_id, id) ON DELETE CASCADE
) WITHOUT ROWID;
