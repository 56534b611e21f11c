use async_trait::async_trait;
use sqlx::types::Json;

use crate::adapters::postgres::{prepare, rows, PgStore};
use crate::adapters::sql::{db_error, experiments_page, Dialect, EXPERIMENT_COLUMNS};
use crate::core::events::DomainEvent;
use crate::core::experiment::{Experiment, ExperimentFilter};
use crate::core::pagination::PageRequest;
use crate::core::ports::ExperimentStore;
use crate::core::{ExperimentId, Result, TenantId};

#[async_trait]
impl ExperimentStore for PgStore {
    async fn insert_experiment(
        &self,
        tenant: TenantId,
        experiment: &Experiment,
        events: &[DomainEvent],
    ) -> Result<()> {
        let mut tx = self.begin_for(tenant).await?;
        sqlx::query(
            "INSERT INTO experiments \
             (tenant_id, id, name, description, tags, created_at, updated_at, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(tenant.as_uuid())
        .bind(experiment.id.as_uuid())
        .bind(&experiment.name)
        .bind(&experiment.description)
        .bind(Json(&experiment.tags))
        .bind(experiment.created_at)
        .bind(experiment.updated_at)
        .bind(experiment.version)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit_with_events(tx, events).await
    }

    async fn find_experiment(
        &self,
        tenant: TenantId,
        id: ExperimentId,
    ) -> Result<Option<Experiment>> {
        let mut tx = self.begin_for(tenant).await?;
        let row = sqlx::query(&format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        row.map(|r| rows::experiment(&r, tenant)).transpose()
    }

    async fn list_experiments(
        &self,
        tenant: TenantId,
        filter: &ExperimentFilter,
        page: &PageRequest,
    ) -> Result<Vec<Experiment>> {
        let sql = experiments_page(Dialect::Postgres, tenant, filter, page);
        let mut tx = self.begin_for(tenant).await?;
        let found = prepare(&sql).fetch_all(&mut *tx).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        found.iter().map(|r| rows::experiment(r, tenant)).collect()
    }
}
