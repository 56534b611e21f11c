//! What the MLflow sync worker needs of PostgreSQL. Claims go through the SECURITY DEFINER
//! functions of the migration (the only cross-tenant access); the rest runs in the tenant's
//! own transaction under row-level security.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use crate::adapters::postgres::{rows, PgStore};
use crate::adapters::sql::{db_error, RUN_COLUMNS};
use crate::core::events::Backlog;
use crate::core::ports::MlflowSyncStore;
use crate::core::run::Metric;
use crate::core::tracking::{ExperimentClaim, RunClaim, RunSyncWork, SyncProgress, SyncTarget};
use crate::core::{ExperimentId, Result, RunId, TenantId};

fn lease_seconds(lease: Duration) -> i32 {
    i32::try_from(lease.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// The table and id of a sync target.
fn table_of(target: SyncTarget) -> (&'static str, Uuid) {
    match target {
        SyncTarget::Experiment(id) => ("experiments", *id.as_uuid()),
        SyncTarget::Run(id) => ("runs", *id.as_uuid()),
    }
}

#[async_trait]
impl MlflowSyncStore for PgStore {
    async fn claim_experiments(
        &self,
        worker: &str,
        max: u32,
        lease: Duration,
    ) -> Result<Vec<ExperimentClaim>> {
        let rows: Vec<(Uuid, Uuid, i32)> = sqlx::query_as(
            "SELECT tenant_id, id, attempts FROM mlflow_claim_experiments($1, $2, $3)",
        )
        .bind(worker)
        .bind(i32::try_from(max).unwrap_or(i32::MAX))
        .bind(lease_seconds(lease))
        .fetch_all(self.pool())
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(tenant, id, attempts)| ExperimentClaim {
                tenant: tenant.into(),
                id: id.into(),
                attempts,
            })
            .collect())
    }

    async fn claim_runs(&self, worker: &str, max: u32, lease: Duration) -> Result<Vec<RunClaim>> {
        let rows: Vec<(Uuid, Uuid, Uuid, i32)> = sqlx::query_as(
            "SELECT tenant_id, experiment_id, id, attempts FROM mlflow_claim_runs($1, $2, $3)",
        )
        .bind(worker)
        .bind(i32::try_from(max).unwrap_or(i32::MAX))
        .bind(lease_seconds(lease))
        .fetch_all(self.pool())
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(tenant, experiment, id, attempts)| RunClaim {
                tenant: tenant.into(),
                experiment: experiment.into(),
                id: id.into(),
                attempts,
            })
            .collect())
    }

    async fn run_sync_work(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        run: RunId,
        max_metrics: u32,
    ) -> Result<Option<RunSyncWork>> {
        let mut tx = self.begin_for(tenant).await?;
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS}, r.mlflow_metric_seq, e.mlflow_id AS experiment_mlflow_id \
             FROM runs r JOIN experiments e \
               ON e.tenant_id = r.tenant_id AND e.id = r.experiment_id \
             WHERE r.tenant_id = $1 AND r.experiment_id = $2 AND r.id = $3"
        ))
        .bind(tenant.as_uuid())
        .bind(experiment.as_uuid())
        .bind(run.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let mark: i64 = row.try_get("mlflow_metric_seq").map_err(db_error)?;
        let experiment_mlflow_id: Option<String> =
            row.try_get("experiment_mlflow_id").map_err(db_error)?;
        let mut found = [rows::run(&row, tenant)?];
        rows::attach_metrics(&mut tx, tenant, &mut found).await?;
        let pending: Vec<(i64, String, f64, i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT seq, key, value, step, timestamp FROM run_metrics \
             WHERE tenant_id = $1 AND run_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        )
        .bind(tenant.as_uuid())
        .bind(run.as_uuid())
        .bind(mark)
        .bind(i64::from(max_metrics) + 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        let [run] = found;
        let pending = pending
            .into_iter()
            .map(|(seq, key, value, step, timestamp)| {
                let metric = Metric {
                    key,
                    value,
                    step,
                    timestamp,
                };
                (seq, metric)
            })
            .collect();
        Ok(Some(RunSyncWork::assemble(
            run,
            experiment_mlflow_id,
            mark,
            pending,
            max_metrics,
        )))
    }

    async fn set_mlflow_id(&self, tenant: TenantId, target: SyncTarget, id: &str) -> Result<()> {
        let (table, key) = table_of(target);
        let mut tx = self.begin_for(tenant).await?;
        sqlx::query(&format!(
            "UPDATE {table} SET mlflow_id = $3 WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(key)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn record_synced(
        &self,
        tenant: TenantId,
        target: SyncTarget,
        progress: SyncProgress,
    ) -> Result<()> {
        let (table, key) = table_of(target);
        let metric_seq = match target {
            SyncTarget::Run(_) => {
                ", mlflow_metric_seq = greatest(mlflow_metric_seq, coalesce($4, mlflow_metric_seq))"
            }
            SyncTarget::Experiment(_) => "",
        };
        let mut tx = self.begin_for(tenant).await?;
        let statement = format!(
            "UPDATE {table} SET \
               mlflow_synced_version = greatest(mlflow_synced_version, coalesce($3, 0)), \
               mlflow_synced_at = clock_timestamp(), mlflow_error = NULL, mlflow_attempts = 0, \
               mlflow_next_attempt_at = NULL, mlflow_claimed_by = NULL, \
               mlflow_claimed_until = NULL{metric_seq} \
             WHERE tenant_id = $1 AND id = $2"
        );
        let mut query = sqlx::query(&statement)
            .bind(tenant.as_uuid())
            .bind(key)
            .bind(progress.version);
        if matches!(target, SyncTarget::Run(_)) {
            query = query.bind(progress.metric_seq);
        }
        query.execute(&mut *tx).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn record_failure(
        &self,
        tenant: TenantId,
        target: SyncTarget,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<()> {
        let (table, key) = table_of(target);
        let mut tx = self.begin_for(tenant).await?;
        sqlx::query(&format!(
            "UPDATE {table} SET mlflow_error = $3, mlflow_next_attempt_at = $4, \
               mlflow_claimed_by = NULL, mlflow_claimed_until = NULL \
             WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(key)
        .bind(error)
        .bind(retry_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn release(&self, tenant: TenantId, target: SyncTarget) -> Result<()> {
        let (table, key) = table_of(target);
        let mut tx = self.begin_for(tenant).await?;
        sqlx::query(&format!(
            "UPDATE {table} SET mlflow_claimed_by = NULL, mlflow_claimed_until = NULL \
             WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(key)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn sync_backlog(&self) -> Result<Backlog> {
        let (pending, oldest): (Option<i64>, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT pending, oldest FROM mlflow_sync_backlog()")
                .fetch_one(self.pool())
                .await
                .map_err(db_error)?;
        Ok(Backlog {
            pending: pending.unwrap_or(0),
            oldest,
        })
    }
}
