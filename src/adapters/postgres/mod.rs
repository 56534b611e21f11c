//! The PostgreSQL adapter: the production store, with row-level security under the
//! application's own tenant filter.
//!
//! Every unit of work runs in a transaction that first sets `app.tenant_id` for that
//! transaction only, so a pooled connection never carries one tenant's setting into another's
//! work, and a statement that forgot its `tenant_id` filter still sees only that tenant's rows.

mod deployments;
mod experiments;
mod migrate;
mod mlflow_sync;
mod models;
mod outbox;
mod rows;
mod runs;

pub use migrate::{migrate, RoleCheck};

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{ConnectOptions, PgPool, Postgres, Transaction};

use crate::adapters::sql::{db_error, Bind, Sql};
use crate::adapters::ChangeSignal;
use crate::core::events::DomainEvent;
use crate::core::ports::{PoolStats, StoreHealth};
use crate::core::{Result, TenantId};
use crate::settings::{DatabaseSettings, Secret};

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    signal: ChangeSignal,
}

impl PgStore {
    /// A pool for `url`; connections are opened on first use.
    pub fn connect_lazy(
        url: &Secret,
        settings: &DatabaseSettings,
        signal: ChangeSignal,
    ) -> anyhow::Result<Self> {
        let options = connect_options(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(options);
        Ok(Self { pool, signal })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction in which row-level security admits only `tenant`'s rows.
    ///
    /// `BEGIN` and setting the tenant travel in one round trip. The tenant is written into the
    /// statement text, which is safe because a `TenantId` prints as a hyphenated UUID and
    /// nothing else.
    pub(crate) async fn begin_for(
        &self,
        tenant: TenantId,
    ) -> Result<Transaction<'static, Postgres>> {
        let begin = format!("BEGIN; SELECT set_config('app.tenant_id', '{tenant}', true)");
        self.pool.begin_with(begin).await.map_err(db_error)
    }

    /// Appends `events` to the outbox in `tx`, commits, and wakes the relay.
    pub(crate) async fn commit_with_events(
        &self,
        mut tx: Transaction<'static, Postgres>,
        events: &[DomainEvent],
    ) -> Result<()> {
        outbox::append_events(&mut tx, events).await?;
        self.commit_signalling(tx, !events.is_empty()).await
    }

    /// Commits, then wakes the relay if the transaction wrote events.
    pub(crate) async fn commit_signalling(
        &self,
        tx: Transaction<'static, Postgres>,
        wrote_events: bool,
    ) -> Result<()> {
        tx.commit().await.map_err(db_error)?;
        if wrote_events {
            self.signal.notify();
        }
        Ok(())
    }
}

/// Connection options that keep statement logging at debug level and never print the password.
pub(crate) fn connect_options(url: &Secret) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = url
        .expose()
        .parse()
        .map_err(|e| anyhow::anyhow!("AUMOS_DATABASE__URL is not a PostgreSQL URL: {e}"))?;
    Ok(options
        .application_name("aumos-mlops-lifecycle")
        .log_statements(log::LevelFilter::Debug)
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(1)))
}

/// Binds the values of a shared query in order.
pub(crate) fn bind_all<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    binds: &[Bind],
) -> Query<'q, Postgres, PgArguments> {
    for value in binds {
        query = match value {
            Bind::Uuid(u) => query.bind(*u),
            Bind::Text(s) => query.bind(s.clone()),
            Bind::Float(f) => query.bind(*f),
            Bind::Int(i) => query.bind(*i),
            Bind::Time(t) => query.bind(*t),
            Bind::UuidArray(ids) => query.bind(ids.clone()),
        };
    }
    query
}

/// A shared query ready to run.
pub(crate) fn prepare(sql: &Sql) -> Query<'_, Postgres, PgArguments> {
    bind_all(sqlx::query(&sql.text), &sql.binds)
}

#[async_trait]
impl StoreHealth for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    fn pool_stats(&self) -> PoolStats {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        PoolStats {
            size,
            idle,
            max: self.pool.options().get_max_connections(),
        }
    }
}
