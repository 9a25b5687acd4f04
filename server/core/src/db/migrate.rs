//! Migrations from `migrations/{postgres,sqlite}`, embedded in the binary. On Postgres
//! they run under a session advisory lock, so replicas that start together apply them
//! once and the others wait, then find nothing pending.

use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use secrecy::ExposeSecret;

use super::DbError;
use crate::config::DatabaseUrl;

const POSTGRES: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
/// Arbitrary, fixed: the advisory lock id of Orchard's migrations.
const MIGRATION_LOCK_ID: i64 = 0x006f_7263_6861_7264;

/// Applies pending migrations; returns the versions applied now.
pub async fn run_migrations(url: &DatabaseUrl) -> Result<Vec<String>, DbError> {
    let url = url.clone();
    tokio::task::spawn_blocking(move || match &url {
        DatabaseUrl::Postgres(u) => {
            let mut conn = PgConnection::establish(u.expose_secret())?;
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_ID})"))
                .execute(&mut conn)?;
            let applied = apply(&mut conn, POSTGRES);
            let unlocked =
                diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})"))
                    .execute(&mut conn);
            let applied = applied?;
            unlocked?;
            Ok(applied)
        }
        DatabaseUrl::Sqlite(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| DbError::Migration(e.to_string()))?;
            }
            let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
            diesel::sql_query("PRAGMA busy_timeout = 10000").execute(&mut conn)?;
            apply(&mut conn, SQLITE)
        }
    })
    .await
    .map_err(|e| DbError::Migration(e.to_string()))?
}

fn apply<C>(conn: &mut C, migrations: EmbeddedMigrations) -> Result<Vec<String>, DbError>
where
    C: MigrationHarness<C::Backend> + Connection,
{
    let versions = conn
        .run_pending_migrations(migrations)
        .map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(versions.iter().map(|v| v.to_string()).collect())
}
