//! What the MLflow sync worker needs of SQLite: the same protocol as on PostgreSQL, with plain
//! updates on the single writer (claims cannot race there; leases still keep a second process
//! on the same file away).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use crate::adapters::sql::{db_error, from_millis, to_millis, RUN_COLUMNS};
use crate::adapters::sqlite::{rows, SqliteStore};
use crate::core::events::Backlog;
use crate::core::ports::MlflowSyncStore;
use crate::core::run::{self, Metric};
use crate::core::tracking::{ExperimentClaim, RunClaim, RunSyncWork, SyncProgress, SyncTarget};
use crate::core::{ExperimentId, Result, RunId, TenantId};

fn table_of(target: SyncTarget) -> (&'static str, Uuid) {
    match target {
        SyncTarget::Experiment(id) => ("experiments", *id.as_uuid()),
        SyncTarget::Run(id) => ("runs", *id.as_uuid()),
    }
}

/// The claim's lease end and the current time, in epoch milliseconds.
fn lease_window(lease: Duration) -> (i64, i64) {
    let now = to_millis(run::now());
    let until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
    (until, now)
}

/// Leases due rows of `table`, counting an attempt; `columns` are returned.
fn claim_statement(table: &str, columns: &str) -> String {
    format!(
        "UPDATE {table} SET mlflow_claimed_by = ?1, mlflow_claimed_until = ?2, \
           mlflow_attempts = mlflow_attempts + 1 \
         WHERE (tenant_id, id) IN ( \
           SELECT tenant_id, id FROM {table} \
           WHERE version > mlflow_synced_version \
             AND (mlflow_next_attempt_at IS NULL OR mlflow_next_attempt_at <= ?3) \
             AND (mlflow_claimed_until IS NULL OR mlflow_claimed_until < ?3 \
                  OR mlflow_claimed_by = ?1) \
           LIMIT ?4) \
         RETURNING {columns}"
    )
}

#[async_trait]
impl MlflowSyncStore for SqliteStore {
    async fn claim_experiments(
        &self,
        worker: &str,
        max: u32,
        lease: Duration,
    ) -> Result<Vec<ExperimentClaim>> {
        let (until, now) = lease_window(lease);
        let rows: Vec<(Uuid, Uuid, i32)> = sqlx::query_as(&claim_statement(
            "experiments",
            "tenant_id, id, mlflow_attempts",
        ))
        .bind(worker)
        .bind(until)
        .bind(now)
        .bind(i64::from(max))
        .fetch_all(&self.writer)
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
        let (until, now) = lease_window(lease);
        let rows: Vec<(Uuid, Uuid, Uuid, i32)> = sqlx::query_as(&claim_statement(
            "runs",
            "tenant_id, experiment_id, id, mlflow_attempts",
        ))
        .bind(worker)
        .bind(until)
        .bind(now)
        .bind(i64::from(max))
        .fetch_all(&self.writer)
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
        let mut tx = self.reader.begin().await.map_err(db_error)?;
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS}, r.mlflow_metric_seq, e.mlflow_id AS experiment_mlflow_id \
             FROM runs r JOIN experiments e \
               ON e.tenant_id = r.tenant_id AND e.id = r.experiment_id \
             WHERE r.tenant_id = ? AND r.experiment_id = ? AND r.id = ?"
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
        let pending: Vec<(i64, String, f64, i64, i64)> = sqlx::query_as(
            "SELECT rowid, key, value, step, timestamp FROM run_metrics \
             WHERE tenant_id = ? AND run_id = ? AND rowid > ? ORDER BY rowid LIMIT ?",
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
                    timestamp: from_millis(timestamp),
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
        sqlx::query(&format!(
            "UPDATE {table} SET mlflow_id = ? WHERE tenant_id = ? AND id = ?"
        ))
        .bind(id)
        .bind(tenant.as_uuid())
        .bind(key)
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(())
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
                ", mlflow_metric_seq = max(mlflow_metric_seq, coalesce(?5, mlflow_metric_seq))"
            }
            SyncTarget::Experiment(_) => "",
        };
        let statement = format!(
            "UPDATE {table} SET \
               mlflow_synced_version = max(mlflow_synced_version, coalesce(?3, 0)), \
               mlflow_synced_at = ?4, mlflow_error = NULL, mlflow_attempts = 0, \
               mlflow_next_attempt_at = NULL, mlflow_claimed_by = NULL, \
               mlflow_claimed_until = NULL{metric_seq} \
             WHERE tenant_id = ?1 AND id = ?2"
        );
        let mut query = sqlx::query(&statement)
            .bind(tenant.as_uuid())
            .bind(key)
            .bind(progress.version)
            .bind(to_millis(run::now()));
        if matches!(target, SyncTarget::Run(_)) {
            query = query.bind(progress.metric_seq);
        }
        query.execute(&self.writer).await.map_err(db_error)?;
        Ok(())
    }

    async fn record_failure(
        &self,
        tenant: TenantId,
        target: SyncTarget,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<()> {
        let (table, key) = table_of(target);
        sqlx::query(&format!(
            "UPDATE {table} SET mlflow_error = ?, mlflow_next_attempt_at = ?, \
               mlflow_claimed_by = NULL, mlflow_claimed_until = NULL \
             WHERE tenant_id = ? AND id = ?"
        ))
        .bind(error)
        .bind(to_millis(retry_at))
        .bind(tenant.as_uuid())
        .bind(key)
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn release(&self, tenant: TenantId, target: SyncTarget) -> Result<()> {
        let (table, key) = table_of(target);
        sqlx::query(&format!(
            "UPDATE {table} SET mlflow_claimed_by = NULL, mlflow_claimed_until = NULL \
             WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant.as_uuid())
        .bind(key)
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn sync_backlog(&self) -> Result<Backlog> {
        let (pending, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), min(updated_at) FROM ( \
               SELECT updated_at FROM experiments WHERE version > mlflow_synced_version \
               UNION ALL \
               SELECT updated_at FROM runs WHERE version > mlflow_synced_version)",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(db_error)?;
        Ok(Backlog {
            pending,
            oldest: oldest.map(from_millis),
        })
    }
}
