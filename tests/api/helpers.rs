//! The test harness: starts the service in-process on a free port, on SQLite (a fresh file per
//! test) or on PostgreSQL (one database per test process, a fresh tenant per test, connected as
//! a role that cannot bypass row-level security).

use std::collections::HashMap;
use std::sync::OnceLock;

use aumos_mlops_lifecycle::api::auth::{mint, Claims, SCOPE_READ, SCOPE_WRITE};
use aumos_mlops_lifecycle::settings::{Secret, Settings};
use aumos_mlops_lifecycle::startup::Application;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use sqlx::Connection;
use uuid::Uuid;

pub const OWNER_ROLE: &str = "aumos_test_owner";
pub const APP_ROLE: &str = "aumos_test_app";

/// Runs `scenario` once against each storage adapter, as `sqlite` and `postgres` tests.
#[macro_export]
macro_rules! on_both_stores {
    ($(async fn $name:ident($app:ident: TestApp) $body:block)*) => {
        $(
            mod $name {
                use super::*;

                async fn scenario($app: $crate::helpers::TestApp) $body

                #[tokio::test]
                async fn sqlite() {
                    scenario($crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await)
                        .await
                }

                #[tokio::test]
                async fn postgres() {
                    scenario(
                        $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await,
                    )
                    .await
                }
            }
        )*
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Connection URLs of a migrated test database.
#[derive(Debug, Clone)]
pub struct PgDatabase {
    pub name: String,
    pub app_url: String,
    pub owner_url: String,
}

/// The superuser connection that creates roles and databases.
pub fn admin_url() -> String {
    std::env::var("AUMOS_TEST_POSTGRES_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn url_for(role: &str, database: &str) -> String {
    let mut url = url::Url::parse(&admin_url()).expect("AUMOS_TEST_POSTGRES_ADMIN_URL is a URL");
    url.set_username(role).expect("URL takes a user name");
    url.set_password(None).expect("URL takes no password");
    url.set_path(database);
    url.to_string()
}

/// Creates the owner and service roles (once per cluster) and a new database owned by the
/// owner role. The service role is an ordinary login role: no superuser, no BYPASSRLS.
pub async fn create_database() -> PgDatabase {
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("PostgreSQL must run for the tests (scripts/services.sh starts it)");
    for role in [OWNER_ROLE, APP_ROLE] {
        let created = sqlx::query(&format!(
            "CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
        ))
        .execute(&mut admin)
        .await;
        if let Err(sqlx::Error::Database(e)) = &created {
            // Another test process created it first.
            let code = e.code().unwrap_or_default();
            assert!(
                code == "42710" || code == "23505",
                "cannot create role {role}: {e}"
            );
        }
    }
    let name = format!("aumos_test_{}", Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name} OWNER {OWNER_ROLE}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    PgDatabase {
        app_url: url_for(APP_ROLE, &name),
        owner_url: url_for(OWNER_ROLE, &name),
        name,
    }
}

/// The database shared by the tests of this process, created on first use.
pub fn shared_database() -> PgDatabase {
    static DATABASE: OnceLock<PgDatabase> = OnceLock::new();
    DATABASE
        .get_or_init(|| {
            // Its own runtime: the tests' runtimes come and go, this database outlives them.
            std::thread::spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(create_database())
            })
            .join()
            .expect("database set-up")
        })
        .clone()
}

/// With `AUMOS_TEST_LOG` set (a tracing filter such as `aumos_mlops_lifecycle=debug`), the
/// services under test log to the test output: what to reach for when a test fails.
fn init_test_logging() {
    static LOGGING: std::sync::Once = std::sync::Once::new();
    LOGGING.call_once(|| {
        if let Ok(filter) = std::env::var("AUMOS_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub tenant: Uuid,
    pub secret: Secret,
    pub database: Option<PgDatabase>,
    /// Holds the SQLite file and development secret until the test ends.
    _data_dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, &[]).await
    }

    /// Starts the service with extra `AUMOS_*` variables over the test defaults.
    pub async fn spawn_with(backend: Backend, extra: &[(&str, &str)]) -> Self {
        let database = (backend == Backend::Postgres).then(shared_database);
        Self::spawn_on(database, extra).await
    }

    /// Starts the service on `database` (PostgreSQL), or on SQLite when it is `None`.
    pub async fn spawn_on(database: Option<PgDatabase>, extra: &[(&str, &str)]) -> Self {
        init_test_logging();
        let data_dir = tempfile::tempdir().expect("temp dir");
        let secret = format!("test-secret-{}", Uuid::new_v4().simple());
        let mut vars: HashMap<String, String> = [
            ("AUMOS_HTTP__HOST", "127.0.0.1"),
            ("AUMOS_HTTP__PORT", "0"),
            ("AUMOS_KAFKA__BROKERS", ""),
            ("AUMOS_MLOPS_MLFLOW_TRACKING_URI", ""),
            ("AUMOS_DATABASE__MAX_CONNECTIONS", "8"),
            ("AUMOS_AUTH__JWT_SECRET", secret.as_str()),
            (
                "AUMOS_DATA_DIR",
                data_dir.path().to_str().expect("utf-8 temp dir"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if let Some(db) = &database {
            vars.insert("AUMOS_DATABASE__URL".into(), db.app_url.clone());
            vars.insert("AUMOS_DATABASE__MIGRATION_URL".into(), db.owner_url.clone());
        }
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        let settings = Settings::from_vars(vars).expect("test settings are valid");
        let app = Application::build(&settings)
            .await
            .expect("application starts");
        let address = format!("http://127.0.0.1:{}", app.port());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Self {
            address,
            client: reqwest::Client::new(),
            tenant: Uuid::now_v7(),
            secret: Secret::new(secret),
            database,
            _data_dir: data_dir,
            shutdown: Some(tx),
        }
    }

    /// A client of a service running elsewhere (another process) that accepts tokens signed
    /// with `secret`; dropping it stops nothing.
    pub fn remote(address: String, secret: &str, database: Option<PgDatabase>) -> Self {
        Self {
            address,
            client: reqwest::Client::new(),
            tenant: Uuid::now_v7(),
            secret: Secret::new(secret.to_owned()),
            database,
            _data_dir: tempfile::tempdir().expect("temp dir"),
            shutdown: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A token for `tenant` with `scopes`, valid for an hour.
    pub fn token_for(&self, tenant: Uuid, scopes: &[&str]) -> String {
        let now = chrono::Utc::now().timestamp();
        mint(&self.secret, &claims(tenant, scopes, now + 3600)).expect("token")
    }

    /// A request as `tenant` with read and write scopes.
    pub fn request_as(&self, tenant: Uuid, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(self.token_for(tenant, &[SCOPE_READ, SCOPE_WRITE]))
            .header("X-Tenant-ID", tenant.to_string())
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_as(self.tenant, method, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path)
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.request(Method::PATCH, path)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Creates an experiment for this app's tenant and returns its id.
    pub async fn create_experiment(&self, name: &str) -> String {
        let response = self
            .post("/api/v1/experiments", &serde_json::json!({"name": name}))
            .await;
        let body = expect_status(response, StatusCode::CREATED).await;
        body["id"].as_str().expect("id").to_owned()
    }

    /// Creates a run and returns its body.
    pub async fn create_run(&self, experiment: &str, run: &Value) -> Value {
        let response = self
            .post(&format!("/api/v1/experiments/{experiment}/runs"), run)
            .await;
        expect_status(response, StatusCode::CREATED).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn claims(tenant: Uuid, scopes: &[&str], exp: i64) -> Claims {
    Claims {
        sub: "test-user".into(),
        exp,
        nbf: None,
        iat: Some(chrono::Utc::now().timestamp()),
        iss: None,
        aud: None,
        tenants: vec![tenant.to_string()],
        tenant_id: None,
        scope: Some(scopes.join(" ")),
        scp: Vec::new(),
    }
}

/// Asserts the status and returns the JSON body (Null when empty).
pub async fn expect_status(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// Asserts a problem+json answer with `status` and returns it.
pub async fn expect_problem(response: Response, status: StatusCode) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let body = expect_status(response, status).await;
    assert_eq!(content_type, "application/problem+json", "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    for member in ["type", "title", "detail"] {
        assert!(body[member].is_string(), "problem lacks {member}: {body}");
    }
    body
}

/// The `field`s of a problem's `errors`.
pub fn problem_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Follows `next_page_token` through a listing and returns every item.
pub async fn collect_pages(app: &TestApp, path: &str, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    let separator = if path.contains('?') { '&' } else { '?' };
    loop {
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(t) = &token {
            url.push_str(&format!("&page_token={t}"));
        }
        let page = expect_status(app.get(&url).await, StatusCode::OK).await;
        items.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => return items,
        }
    }
}
