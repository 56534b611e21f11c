use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use crate::adapters::sql::{
    db_error, map_error, runs_page, to_millis, Dialect, MissingParent, RUN_COLUMNS,
};
use crate::adapters::sqlite::{prepare, rows, SqliteStore};
use crate::core::events::DomainEvent;
use crate::core::pagination::PageRequest;
use crate::core::ports::RunStore;
use crate::core::run::{LogBatch, Metric, Run};
use crate::core::run_query::RunQuery;
use crate::core::{Error, ExperimentId, Result, RunId, TenantId};

fn to_json(map: &BTreeMap<String, String>) -> Result<String> {
    serde_json::to_string(map).map_err(|e| Error::Internal(e.into()))
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn insert_run(
        &self,
        tenant: TenantId,
        run: &Run,
        batch: &LogBatch,
        events: &[DomainEvent],
    ) -> Result<()> {
        let parent = MissingParent {
            resource: "experiment",
            id: *run.experiment_id.as_uuid(),
        };
        let mut tx = self.writer.begin().await.map_err(db_error)?;
        sqlx::query(
            "INSERT INTO runs (tenant_id, id, experiment_id, name, status, start_time, end_time, \
             params, tags, created_at, updated_at, version) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.as_uuid())
        .bind(run.id.as_uuid())
        .bind(run.experiment_id.as_uuid())
        .bind(&run.name)
        .bind(run.status.as_str())
        .bind(to_millis(run.start_time))
        .bind(run.end_time.map(to_millis))
        .bind(to_json(&run.params)?)
        .bind(to_json(&run.tags)?)
        .bind(to_millis(run.created_at))
        .bind(to_millis(run.updated_at))
        .bind(run.version)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_error(e, Some(parent)))?;
        write_metrics(&mut tx, tenant, run.experiment_id, run.id, batch).await?;
        self.commit_with_events(tx, events).await
    }

    async fn find_run(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        id: RunId,
    ) -> Result<Option<Run>> {
        let mut tx = self.reader.begin().await.map_err(db_error)?;
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs r \
             WHERE r.tenant_id = ? AND r.experiment_id = ? AND r.id = ?"
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
        let sql = runs_page(Dialect::Sqlite, tenant, experiment, query, page);
        let mut tx = self.reader.begin().await.map_err(db_error)?;
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
        // The single writer connection serialises this with every other write, so the params
        // read here cannot change before the update below.
        let mut tx = self.writer.begin().await.map_err(db_error)?;
        let stored: Option<(String, String)> = sqlx::query_as(
            "SELECT params, tags FROM runs WHERE tenant_id = ? AND experiment_id = ? AND id = ?",
        )
        .bind(tenant.as_uuid())
        .bind(experiment.as_uuid())
        .bind(run.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some((params, tags)) = stored else {
            return Err(Error::not_found("run", run));
        };
        let corrupt = |e: serde_json::Error| Error::Internal(anyhow::anyhow!("stored map: {e}"));
        let mut params: BTreeMap<String, String> =
            serde_json::from_str(&params).map_err(corrupt)?;
        let mut tags: BTreeMap<String, String> = serde_json::from_str(&tags).map_err(corrupt)?;
        batch.merge_into(&mut params, &mut tags)?;
        sqlx::query(
            "UPDATE runs SET params = ?, tags = ?, updated_at = ?, version = version + 1 \
             WHERE tenant_id = ? AND id = ?",
        )
        .bind(to_json(&params)?)
        .bind(to_json(&tags)?)
        .bind(to_millis(now))
        .bind(tenant.as_uuid())
        .bind(run.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        write_metrics(&mut tx, tenant, experiment, run, batch).await?;
        self.commit_with_events(tx, events).await
    }

    async fn update_run(
        &self,
        tenant: TenantId,
        run: &Run,
        expected_version: i64,
        events: &[DomainEvent],
    ) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(db_error)?;
        let updated = sqlx::query(
            "UPDATE runs SET status = ?, end_time = ?, name = ?, updated_at = ?, \
             version = version + 1 WHERE tenant_id = ? AND id = ? AND version = ?",
        )
        .bind(run.status.as_str())
        .bind(run.end_time.map(to_millis))
        .bind(&run.name)
        .bind(to_millis(run.updated_at))
        .bind(tenant.as_uuid())
        .bind(run.id.as_uuid())
        .bind(expected_version)
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

/// Appends the batch's metrics and moves the latest value of each metric forward.
async fn write_metrics(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    experiment: ExperimentId,
    run: RunId,
    batch: &LogBatch,
) -> Result<()> {
    if batch.metrics.is_empty() {
        return Ok(());
    }
    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO run_metrics (tenant_id, run_id, key, value, step, timestamp) ",
    );
    insert.push_values(&batch.metrics, |mut row, m: &Metric| {
        row.push_bind(tenant.as_uuid())
            .push_bind(run.as_uuid())
            .push_bind(m.key.as_str())
            .push_bind(m.value)
            .push_bind(m.step)
            .push_bind(to_millis(m.timestamp));
    });
    insert.build().execute(&mut *conn).await.map_err(db_error)?;

    let latest = batch.latest_metrics();
    let mut upsert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO run_latest_metrics \
         (tenant_id, run_id, experiment_id, key, value, step, timestamp) ",
    );
    upsert.push_values(&latest, |mut row, m: &Metric| {
        row.push_bind(tenant.as_uuid())
            .push_bind(run.as_uuid())
            .push_bind(experiment.as_uuid())
            .push_bind(m.key.as_str())
            .push_bind(m.value)
            .push_bind(m.step)
            .push_bind(to_millis(m.timestamp));
    });
    upsert.push(
        " ON CONFLICT (tenant_id, run_id, key) DO UPDATE \
         SET value = excluded.value, step = excluded.step, timestamp = excluded.timestamp \
         WHERE (excluded.step, excluded.timestamp, excluded.value) > \
               (run_latest_metrics.step, run_latest_metrics.timestamp, run_latest_metrics.value)",
    );
    upsert.build().execute(&mut *conn).await.map_err(db_error)?;
    Ok(())
}
