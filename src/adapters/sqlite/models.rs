use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use sqlx::SqliteConnection;
use uuid::Uuid;

use crate::adapters::sql::{db_error, from_millis, to_millis, Bind, Dialect, Sql};
use crate::adapters::sqlite::{prepare, SqliteStore};
use crate::core::model::{Model, ModelVersion, Promotion};
use crate::core::pagination::PageRequest;
use crate::core::ports::ModelStore;
use crate::core::{Error, ModelId, Result, TenantId};

#[async_trait]
impl ModelStore for SqliteStore {
    async fn record_promotion(&self, promotion: &Promotion) -> Result<Model> {
        let tenant = promotion.tenant;
        let mut tx = self.writer.begin().await.map_err(db_error)?;
        let at = to_millis(promotion.at);
        sqlx::query(
            "INSERT INTO models (tenant_id, id, name, mlflow_name, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(tenant.as_uuid())
        .bind(promotion.proposed_model_id.as_uuid())
        .bind(&promotion.model_name)
        .bind(&promotion.registered.name)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let (id,): (Uuid,) =
            sqlx::query_as("SELECT id FROM models WHERE tenant_id = ? AND name = ?")
                .bind(tenant.as_uuid())
                .bind(&promotion.model_name)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO model_versions (tenant_id, model_id, version, run_id, experiment_id, \
               mlflow_run_id, source, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (tenant_id, model_id, version) DO NOTHING",
        )
        .bind(tenant.as_uuid())
        .bind(id)
        .bind(promotion.registered.version)
        .bind(promotion.run_id.as_uuid())
        .bind(promotion.experiment_id.as_uuid())
        .bind(&promotion.mlflow_run_id)
        .bind(&promotion.registered.source)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        // Aliases are validated (letters, digits, '_' and '-'), so the JSON path is well-formed.
        sqlx::query(
            "UPDATE models SET aliases = json_set(aliases, ?3, ?4), mlflow_name = ?5, \
               updated_at = ?6, version = version + 1 \
             WHERE tenant_id = ?1 AND id = ?2",
        )
        .bind(tenant.as_uuid())
        .bind(id)
        .bind(format!("$.\"{}\"", promotion.alias))
        .bind(promotion.registered.version)
        .bind(&promotion.registered.name)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let model_id = ModelId::from(id);
        let model = load_models(&mut tx, tenant, &[id]).await?.pop();
        self.commit_with_events(tx, &[promotion.event(model_id)])
            .await?;
        model.ok_or_else(|| Error::not_found("model", model_id))
    }

    async fn find_model(&self, tenant: TenantId, id: ModelId) -> Result<Option<Model>> {
        let mut conn = self.reader.acquire().await.map_err(db_error)?;
        Ok(load_models(&mut conn, tenant, &[*id.as_uuid()])
            .await?
            .pop())
    }

    async fn list_models(&self, tenant: TenantId, page: &PageRequest) -> Result<Vec<Model>> {
        let mut tx = self.reader.begin().await.map_err(db_error)?;
        let mut sql = Sql::new(Dialect::Sqlite);
        sql.push("SELECT id FROM models WHERE tenant_id = ")
            .bind(Bind::Uuid(*tenant.as_uuid()));
        if let Some(after) = &page.after {
            sql.push(" AND id < ").bind(Bind::Uuid(after.id));
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .bind(Bind::Int(page.fetch_limit()));
        let rows = prepare(&sql).fetch_all(&mut *tx).await.map_err(db_error)?;
        let ids = rows
            .iter()
            .map(|row| sqlx::Row::try_get::<Uuid, _>(row, "id").map_err(db_error))
            .collect::<Result<Vec<_>>>()?;
        let models = load_models(&mut tx, tenant, &ids).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(models)
    }
}

type ModelRow = (Uuid, String, String, String, i64, i64);
type VersionRow = (Uuid, i64, Uuid, Uuid, String, String, i64);

/// The models with these ids and their versions, in the order of `ids`.
async fn load_models(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    ids: &[Uuid],
) -> Result<Vec<Model>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::new(Dialect::Sqlite);
    sql.push(
        "SELECT id, name, mlflow_name, aliases, created_at, updated_at FROM models \
         WHERE tenant_id = ",
    )
    .bind(Bind::Uuid(*tenant.as_uuid()));
    sql.push(" AND ").push_in_uuids("id", ids);
    let rows: Vec<ModelRow> = decode(prepare(&sql).fetch_all(&mut *conn).await)?;

    let mut sql = Sql::new(Dialect::Sqlite);
    sql.push(
        "SELECT model_id, version, run_id, experiment_id, mlflow_run_id, source, created_at \
         FROM model_versions WHERE tenant_id = ",
    )
    .bind(Bind::Uuid(*tenant.as_uuid()));
    sql.push(" AND ")
        .push_in_uuids("model_id", ids)
        .push(" ORDER BY model_id, version");
    let versions: Vec<VersionRow> = decode(prepare(&sql).fetch_all(&mut *conn).await)?;

    let mut by_model: HashMap<Uuid, Vec<ModelVersion>> = HashMap::new();
    for (model_id, version, run_id, experiment_id, mlflow_run_id, source, created_at) in versions {
        by_model.entry(model_id).or_default().push(ModelVersion {
            version,
            run_id: run_id.into(),
            experiment_id: experiment_id.into(),
            mlflow_run_id,
            source,
            created_at: from_millis(created_at),
        });
    }
    let mut found = HashMap::new();
    for (id, name, mlflow_name, aliases, created_at, updated_at) in rows {
        let aliases: BTreeMap<String, i64> = serde_json::from_str(&aliases)
            .map_err(|e| Error::Internal(anyhow::anyhow!("unreadable model aliases: {e}")))?;
        let model = Model {
            id: id.into(),
            tenant_id: tenant,
            name,
            mlflow_name,
            aliases,
            versions: by_model.remove(&id).unwrap_or_default(),
            created_at: from_millis(created_at),
            updated_at: from_millis(updated_at),
        };
        found.insert(id, model);
    }
    Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
}

/// Rows decoded into tuples.
fn decode<T>(rows: sqlx::Result<Vec<sqlx::sqlite::SqliteRow>>) -> Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
{
    rows.map_err(db_error)?
        .iter()
        .map(|row| T::from_row(row).map_err(db_error))
        .collect()
}
