use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::adapters::postgres::{prepare, rows, PgStore};
use crate::adapters::sql::{db_error, map_error, runs_page, Dialect, MissingParent};
use crate::core::pagination::PageRequest;
use crate::core::ports::RunStore;
use crate::core::run::{LogBatch, Metric, Run};
use crate::core::run_query::RunOrder;
use crate::core::{Error, ExperimentId, Result, RunId, TenantId};

/// Columns of metrics, as parallel arrays for `UNNEST`.
struct MetricColumns {
    keys: Vec<String>,
    values: Vec<f64>,
    steps: Vec<i64>,
    timestamps: Vec<DateTime<Utc>>,
}

impl MetricColumns {
    fn of(metrics: &[Metric]) -> Self {
        Self {
            keys: metrics.iter().map(|m| m.key.clone()).collect(),
            values: metrics.iter().map(|m| m.value).collect(),
            steps: metrics.iter().map(|m| m.step).collect(),
            timestamps: metrics.iter().map(|m| m.timestamp).collect(),
        }
    }
}

fn columns(map: &BTreeMap<String, String>) -> (Vec<String>, Vec<String>) {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).unzip()
}

/// Keeps the stored latest value unless the new one is newer by MLflow's order.
const UPSERT_LATEST: &str = "ON CONFLICT (tenant_id, run_id, key) DO UPDATE \
    SET value = excluded.value, step = excluded.step, timestamp = excluded.timestamp \
    WHERE (excluded.step, excluded.timestamp, excluded.value) > \
          (run_latest_metrics.step, run_latest_metrics.timestamp, run_latest_metrics.value)";

#[async_trait]
impl RunStore for PgStore {
    async fn insert_run(&self, tenant: TenantId, run: &Run, batch: &LogBatch) -> Result<()> {
        let (param_keys, param_values) = columns(&batch.params);
        let (tag_keys, tag_values) = columns(&batch.tags);
        let all = MetricColumns::of(&batch.metrics);
        let latest = MetricColumns::of(&run.metrics);
        let parent = MissingParent {
            resource: "experiment",
            id: *run.experiment_id.as_uuid(),
        };

        // One statement inserts the run and all its children: a single round trip.
        let mut tx = self.begin_for(tenant).await?;
        sqlx::query(&format!(
            "WITH run AS ( \
               INSERT INTO runs (tenant_id, id, experiment_id, name, status, start_time, \
                                 end_time, created_at, updated_at, version) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) RETURNING id), \
             params AS ( \
               INSERT INTO run_params (tenant_id, run_id, key, value) \
               SELECT $1, run.id, k, v FROM run, UNNEST($10::text[], $11::text[]) AS t(k, v)), \
             tags AS ( \
               INSERT INTO run_tags (tenant_id, run_id, key, value) \
               SELECT $1, run.id, k, v FROM run, UNNEST($12::text[], $13::text[]) AS t(k, v)), \
             metrics AS ( \
               INSERT INTO run_metrics (tenant_id, run_id, key, value, step, timestamp) \
               SELECT $1, run.id, k, v, s, ts FROM run, \
                 UNNEST($14::text[], $15::float8[], $16::int8[], $17::timestamptz[]) \
                 AS t(k, v, s, ts)) \
             INSERT INTO run_latest_metrics \
               (tenant_id, run_id, experiment_id, key, value, step, timestamp) \
             SELECT $1, run.id, $3, k, v, s, ts FROM run, \
               UNNEST($18::text[], $19::float8[], $20::int8[], $21::timestamptz[]) \
               AS t(k, v, s, ts) {UPSERT_LATEST}"
        ))
        .bind(tenant.as_uuid())
        .bind(run.id.as_uuid())
        .bind(run.experiment_id.as_uuid())
        .bind(&run.name)
        .bind(run.status.as_str())
        .bind(run.start_time)
        .bind(run.end_time)
        .bind(run.created_at)
        .bind(run.version)
        .bind(param_keys)
        .bind(param_values)
        .bind(tag_keys)
        .bind(tag_values)
        .bind(all.keys)
        .bind(all.values)
        .bind(all.steps)
        .bind(all.timestamps)
        .bind(latest.keys)
        .bind(latest.values)
        .bind(latest.steps)
        .bind(latest.timestamps)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_error(e, Some(parent)))?;
        tx.commit().await.map_err(db_error)
    }

    async fn find_run(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        id: RunId,
    ) -> Result<Option<Run>> {
        let mut tx = self.begin_for(tenant).await?;
        let row = sqlx::query(&format!(
            "SELECT {} FROM runs r WHERE r.tenant_id = $1 AND r.experiment_id = $2 AND r.id = $3",
            crate::adapters::sql::RUN_COLUMNS
        ))
        .bind(tenant.as_uuid())
        .bind(experiment.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let mut found = [rows::run(&row, tenant)?];
        rows::attach_children(&mut tx, tenant, &mut found).await?;
        tx.commit().await.map_err(db_error)?;
        let [run] = found;
        Ok(Some(run))
    }

    async fn list_runs(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        order: &RunOrder,
        page: &PageRequest,
    ) -> Result<Vec<Run>> {
        let sql = runs_page(Dialect::Postgres, tenant, experiment, order, page);
        let mut tx = self.begin_for(tenant).await?;
        let found = prepare(&sql).fetch_all(&mut *tx).await.map_err(db_error)?;
        let mut runs = found
            .iter()
            .map(|r| rows::run(r, tenant))
            .collect::<Result<Vec<_>>>()?;
        rows::attach_children(&mut tx, tenant, &mut runs).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(runs)
    }

    async fn log_batch(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        run: RunId,
        batch: &LogBatch,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin_for(tenant).await?;
        // Locking the run serialises batches of the same run, so the param check below
        // cannot race another batch logging the same key.
        let locked: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE tenant_id = $1 AND experiment_id = $2 AND id = $3 \
             FOR UPDATE",
        )
        .bind(tenant.as_uuid())
        .bind(experiment.as_uuid())
        .bind(run.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if locked.is_none() {
            return Err(Error::not_found("run", run));
        }
        check_params_unchanged(&mut tx, tenant, run, &batch.params).await?;
        write_batch(&mut tx, tenant, experiment, run, batch).await?;
        sqlx::query(
            "UPDATE runs SET updated_at = $3, version = version + 1 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_uuid())
        .bind(run.as_uuid())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn update_run(&self, tenant: TenantId, run: &Run, expected_version: i64) -> Result<()> {
        let mut tx = self.begin_for(tenant).await?;
        let updated = sqlx::query(
            "UPDATE runs SET status = $4, end_time = $5, name = $6, updated_at = $7, \
             version = version + 1 \
             WHERE tenant_id = $1 AND id = $2 AND version = $3",
        )
        .bind(tenant.as_uuid())
        .bind(run.id.as_uuid())
        .bind(expected_version)
        .bind(run.status.as_str())
        .bind(run.end_time)
        .bind(&run.name)
        .bind(run.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if updated.rows_affected() == 0 {
            return Err(Error::conflict(
                "version",
                "the run changed since it was read",
            ));
        }
        tx.commit().await.map_err(db_error)
    }
}

/// Fails with a conflict naming the first param whose stored value differs from the batch.
async fn check_params_unchanged(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    run: RunId,
    params: &BTreeMap<String, String>,
) -> Result<()> {
    if params.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = params.keys().map(String::as_str).collect();
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT key, value FROM run_params WHERE tenant_id = $1 AND run_id = $2 \
         AND key = ANY($3) ORDER BY key",
    )
    .bind(tenant.as_uuid())
    .bind(run.as_uuid())
    .bind(&keys)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    crate::adapters::sql::ensure_params_unchanged(&stored, params)
}

async fn write_batch(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    experiment: ExperimentId,
    run: RunId,
    batch: &LogBatch,
) -> Result<()> {
    let (param_keys, param_values) = columns(&batch.params);
    let (tag_keys, tag_values) = columns(&batch.tags);
    let all = MetricColumns::of(&batch.metrics);
    let latest = MetricColumns::of(&batch.latest_metrics());
    sqlx::query(&format!(
        "WITH params AS ( \
           INSERT INTO run_params (tenant_id, run_id, key, value) \
           SELECT $1, $2, k, v FROM UNNEST($4::text[], $5::text[]) AS t(k, v) \
           ON CONFLICT (tenant_id, run_id, key) DO NOTHING), \
         tags AS ( \
           INSERT INTO run_tags (tenant_id, run_id, key, value) \
           SELECT $1, $2, k, v FROM UNNEST($6::text[], $7::text[]) AS t(k, v) \
           ON CONFLICT (tenant_id, run_id, key) DO UPDATE SET value = excluded.value), \
         metrics AS ( \
           INSERT INTO run_metrics (tenant_id, run_id, key, value, step, timestamp) \
           SELECT $1, $2, k, v, s, ts \
           FROM UNNEST($8::text[], $9::float8[], $10::int8[], $11::timestamptz[]) \
           AS t(k, v, s, ts)) \
         INSERT INTO run_latest_metrics \
           (tenant_id, run_id, experiment_id, key, value, step, timestamp) \
         SELECT $1, $2, $3, k, v, s, ts \
         FROM UNNEST($12::text[], $13::float8[], $14::int8[], $15::timestamptz[]) \
         AS t(k, v, s, ts) {UPSERT_LATEST}"
    ))
    .bind(tenant.as_uuid())
    .bind(run.as_uuid())
    .bind(experiment.as_uuid())
    .bind(param_keys)
    .bind(param_values)
    .bind(tag_keys)
    .bind(tag_values)
    .bind(all.keys)
    .bind(all.values)
    .bind(all.steps)
    .bind(all.timestamps)
    .bind(latest.keys)
    .bind(latest.values)
    .bind(latest.steps)
    .bind(latest.timestamps)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}
