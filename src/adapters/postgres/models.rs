use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::adapters::postgres::{outbox, PgStore};
use crate::adapters::sql::db_error;
use crate::core::model::{Model, ModelVersion, Promotion};
use crate::core::pagination::PageRequest;
use crate::core::ports::ModelStore;
use crate::core::{ModelId, Result, TenantId};

type ModelRow = (
    Uuid,
    String,
    String,
    Json<BTreeMap<String, i64>>,
    DateTime<Utc>,
    DateTime<Utc>,
);

const MODEL_COLUMNS: &str = "id, name, mlflow_name, aliases, created_at, updated_at";

#[async_trait]
impl ModelStore for PgStore {
    async fn record_promotion(&self, promotion: &Promotion) -> Result<Model> {
        let tenant = promotion.tenant;
        let mut tx = self.begin_for(tenant).await?;
        sqlx::query(
            "INSERT INTO models (tenant_id, id, name, mlflow_name, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(tenant.as_uuid())
        .bind(promotion.proposed_model_id.as_uuid())
        .bind(&promotion.model_name)
        .bind(&promotion.registered.name)
        .bind(promotion.at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        // The row lock orders concurrent promotions of the same model.
        let (id,): (Uuid,) =
            sqlx::query_as("SELECT id FROM models WHERE tenant_id = $1 AND name = $2 FOR UPDATE")
                .bind(tenant.as_uuid())
                .bind(&promotion.model_name)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO model_versions (tenant_id, model_id, version, run_id, experiment_id, \
               mlflow_run_id, source, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id, model_id, version) DO NOTHING",
        )
        .bind(tenant.as_uuid())
        .bind(id)
        .bind(promotion.registered.version)
        .bind(promotion.run_id.as_uuid())
        .bind(promotion.experiment_id.as_uuid())
        .bind(&promotion.mlflow_run_id)
        .bind(&promotion.registered.source)
        .bind(promotion.at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query(
            "UPDATE models SET aliases = aliases || jsonb_build_object($3::text, $4::bigint), \
               mlflow_name = $5, updated_at = $6, version = version + 1 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_uuid())
        .bind(id)
        .bind(&promotion.alias)
        .bind(promotion.registered.version)
        .bind(&promotion.registered.name)
        .bind(promotion.at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let model_id = ModelId::from(id);
        let event = promotion.event(model_id);
        outbox::append_events(&mut tx, std::slice::from_ref(&event)).await?;
        let model = load_models(&mut tx, tenant, &[id]).await?.pop();
        self.commit_signalling(tx, true).await?;
        model.ok_or_else(|| crate::core::Error::not_found("model", model_id))
    }

    async fn find_model(&self, tenant: TenantId, id: ModelId) -> Result<Option<Model>> {
        let mut tx = self.begin_for(tenant).await?;
        let model = load_models(&mut tx, tenant, &[*id.as_uuid()]).await?.pop();
        tx.commit().await.map_err(db_error)?;
        Ok(model)
    }

    async fn list_models(&self, tenant: TenantId, page: &PageRequest) -> Result<Vec<Model>> {
        let mut tx = self.begin_for(tenant).await?;
        let after = page.after.as_ref().map(|c| c.id);
        let ids: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT id FROM models WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant.as_uuid())
        .bind(after)
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let ids: Vec<Uuid> = ids.into_iter().map(|(id,)| id).collect();
        let models = load_models(&mut tx, tenant, &ids).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(models)
    }
}

/// The models with these ids and their versions, in the order of `ids`.
/// model_id, version, run_id, experiment_id, mlflow_run_id, source, created_at.
type VersionRow = (Uuid, i64, Uuid, Uuid, String, String, DateTime<Utc>);

async fn load_models(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    ids: &[Uuid],
) -> Result<Vec<Model>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<ModelRow> = sqlx::query_as(&format!(
        "SELECT {MODEL_COLUMNS} FROM models WHERE tenant_id = $1 AND id = ANY($2)"
    ))
    .bind(tenant.as_uuid())
    .bind(ids)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    let versions: Vec<VersionRow> = sqlx::query_as(
        "SELECT model_id, version, run_id, experiment_id, mlflow_run_id, source, created_at \
         FROM model_versions WHERE tenant_id = $1 AND model_id = ANY($2) \
         ORDER BY model_id, version",
    )
    .bind(tenant.as_uuid())
    .bind(ids)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    let mut by_model: HashMap<Uuid, Vec<ModelVersion>> = HashMap::new();
    for (model_id, version, run_id, experiment_id, mlflow_run_id, source, created_at) in versions {
        by_model.entry(model_id).or_default().push(ModelVersion {
            version,
            run_id: run_id.into(),
            experiment_id: experiment_id.into(),
            mlflow_run_id,
            source,
            created_at,
        });
    }
    let mut found: HashMap<Uuid, Model> = rows
        .into_iter()
        .map(|(id, name, mlflow_name, aliases, created_at, updated_at)| {
            let model = Model {
                id: id.into(),
                tenant_id: tenant,
                name,
                mlflow_name,
                aliases: aliases.0,
                versions: by_model.remove(&id).unwrap_or_default(),
                created_at,
                updated_at,
            };
            (id, model)
        })
        .collect();
    Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
}
