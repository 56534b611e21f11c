use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};

use crate::adapters::postgres::outbox::EventColumns;
use crate::adapters::postgres::{prepare, rows, PgStore};
use crate::adapters::sql::{db_error, map_error, runs_page, Dialect, MissingParent, RUN_COLUMNS};
use crate::core::events::DomainEvent;
use crate::core::pagination::PageRequest;
use crate::core::ports::RunStore;
use crate::core::run::{LogBatch, Metric, Run};
use crate::core::run_query::RunQuery;
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

/// Appends metric history ($4-$7) and moves latest values forward ($8-$11) for run $2 of
/// experiment $3, as the tail of a statement whose `run` CTE yields the run's id.
const WRITE_METRICS: &str = "\
    metrics AS ( \
      INSERT INTO run_metrics (tenant_id, run_id, key, value, step, timestamp) \
      SELECT $1, $2, k, v, s, ts FROM run, \
        UNNEST($4::text[], $5::float8[], $6::int8[], $7::timestamptz[]) AS t(k, v, s, ts)) \
    INSERT INTO run_latest_metrics (tenant_id, run_id, experiment_id, key, value, step, timestamp) \
    SELECT $1, $2, $3, k, v, s, ts FROM run, \
      UNNEST($8::text[], $9::float8[], $10::int8[], $11::timestamptz[]) AS t(k, v, s, ts) \
    ON CONFLICT (tenant_id, run_id, key) DO UPDATE \
      SET value = excluded.value, step = excluded.step, timestamp = excluded.timestamp \
      WHERE (excluded.step, excluded.timestamp, excluded.value) > \
            (run_latest_metrics.step, run_latest_metrics.timestamp, run_latest_metrics.value)";

#[async_trait]
impl RunStore for PgStore {
    async fn insert_run(
        &self,
        tenant: TenantId,
        run: &Run,
        batch: &LogBatch,
        events: &[DomainEvent],
    ) -> Result<()> {
        let all = MetricColumns::of(&batch.metrics);
        let latest = MetricColumns::of(&run.metrics);
        let parent = MissingParent {
            resource: "experiment",
            id: *run.experiment_id.as_uuid(),
        };

        // One statement writes the run and its metrics: a single round trip.
        let mut tx = self.begin_for(tenant).await?;
        let sql = format!(
            "WITH run AS ( \
               INSERT INTO runs (tenant_id, id, experiment_id, name, status, start_time, \
                                 end_time, params, tags, created_at, updated_at, version) \
               VALUES ($1, $2, $3, $12, $13, $14, $15, $16, $17, $18, $18, $19) RETURNING id), \
             {}, {WRITE_METRICS}",
            EventColumns::cte(20)
        );
        let statement = sqlx::query(&sql)
            .bind(tenant.as_uuid())
            .bind(run.id.as_uuid())
            .bind(run.experiment_id.as_uuid())
            .bind(all.keys)
            .bind(all.values)
            .bind(all.steps)
            .bind(all.timestamps)
            .bind(latest.keys)
            .bind(latest.values)
            .bind(latest.steps)
            .bind(latest.timestamps)
            .bind(&run.name)
            .bind(run.status.as_str())
            .bind(run.start_time)
            .bind(run.end_time)
            .bind(Json(&run.params))
            .bind(Json(&run.tags))
            .bind(run.created_at)
            .bind(run.version);
        let statement = EventColumns::of(events).bind(statement);
        statement
            .execute(&mut *tx)
            .await
            .map_err(|e| map_error(e, Some(parent)))?;
        self.commit_signalling(tx, !events.is_empty()).await
    }

    async fn find_run(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        id: RunId,
    ) -> Result<Option<Run>> {
        let mut tx = self.begin_for(tenant).await?;
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs r \
             WHERE r.tenant_id = $1 AND r.experiment_id = $2 AND r.id = $3"
        ))
        .bind(tenant.as_uuid())
        .bind(experiment.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let mut found = [rows::run(&row, tenant)?];
        rows::attach_metrics(&mut tx, tenant, &mut found).await?;
        tx.commit().await.map_err(db_error)?;
        let [run] = found;
        Ok(Some(run))
    }

    async fn list_runs(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        query: &RunQuery,
        page: &PageRequest,
    ) -> Result<Vec<Run>> {
        let sql = runs_page(Dialect::Postgres, tenant, experiment, query, page);
        let mut tx = self.begin_for(tenant).await?;
        let found = prepare(&sql).fetch_all(&mut *tx).await.map_err(db_error)?;
        let mut runs = found
            .iter()
            .map(|r| rows::run(r, tenant))
            .collect::<Result<Vec<_>>>()?;
        rows::attach_metrics(&mut tx, tenant, &mut runs).await?;
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
        events: &[DomainEvent],
    ) -> Result<()> {
        let mut tx = self.begin_for(tenant).await?;
        // Locking the run serialises batches of the same run, so the param check cannot race
        // another batch logging the same key.
        type Maps = (
            Json<BTreeMap<String, String>>,
            Json<BTreeMap<String, String>>,
        );
        let stored: Option<Maps> = sqlx::query_as(
            "SELECT params, tags FROM runs \
             WHERE tenant_id = $1 AND experiment_id = $2 AND id = $3 FOR UPDATE",
        )
        .bind(tenant.as_uuid())
        .bind(experiment.as_uuid())
        .bind(run.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some((Json(mut params), Json(mut tags))) = stored else {
            return Err(Error::not_found("run", run));
        };
        batch.merge_into(&mut params, &mut tags)?;
        let ids = (tenant, experiment, run);
        write_batch(&mut tx, ids, batch, (&params, &tags), now, events).await?;
        self.commit_signalling(tx, !events.is_empty()).await
    }

    async fn update_run(
        &self,
        tenant: TenantId,
        run: &Run,
        expected_version: i64,
        events: &[DomainEvent],
    ) -> Result<()> {
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
        self.commit_with_events(tx, events).await
    }
}

/// Saves the merged params and tags, bumps the run's version and writes the batch's metrics.
async fn write_batch(
    tx: &mut Transaction<'static, Postgres>,
    (tenant, experiment, run): (TenantId, ExperimentId, RunId),
    batch: &LogBatch,
    (params, tags): (&BTreeMap<String, String>, &BTreeMap<String, String>),
    now: DateTime<Utc>,
    events: &[DomainEvent],
) -> Result<()> {
    let all = MetricColumns::of(&batch.metrics);
    let latest = MetricColumns::of(&batch.latest_metrics());
    let sql = format!(
        "WITH run AS ( \
           UPDATE runs SET params = $12, tags = $13, updated_at = $14, version = version + 1 \
           WHERE tenant_id = $1 AND id = $2 RETURNING id), \
         {}, {WRITE_METRICS}",
        EventColumns::cte(15)
    );
    let statement = sqlx::query(&sql)
        .bind(tenant.as_uuid())
        .bind(run.as_uuid())
        .bind(experiment.as_uuid())
        .bind(all.keys)
        .bind(all.values)
        .bind(all.steps)
        .bind(all.timestamps)
        .bind(latest.keys)
        .bind(latest.values)
        .bind(latest.steps)
        .bind(latest.timestamps)
        .bind(Json(params))
        .bind(Json(tags))
        .bind(now);
    let statement = EventColumns::of(events).bind(statement);
    statement.execute(&mut **tx).await.map_err(db_error)?;
    Ok(())
}
