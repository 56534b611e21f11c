//! Schema migrations and the privileges of the service's own role.
//!
//! Migrations run as the owner of the tables (`AUMOS_DATABASE__MIGRATION_URL`). The service
//! itself connects as a role that owns nothing; after migrating, that role is granted exactly
//! the data privileges it needs, so row-level security binds it.

use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tracing::{info, warn};

use crate::adapters::postgres::{connect_options, PgStore};
use crate::settings::Secret;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Advisory lock key held while migrating and granting ("aumosmig" in ASCII).
const MIGRATION_LOCK: i64 = 0x6175_6d6f_736d_6967;

/// What the database says about the role the service connects as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleCheck {
    pub role: String,
    pub superuser: bool,
    pub bypass_rls: bool,
    /// Owners are bound by the forced policies too, but could turn them off.
    pub owns_tables: bool,
}

impl RoleCheck {
    /// True when row-level security cannot be bypassed by this role.
    pub fn enforces_rls(&self) -> bool {
        !self.superuser && !self.bypass_rls
    }

    /// Reads the role of the service's own connections.
    pub async fn of(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let (role, superuser, bypass_rls, owns_tables): (String, bool, bool, bool) =
            sqlx::query_as(
                "SELECT current_user::text, r.rolsuper, r.rolbypassrls, \
                 EXISTS (SELECT 1 FROM pg_tables t WHERE t.tableowner = current_user \
                         AND t.tablename = 'experiments') \
                 FROM pg_roles r WHERE r.rolname = current_user",
            )
            .fetch_one(pool)
            .await?;
        Ok(Self {
            role,
            superuser,
            bypass_rls,
            owns_tables,
        })
    }
}

/// Applies pending migrations, as the owner when `owner_url` is given, then grants the
/// service's role its data privileges. Safe to run from several replicas at once: the
/// migrator holds an advisory lock while it works.
pub async fn migrate(store: &PgStore, owner_url: Option<&Secret>) -> anyhow::Result<()> {
    let Some(owner_url) = owner_url else {
        MIGRATOR.run(store.pool()).await?;
        info!("database migrations applied with the service's own connection");
        return Ok(());
    };
    let mut owner = connect_options(owner_url)?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect with AUMOS_DATABASE__MIGRATION_URL: {e}"))?;
    // Replicas starting together would otherwise grant at the same time, which PostgreSQL
    // refuses ("tuple concurrently updated"); the lock ends with the session.
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut owner)
        .await?;
    MIGRATOR.run(&mut owner).await?;
    let service = RoleCheck::of(store.pool()).await?;
    let owner_role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut owner)
        .await?;
    if service.role != owner_role {
        grant_data_privileges(&mut owner, &service.role).await?;
    } else {
        warn!(role = %service.role, "migration and service connections use the same role");
    }
    owner.close().await?;
    info!(service.role = %service.role, "database migrations applied");
    Ok(())
}

async fn grant_data_privileges(owner: &mut PgConnection, role: &str) -> anyhow::Result<()> {
    let role = quote_identifier(role);
    let statements = [
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"),
        format!("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {role}"),
        format!("REVOKE INSERT, UPDATE, DELETE ON _sqlx_migrations FROM {role}"),
    ];
    for statement in statements {
        sqlx::query(&statement).execute(&mut *owner).await?;
    }
    Ok(())
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_against_injection() {
        assert_eq!(quote_identifier("aumos_app"), "\"aumos_app\"");
        assert_eq!(quote_identifier("a\"; DROP"), "\"a\"\"; DROP\"");
    }
}
