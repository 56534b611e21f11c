//! Wiring: picks the adapters the settings ask for, connects the ports to the services, binds
//! the listener, and serves until the shutdown signal, then drains in-flight requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::{info, warn};

use tokio_util::sync::CancellationToken;

use crate::adapters::http_probe::HttpProber;
use crate::adapters::kafka::{EventNaming, KafkaPublisher};
use crate::adapters::mlflow::MlflowClient;
use crate::adapters::postgres::{self, PgStore, RoleCheck};
use crate::adapters::sqlite::SqliteStore;
use crate::adapters::ChangeSignal;
use crate::api::auth::Authenticator;
use crate::api::observability::Metrics;
use crate::api::MlflowAccess;
use crate::api::{self, AppState};
use crate::core::ports::{
    DeploymentStore, EventLog, ExperimentStore, MlflowSyncStore, ModelStore, Outbox, RolloutQueue,
    RunStore, StoreHealth, TrackingServer,
};
use crate::core::services::{
    DeploymentService, EventService, ExperimentService, ModelService, RunService,
};
use crate::settings::{DatabaseBackend, DatabaseSettings, Settings};
use crate::workers::mlflow_sync::MlflowSync;
use crate::workers::outbox_relay::OutboxRelay;
use crate::workers::rollout_controller::{RolloutController, RolloutMetrics};
use crate::workers::DependencyWatch;

/// The storage adapter chosen by `AUMOS_DATABASE__URL`.
#[derive(Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Store {
    /// Opens the configured store; `signal` is raised after every commit that wrote events.
    pub async fn open(settings: &DatabaseSettings, signal: ChangeSignal) -> anyhow::Result<Self> {
        match &settings.backend {
            DatabaseBackend::Postgres { url } => Ok(Self::Postgres(PgStore::connect_lazy(
                url, settings, signal,
            )?)),
            DatabaseBackend::Sqlite { path } => Ok(Self::Sqlite(
                SqliteStore::open(path, settings, signal).await?,
            )),
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

    fn ports(&self) -> Ports {
        fn of<S>(store: &S) -> Ports
        where
            S: ExperimentStore
                + RunStore
                + StoreHealth
                + EventLog
                + Outbox
                + MlflowSyncStore
                + ModelStore
                + DeploymentStore
                + RolloutQueue
                + Clone,
        {
            Ports {
                experiments: Arc::new(store.clone()),
                runs: Arc::new(store.clone()),
                health: Arc::new(store.clone()),
                events: Arc::new(store.clone()),
                outbox: Arc::new(store.clone()),
                mlflow_sync: Arc::new(store.clone()),
                models: Arc::new(store.clone()),
                deployments: Arc::new(store.clone()),
                rollout_queue: Arc::new(store.clone()),
            }
        }
        match self {
            Self::Postgres(s) => of(s),
            Self::Sqlite(s) => of(s),
        }
    }

    async fn close(&self) {
        match self {
            Self::Postgres(s) => s.pool().close().await,
            Self::Sqlite(s) => s.close().await,
        }
    }
}

/// The store seen through each port.
struct Ports {
    experiments: Arc<dyn ExperimentStore>,
    runs: Arc<dyn RunStore>,
    health: Arc<dyn StoreHealth>,
    events: Arc<dyn EventLog>,
    outbox: Arc<dyn Outbox>,
    mlflow_sync: Arc<dyn MlflowSyncStore>,
    models: Arc<dyn ModelStore>,
    deployments: Arc<dyn DeploymentStore>,
    rollout_queue: Arc<dyn RolloutQueue>,
}

/// A built application: bound to its port, ready to serve.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    store: Store,
    relay: Option<OutboxRelay>,
    mlflow_sync: Option<MlflowSync>,
    controller: Option<RolloutController>,
}

impl Application {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let signal = ChangeSignal::default();
        let store = Store::open(&settings.database, signal.clone()).await?;
        if settings.database.migrate_on_start {
            store
                .migrate(&settings.database)
                .await
                .context("database migration failed")?;
        }
        if let Store::Postgres(pg) = &store {
            check_row_level_security(pg, settings).await?;
        }
        let ports = store.ports();
        let naming = EventNaming {
            source: format!("/{}", settings.service_name),
            topic_prefix: settings.kafka.topic_prefix.clone(),
        };
        let relay = if settings.kafka.brokers.is_empty() {
            warn!("AUMOS_KAFKA__BROKERS is empty: events are kept in the outbox, not published");
            None
        } else {
            let publisher = KafkaPublisher::new(&settings.kafka, naming.clone())
                .context("invalid Kafka configuration")?;
            Some(OutboxRelay::new(
                ports.outbox.clone(),
                Arc::new(publisher),
                signal.clone(),
                DependencyWatch::default(),
                settings.outbox.clone(),
            ))
        };
        let (mlflow, mlflow_sync) = match &settings.mlops.mlflow_tracking_uri {
            None => {
                warn!(
                    "AUMOS_MLOPS_MLFLOW_TRACKING_URI is empty: experiments and runs are not \
                     copied to MLflow"
                );
                (None, None)
            }
            Some(uri) => {
                let client = MlflowClient::new(uri.clone(), settings.mlflow.request_timeout)
                    .context("cannot build the MLflow client")?;
                let tracking: Arc<dyn TrackingServer> = Arc::new(client);
                let worker = MlflowSync::new(
                    ports.mlflow_sync.clone(),
                    ports.experiments.clone(),
                    tracking.clone(),
                    signal.clone(),
                    DependencyWatch::default(),
                    settings.mlflow.clone(),
                );
                let access = MlflowAccess {
                    tracking,
                    sync: ports.mlflow_sync.clone(),
                };
                (Some(access), Some(worker))
            }
        };
        let rollout_metrics = RolloutMetrics::default();
        let controller = if settings.rollout.controller.enabled {
            let prober = HttpProber::new(
                settings.rollout.defaults.probe_targets.clone(),
                settings.rollout.probe_timeout,
            )
            .context("cannot build the health prober")?;
            Some(RolloutController::new(
                ports.rollout_queue.clone(),
                ports.deployments.clone(),
                Arc::new(prober),
                signal,
                settings.rollout.controller.clone(),
                rollout_metrics.clone(),
            ))
        } else {
            warn!(
                "AUMOS_CONTROLLER__ENABLED is false: this replica drives no deployments; \
                 another replica must run the controller"
            );
            None
        };
        let deployments = DeploymentService::new(
            ports.deployments.clone(),
            ports.models.clone(),
            settings.rollout.defaults.clone(),
        );
        let authenticator = Arc::new(Authenticator::from_settings(&settings.auth)?);
        let models = ModelService::new(
            ports.models,
            ports.experiments.clone(),
            ports.runs.clone(),
            mlflow.as_ref().map(|m| m.tracking.clone()),
            settings.mlflow.workspaces,
            settings.mlflow.promotion_wait,
        );
        let state = AppState {
            experiments: ExperimentService::new(ports.experiments.clone()),
            runs: RunService::new(ports.experiments, ports.runs),
            models,
            deployments,
            events: EventService::new(ports.events),
            event_source: naming.source,
            metrics: Arc::new(Metrics::new(
                &settings.service_name,
                ports.health.clone(),
                &rollout_metrics,
            )),
            store_health: ports.health,
            outbox: ports.outbox,
            relay_status: relay.as_ref().map(OutboxRelay::status),
            mlflow,
            authenticator,
        };
        let router = api::router(state, &settings.http);
        let address = SocketAddr::new(settings.http.host, settings.http.port);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} (AUMOS_HTTP__HOST/PORT)"))?;
        info!(
            environment = settings.environment.as_str(),
            database = store_backend(&store),
            kafka.brokers = settings.kafka.brokers.join(","),
            mlflow.uri = settings
                .mlops
                .mlflow_tracking_uri
                .as_ref()
                .map(url::Url::as_str)
                .unwrap_or_default(),
            "configuration loaded"
        );
        Ok(Self {
            listener,
            router,
            store,
            relay,
            mlflow_sync,
            controller,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight, stops the
    /// workers (each finishes what it has in hand) and closes the database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let port = self.port();
        let workers = CancellationToken::new();
        let relay = self
            .relay
            .map(|relay| tokio::spawn(relay.run(workers.child_token())));
        let mlflow_sync = self
            .mlflow_sync
            .map(|worker| tokio::spawn(worker.run(workers.child_token())));
        let controller = self
            .controller
            .map(|worker| tokio::spawn(worker.run(workers.child_token())));
        info!(http.port = port, "serving");
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        workers.cancel();
        if let Some(relay) = relay {
            if let Err(error) = relay.await {
                warn!(%error, "the outbox relay ended abnormally");
            }
        }
        if let Some(worker) = mlflow_sync {
            if let Err(error) = worker.await {
                warn!(%error, "the MLflow sync worker ended abnormally");
            }
        }
        if let Some(worker) = controller {
            if let Err(error) = worker.await {
                warn!(%error, "the rollout controller ended abnormally");
            }
        }
        self.store.close().await;
        info!("stopped");
        Ok(served?)
    }
}

fn store_backend(store: &Store) -> &'static str {
    match store {
        Store::Postgres(_) => "postgres",
        Store::Sqlite(_) => "sqlite",
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
