//! SQL for deployments shared by both adapters: the columns, the listing queries, and how a
//! second active deployment of a model shows up as a database error.

use crate::adapters::sql::{map_error, Bind, Dialect, MissingParent, Sql};
use crate::core::deployment::{active_conflict, Deployment, DeploymentFilter};
use crate::core::pagination::PageRequest;
use crate::core::ports::DeploymentStore;
use crate::core::{DeploymentId, Error, Result, TenantId};

pub const DEPLOYMENT_COLUMNS: &str = "tenant_id, id, model_id, model_version, baseline_version, \
     target_environment, status, spec, state, created_by, created_at, updated_at, version, \
     next_tick_at";

pub const HISTORY_COLUMNS: &str = "id, deployment_id, at, kind, actor, from_status, to_status, \
     candidate_percent, mirror_percent, step, reason, evidence, outcome";

pub const REPORT_COLUMNS: &str =
    "role, requests, errors, latency_p99_ms, window_seconds, metrics, received_at";

/// Whether a database error is the one-active-deployment index refusing a second one.
fn is_second_active(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            db.constraint() == Some("deployments_one_active_idx")
                || db.message().ends_with(
                    "deployments.tenant_id, deployments.model_id, deployments.target_environment",
                )
        }
        _ => false,
    }
}

/// The tenant's deployments matching `filter`, newest first, one page plus one row.
pub fn deployments_page(
    dialect: Dialect,
    tenant: TenantId,
    filter: &DeploymentFilter,
    page: &PageRequest,
) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT ")
        .push(DEPLOYMENT_COLUMNS)
        .push(" FROM deployments WHERE tenant_id = ")
        .bind(Bind::Uuid(*tenant.as_uuid()));
    if let Some(status) = filter.status {
        sql.push(" AND status = ")
            .bind(Bind::Text(status.as_str().to_owned()));
    }
    if let Some(model) = filter.model_id {
        sql.push(" AND model_id = ")
            .bind(Bind::Uuid(*model.as_uuid()));
    }
    if let Some(environment) = &filter.target_environment {
        sql.push(" AND target_environment = ")
            .bind(Bind::Text(environment.clone()));
    }
    if let Some(after) = &page.after {
        sql.push(" AND id < ").bind(Bind::Uuid(after.id));
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .bind(Bind::Int(page.fetch_limit()));
    sql
}

/// A deployment's history, oldest first, one page plus one row.
pub fn history_page(
    dialect: Dialect,
    tenant: TenantId,
    deployment: DeploymentId,
    page: &PageRequest,
) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT ")
        .push(HISTORY_COLUMNS)
        .push(" FROM deployment_history WHERE tenant_id = ")
        .bind(Bind::Uuid(*tenant.as_uuid()))
        .push(" AND deployment_id = ")
        .bind(Bind::Uuid(*deployment.as_uuid()));
    if let Some(after) = &page.after {
        sql.push(" AND id > ").bind(Bind::Uuid(after.id));
    }
    sql.push(" ORDER BY id LIMIT ")
        .bind(Bind::Int(page.fetch_limit()));
    sql
}

/// Reads a stored status, role or kind; a value the code does not know is corruption.
pub fn parse_stored<T: serde::de::DeserializeOwned>(
    column: &str,
    value: &str,
) -> crate::core::Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_owned())).map_err(|e| {
        crate::core::Error::Internal(anyhow::anyhow!(
            "unreadable {column} {value:?} in the database: {e}"
        ))
    })
}

/// Reads stored JSON into a domain type; a document the code cannot read is corruption.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    column: &str,
    value: serde_json::Value,
) -> crate::core::Result<T> {
    serde_json::from_value(value).map_err(|e| {
        crate::core::Error::Internal(anyhow::anyhow!(
            "unreadable {column} document in the database: {e}"
        ))
    })
}

/// Decodes the rows a controller claimed. A row that cannot be read is logged and left out,
/// so one damaged deployment never holds back the others claimed with it (it stays claimed
/// until its lease lapses, and is reported again then).
pub fn decode_claimed<R>(
    rows: &[R],
    decode: impl Fn(&R) -> Result<Deployment>,
    id_of: impl Fn(&R) -> Option<uuid::Uuid>,
) -> Vec<Deployment> {
    rows.iter()
        .filter_map(|row| match decode(row) {
            Ok(deployment) => Some(deployment),
            Err(error) => {
                tracing::error!(
                    deployment.id = ?id_of(row),
                    %error,
                    "a claimed deployment cannot be read and is skipped; its stored state \
                     needs repair"
                );
                None
            }
        })
        .collect()
}

/// The error for an insert of `d` that the database refused: a second active deployment of the
/// model in the environment (409 naming the active one), a model that does not exist, or
/// whatever else `map_error` makes of it.
pub async fn insert_refused(
    store: &dyn DeploymentStore,
    d: &Deployment,
    error: sqlx::Error,
) -> Error {
    if is_second_active(&error) {
        return match store
            .active_deployment(d.tenant_id, d.model_id, &d.target_environment)
            .await
        {
            Ok(active) => active_conflict(active.unwrap_or(d.id), &d.target_environment),
            Err(lookup) => lookup,
        };
    }
    let parent = MissingParent {
        resource: "model",
        id: *d.model_id.as_uuid(),
    };
    map_error(error, Some(parent))
}
