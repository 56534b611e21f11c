//! Deployments on SQLite. Writes go through the single writer connection, so the
//! controller's claim cannot race another claim in this process; the lease still keeps a
//! second process on the same file from driving the same deployment.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use crate::adapters::sql::deployments::{
    decode_claimed, deployments_page, history_page, insert_refused, parse_json, parse_stored,
    DEPLOYMENT_COLUMNS, REPORT_COLUMNS,
};
use crate::adapters::sql::{db_error, from_millis, map_error, to_millis, Dialect, MissingParent};
use crate::adapters::sqlite::{prepare, SqliteStore};
use crate::core::deployment::{
    Deployment, DeploymentFilter, HistoryEntry, StableChange, StableVersion, TrafficReport,
    TrafficSplit,
};
use crate::core::events::DomainEvent;
use crate::core::pagination::PageRequest;
use crate::core::ports::{DeploymentStore, RolloutQueue};
use crate::core::{DeploymentId, Error, ModelId, Result, TenantId};

fn text_json(column: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| {
        Error::Internal(anyhow::anyhow!(
            "unreadable {column} document in the database: {e}"
        ))
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::Internal(anyhow::anyhow!("cannot encode a deployment document: {e}")))
}

fn deployment(row: &SqliteRow) -> Result<Deployment> {
    let text = |column: &str| -> Result<String> { row.try_get(column).map_err(db_error) };
    let millis = |column: &str| -> Result<i64> { row.try_get(column).map_err(db_error) };
    let next: Option<i64> = row.try_get("next_tick_at").map_err(db_error)?;
    Ok(Deployment {
        id: row.try_get::<Uuid, _>("id").map_err(db_error)?.into(),
        tenant_id: row
            .try_get::<Uuid, _>("tenant_id")
            .map_err(db_error)?
            .into(),
        model_id: row.try_get::<Uuid, _>("model_id").map_err(db_error)?.into(),
        model_version: row.try_get("model_version").map_err(db_error)?,
        baseline_version: row.try_get("baseline_version").map_err(db_error)?,
        target_environment: text("target_environment")?,
        status: parse_stored("status", &text("status")?)?,
        spec: parse_json("spec", text_json("spec", &text("spec")?)?)?,
        state: parse_json("state", text_json("state", &text("state")?)?)?,
        created_by: text("created_by")?,
        created_at: from_millis(millis("created_at")?),
        updated_at: from_millis(millis("updated_at")?),
        version: row.try_get("version").map_err(db_error)?,
        next_tick_at: next.map(from_millis),
    })
}

fn history_entry(row: &SqliteRow, tenant: TenantId) -> Result<HistoryEntry> {
    let text = |column: &str| -> Result<String> { row.try_get(column).map_err(db_error) };
    let document = |column: &str| -> Result<Option<serde_json::Value>> {
        let value: Option<String> = row.try_get(column).map_err(db_error)?;
        value.map(|v| text_json(column, &v)).transpose()
    };
    let candidate: i64 = row.try_get("candidate_percent").map_err(db_error)?;
    let mirror: i64 = row.try_get("mirror_percent").map_err(db_error)?;
    let step: i64 = row.try_get("step").map_err(db_error)?;
    Ok(HistoryEntry {
        id: row.try_get("id").map_err(db_error)?,
        tenant_id: tenant,
        deployment_id: row
            .try_get::<Uuid, _>("deployment_id")
            .map_err(db_error)?
            .into(),
        at: from_millis(row.try_get("at").map_err(db_error)?),
        kind: parse_stored("kind", &text("kind")?)?,
        actor: text("actor")?,
        from_status: parse_stored("from_status", &text("from_status")?)?,
        to_status: parse_stored("to_status", &text("to_status")?)?,
        traffic: TrafficSplit::candidate_share(u8::try_from(candidate).unwrap_or(0)),
        mirror_percent: u8::try_from(mirror).unwrap_or(0),
        step: u32::try_from(step).unwrap_or(0),
        reason: row.try_get("reason").map_err(db_error)?,
        evidence: document("evidence")?
            .map(|v| parse_json("evidence", v))
            .transpose()?,
        outcome: document("outcome")?
            .map(|v| parse_json("outcome", v))
            .transpose()?,
    })
}

fn report(row: &SqliteRow) -> Result<TrafficReport> {
    let role: String = row.try_get("role").map_err(db_error)?;
    let metrics: String = row.try_get("metrics").map_err(db_error)?;
    let requests: i64 = row.try_get("requests").map_err(db_error)?;
    let errors: i64 = row.try_get("errors").map_err(db_error)?;
    Ok(TrafficReport {
        role: parse_stored("role", &role)?,
        requests: u64::try_from(requests).unwrap_or(0),
        errors: u64::try_from(errors).unwrap_or(0),
        latency_p99_ms: row.try_get("latency_p99_ms").map_err(db_error)?,
        window_seconds: row.try_get("window_seconds").map_err(db_error)?,
        metrics: parse_json("metrics", text_json("metrics", &metrics)?)?,
        received_at: from_millis(row.try_get("received_at").map_err(db_error)?),
    })
}

async fn insert_history(
    tx: &mut Transaction<'static, Sqlite>,
    history: &[HistoryEntry],
) -> Result<()> {
    for h in history {
        sqlx::query(
            "INSERT INTO deployment_history (tenant_id, deployment_id, id, at, kind, actor, \
               from_status, to_status, candidate_percent, mirror_percent, step, reason, \
               evidence, outcome) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(h.tenant_id.as_uuid())
        .bind(h.deployment_id.as_uuid())
        .bind(h.id)
        .bind(to_millis(h.at))
        .bind(h.kind.as_str())
        .bind(&h.actor)
        .bind(h.from_status.as_str())
        .bind(h.to_status.as_str())
        .bind(i64::from(h.traffic.candidate()))
        .bind(i64::from(h.mirror_percent))
        .bind(i64::from(h.step))
        .bind(&h.reason)
        .bind(h.evidence.as_ref().map(encode).transpose()?)
        .bind(h.outcome.as_ref().map(encode).transpose()?)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    }
    Ok(())
}

async fn apply_stable(
    tx: &mut Transaction<'static, Sqlite>,
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
                 WHERE tenant_id = ? AND model_id = ? AND target_environment = ?",
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
           deployment_id, updated_at) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (tenant_id, model_id, target_environment) DO UPDATE \
           SET version = excluded.version, deployment_id = excluded.deployment_id, \
               updated_at = excluded.updated_at",
    )
    .bind(d.tenant_id.as_uuid())
    .bind(d.model_id.as_uuid())
    .bind(&d.target_environment)
    .bind(version)
    .bind(d.id.as_uuid())
    .bind(to_millis(d.updated_at))
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

#[async_trait]
impl DeploymentStore for SqliteStore {
    async fn insert_deployment(
        &self,
        d: &Deployment,
        history: &[HistoryEntry],
        events: &[DomainEvent],
    ) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(db_error)?;
        let inserted = sqlx::query(
            "INSERT INTO deployments (tenant_id, id, model_id, model_version, baseline_version, \
               target_environment, strategy, status, spec, state, created_by, created_at, \
               updated_at, version, next_tick_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(d.tenant_id.as_uuid())
        .bind(d.id.as_uuid())
        .bind(d.model_id.as_uuid())
        .bind(d.model_version)
        .bind(d.baseline_version)
        .bind(&d.target_environment)
        .bind(d.strategy().as_str())
        .bind(d.status.as_str())
        .bind(encode(&d.spec)?)
        .bind(encode(&d.state)?)
        .bind(&d.created_by)
        .bind(to_millis(d.created_at))
        .bind(to_millis(d.updated_at))
        .bind(d.version)
        .bind(d.next_tick_at.map(to_millis))
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
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        row.as_ref().map(deployment).transpose()
    }

    async fn list_deployments(
        &self,
        tenant: TenantId,
        filter: &DeploymentFilter,
        page: &PageRequest,
    ) -> Result<Vec<Deployment>> {
        let sql = deployments_page(Dialect::Sqlite, tenant, filter, page);
        let rows = prepare(&sql)
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
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
        let mut tx = self.writer.begin().await.map_err(db_error)?;
        let updated = sqlx::query(
            "UPDATE deployments SET status = ?, state = ?, updated_at = ?, version = ?, \
               next_tick_at = ?, claimed_by = NULL, claimed_until = NULL \
             WHERE tenant_id = ? AND id = ? AND version = ?",
        )
        .bind(d.status.as_str())
        .bind(encode(&d.state)?)
        .bind(to_millis(d.updated_at))
        .bind(d.version)
        .bind(d.next_tick_at.map(to_millis))
        .bind(d.tenant_id.as_uuid())
        .bind(d.id.as_uuid())
        .bind(expected_version)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if updated.rows_affected() == 0 {
            drop(tx);
            return Err(match self.find_deployment(d.tenant_id, d.id).await? {
                Some(_) => Error::conflict(
                    "version",
                    "the deployment changed since it was read; read it again",
                ),
                None => Error::not_found("deployment", d.id),
            });
        }
        sqlx::query(
            "DELETE FROM deployment_reports \
             WHERE tenant_id = ? AND deployment_id = ? AND received_at < ?",
        )
        .bind(d.tenant_id.as_uuid())
        .bind(d.id.as_uuid())
        .bind(to_millis(d.reports_cutoff()))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
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
        let sql = history_page(Dialect::Sqlite, tenant, id, page);
        let rows = prepare(&sql)
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        rows.iter().map(|r| history_entry(r, tenant)).collect()
    }

    async fn insert_report(
        &self,
        tenant: TenantId,
        id: DeploymentId,
        r: &TrafficReport,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO deployment_reports (tenant_id, deployment_id, role, requests, errors, \
               latency_p99_ms, window_seconds, metrics, received_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(r.role.as_str())
        .bind(i64::try_from(r.requests).unwrap_or(i64::MAX))
        .bind(i64::try_from(r.errors).unwrap_or(i64::MAX))
        .bind(r.latency_p99_ms)
        .bind(r.window_seconds)
        .bind(encode(&r.metrics)?)
        .bind(to_millis(r.received_at))
        .execute(&self.writer)
        .await
        .map_err(|e| {
            let parent = MissingParent {
                resource: "deployment",
                id: *id.as_uuid(),
            };
            map_error(e, Some(parent))
        })?;
        Ok(())
    }

    async fn reports_since(
        &self,
        tenant: TenantId,
        id: DeploymentId,
        since: DateTime<Utc>,
    ) -> Result<Vec<TrafficReport>> {
        let rows = sqlx::query(&format!(
            "SELECT {REPORT_COLUMNS} FROM deployment_reports \
             WHERE tenant_id = ? AND deployment_id = ? AND received_at >= ? ORDER BY seq"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(to_millis(since))
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter().map(report).collect()
    }

    async fn stable_version(
        &self,
        tenant: TenantId,
        model: ModelId,
        environment: &str,
    ) -> Result<Option<StableVersion>> {
        let row: Option<(i64, Uuid)> = sqlx::query_as(
            "SELECT version, deployment_id FROM model_stable_versions \
             WHERE tenant_id = ? AND model_id = ? AND target_environment = ?",
        )
        .bind(tenant.as_uuid())
        .bind(model.as_uuid())
        .bind(environment)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
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
        let row: Option<(Uuid,)> = sqlx::query_as(
            "SELECT id FROM deployments WHERE tenant_id = ? AND model_id = ? \
               AND target_environment = ? AND status IN ('pending', 'progressing', 'paused')",
        )
        .bind(tenant.as_uuid())
        .bind(model.as_uuid())
        .bind(environment)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        Ok(row.map(|(id,)| id.into()))
    }
}

#[async_trait]
impl RolloutQueue for SqliteStore {
    async fn claim_due(&self, worker: &str, max: u32, lease: Duration) -> Result<Vec<Deployment>> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let rows = sqlx::query(&format!(
            "UPDATE deployments SET claimed_by = ?1, claimed_until = ?2 \
             WHERE (tenant_id, id) IN ( \
               SELECT tenant_id, id FROM deployments \
               WHERE next_tick_at <= ?3 AND (claimed_until IS NULL OR claimed_until < ?3) \
               ORDER BY next_tick_at LIMIT ?4) \
             RETURNING {DEPLOYMENT_COLUMNS}"
        ))
        .bind(worker)
        .bind(to_millis(until))
        .bind(to_millis(now))
        .bind(i64::from(max))
        .fetch_all(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(decode_claimed(&rows, deployment, |row| {
            row.try_get::<Uuid, _>("id").ok()
        }))
    }

    async fn release(&self, tenant: TenantId, id: DeploymentId, worker: &str) -> Result<()> {
        sqlx::query(
            "UPDATE deployments SET claimed_by = NULL, claimed_until = NULL, \
               next_tick_at = min(next_tick_at, ?) \
             WHERE tenant_id = ? AND id = ? AND claimed_by = ?",
        )
        .bind(to_millis(Utc::now()))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(worker)
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}
