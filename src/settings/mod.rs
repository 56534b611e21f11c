//! Every `AUMOS_*` variable the service reads, its default, and its validation.
//!
//! The `config` crate collects the environment (`__` separates a section from its key, so
//! `AUMOS_HTTP__PORT` is `http.port`); every value arrives as a string and is parsed here, so a
//! bad value stops start-up with an error that names the variable it came from.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

mod rollout;

pub use rollout::{ControllerSettings, RolloutSettings, ROLLOUT_VARIABLES};

/// Every variable: the general ones, then the deployment and controller ones.
pub fn all_variables() -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str)>
{
    VARIABLES.iter().chain(ROLLOUT_VARIABLES.iter())
}

/// Every general variable the service understands, with its default and meaning (the
/// deployment ones are in `rollout::ROLLOUT_VARIABLES`).
///
/// `.env.example` is checked against these tables by a test, so they cannot drift apart.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    (
        "AUMOS_SERVICE_NAME",
        "aumos-mlops-lifecycle",
        "Name used in logs, metrics and event sources",
    ),
    (
        "AUMOS_ENVIRONMENT",
        "development",
        "development, staging or production",
    ),
    (
        "AUMOS_DATA_DIR",
        "data",
        "Directory for the embedded database and the development secret",
    ),
    (
        "AUMOS_LOG_LEVEL",
        "info",
        "tracing filter, e.g. info or aumos_mlops_lifecycle=debug",
    ),
    ("AUMOS_LOG_FORMAT", "text", "text or json"),
    (
        "AUMOS_DATABASE__URL",
        "",
        "Unset: embedded SQLite; postgres://... : PostgreSQL",
    ),
    (
        "AUMOS_DATABASE__MIGRATION_URL",
        "",
        "Owner connection for migrations (PostgreSQL)",
    ),
    (
        "AUMOS_DATABASE__MAX_CONNECTIONS",
        "16",
        "Connection pool size",
    ),
    (
        "AUMOS_DATABASE__ACQUIRE_TIMEOUT_SECONDS",
        "5",
        "Wait for a pooled connection",
    ),
    (
        "AUMOS_DATABASE__MIGRATE_ON_START",
        "true",
        "Run migrations when `serve` starts",
    ),
    (
        "AUMOS_KAFKA__BROKERS",
        "localhost:9092",
        "Kafka bootstrap servers; empty: no publishing",
    ),
    (
        "AUMOS_KAFKA__TOPIC_PREFIX",
        "aumos.mlops.",
        "Prefix of the event topics",
    ),
    (
        "AUMOS_KAFKA__TOPIC_PARTITIONS",
        "3",
        "Partitions of topics the service creates",
    ),
    (
        "AUMOS_KAFKA__TOPIC_REPLICATION_FACTOR",
        "1",
        "Replication factor of those topics",
    ),
    (
        "AUMOS_KAFKA__MESSAGE_TIMEOUT_MS",
        "15000",
        "How long a publish may wait for Kafka",
    ),
    (
        "AUMOS_OUTBOX__BATCH_AGGREGATES",
        "200",
        "Aggregates the relay claims per batch",
    ),
    (
        "AUMOS_OUTBOX__POLL_INTERVAL_MS",
        "250",
        "How often the relay looks for new events",
    ),
    (
        "AUMOS_OUTBOX__LEASE_SECONDS",
        "30",
        "How long a relay holds claimed events",
    ),
    (
        "AUMOS_OUTBOX__MAX_BACKOFF_SECONDS",
        "30",
        "Longest wait between retries to Kafka",
    ),
    (
        "AUMOS_OUTBOX__RETENTION_DAYS",
        "30",
        "Days published events are kept; 0: forever",
    ),
    (
        "AUMOS_HTTP__HOST",
        "0.0.0.0",
        "Address the HTTP server binds",
    ),
    ("AUMOS_HTTP__PORT", "8000", "Port the HTTP server binds"),
    (
        "AUMOS_HTTP__BODY_LIMIT_BYTES",
        "4194304",
        "Largest accepted request body",
    ),
    (
        "AUMOS_HTTP__REQUEST_TIMEOUT_SECONDS",
        "30",
        "Requests running longer get 503",
    ),
    (
        "AUMOS_AUTH__JWT_SECRET",
        "",
        "HS256 secret (at least 32 bytes)",
    ),
    (
        "AUMOS_AUTH__JWKS_URL",
        "",
        "JWKS endpoint for RS256/ES256 tokens",
    ),
    (
        "AUMOS_AUTH__JWKS_REFRESH_SECONDS",
        "300",
        "How often the JWKS is fetched again",
    ),
    ("AUMOS_AUTH__ISSUER", "", "Required `iss` claim, when set"),
    ("AUMOS_AUTH__AUDIENCE", "", "Required `aud` claim, when set"),
    (
        "AUMOS_AUTH__LEEWAY_SECONDS",
        "30",
        "Clock skew allowed on exp and nbf",
    ),
    (
        "AUMOS_MLOPS_MLFLOW_TRACKING_URI",
        "http://localhost:5000",
        "MLflow server; empty: off",
    ),
    (
        "AUMOS_MLFLOW__WORKSPACES",
        "false",
        "true: each tenant gets its own MLflow workspace (server run with --enable-workspaces)",
    ),
    (
        "AUMOS_MLFLOW__REQUEST_TIMEOUT_SECONDS",
        "10",
        "How long one call to MLflow may take",
    ),
    (
        "AUMOS_MLFLOW__SYNC_BATCH",
        "50",
        "Experiments and runs a sync worker claims per pass",
    ),
    (
        "AUMOS_MLFLOW__SYNC_CONCURRENCY",
        "4",
        "Runs a sync worker copies at once",
    ),
    (
        "AUMOS_MLFLOW__POLL_INTERVAL_MS",
        "500",
        "Sync poll interval when nothing is waiting",
    ),
    (
        "AUMOS_MLFLOW__LEASE_SECONDS",
        "60",
        "How long a sync claim keeps other replicas off",
    ),
    (
        "AUMOS_MLFLOW__MAX_BACKOFF_SECONDS",
        "30",
        "Cap of the retry backoff while MLflow is down",
    ),
    (
        "AUMOS_MLFLOW__PROMOTION_WAIT_SECONDS",
        "10",
        "How long a promotion waits for its run to reach MLflow",
    ),
    (
        "AUMOS_MLOPS_FEAST_REGISTRY_PATH",
        "data/registry.db",
        "Feast registry location",
    ),
    (
        "AUMOS_MLOPS_CANARY_ERROR_THRESHOLD",
        "0.05",
        "Default error rate that rolls back",
    ),
    (
        "AUMOS_MLOPS_CANARY_STEP_PERCENT",
        "10",
        "Default canary traffic step (1-100)",
    ),
    (
        "AUMOS_MLOPS_MAX_CONCURRENT_RETRAINING_JOBS",
        "5",
        "Running retraining jobs per tenant",
    ),
];

/// A value that must never reach a log line: `Debug` and `Display` print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A start-up configuration error that names the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct SettingsError {
    pub variable: String,
    pub message: String,
}

impl SettingsError {
    fn new(variable: &str, message: impl Into<String>) -> Self {
        Self {
            variable: variable.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Staging,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub service_name: String,
    pub environment: Environment,
    pub data_dir: PathBuf,
    pub log_level: String,
    pub log_format: LogFormat,
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    pub outbox: OutboxSettings,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub mlops: MlopsSettings,
    pub mlflow: MlflowSettings,
    pub rollout: RolloutSettings,
    /// `AUMOS_*` variables that were set but mean nothing to this service (likely typos).
    pub unknown_variables: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum DatabaseBackend {
    Sqlite { path: PathBuf },
    Postgres { url: Secret },
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub backend: DatabaseBackend,
    /// Connection used to run migrations; the service's own connection when unset.
    pub migration_url: Option<Secret>,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers; empty turns publishing off.
    pub brokers: Vec<String>,
    pub topic_prefix: String,
    pub topic_partitions: i32,
    pub topic_replication_factor: i32,
    pub message_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct OutboxSettings {
    pub batch_aggregates: u32,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub max_backoff: Duration,
    /// How long published events are kept; `None` keeps them forever.
    pub retention: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub host: IpAddr,
    pub port: u16,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
}

/// Where the keys that verify bearer tokens come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A shared HS256 secret.
    Secret(Secret),
    /// A JWKS endpoint with RS256/ES256 keys.
    Jwks { url: Url, refresh: Duration },
    /// Development only: an HS256 secret generated once and kept in this file.
    DevelopmentSecretFile(PathBuf),
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub keys: KeySource,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct MlopsSettings {
    /// MLflow tracking server; `None` when the variable is set to an empty value.
    pub mlflow_tracking_uri: Option<Url>,
    pub feast_registry_path: String,
    pub canary_error_threshold: f64,
    pub canary_step_percent: u8,
    pub max_concurrent_retraining_jobs: u32,
}

/// How the service talks to MLflow (the server itself is `MlopsSettings::mlflow_tracking_uri`).
#[derive(Debug, Clone)]
pub struct MlflowSettings {
    /// Each tenant in its own MLflow workspace instead of tenant-prefixed names.
    pub workspaces: bool,
    pub request_timeout: Duration,
    pub sync_batch: u32,
    pub sync_concurrency: usize,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub max_backoff: Duration,
    pub promotion_wait: Duration,
}

/// The variables as the `config` crate collects them: every value a string, parsed later.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    service_name: Option<String>,
    environment: Option<String>,
    data_dir: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    database: RawSection,
    kafka: RawSection,
    outbox: RawSection,
    mlflow: RawSection,
    controller: RawSection,
    http: RawSection,
    auth: RawSection,
    mlops_mlflow_tracking_uri: Option<String>,
    mlops_feast_registry_path: Option<String>,
    mlops_canary_error_threshold: Option<String>,
    mlops_canary_step_percent: Option<String>,
    mlops_max_concurrent_retraining_jobs: Option<String>,
    mlops_step_interval_seconds: Option<String>,
    mlops_probe_interval_seconds: Option<String>,
    mlops_probe_timeout_ms: Option<String>,
    mlops_probe_allowed_networks: Option<String>,
    mlops_analysis_window_seconds: Option<String>,
    mlops_min_samples: Option<String>,
    mlops_progress_deadline_seconds: Option<String>,
    mlops_rollback_window_seconds: Option<String>,
    mlops_blue_green_pre_promotion_checks: Option<String>,
    mlops_shadow_mirror_percent: Option<String>,
    mlops_shadow_duration_seconds: Option<String>,
    mlops_ab_test_duration_seconds: Option<String>,
}

type RawSection = HashMap<String, String>;

/// Looks values up by variable name, falling back to the documented default.
struct Lookup<'a> {
    raw: &'a Raw,
}

impl Lookup<'_> {
    fn get(&self, variable: &str) -> Option<String> {
        let key = variable.trim_start_matches("AUMOS_").to_lowercase();
        let value = match key.split_once("__") {
            Some((section, field)) => {
                let table = match section {
                    "database" => &self.raw.database,
                    "kafka" => &self.raw.kafka,
                    "outbox" => &self.raw.outbox,
                    "mlflow" => &self.raw.mlflow,
                    "controller" => &self.raw.controller,
                    "http" => &self.raw.http,
                    "auth" => &self.raw.auth,
                    _ => return default_of(variable),
                };
                table.get(field).cloned()
            }
            None => match key.as_str() {
                "service_name" => self.raw.service_name.clone(),
                "environment" => self.raw.environment.clone(),
                "data_dir" => self.raw.data_dir.clone(),
                "log_level" => self.raw.log_level.clone(),
                "log_format" => self.raw.log_format.clone(),
                "mlops_mlflow_tracking_uri" => self.raw.mlops_mlflow_tracking_uri.clone(),
                "mlops_feast_registry_path" => self.raw.mlops_feast_registry_path.clone(),
                "mlops_canary_error_threshold" => self.raw.mlops_canary_error_threshold.clone(),
                "mlops_canary_step_percent" => self.raw.mlops_canary_step_percent.clone(),
                "mlops_max_concurrent_retraining_jobs" => {
                    self.raw.mlops_max_concurrent_retraining_jobs.clone()
                }
                other => self.rollout_value(other),
            },
        };
        value.or_else(|| default_of(variable))
    }

    fn rollout_value(&self, key: &str) -> Option<String> {
        let raw = self.raw;
        match key {
            "mlops_step_interval_seconds" => raw.mlops_step_interval_seconds.clone(),
            "mlops_probe_interval_seconds" => raw.mlops_probe_interval_seconds.clone(),
            "mlops_probe_timeout_ms" => raw.mlops_probe_timeout_ms.clone(),
            "mlops_probe_allowed_networks" => raw.mlops_probe_allowed_networks.clone(),
            "mlops_analysis_window_seconds" => raw.mlops_analysis_window_seconds.clone(),
            "mlops_min_samples" => raw.mlops_min_samples.clone(),
            "mlops_progress_deadline_seconds" => raw.mlops_progress_deadline_seconds.clone(),
            "mlops_rollback_window_seconds" => raw.mlops_rollback_window_seconds.clone(),
            "mlops_blue_green_pre_promotion_checks" => {
                raw.mlops_blue_green_pre_promotion_checks.clone()
            }
            "mlops_shadow_mirror_percent" => raw.mlops_shadow_mirror_percent.clone(),
            "mlops_shadow_duration_seconds" => raw.mlops_shadow_duration_seconds.clone(),
            "mlops_ab_test_duration_seconds" => raw.mlops_ab_test_duration_seconds.clone(),
            _ => None,
        }
    }

    /// The value, or `None` when it is unset or empty.
    fn optional(&self, variable: &str) -> Option<String> {
        self.get(variable)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, variable: &str) -> Result<String, SettingsError> {
        self.optional(variable)
            .ok_or_else(|| SettingsError::new(variable, "must not be empty"))
    }

    fn parse<T: std::str::FromStr>(
        &self,
        variable: &str,
        expected: &str,
    ) -> Result<T, SettingsError> {
        let value = self.required(variable)?;
        value.parse().map_err(|_| {
            SettingsError::new(variable, format!("expected {expected}, got {value:?}"))
        })
    }

    fn bool(&self, variable: &str) -> Result<bool, SettingsError> {
        let value = self.required(variable)?;
        match value.to_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(SettingsError::new(
                variable,
                format!("expected true or false, got {value:?}"),
            )),
        }
    }

    fn seconds(&self, variable: &str, min: u64, max: u64) -> Result<Duration, SettingsError> {
        let n = self.ranged::<u64>(variable, min, max, "a whole number of seconds")?;
        Ok(Duration::from_secs(n))
    }

    fn ranged<T>(&self, variable: &str, min: T, max: T, what: &str) -> Result<T, SettingsError>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let expected = format!("{what} between {min} and {max}");
        let n: T = self.parse(variable, &expected)?;
        if n < min || n > max {
            return Err(SettingsError::new(
                variable,
                format!("expected {expected}, got {n}"),
            ));
        }
        Ok(n)
    }
}

fn default_of(variable: &str) -> Option<String> {
    all_variables()
        .find(|(name, _, _)| *name == variable)
        .map(|(_, default, _)| (*default).to_owned())
        .filter(|d| !d.is_empty())
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(vars)
    }

    /// Reads the given variables as if they were the environment (used by tests).
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, SettingsError> {
        let aumos: HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("AUMOS_"))
            .collect();
        let unknown_variables = aumos
            .keys()
            .filter(|k| !all_variables().any(|(name, _, _)| name == k))
            .cloned()
            .collect();
        let raw: Raw = config::Config::builder()
            .add_source(
                config::Environment::with_prefix("AUMOS")
                    .prefix_separator("_")
                    .separator("__")
                    .source(Some(aumos)),
            )
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| SettingsError::new("AUMOS_*", e.to_string()))?;
        let mut settings = Self::from_raw(&Lookup { raw: &raw })?;
        settings.unknown_variables = unknown_variables;
        settings.unknown_variables.sort();
        Ok(settings)
    }

    fn from_raw(env: &Lookup<'_>) -> Result<Self, SettingsError> {
        let environment = match env.required("AUMOS_ENVIRONMENT")?.to_lowercase().as_str() {
            "development" | "dev" => Environment::Development,
            "staging" => Environment::Staging,
            "production" | "prod" => Environment::Production,
            other => {
                return Err(SettingsError::new(
                    "AUMOS_ENVIRONMENT",
                    format!("expected development, staging or production, got {other:?}"),
                ))
            }
        };
        let data_dir = PathBuf::from(env.required("AUMOS_DATA_DIR")?);
        let log_format = match env.required("AUMOS_LOG_FORMAT")?.to_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(SettingsError::new(
                    "AUMOS_LOG_FORMAT",
                    format!("expected text or json, got {other:?}"),
                ))
            }
        };
        let mlops = mlops_settings(env)?;
        let rollout = rollout::rollout_settings(env, &mlops)?;
        Ok(Self {
            rollout,
            service_name: env.required("AUMOS_SERVICE_NAME")?,
            environment,
            log_level: env.required("AUMOS_LOG_LEVEL")?,
            log_format,
            database: database_settings(env, &data_dir)?,
            kafka: kafka_settings(env)?,
            outbox: outbox_settings(env)?,
            http: HttpSettings {
                host: env.parse("AUMOS_HTTP__HOST", "an IP address such as 0.0.0.0")?,
                port: env.ranged("AUMOS_HTTP__PORT", 0, 65535, "a port")?,
                body_limit_bytes: env.ranged(
                    "AUMOS_HTTP__BODY_LIMIT_BYTES",
                    1024,
                    256 * 1024 * 1024,
                    "a size in bytes",
                )?,
                request_timeout: env.seconds("AUMOS_HTTP__REQUEST_TIMEOUT_SECONDS", 1, 3600)?,
            },
            auth: auth_settings(env, environment, &data_dir)?,
            mlops,
            mlflow: mlflow_settings(env)?,
            data_dir,
            unknown_variables: Vec::new(),
        })
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }
}

fn database_settings(
    env: &Lookup<'_>,
    data_dir: &std::path::Path,
) -> Result<DatabaseSettings, SettingsError> {
    let backend = match env.optional("AUMOS_DATABASE__URL") {
        None => DatabaseBackend::Sqlite {
            path: data_dir.join("mlops.db"),
        },
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Url::parse(&url).map_err(|e| {
                SettingsError::new("AUMOS_DATABASE__URL", format!("not a valid URL: {e}"))
            })?;
            DatabaseBackend::Postgres {
                url: Secret::new(url),
            }
        }
        Some(url) if url.starts_with("sqlite:") => {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(SettingsError::new(
                    "AUMOS_DATABASE__URL",
                    "sqlite: URL has no path",
                ));
            }
            DatabaseBackend::Sqlite {
                path: PathBuf::from(path),
            }
        }
        Some(_) => {
            return Err(SettingsError::new(
                "AUMOS_DATABASE__URL",
                "expected a postgres://, postgresql:// or sqlite: URL, or no value",
            ))
        }
    };
    let migration_url = env
        .optional("AUMOS_DATABASE__MIGRATION_URL")
        .map(Secret::new);
    if migration_url.is_some() && matches!(backend, DatabaseBackend::Sqlite { .. }) {
        return Err(SettingsError::new(
            "AUMOS_DATABASE__MIGRATION_URL",
            "only applies to PostgreSQL; unset it or set AUMOS_DATABASE__URL to postgres://...",
        ));
    }
    Ok(DatabaseSettings {
        backend,
        migration_url,
        max_connections: env.ranged("AUMOS_DATABASE__MAX_CONNECTIONS", 1, 1000, "a pool size")?,
        acquire_timeout: env.seconds("AUMOS_DATABASE__ACQUIRE_TIMEOUT_SECONDS", 1, 600)?,
        migrate_on_start: env.bool("AUMOS_DATABASE__MIGRATE_ON_START")?,
    })
}

fn kafka_settings(env: &Lookup<'_>) -> Result<KafkaSettings, SettingsError> {
    let topic_prefix = env.get("AUMOS_KAFKA__TOPIC_PREFIX").unwrap_or_default();
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic_prefix.len() > 200 || !topic_prefix.chars().all(valid) {
        return Err(SettingsError::new(
            "AUMOS_KAFKA__TOPIC_PREFIX",
            "may contain only letters, digits, '.', '_' and '-' (at most 200)",
        ));
    }
    Ok(KafkaSettings {
        brokers: env
            .get("AUMOS_KAFKA__BROKERS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(str::to_owned)
            .collect(),
        topic_prefix,
        topic_partitions: env.ranged("AUMOS_KAFKA__TOPIC_PARTITIONS", 1, 10_000, "a count")?,
        topic_replication_factor: env.ranged(
            "AUMOS_KAFKA__TOPIC_REPLICATION_FACTOR",
            1,
            32,
            "a count",
        )?,
        message_timeout: Duration::from_millis(env.ranged(
            "AUMOS_KAFKA__MESSAGE_TIMEOUT_MS",
            1000,
            600_000,
            "milliseconds",
        )?),
    })
}

fn outbox_settings(env: &Lookup<'_>) -> Result<OutboxSettings, SettingsError> {
    let days: u64 = env.ranged("AUMOS_OUTBOX__RETENTION_DAYS", 0, 36_500, "days")?;
    Ok(OutboxSettings {
        batch_aggregates: env.ranged("AUMOS_OUTBOX__BATCH_AGGREGATES", 1, 10_000, "a count")?,
        poll_interval: Duration::from_millis(env.ranged(
            "AUMOS_OUTBOX__POLL_INTERVAL_MS",
            10,
            60_000,
            "milliseconds",
        )?),
        lease: env.seconds("AUMOS_OUTBOX__LEASE_SECONDS", 5, 3600)?,
        max_backoff: env.seconds("AUMOS_OUTBOX__MAX_BACKOFF_SECONDS", 1, 3600)?,
        retention: (days > 0).then(|| Duration::from_secs(days * 86_400)),
    })
}

fn mlflow_settings(env: &Lookup<'_>) -> Result<MlflowSettings, SettingsError> {
    Ok(MlflowSettings {
        workspaces: env.bool("AUMOS_MLFLOW__WORKSPACES")?,
        request_timeout: env.seconds("AUMOS_MLFLOW__REQUEST_TIMEOUT_SECONDS", 1, 600)?,
        sync_batch: env.ranged("AUMOS_MLFLOW__SYNC_BATCH", 1, 10_000, "a count")?,
        sync_concurrency: env.ranged("AUMOS_MLFLOW__SYNC_CONCURRENCY", 1, 64, "a count")?,
        poll_interval: Duration::from_millis(env.ranged(
            "AUMOS_MLFLOW__POLL_INTERVAL_MS",
            10,
            60_000,
            "milliseconds",
        )?),
        lease: env.seconds("AUMOS_MLFLOW__LEASE_SECONDS", 5, 3600)?,
        max_backoff: env.seconds("AUMOS_MLFLOW__MAX_BACKOFF_SECONDS", 1, 3600)?,
        promotion_wait: env.seconds("AUMOS_MLFLOW__PROMOTION_WAIT_SECONDS", 0, 300)?,
    })
}

fn auth_settings(
    env: &Lookup<'_>,
    environment: Environment,
    data_dir: &std::path::Path,
) -> Result<AuthSettings, SettingsError> {
    let secret = env.optional("AUMOS_AUTH__JWT_SECRET");
    let jwks = env.optional("AUMOS_AUTH__JWKS_URL");
    let keys = match (secret, jwks) {
        (Some(_), Some(_)) => {
            return Err(SettingsError::new(
                "AUMOS_AUTH__JWKS_URL",
                "set either AUMOS_AUTH__JWT_SECRET or AUMOS_AUTH__JWKS_URL, not both",
            ))
        }
        (Some(secret), None) => {
            if secret.len() < 32 {
                return Err(SettingsError::new(
                    "AUMOS_AUTH__JWT_SECRET",
                    format!("must be at least 32 bytes long, got {}", secret.len()),
                ));
            }
            KeySource::Secret(Secret::new(secret))
        }
        (None, Some(url)) => {
            let url = Url::parse(&url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    SettingsError::new(
                        "AUMOS_AUTH__JWKS_URL",
                        format!("not an http(s) URL: {url:?}"),
                    )
                })?;
            KeySource::Jwks {
                url,
                refresh: env.seconds("AUMOS_AUTH__JWKS_REFRESH_SECONDS", 10, 86400)?,
            }
        }
        (None, None) if environment == Environment::Production => {
            return Err(SettingsError::new(
                "AUMOS_AUTH__JWT_SECRET",
                "production needs AUMOS_AUTH__JWT_SECRET or AUMOS_AUTH__JWKS_URL",
            ))
        }
        (None, None) => KeySource::DevelopmentSecretFile(data_dir.join("dev-jwt-secret")),
    };
    Ok(AuthSettings {
        keys,
        issuer: env.optional("AUMOS_AUTH__ISSUER"),
        audience: env.optional("AUMOS_AUTH__AUDIENCE"),
        leeway_seconds: env.ranged("AUMOS_AUTH__LEEWAY_SECONDS", 0, 600, "seconds")?,
    })
}

fn mlops_settings(env: &Lookup<'_>) -> Result<MlopsSettings, SettingsError> {
    let mlflow_tracking_uri = match env.get("AUMOS_MLOPS_MLFLOW_TRACKING_URI") {
        Some(uri) if !uri.trim().is_empty() => Some(
            Url::parse(uri.trim())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    SettingsError::new(
                        "AUMOS_MLOPS_MLFLOW_TRACKING_URI",
                        format!("not an http(s) URL: {uri:?}"),
                    )
                })?,
        ),
        _ => None,
    };
    let threshold: f64 = env.parse(
        "AUMOS_MLOPS_CANARY_ERROR_THRESHOLD",
        "a fraction between 0 and 1",
    )?;
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(SettingsError::new(
            "AUMOS_MLOPS_CANARY_ERROR_THRESHOLD",
            format!("expected a fraction between 0 and 1 (exclusive), got {threshold}"),
        ));
    }
    Ok(MlopsSettings {
        mlflow_tracking_uri,
        feast_registry_path: env.required("AUMOS_MLOPS_FEAST_REGISTRY_PATH")?,
        canary_error_threshold: threshold,
        canary_step_percent: env.ranged(
            "AUMOS_MLOPS_CANARY_STEP_PERCENT",
            1,
            100,
            "a percentage",
        )?,
        max_concurrent_retraining_jobs: env.ranged(
            "AUMOS_MLOPS_MAX_CONCURRENT_RETRAINING_JOBS",
            1,
            10_000,
            "a job count",
        )?,
    })
}

#[cfg(test)]
mod tests;
