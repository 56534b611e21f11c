//! Deployments on PostgreSQL. Everything runs in the tenant's transaction under row-level
//! security except the controller's claim, which goes through `deployments_claim_due`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::adapters::postgres::{prepare, PgStore};
use crate::adapters::sql::deployments::{
    decode_claimed, deployments_page, history_page, insert_refused, parse_json, parse_stored,
    DEPLOYMENT_COLUMNS, REPORT_COLUMNS,
};
use crate::adapters::sql::{db_error, map_error, Dialect, MissingParent};
use crate::core::deployment::{
    Deployment, DeploymentFilter, HistoryEntry, StableChange, StableVersion, TrafficReport,
    TrafficSplit,
};
use crate::core::events::DomainEvent;
use crate::core::pagination::PageRequest;
use crate::core::ports::{DeploymentStore, RolloutQueue};
use crate::core::{DeploymentId, Error, ModelId, Result, TenantId};

fn deployment(row: &PgRow) -> Result<Deployment> {
    let get_json = |column: &str| -> Result<serde_json::Value> {
        let Json(value): Json<serde_json::Value> = row.try_get(column).map_err(db_error)?;
        Ok(value)
    };
    let status: String = row.try_get("status").map_err(db_error)?;
    let tenant: Uuid = row.try_get("tenant_id").map_err(db_error)?;
    let id: Uuid = row.try_get("id").map_err(db_error)?;
    let model: Uuid = row.try_get("model_id").map_err(db_error)?;
    Ok(Deployment {
        id: id.into(),
        tenant_id: tenant.into(),
        model_id: model.into(),
        model_version: row.try_get("model_version").map_err(db_error)?,
        baseline_version: row.try_get("baseline_version").map_err(db_error)?,
        target_environment: row.try_get("target_environment").map_err(db_error)?,
        status: parse_stored("status", &status)?,
        spec: parse_json("spec", get_json("spec")?)?,
        state: parse_json("state", get_json("state")?)?,
        created_by: row.try_get("created_by").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
        version: row.try_get("version").map_err(db_error)?,
        next_tick_at: row.try_get("next_tick_at").map_err(db_error)?,
    })
}

fn history_entry(row: &PgRow, tenant: TenantId) -> Result<HistoryEntry> {
    let text = |column: &str| -> Result<String> { row.try_get(column).map_err(db_error) };
    let json = |column: &str| -> Result<Option<serde_json::Value>> {
        let value: Option<Json<serde_json::Value>> = row.try_get(column).map_err(db_error)?;
        Ok(value.map(|Json(v)| v))
    };
    let id: Uuid = row.try_get("id").map_err(db_error)?;
    let deployment: Uuid = row.try_get("deployment_id").map_err(db_error)?;
    let candidate: i16 = row.try_get("candidate_percent").map_err(db_error)?;
    let mirror: i16 = row.try_get("mirror_percent").map_err(db_error)?;
    let step: i32 = row.try_get("step").map_err(db_error)?;
    Ok(HistoryEntry {
        id,
        tenant_id: tenant,
        deployment_id: deployment.into(),
        at: row.try_get("at").map_err(db_error)?,
        kind: parse_stored("kind", &text("kind")?)?,
        actor: text("actor")?,
        from_status: parse_stored("from_status", &text("from_status")?)?,
        to_status: parse_stored("to_status", &text("to_status")?)?,
        traffic: TrafficSplit::candidate_share(u8::try_from(candidate).unwrap_or(0)),
        mirror_percent: u8::try_from(mirror).unwrap_or(0),
        step: u32::try_from(step).unwrap_or(0),
        reason: row.try_get("reason").map_err(db_error)?,
        evidence: json("evidence")?
            .map(|v| parse_json("evidence", v))
            .transpose()?,
        outcome: json("outcome")?
            .map(|v| parse_json("outcome", v))
            .transpose()?,
    })
}

fn report(row: &PgRow) -> Result<TrafficReport> {
    let role: String = row.try_get("role").map_err(db_error)?;
    let Json(metrics): Json<serde_json::Value> = row.try_get("metrics").map_err(db_error)?;
    let requests: i64 = row.try_get("requests").map_err(db_error)?;
    let errors: i64 = row.try_get("errors").map_err(db_error)?;
    Ok(TrafficReport {
        role: parse_stored("role", &role)?,
        requests: u64::try_from(requests).unwrap_or(0),
        errors: u64::try_from(errors).unwrap_or(0),
        latency_p99_ms: row.try_get("latency_p99_ms").map_err(db_error)?,
        window_seconds: row.try_get("window_seconds").map_err(db_error)?,
        metrics: parse_json("metrics", metrics)?,
        received_at: row.try_get("received_at").map_err(db_error)?,
    })
}

fn json_of<T: serde::Serialize>(value: &T) -> Result<Json<serde_json::Value>> {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| Error::Internal(anyhow::anyhow!("cannot encode a deployment document: {e}")))
}

async fn insert_history(
    tx: &mut Transaction<'static, Postgres>,
    history: &[HistoryEntry],
) -> Result<()> {
    for h in history {
        sqlx::query(
            "INSERT INTO deployment_history (tenant_id, deployment_id, id, at, kind, actor, \
               from_status, to_status, candidate_percent, mirror_percent, step, reason, \
               evidence, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(h.tenant_id.as_uuid())
        .bind(h.deployment_id.as_uuid())
        .bind(h.id)
        .bind(h.at)
        .bind(h.kind.as_str())
        .bind(&h.actor)
        .bind(h.from_status.as_str())
        .bind(h.to_status.as_str())
        .bind(i16::from(h.traffic.candidate()))
        .bind(i16::from(h.mirror_percent))
        .bind(i32::try_from(h.step).unwrap_or(i32::MAX))
        .bind(&h.reason)
        .bind(h.evidence.as_ref().map(json_of).transpose()?)
        .bind(h.outcome.as_ref().map(json_of).transpose()?)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    }
    Ok(())
}

async fn apply_stable(
    tx: &mut Transaction<'static, Postgres>,
    d: &Deployment,
    change: Option<StableChange>,
) -> Result<()> {
    let version = match change {
        None => return Ok(()),
        Some(StableChange::Adopt { version })
        | Some(StableChange::Revert { to: Some(version) }) => version,
        Some(StableChange::Revert { to: None }) => {
            sqlx::query(
                "DELETE FROM model_stable_versions \
                 WHERE tenant_id = $1 AND model_id = $2 AND target_environment = $3",
            )
            .bind(d.tenant_id.as_uuid())
            .bind(d.model_id.as_uuid())
            .bind(&d.target_environment)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            return Ok(());
        }
    };
    sqlx::query(
        "INSERT INTO model_stable_versions (tenant_id, model_id, target_environment, version, \
           deployment_id, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id, model_id, target_environment) DO UPDATE \
           SET version = excluded.version, deployment_id = excluded.deployment_id, \
               updated_at = excluded.updated_at",
    )
    .bind(d.tenant_id.as_uuid())
    .bind(d.model_id.as_uuid())
    .bind(&d.target_environment)
    .bind(version)
    .bind(d.id.as_uuid())
    .bind(d.updated_at)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

#[async_trait]
impl DeploymentStore for PgStore {
    async fn insert_deployment(
        &self,
        d: &Deployment,
        history: &[HistoryEntry],
        events: &[DomainEvent],
    ) -> Result<()> {
        let mut tx = self.begin_for(d.tenant_id).await?;
        let inserted = sqlx::query(
            "INSERT INTO deployments (tenant_id, id, model_id, model_version, baseline_version, \
               target_environment, strategy, status, spec, state, created_by, created_at, \
               updated_at, version, next_tick_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(d.tenant_id.as_uuid())
        .bind(d.id.as_uuid())
        .bind(d.model_id.as_uuid())
        .bind(d.model_version)
        .bind(d.baseline_version)
        .bind(&d.target_environment)
        .bind(d.strategy().as_str())
        .bind(d.status.as_str())
        .bind(json_of(&d.spec)?)
        .bind(json_of(&d.state)?)
        .bind(&d.created_by)
        .bind(d.created_at)
        .bind(d.updated_at)
        .bind(d.version)
        .bind(d.next_tick_at)
        .execute(&mut *tx)
        .await;
        if let Err(error) = inserted {
            drop(tx);
            return Err(insert_refused(self, d, error).await);
        }
        insert_history(&mut tx, history).await?;
        self.commit_with_events(tx, events).await?;
        self.signal.notify_deployments();
        Ok(())
    }

    async fn find_deployment(
        &self,
        tenant: TenantId,
        id: DeploymentId,
    ) -> Result<Option<Deployment>> {
        let mut tx = self.begin_for(tenant).await?;
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        row.as_ref().map(deployment).transpose()
    }

    async fn list_deployments(
        &self,
        tenant: TenantId,
        filter: &DeploymentFilter,
        page: &PageRequest,
    ) -> Result<Vec<Deployment>> {
        let sql = deployments_page(Dialect::Postgres, tenant, filter, page);
        let mut tx = self.begin_for(tenant).await?;
        let rows = prepare(&sql).fetch_all(&mut *tx).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        rows.iter().map(deployment).collect()
    }

    async fn save_deployment(
        &self,
        d: &Deployment,
        expected_version: i64,
        history: &[HistoryEntry],
        stable: Option<StableChange>,
        events: &[DomainEvent],
    ) -> Result<()> {
        let mut tx = self.begin_for(d.tenant_id).await?;
        // The update and the pruning of old reports travel as one statement.
        let (updated,): (i64,) = sqlx::query_as(
            "WITH updated AS ( \
               UPDATE deployments SET status = $3, state = $4, updated_at = $5, version = $6, \
                 next_tick_at = $7, claimed_by = NULL, claimed_until = NULL \
               WHERE tenant_id = $1 AND id = $2 AND version = $8 RETURNING id), \
             pruned AS ( \
               DELETE FROM deployment_reports r USING updated \
               WHERE r.tenant_id = $1 AND r.deployment_id = updated.id AND r.received_at < $9) \
             SELECT count(*) FROM updated",
        )
        .bind(d.tenant_id.as_uuid())
        .bind(d.id.as_uuid())
        .bind(d.status.as_str())
        .bind(json_of(&d.state)?)
        .bind(d.updated_at)
        .bind(d.version)
        .bind(d.next_tick_at)
        .bind(expected_version)
        .bind(d.reports_cutoff())
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        if updated == 0 {
            drop(tx);
            return Err(match self.find_deployment(d.tenant_id, d.id).await? {
                Some(_) => Error::conflict(
                    "version",
                    "the deployment changed since it was read; read it again",
                ),
                None => Error::not_found("deployment", d.id),
            });
        }
        insert_history(&mut tx, history).await?;
        apply_stable(&mut tx, d, stable).await?;
        self.commit_with_events(tx, events).await?;
        if d.next_tick_at.is_some_and(|due| due <= d.updated_at) {
            self.signal.notify_deployments();
        }
        Ok(())
    }

    async fn list_history(
        &self,
        tenant: TenantId,
        id: DeploymentId,
        page: &PageRequest,
    ) -> Result<Vec<HistoryEntry>> {
        let sql = history_page(Dialect::Postgres, tenant, id, page);
        let mut tx = self.begin_for(tenant).await?;
        let rows = prepare(&sql).fetch_all(&mut *tx).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        rows.iter().map(|r| history_entry(r, tenant)).collect()
    }

    async fn insert_report(
        &self,
        tenant: TenantId,
        id: DeploymentId,
        r: &TrafficReport,
    ) -> Result<()> {
        let mut tx = self.begin_for(tenant).await?;
        sqlx::query(
            "INSERT INTO deployment_reports (tenant_id, deployment_id, role, requests, errors, \
               latency_p99_ms, window_seconds, metrics, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(r.role.as_str())
        .bind(i64::try_from(r.requests).unwrap_or(i64::MAX))
        .bind(i64::try_from(r.errors).unwrap_or(i64::MAX))
        .bind(r.latency_p99_ms)
        .bind(r.window_seconds)
        .bind(json_of(&r.metrics)?)
        .bind(r.received_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            let parent = MissingParent {
                resource: "deployment",
                id: *id.as_uuid(),
            };
            map_error(e, Some(parent))
        })?;
        tx.commit().await.map_err(db_error)
    }

    async fn reports_since(
        &self,
        tenant: TenantId,
        id: DeploymentId,
        since: DateTime<Utc>,
    ) -> Result<Vec<TrafficReport>> {
        let mut tx = self.begin_for(tenant).await?;
        let rows = sqlx::query(&format!(
            "SELECT {REPORT_COLUMNS} FROM deployment_reports \
             WHERE tenant_id = $1 AND deployment_id = $2 AND received_at >= $3 ORDER BY seq"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(since)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        rows.iter().map(report).collect()
    }

    async fn stable_version(
        &self,
        tenant: TenantId,
        model: ModelId,
        environment: &str,
    ) -> Result<Option<StableVersion>> {
        let mut tx = self.begin_for(tenant).await?;
        let row: Option<(i64, Uuid)> = sqlx::query_as(
            "SELECT version, deployment_id FROM model_stable_versions \
             WHERE tenant_id = $1 AND model_id = $2 AND target_environment = $3",
        )
        .bind(tenant.as_uuid())
        .bind(model.as_uuid())
        .bind(environment)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(row.map(|(version, deployment)| StableVersion {
            version,
            deployment: deployment.into(),
        }))
    }

    async fn active_deployment(
        &self,
        tenant: TenantId,
        model: ModelId,
        environment: &str,
    ) -> Result<Option<DeploymentId>> {
        let mut tx = self.begin_for(tenant).await?;
        let row: Option<(Uuid,)> = sqlx::query_as(
            "SELECT id FROM deployments WHERE tenant_id = $1 AND model_id = $2 \
               AND target_environment = $3 AND status IN ('pending', 'progressing', 'paused')",
        )
        .bind(tenant.as_uuid())
        .bind(model.as_uuid())
        .bind(environment)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(row.map(|(id,)| id.into()))
    }
}

#[async_trait]
impl RolloutQueue for PgStore {
    async fn claim_due(&self, worker: &str, max: u32, lease: Duration) -> Result<Vec<Deployment>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments_claim_due($1, $2, $3)"
        ))
        .bind(worker)
        .bind(i32::try_from(max).unwrap_or(i32::MAX))
        .bind(i32::try_from(lease.as_millis()).unwrap_or(i32::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(db_error)?;
        Ok(decode_claimed(&rows, deployment, |row| {
            row.try_get::<Uuid, _>("id").ok()
        }))
    }

    async fn release(&self, tenant: TenantId, id: DeploymentId, worker: &str) -> Result<()> {
        let mut tx = self.begin_for(tenant).await?;
        sqlx::query(
            "UPDATE deployments SET claimed_by = NULL, claimed_until = NULL, \
               next_tick_at = LEAST(next_tick_at, now()) \
             WHERE tenant_id = $1 AND id = $2 AND claimed_by = $3",
        )
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(worker)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }
}
