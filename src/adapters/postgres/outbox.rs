//! The outbox on PostgreSQL: events appended inside each unit of work, the tenant's audit
//! trail, and the relay's cross-tenant access through the SECURITY DEFINER functions of the
//! outbox migration.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::adapters::postgres::{prepare, PgStore};
use crate::adapters::sql::{db_error, events_page, Dialect, EVENT_COLUMNS};
use crate::core::events::{Backlog, DomainEvent, EventFilter, StoredEvent};
use crate::core::pagination::PageRequest;
use crate::core::ports::{EventLog, Outbox};
use crate::core::{Error, Result, TenantId};

/// The events of a unit of work as parallel arrays, bound to consecutive parameters.
pub(super) struct EventColumns {
    ids: Vec<Uuid>,
    tenants: Vec<Uuid>,
    kinds: Vec<&'static str>,
    aggregates: Vec<Uuid>,
    types: Vec<String>,
    data: Vec<String>,
    times: Vec<DateTime<Utc>>,
}

impl EventColumns {
    pub(super) fn of(events: &[DomainEvent]) -> Self {
        Self {
            ids: events.iter().map(|e| e.id).collect(),
            tenants: events.iter().map(|e| *e.tenant_id.as_uuid()).collect(),
            kinds: events.iter().map(|e| e.aggregate_kind.as_str()).collect(),
            aggregates: events.iter().map(|e| e.aggregate_id).collect(),
            types: events.iter().map(|e| e.event_type.clone()).collect(),
            data: events.iter().map(|e| e.data.to_string()).collect(),
            times: events.iter().map(|e| e.occurred_at).collect(),
        }
    }

    /// A CTE named `events` that appends the events in order, reading parameters
    /// `$first`..`$first+6`; hot paths put it into the statement that writes the aggregate,
    /// saving a round trip.
    pub(super) fn cte(first: usize) -> String {
        let p: Vec<String> = (first..first + 7).map(|n| format!("${n}")).collect();
        format!(
            "events AS ( \
               INSERT INTO outbox_events \
                 (id, tenant_id, aggregate_type, aggregate_id, event_type, data, occurred_at) \
               SELECT id, tenant_id, kind, aggregate_id, event_type, data, occurred_at \
               FROM UNNEST({}::uuid[], {}::uuid[], {}::text[], {}::uuid[], {}::text[], \
                           {}::json[], {}::timestamptz[]) WITH ORDINALITY \
                 AS e(id, tenant_id, kind, aggregate_id, event_type, data, occurred_at, position) \
               ORDER BY position)",
            p[0], p[1], p[2], p[3], p[4], p[5], p[6]
        )
    }

    pub(super) fn bind<'q>(
        self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(self.ids)
            .bind(self.tenants)
            .bind(self.kinds)
            .bind(self.aggregates)
            .bind(self.types)
            .bind(self.data)
            .bind(self.times)
    }
}

/// Appends `events` to the outbox within `tx`, in order.
pub(super) async fn append_events(
    tx: &mut Transaction<'static, Postgres>,
    events: &[DomainEvent],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let sql = format!("WITH {} SELECT 1", EventColumns::cte(1));
    EventColumns::of(events)
        .bind(sqlx::query(&sql))
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}

fn stored_event(row: &PgRow) -> Result<StoredEvent> {
    let kind: String = row.try_get("aggregate_type").map_err(db_error)?;
    let data: Json<serde_json::Value> = row.try_get("data").map_err(db_error)?;
    Ok(StoredEvent {
        event: DomainEvent {
            id: row.try_get("id").map_err(db_error)?,
            tenant_id: TenantId::from_uuid(row.try_get("tenant_id").map_err(db_error)?),
            aggregate_kind: kind
                .parse()
                .map_err(|e: String| Error::Internal(anyhow::anyhow!(e)))?,
            aggregate_id: row.try_get("aggregate_id").map_err(db_error)?,
            event_type: row.try_get("event_type").map_err(db_error)?,
            data: data.0,
            occurred_at: row.try_get("occurred_at").map_err(db_error)?,
        },
        sequence: row.try_get("seq").map_err(db_error)?,
        published_at: row.try_get("published_at").map_err(db_error)?,
    })
}

#[async_trait]
impl EventLog for PgStore {
    async fn list_events(
        &self,
        tenant: TenantId,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Vec<StoredEvent>> {
        let sql = events_page(Dialect::Postgres, tenant, filter, page);
        let mut tx = self.begin_for(tenant).await?;
        let rows = prepare(&sql).fetch_all(&mut *tx).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        rows.iter().map(stored_event).collect()
    }
}

#[async_trait]
impl Outbox for PgStore {
    async fn claim(
        &self,
        relay: &str,
        max_aggregates: u32,
        lease: Duration,
    ) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM outbox_claim($1, $2, $3) ORDER BY seq"
        ))
        .bind(relay)
        .bind(i32::try_from(max_aggregates).unwrap_or(i32::MAX))
        .bind(i32::try_from(lease.as_secs()).unwrap_or(i32::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(db_error)?;
        rows.iter().map(stored_event).collect()
    }

    async fn mark_published(&self, sequences: &[i64]) -> Result<()> {
        sqlx::query("SELECT outbox_mark_published($1)")
            .bind(sequences)
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn release(&self, relay: &str, sequences: &[i64], error: &str) -> Result<()> {
        sqlx::query("SELECT outbox_release($1, $2, $3)")
            .bind(relay)
            .bind(sequences)
            .bind(error)
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn backlog(&self) -> Result<Backlog> {
        let (pending, oldest): (i64, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT pending, oldest FROM outbox_backlog()")
                .fetch_one(self.pool())
                .await
                .map_err(db_error)?;
        Ok(Backlog { pending, oldest })
    }

    async fn purge_published(&self, before: DateTime<Utc>) -> Result<u64> {
        let deleted: i64 = sqlx::query_scalar("SELECT outbox_purge_published($1)")
            .bind(before)
            .fetch_one(self.pool())
            .await
            .map_err(db_error)?;
        Ok(u64::try_from(deleted).unwrap_or_default())
    }
}
