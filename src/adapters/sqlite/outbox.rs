//! The outbox on SQLite: the same contract as on PostgreSQL. Claims are plain updates: the
//! single writer already serialises relays.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use crate::adapters::sql::{db_error, events_page, from_millis, to_millis, Dialect, EVENT_COLUMNS};
use crate::adapters::sqlite::{prepare, SqliteStore};
use crate::core::events::{Backlog, DomainEvent, EventFilter, StoredEvent};
use crate::core::pagination::PageRequest;
use crate::core::ports::{EventLog, Outbox};
use crate::core::{run, Error, Result, TenantId};

/// Appends `events` to the outbox on `conn` (inside the caller's transaction), in order.
pub(super) async fn append_events(
    conn: &mut SqliteConnection,
    events: &[DomainEvent],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let recorded_at = to_millis(run::now());
    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO outbox_events (id, tenant_id, aggregate_type, aggregate_id, event_type, \
         data, occurred_at, recorded_at) ",
    );
    insert.push_values(events, |mut row, e: &DomainEvent| {
        row.push_bind(e.id)
            .push_bind(*e.tenant_id.as_uuid())
            .push_bind(e.aggregate_kind.as_str())
            .push_bind(e.aggregate_id)
            .push_bind(e.event_type.as_str())
            .push_bind(e.data.to_string())
            .push_bind(to_millis(e.occurred_at))
            .push_bind(recorded_at);
    });
    insert.build().execute(&mut *conn).await.map_err(db_error)?;
    Ok(())
}

fn stored_event(row: &SqliteRow) -> Result<StoredEvent> {
    let kind: String = row.try_get("aggregate_type").map_err(db_error)?;
    let data: String = row.try_get("data").map_err(db_error)?;
    let published_at: Option<i64> = row.try_get("published_at").map_err(db_error)?;
    let unreadable = |e: String| Error::Internal(anyhow::anyhow!("stored event: {e}"));
    Ok(StoredEvent {
        event: DomainEvent {
            id: row.try_get("id").map_err(db_error)?,
            tenant_id: TenantId::from_uuid(row.try_get("tenant_id").map_err(db_error)?),
            aggregate_kind: kind.parse().map_err(unreadable)?,
            aggregate_id: row.try_get("aggregate_id").map_err(db_error)?,
            event_type: row.try_get("event_type").map_err(db_error)?,
            data: serde_json::from_str(&data).map_err(|e| unreadable(e.to_string()))?,
            occurred_at: from_millis(row.try_get("occurred_at").map_err(db_error)?),
        },
        sequence: row.try_get("seq").map_err(db_error)?,
        published_at: published_at.map(from_millis),
    })
}

fn push_sequences(query: &mut QueryBuilder<'_, Sqlite>, sequences: &[i64]) {
    query.push(" AND seq IN (");
    let mut list = query.separated(", ");
    for seq in sequences {
        list.push_bind(*seq);
    }
    query.push(")");
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn list_events(
        &self,
        tenant: TenantId,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Vec<StoredEvent>> {
        let sql = events_page(Dialect::Sqlite, tenant, filter, page);
        let rows = prepare(&sql)
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        rows.iter().map(stored_event).collect()
    }
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn claim(
        &self,
        relay: &str,
        max_aggregates: u32,
        lease: Duration,
    ) -> Result<Vec<StoredEvent>> {
        let now = to_millis(run::now());
        let until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let rows = sqlx::query(&format!(
            "UPDATE outbox_events SET claimed_by = ?1, claimed_until = ?2 \
             WHERE published_at IS NULL AND aggregate_id IN ( \
               SELECT e.aggregate_id FROM outbox_events e \
               WHERE e.published_at IS NULL \
                 AND (e.claimed_until IS NULL OR e.claimed_until < ?3 OR e.claimed_by = ?1) \
                 AND NOT EXISTS (SELECT 1 FROM outbox_events p WHERE p.aggregate_id = \
                     e.aggregate_id AND p.published_at IS NULL AND p.seq < e.seq) \
               ORDER BY e.seq LIMIT ?4) \
             RETURNING {EVENT_COLUMNS}"
        ))
        .bind(relay)
        .bind(until)
        .bind(now)
        .bind(i64::from(max_aggregates))
        .fetch_all(&self.writer)
        .await
        .map_err(db_error)?;
        let mut events = rows.iter().map(stored_event).collect::<Result<Vec<_>>>()?;
        events.sort_by_key(|e| e.sequence);
        Ok(events)
    }

    async fn mark_published(&self, sequences: &[i64]) -> Result<()> {
        if sequences.is_empty() {
            return Ok(());
        }
        let mut update = QueryBuilder::<Sqlite>::new("UPDATE outbox_events SET published_at = ");
        update.push_bind(to_millis(run::now()));
        update.push(", claimed_by = NULL, claimed_until = NULL WHERE published_at IS NULL");
        push_sequences(&mut update, sequences);
        update
            .build()
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn release(&self, relay: &str, sequences: &[i64], error: &str) -> Result<()> {
        if sequences.is_empty() {
            return Ok(());
        }
        let mut update = QueryBuilder::<Sqlite>::new(
            "UPDATE outbox_events SET claimed_by = NULL, claimed_until = NULL, \
             attempts = attempts + 1, last_error = ",
        );
        update
            .push_bind(error)
            .push(" WHERE published_at IS NULL AND claimed_by = ");
        update.push_bind(relay);
        push_sequences(&mut update, sequences);
        update
            .build()
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn backlog(&self) -> Result<Backlog> {
        let (pending, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), min(occurred_at) FROM outbox_events WHERE published_at IS NULL",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(db_error)?;
        Ok(Backlog {
            pending,
            oldest: oldest.map(from_millis),
        })
    }

    async fn purge_published(&self, before: DateTime<Utc>) -> Result<u64> {
        let deleted = sqlx::query(
            "DELETE FROM outbox_events WHERE published_at IS NOT NULL AND published_at < ?",
        )
        .bind(to_millis(before))
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(deleted.rows_affected())
    }
}
