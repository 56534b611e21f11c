//! Decoding PostgreSQL rows into domain types.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::adapters::sql::db_error;
use crate::core::experiment::Experiment;
use crate::core::run::{Metric, Run, RunStatus};
use crate::core::tracking::MlflowLink;
use crate::core::{Error, Result, TenantId};

pub(super) fn experiment(row: &PgRow, tenant: TenantId) -> Result<Experiment> {
    let tags: sqlx::types::Json<BTreeMap<String, String>> =
        row.try_get("tags").map_err(db_error)?;
    Ok(Experiment {
        id: row.try_get::<Uuid, _>("id").map_err(db_error)?.into(),
        tenant_id: tenant,
        name: row.try_get("name").map_err(db_error)?,
        description: row.try_get("description").map_err(db_error)?,
        tags: tags.0,
        created_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
        version: row.try_get("version").map_err(db_error)?,
        mlflow: mlflow_link(row)?,
    })
}

/// A run without its metrics; `attach_metrics` fills them in.
pub(super) fn run(row: &PgRow, tenant: TenantId) -> Result<Run> {
    let status: String = row.try_get("status").map_err(db_error)?;
    let params: Json<BTreeMap<String, String>> = row.try_get("params").map_err(db_error)?;
    let tags: Json<BTreeMap<String, String>> = row.try_get("tags").map_err(db_error)?;
    Ok(Run {
        id: row.try_get::<Uuid, _>("id").map_err(db_error)?.into(),
        tenant_id: tenant,
        experiment_id: row
            .try_get::<Uuid, _>("experiment_id")
            .map_err(db_error)?
            .into(),
        name: row.try_get("name").map_err(db_error)?,
        status: status
            .parse::<RunStatus>()
            .map_err(|e| Error::Internal(anyhow::anyhow!(e)))?,
        start_time: row.try_get("start_time").map_err(db_error)?,
        end_time: row.try_get("end_time").map_err(db_error)?,
        params: params.0,
        tags: tags.0,
        metrics: Vec::new(),
        created_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
        version: row.try_get("version").map_err(db_error)?,
        mlflow: mlflow_link(row)?,
    })
}

/// The MLflow columns every experiment and run query selects.
fn mlflow_link(row: &PgRow) -> Result<MlflowLink> {
    Ok(MlflowLink::from_stored(
        row.try_get("mlflow_id").map_err(db_error)?,
        row.try_get("version").map_err(db_error)?,
        row.try_get("mlflow_synced_version").map_err(db_error)?,
        row.try_get("mlflow_error").map_err(db_error)?,
        row.try_get("mlflow_synced_at").map_err(db_error)?,
    ))
}

/// Loads the latest metrics of `runs` with one query.
pub(super) async fn attach_metrics(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    runs: &mut [Run],
) -> Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = runs.iter().map(|r| *r.id.as_uuid()).collect();
    let index: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let metrics: Vec<(Uuid, String, f64, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT run_id, key, value, step, timestamp FROM run_latest_metrics \
         WHERE tenant_id = $1 AND run_id = ANY($2) ORDER BY key",
    )
    .bind(tenant.as_uuid())
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    for (run_id, key, value, step, timestamp) in metrics {
        runs[index[&run_id]].metrics.push(Metric {
            key,
            value,
            step,
            timestamp,
        });
    }
    Ok(())
}
