//! The two repository implementations. Everything but connection set-up and the batch
//! statement is the same diesel code, written once in `impl_repository!` and compiled
//! against each backend.

use std::time::Duration;

use async_trait::async_trait;
use diesel::upsert::excluded;
use diesel::{
    ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper, SqliteConnection,
    TextExpressionMethods,
};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures::FutureExt;
use secrecy::ExposeSecret;

use super::schema::{
    artifact_dependencies, artifacts, cached_urls, quarantined_artifacts, upstream_sources,
};
use super::{
    Artifact, ArtifactRepository, CachedUrl, DbError, Dependency, NewDependency, PoolState, Purged,
    Quarantined, StatementCounter, UpstreamSourceRow,
};
use crate::config::{DatabaseConfig, DatabaseUrl};

type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

pub struct Repository<M: bb8::ManageConnection> {
    pool: bb8::Pool<M>,
    counter: StatementCounter,
    max: u32,
}

pub type PgRepository = Repository<AsyncDieselConnectionManager<AsyncPgConnection>>;
pub type SqliteRepository = Repository<AsyncDieselConnectionManager<SqliteConn>>;

fn builder<M: bb8::ManageConnection>(config: &DatabaseConfig) -> (bb8::Builder<M>, u32) {
    let max = config.pool_size + config.max_overflow;
    let b = bb8::Pool::builder()
        .max_size(max)
        .min_idle(None)
        .connection_timeout(config.pool_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        // Always checked on checkout: cheaply (is the connection closed or broken?)
        // unless ORCHARD_DATABASE_POOL_PRE_PING asks for a round trip (see `manager_config`).
        .test_on_check_out(true);
    (b, max)
}

/// How a connection is checked before it is handed out: `SELECT 1` with
/// `ORCHARD_DATABASE_POOL_PRE_PING`, else only whether it is closed or broken — a
/// connection Postgres closed (a restart) is then replaced instead of failing a request.
fn manager_config<C>(config: &DatabaseConfig) -> ManagerConfig<C>
where
    C: PoolableConnection + 'static,
{
    let mut m = ManagerConfig::<C>::default();
    m.recycling_method = if config.pre_ping {
        RecyclingMethod::Verified
    } else {
        RecyclingMethod::CustomFunction(Box::new(|conn: &mut C| {
            let broken = conn.is_broken();
            async move {
                if broken {
                    Err(diesel::result::Error::BrokenTransactionManager)
                } else {
                    Ok(())
                }
            }
            .boxed()
        }))
    };
    m
}

impl PgRepository {
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, DbError> {
        let DatabaseUrl::Postgres(url) = &config.url else {
            return Err(DbError::Invalid("not a postgres:// URL".into()));
        };
        let counter = StatementCounter::default();
        let mut manager_config = manager_config::<AsyncPgConnection>(config);
        let setup_counter = counter.clone();
        manager_config.custom_setup = Box::new(move |url| {
            let counter = setup_counter.clone();
            async move {
                let mut conn = AsyncPgConnection::establish(url).await?;
                conn.set_instrumentation(counter.instrumentation());
                Ok(conn)
            }
            .boxed()
        });
        let manager =
            AsyncDieselConnectionManager::new_with_config(url.expose_secret(), manager_config);
        let (b, max) = builder(config);
        let repo = Repository {
            pool: b.build(manager).await?,
            counter,
            max,
        };
        repo.ping().await?;
        Ok(repo)
    }
}

impl SqliteRepository {
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, DbError> {
        let DatabaseUrl::Sqlite(path) = &config.url else {
            return Err(DbError::Invalid("not a sqlite:// URL".into()));
        };
        let counter = StatementCounter::default();
        let mut manager_config = manager_config::<SqliteConn>(config);
        let setup_counter = counter.clone();
        manager_config.custom_setup = Box::new(move |url| {
            let counter = setup_counter.clone();
            async move {
                let mut conn = SqliteConn::establish(url).await?;
                conn.batch_execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                conn.set_instrumentation(counter.instrumentation());
                Ok(conn)
            }
            .boxed()
        });
        let manager =
            AsyncDieselConnectionManager::new_with_config(path.to_string_lossy(), manager_config);
        let (b, max) = builder(config);
        let repo = Repository {
            pool: b.build(manager).await?,
            counter,
            max,
        };
        repo.ping().await?;
        Ok(repo)
    }
}

const PG_BATCH_DEPENDENCIES: &str = "\
INSERT INTO artifact_dependencies (artifact_sha256, position, protocol, name, requirement, kind, optional, marker) \
SELECT $1, d.position, d.protocol, d.name, d.requirement, d.kind, d.optional, d.marker \
FROM UNNEST($2::int4[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::text[]) \
  AS d(position, protocol, name, requirement, kind, optional, marker) \
ON CONFLICT (artifact_sha256, position) DO UPDATE SET protocol = EXCLUDED.protocol, name = EXCLUDED.name, \
  requirement = EXCLUDED.requirement, kind = EXCLUDED.kind, optional = EXCLUDED.optional, marker = EXCLUDED.marker";

const SQLITE_BATCH_DEPENDENCIES: &str = "\
INSERT INTO artifact_dependencies (artifact_sha256, position, protocol, name, requirement, kind, optional, marker) \
SELECT ?, d.key, json_extract(d.value, '$.protocol'), json_extract(d.value, '$.name'), \
  json_extract(d.value, '$.requirement'), json_extract(d.value, '$.kind'), json_extract(d.value, '$.optional'), \
  json_extract(d.value, '$.marker') \
FROM json_each(?) AS d WHERE true \
ON CONFLICT (artifact_sha256, position) DO UPDATE SET protocol = excluded.protocol, name = excluded.name, \
  requirement = excluded.requirement, kind = excluded.kind, optional = excluded.optional, marker = excluded.marker";

async fn pg_batch(
    conn: &mut AsyncPgConnection,
    sha256: &str,
    deps: &[NewDependency],
) -> diesel::QueryResult<usize> {
    use diesel::sql_types::{Array, Bool, Integer, Text};
    let positions: Vec<i32> = (0..deps.len() as i32).collect();
    let column = |f: fn(&NewDependency) -> &String| {
        deps.iter().map(|d| f(d).clone()).collect::<Vec<String>>()
    };
    diesel::sql_query(PG_BATCH_DEPENDENCIES)
        .bind::<Text, _>(sha256)
        .bind::<Array<Integer>, _>(positions)
        .bind::<Array<Text>, _>(column(|d| &d.protocol))
        .bind::<Array<Text>, _>(column(|d| &d.name))
        .bind::<Array<Text>, _>(column(|d| &d.requirement))
        .bind::<Array<Text>, _>(column(|d| &d.kind))
        .bind::<Array<Bool>, _>(deps.iter().map(|d| d.optional).collect::<Vec<bool>>())
        .bind::<Array<Text>, _>(column(|d| &d.marker))
        .execute(conn)
        .await
}

async fn sqlite_batch(
    conn: &mut SqliteConn,
    sha256: &str,
    deps: &[NewDependency],
) -> diesel::QueryResult<usize> {
    use diesel::sql_types::Text;
    let document = serde_json::to_string(deps)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    diesel::sql_query(SQLITE_BATCH_DEPENDENCIES)
        .bind::<Text, _>(sha256)
        .bind::<Text, _>(document)
        .execute(conn)
        .await
}

const PG_UPSERT_OWNED: &str = "\
INSERT INTO upstream_sources (name, protocol, url, priority, enabled, settings, updated_at) \
VALUES ($1, $2, $3, $4, $5, $6, $7) \
ON CONFLICT (name) DO UPDATE SET protocol = EXCLUDED.protocol, url = EXCLUDED.url, priority = EXCLUDED.priority, \
  enabled = EXCLUDED.enabled, settings = EXCLUDED.settings, updated_at = EXCLUDED.updated_at \
WHERE (upstream_sources.settings::jsonb ->> 'owner') IS NULL OR (upstream_sources.settings::jsonb ->> 'owner') = $8";

const SQLITE_UPSERT_OWNED: &str = "\
INSERT INTO upstream_sources (name, protocol, url, priority, enabled, settings, updated_at) \
VALUES (?, ?, ?, ?, ?, ?, ?) \
ON CONFLICT (name) DO UPDATE SET protocol = excluded.protocol, url = excluded.url, priority = excluded.priority, \
  enabled = excluded.enabled, settings = excluded.settings, updated_at = excluded.updated_at \
WHERE json_extract(upstream_sources.settings, '$.owner') IS NULL OR json_extract(upstream_sources.settings, '$.owner') = ?";

const PG_DELETE_OWNED: &str = "DELETE FROM upstream_sources WHERE name = $1 \
AND ((settings::jsonb ->> 'owner') IS NULL OR (settings::jsonb ->> 'owner') = $2)";

const SQLITE_DELETE_OWNED: &str = "DELETE FROM upstream_sources WHERE name = ? \
AND (json_extract(settings, '$.owner') IS NULL OR json_extract(settings, '$.owner') = ?)";

macro_rules! impl_repository {
    ($conn:ty, $kind:literal, $batch:ident, $upsert_owned:ident, $delete_owned:ident) => {
        #[async_trait]
        impl ArtifactRepository for Repository<AsyncDieselConnectionManager<$conn>> {
            fn kind(&self) -> &'static str {
                $kind
            }

            fn pool_state(&self) -> PoolState {
                let s = self.pool.state();
                PoolState {
                    connections: s.connections,
                    idle: s.idle_connections,
                    max: self.max,
                }
            }

            fn statements(&self) -> u64 {
                self.counter.get()
            }

            async fn ping(&self) -> Result<(), DbError> {
                let mut conn = self.pool.get().await?;
                conn.batch_execute("SELECT 1").await?;
                Ok(())
            }

            async fn get_or_create_artifact(
                &self,
                artifact: &Artifact,
            ) -> Result<Artifact, DbError> {
                let mut conn = self.pool.get().await?;
                Ok(diesel::insert_into(artifacts::table)
                    .values(artifact)
                    .on_conflict(artifacts::sha256)
                    .do_update()
                    .set(artifacts::sha256.eq(excluded(artifacts::sha256)))
                    .returning(Artifact::as_returning())
                    .get_result(&mut *conn)
                    .await?)
            }

            async fn upsert_cached_url(&self, url: &CachedUrl) -> Result<(), DbError> {
                let mut conn = self.pool.get().await?;
                diesel::insert_into(cached_urls::table)
                    .values(url)
                    .on_conflict((
                        cached_urls::protocol,
                        cached_urls::source,
                        cached_urls::path,
                    ))
                    .do_update()
                    .set((
                        cached_urls::artifact_sha256.eq(excluded(cached_urls::artifact_sha256)),
                        cached_urls::upstream_url.eq(excluded(cached_urls::upstream_url)),
                    ))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }

            async fn get_cached_url_with_artifact(
                &self,
                protocol: &str,
                source: &str,
                path: &str,
            ) -> Result<Option<(CachedUrl, Artifact)>, DbError> {
                let mut conn = self.pool.get().await?;
                Ok(cached_urls::table
                    .inner_join(artifacts::table)
                    .filter(cached_urls::protocol.eq(protocol))
                    .filter(cached_urls::source.eq(source))
                    .filter(cached_urls::path.eq(path))
                    .select((CachedUrl::as_select(), Artifact::as_select()))
                    .first(&mut *conn)
                    .await
                    .optional()?)
            }

            async fn list_cached_paths(
                &self,
                protocol: &str,
                source: &str,
                prefix: &str,
            ) -> Result<Vec<(String, String)>, DbError> {
                if prefix.contains(['%', '_', '\\']) {
                    return Err(DbError::Invalid(format!(
                        "prefix {prefix:?} has LIKE wildcards"
                    )));
                }
                let mut conn = self.pool.get().await?;
                Ok(cached_urls::table
                    .filter(cached_urls::protocol.eq(protocol))
                    .filter(cached_urls::source.eq(source))
                    .filter(cached_urls::path.like(format!("{prefix}%")))
                    .select((cached_urls::path, cached_urls::artifact_sha256))
                    .load::<(String, String)>(&mut *conn)
                    .await?)
            }

            async fn cached_urls_of(
                &self,
                artifact_sha256: &str,
            ) -> Result<Vec<CachedUrl>, DbError> {
                let mut conn = self.pool.get().await?;
                Ok(cached_urls::table
                    .filter(cached_urls::artifact_sha256.eq(artifact_sha256))
                    .order((
                        cached_urls::protocol.asc(),
                        cached_urls::source.asc(),
                        cached_urls::path.asc(),
                    ))
                    .select(CachedUrl::as_select())
                    .load(&mut *conn)
                    .await?)
            }

            async fn batch_upsert_dependencies(
                &self,
                artifact_sha256: &str,
                deps: &[NewDependency],
            ) -> Result<usize, DbError> {
                if deps.is_empty() {
                    return Ok(0);
                }
                let mut conn = self.pool.get().await?;
                Ok($batch(&mut *conn, artifact_sha256, deps).await?)
            }

            async fn dependencies_of(
                &self,
                artifact_sha256: &str,
            ) -> Result<Vec<Dependency>, DbError> {
                let mut conn = self.pool.get().await?;
                Ok(artifact_dependencies::table
                    .filter(artifact_dependencies::artifact_sha256.eq(artifact_sha256))
                    .order(artifact_dependencies::position.asc())
                    .select(Dependency::as_select())
                    .load(&mut *conn)
                    .await?)
            }

            async fn upsert_source(&self, source: &UpstreamSourceRow) -> Result<(), DbError> {
                let mut conn = self.pool.get().await?;
                diesel::insert_into(upstream_sources::table)
                    .values(source)
                    .on_conflict(upstream_sources::name)
                    .do_update()
                    .set((
                        upstream_sources::protocol.eq(excluded(upstream_sources::protocol)),
                        upstream_sources::url.eq(excluded(upstream_sources::url)),
                        upstream_sources::priority.eq(excluded(upstream_sources::priority)),
                        upstream_sources::enabled.eq(excluded(upstream_sources::enabled)),
                        upstream_sources::settings.eq(excluded(upstream_sources::settings)),
                        upstream_sources::updated_at.eq(excluded(upstream_sources::updated_at)),
                    ))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }

            async fn delete_source(&self, name: &str) -> Result<bool, DbError> {
                let mut conn = self.pool.get().await?;
                let n =
                    diesel::delete(upstream_sources::table.filter(upstream_sources::name.eq(name)))
                        .execute(&mut *conn)
                        .await?;
                Ok(n > 0)
            }

            async fn upsert_source_owned(
                &self,
                source: &UpstreamSourceRow,
                owner: &str,
            ) -> Result<bool, DbError> {
                use diesel::sql_types::{BigInt, Bool, Integer, Text};
                let mut conn = self.pool.get().await?;
                let n = diesel::sql_query($upsert_owned)
                    .bind::<Text, _>(&source.name)
                    .bind::<Text, _>(&source.protocol)
                    .bind::<Text, _>(&source.url)
                    .bind::<Integer, _>(source.priority)
                    .bind::<Bool, _>(source.enabled)
                    .bind::<Text, _>(&source.settings)
                    .bind::<BigInt, _>(source.updated_at)
                    .bind::<Text, _>(owner)
                    .execute(&mut *conn)
                    .await?;
                Ok(n > 0)
            }

            async fn delete_source_owned(&self, name: &str, owner: &str) -> Result<bool, DbError> {
                use diesel::sql_types::Text;
                let mut conn = self.pool.get().await?;
                let n = diesel::sql_query($delete_owned)
                    .bind::<Text, _>(name)
                    .bind::<Text, _>(owner)
                    .execute(&mut *conn)
                    .await?;
                Ok(n > 0)
            }

            async fn list_sources(&self) -> Result<Vec<UpstreamSourceRow>, DbError> {
                let mut conn = self.pool.get().await?;
                Ok(upstream_sources::table
                    .order((
                        upstream_sources::priority.asc(),
                        upstream_sources::name.asc(),
                    ))
                    .select(UpstreamSourceRow::as_select())
                    .load(&mut *conn)
                    .await?)
            }

            async fn quarantine(&self, entry: &Quarantined) -> Result<(), DbError> {
                let mut conn = self.pool.get().await?;
                diesel::insert_into(quarantined_artifacts::table)
                    .values(entry)
                    .on_conflict(quarantined_artifacts::sha256)
                    .do_update()
                    .set(quarantined_artifacts::reason.eq(excluded(quarantined_artifacts::reason)))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }

            async fn unquarantine(&self, sha256: &str) -> Result<bool, DbError> {
                let mut conn = self.pool.get().await?;
                let n = diesel::delete(
                    quarantined_artifacts::table.filter(quarantined_artifacts::sha256.eq(sha256)),
                )
                .execute(&mut *conn)
                .await?;
                Ok(n > 0)
            }

            async fn quarantined(&self) -> Result<Vec<Quarantined>, DbError> {
                let mut conn = self.pool.get().await?;
                Ok(quarantined_artifacts::table
                    .order(quarantined_artifacts::created_at.asc())
                    .select(Quarantined::as_select())
                    .load(&mut *conn)
                    .await?)
            }

            async fn purge_artifact(&self, sha256: &str) -> Result<Purged, DbError> {
                let mut conn = self.pool.get().await?;
                let sha = sha256.to_string();
                let purged = conn
                    .transaction::<_, diesel::result::Error, _>(async |conn| {
                        let urls = diesel::delete(
                            cached_urls::table.filter(cached_urls::artifact_sha256.eq(&sha)),
                        )
                        .execute(conn)
                        .await?;
                        diesel::delete(
                            artifact_dependencies::table
                                .filter(artifact_dependencies::artifact_sha256.eq(&sha)),
                        )
                        .execute(conn)
                        .await?;
                        let rows =
                            diesel::delete(artifacts::table.filter(artifacts::sha256.eq(&sha)))
                                .execute(conn)
                                .await?;
                        Ok(Purged {
                            urls,
                            artifact: rows > 0,
                        })
                    })
                    .await?;
                Ok(purged)
            }
        }
    };
}

impl_repository!(
    AsyncPgConnection,
    "postgres",
    pg_batch,
    PG_UPSERT_OWNED,
    PG_DELETE_OWNED
);
impl_repository!(
    SqliteConn,
    "sqlite",
    sqlite_batch,
    SQLITE_UPSERT_OWNED,
    SQLITE_DELETE_OWNED
);
