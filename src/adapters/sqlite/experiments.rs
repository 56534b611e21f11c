use async_trait::async_trait;

use crate::adapters::sql::{db_error, experiments_page, to_millis, Dialect, EXPERIMENT_COLUMNS};
use crate::adapters::sqlite::{prepare, rows, SqliteStore};
use crate::core::events::DomainEvent;
use crate::core::experiment::{Experiment, ExperimentFilter};
use crate::core::pagination::PageRequest;
use crate::core::ports::ExperimentStore;
use crate::core::{Error, ExperimentId, Result, TenantId};

#[async_trait]
impl ExperimentStore for SqliteStore {
    async fn insert_experiment(
        &self,
        tenant: TenantId,
        experiment: &Experiment,
        events: &[DomainEvent],
    ) -> Result<()> {
        let tags =
            serde_json::to_string(&experiment.tags).map_err(|e| Error::Internal(e.into()))?;
        let mut tx = self.writer.begin().await.map_err(db_error)?;
        sqlx::query(
            "INSERT INTO experiments \
             (tenant_id, id, name, description, tags, created_at, updated_at, version) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.as_uuid())
        .bind(experiment.id.as_uuid())
        .bind(&experiment.name)
        .bind(&experiment.description)
        .bind(tags)
        .bind(to_millis(experiment.created_at))
        .bind(to_millis(experiment.updated_at))
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
        let row = sqlx::query(&format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        row.map(|r| rows::experiment(&r, tenant)).transpose()
    }

    async fn list_experiments(
        &self,
        tenant: TenantId,
        filter: &ExperimentFilter,
        page: &PageRequest,
    ) -> Result<Vec<Experiment>> {
        let sql = experiments_page(Dialect::Sqlite, tenant, filter, page);
        let found = prepare(&sql)
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        found.iter().map(|r| rows::experiment(r, tenant)).collect()
    }
}
