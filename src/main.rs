use std::process::ExitCode;

use clap::{Parser, Subcommand};
use uuid::Uuid;

use aumos_mlops_lifecycle::adapters::ChangeSignal;
use aumos_mlops_lifecycle::api::auth::{self, Claims, SCOPE_READ, SCOPE_WRITE};
use aumos_mlops_lifecycle::settings::{KeySource, Settings};
use aumos_mlops_lifecycle::startup::{self, Application, Store};
use aumos_mlops_lifecycle::telemetry;

/// Multi-tenant MLOps lifecycle service. Configured with AUMOS_* variables (see .env.example).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the OpenAPI document as JSON.
    Openapi,
    /// Print a development token signed with the configured HS256 secret.
    Token {
        /// Tenant the token may act for; repeat for several.
        #[arg(long = "tenant", required = true)]
        tenants: Vec<Uuid>,
        /// Scopes to grant; repeat for several (default: mlops:read and mlops:write).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime of the token.
        #[arg(long, default_value_t = 3600)]
        ttl_seconds: u64,
        /// The token's subject.
        #[arg(long, default_value = "developer")]
        subject: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Openapi = command {
        let document = aumos_mlops_lifecycle::api::openapi();
        match document.to_pretty_json() {
            Ok(json) => println!("{json}"),
            Err(e) => return fail(&e.to_string()),
        }
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => return fail(&format!("invalid configuration: {e}")),
    };
    if let Command::Token {
        tenants,
        scopes,
        ttl_seconds,
        subject,
    } = command
    {
        return match token(&settings, tenants, scopes, ttl_seconds, subject) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("{e:#}")),
        };
    }
    if let Err(e) = telemetry::init(&settings) {
        return fail(&format!("{e:#}"));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        for name in &settings.unknown_variables {
            tracing::warn!(
                variable = %name,
                "ignoring an AUMOS_ variable this service does not know"
            );
        }
        match command {
            Command::Migrate => {
                let store = Store::open(&settings.database, ChangeSignal::default()).await?;
                store.migrate(&settings.database).await
            }
            _ => {
                let app = Application::build(&settings).await?;
                app.run_until_stopped(startup::shutdown_signal()).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "the service stopped with an error"
            );
            ExitCode::FAILURE
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn token(
    settings: &Settings,
    tenants: Vec<Uuid>,
    scopes: Vec<String>,
    ttl_seconds: u64,
    subject: String,
) -> anyhow::Result<String> {
    if settings.is_production() {
        anyhow::bail!("`token` mints development tokens and refuses to run in production");
    }
    let secret = match &settings.auth.keys {
        KeySource::Secret(secret) => secret.clone(),
        KeySource::DevelopmentSecretFile(path) => auth::development_secret(path)?,
        KeySource::Jwks { .. } => anyhow::bail!(
            "this service verifies tokens with AUMOS_AUTH__JWKS_URL; get a token from that \
             identity provider"
        ),
    };
    let scopes = if scopes.is_empty() {
        vec![SCOPE_READ.to_owned(), SCOPE_WRITE.to_owned()]
    } else {
        scopes
    };
    let now = chrono::Utc::now().timestamp();
    let ttl = i64::try_from(ttl_seconds).unwrap_or(i64::MAX / 2);
    let claims = Claims {
        sub: subject,
        exp: now.saturating_add(ttl),
        nbf: Some(now),
        iat: Some(now),
        iss: settings.auth.issuer.clone(),
        aud: settings.auth.audience.clone(),
        tenants: tenants.iter().map(Uuid::to_string).collect(),
        tenant_id: None,
        scope: Some(scopes.join(" ")),
        scp: Vec::new(),
    };
    auth::mint(&secret, &claims)
}
