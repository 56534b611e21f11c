//! Wiring: picks the adapters the settings ask for, connects the ports to the services, binds
//! the listener, and serves until the shutdown signal, then drains in-flight requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::adapters::postgres::{self, PgStore, RoleCheck};
use crate::adapters::sqlite::SqliteStore;
use crate::api::auth::Authenticator;
use crate::api::observability::Metrics;
use crate::api::{self, AppState};
use crate::core::ports::{ExperimentStore, RunStore, StoreHealth};
use crate::core::services::{ExperimentService, RunService};
use crate::settings::{DatabaseBackend, DatabaseSettings, Settings};

/// The storage adapter chosen by `AUMOS_DATABASE__URL`.
#[derive(Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Store {
    pub async fn open(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        match &settings.backend {
            DatabaseBackend::Postgres { url } => {
                Ok(Self::Postgres(PgStore::connect_lazy(url, settings)?))
            }
            DatabaseBackend::Sqlite { path } => {
                Ok(Self::Sqlite(SqliteStore::open(path, settings).await?))
            }
        }
    }

    /// Applies pending migrations (as the owner role on PostgreSQL when one is configured).
    pub async fn migrate(&self, settings: &DatabaseSettings) -> anyhow::Result<()> {
        match self {
            Self::Postgres(store) => {
                postgres::migrate(store, settings.migration_url.as_ref()).await
            }
            Self::Sqlite(store) => store.migrate().await,
        }
    }

    fn ports(
        &self,
    ) -> (
        Arc<dyn ExperimentStore>,
        Arc<dyn RunStore>,
        Arc<dyn StoreHealth>,
    ) {
        match self {
            Self::Postgres(s) => (
                Arc::new(s.clone()),
                Arc::new(s.clone()),
                Arc::new(s.clone()),
            ),
            Self::Sqlite(s) => (
                Arc::new(s.clone()),
                Arc::new(s.clone()),
                Arc::new(s.clone()),
            ),
        }
    }

    async fn close(&self) {
        match self {
            Self::Postgres(s) => s.pool().close().await,
            Self::Sqlite(s) => s.close().await,
        }
    }
}

/// A built application: bound to its port, ready to serve.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    store: Store,
}

impl Application {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let store = Store::open(&settings.database).await?;
        if settings.database.migrate_on_start {
            store
                .migrate(&settings.database)
                .await
                .context("database migration failed")?;
        }
        if let Store::Postgres(pg) = &store {
            check_row_level_security(pg, settings).await?;
        }
        let (experiments, runs, health) = store.ports();
        let authenticator = Arc::new(Authenticator::from_settings(&settings.auth)?);
        let state = AppState {
            experiments: ExperimentService::new(experiments.clone()),
            runs: RunService::new(experiments, runs),
            metrics: Arc::new(Metrics::new(&settings.service_name, health.clone())),
            store_health: health,
            authenticator,
        };
        let router = api::router(state, &settings.http);
        let address = SocketAddr::new(settings.http.host, settings.http.port);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} (AUMOS_HTTP__HOST/PORT)"))?;
        Ok(Self {
            listener,
            router,
            store,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        info!(http.port = self.port(), "serving");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await?;
        self.store.close().await;
        info!("stopped");
        Ok(())
    }
}

/// Refuses to serve in production on a role that could read across tenants.
async fn check_row_level_security(store: &PgStore, settings: &Settings) -> anyhow::Result<()> {
    let role = RoleCheck::of(store.pool())
        .await
        .context("cannot inspect the database role")?;
    if !role.enforces_rls() {
        let message = format!(
            "database role {:?} bypasses row-level security (superuser or BYPASSRLS); connect \
             as a role without those attributes and migrate with AUMOS_DATABASE__MIGRATION_URL",
            role.role
        );
        if settings.is_production() {
            anyhow::bail!(message);
        }
        warn!(db.role = %role.role, "{message}");
    } else if role.owns_tables {
        warn!(
            db.role = %role.role,
            "the service's database role owns the tables; use a separate owner role for \
             migrations (AUMOS_DATABASE__MIGRATION_URL) so the service cannot alter policies"
        );
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    info!("shutdown signal received; finishing requests in flight");
}
