//! Decoding SQLite rows into domain types.

use std::collections::HashMap;

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use crate::adapters::sql::{db_error, from_millis, Bind, Dialect, Sql};
use crate::adapters::sqlite::prepare;
use crate::core::experiment::Experiment;
use crate::core::run::{Metric, Run, RunStatus};
use crate::core::tracking::MlflowLink;
use crate::core::{Error, Result, TenantId};

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow::anyhow!("unreadable row: {e}"))
}

pub(super) fn experiment(row: &SqliteRow, tenant: TenantId) -> Result<Experiment> {
    let tags: String = row.try_get("tags").map_err(db_error)?;
    Ok(Experiment {
        id: row.try_get::<Uuid, _>("id").map_err(db_error)?.into(),
        tenant_id: tenant,
        name: row.try_get("name").map_err(db_error)?,
        description: row.try_get("description").map_err(db_error)?,
        tags: serde_json::from_str(&tags).map_err(internal)?,
        created_at: from_millis(row.try_get("created_at").map_err(db_error)?),
        updated_at: from_millis(row.try_get("updated_at").map_err(db_error)?),
        version: row.try_get("version").map_err(db_error)?,
        mlflow: mlflow_link(row)?,
    })
}

pub(super) fn run(row: &SqliteRow, tenant: TenantId) -> Result<Run> {
    let status: String = row.try_get("status").map_err(db_error)?;
    let end_time: Option<i64> = row.try_get("end_time").map_err(db_error)?;
    let params: String = row.try_get("params").map_err(db_error)?;
    let tags: String = row.try_get("tags").map_err(db_error)?;
    Ok(Run {
        id: row.try_get::<Uuid, _>("id").map_err(db_error)?.into(),
        tenant_id: tenant,
        experiment_id: row
            .try_get::<Uuid, _>("experiment_id")
            .map_err(db_error)?
            .into(),
        name: row.try_get("name").map_err(db_error)?,
        status: status.parse::<RunStatus>().map_err(internal)?,
        start_time: from_millis(row.try_get("start_time").map_err(db_error)?),
        end_time: end_time.map(from_millis),
        params: serde_json::from_str(&params).map_err(internal)?,
        tags: serde_json::from_str(&tags).map_err(internal)?,
        metrics: Vec::new(),
        created_at: from_millis(row.try_get("created_at").map_err(db_error)?),
        updated_at: from_millis(row.try_get("updated_at").map_err(db_error)?),
        version: row.try_get("version").map_err(db_error)?,
        mlflow: mlflow_link(row)?,
    })
}

/// The MLflow columns every experiment and run query selects.
fn mlflow_link(row: &SqliteRow) -> Result<MlflowLink> {
    let synced_at: Option<i64> = row.try_get("mlflow_synced_at").map_err(db_error)?;
    Ok(MlflowLink::from_stored(
        row.try_get("mlflow_id").map_err(db_error)?,
        row.try_get("version").map_err(db_error)?,
        row.try_get("mlflow_synced_version").map_err(db_error)?,
        row.try_get("mlflow_error").map_err(db_error)?,
        synced_at.map(from_millis),
    ))
}

/// Loads the latest metrics of `runs` with one query.
pub(super) async fn attach_metrics(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    runs: &mut [Run],
) -> Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = runs.iter().map(|r| *r.id.as_uuid()).collect();
    let index: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut sql = Sql::new(Dialect::Sqlite);
    sql.push(
        "SELECT run_id, key, value, step, timestamp FROM run_latest_metrics WHERE tenant_id = ",
    );
    sql.bind(Bind::Uuid(*tenant.as_uuid()));
    sql.push(" AND ")
        .push_in_uuids("run_id", &ids)
        .push(" ORDER BY key");
    for row in prepare(&sql)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?
    {
        let run_id: Uuid = row.try_get(0).map_err(db_error)?;
        runs[index[&run_id]].metrics.push(Metric {
            key: row.try_get(1).map_err(db_error)?,
            value: row.try_get(2).map_err(db_error)?,
            step: row.try_get(3).map_err(db_error)?,
            timestamp: from_millis(row.try_get(4).map_err(db_error)?),
        });
    }
    Ok(())
}
