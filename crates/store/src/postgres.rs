//! The PostgreSQL backend, for high availability.
//!
//! The URL may list several hosts with `target_session_attrs=read-write`
//! (App-V's "failover partner"): tokio-postgres tries them in order and keeps
//! the one that accepts writes. Connect timeout and TCP keepalive are set
//! explicitly so that a dead primary is noticed in seconds, not minutes. A pooled
//! connection that fails with a connection error (SQLSTATE class 08), an
//! administrator shutdown (57P01–57P03) or `read_only_sql_transaction` (25006,
//! an old primary after a switchover) is taken out of the pool, and operations
//! that are safe to repeat are retried once on a fresh connection. So the same
//! store object carries on through a failover; nothing needs a restart.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::{Config, NoTls, Row};
use uuid::Uuid;

use crate::schema::{self, DatabaseKind, principal_table};
use crate::{ManagementStore, ReportingStore, Result, StoreError};
use avail_model::rules;
use avail_model::*;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const POOL_WAIT: Duration = Duration::from_secs(10);
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// What can go wrong inside an operation.
enum E {
    Pg(tokio_postgres::Error),
    Pool(PoolError),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for E {
    fn from(e: tokio_postgres::Error) -> Self {
        E::Pg(e)
    }
}

impl From<StoreError> for E {
    fn from(e: StoreError) -> Self {
        E::Store(e)
    }
}

/// A failure of the connection rather than of the statement: the connection
/// must not be reused, and a safe operation may be tried again.
fn broken(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "25006")
        }
        // No SQLSTATE and not a server error: I/O, timeouts, a lost connection.
        None => e.as_db_error().is_none(),
    }
}

/// A transaction the server aborted to resolve contention; running it again is safe.
fn contention(e: &tokio_postgres::Error) -> bool {
    matches!(e.code().map(|c| c.code()), Some("40001" | "40P01"))
}

impl E {
    fn retryable(&self) -> bool {
        match self {
            E::Pg(e) => broken(e) || contention(e),
            E::Pool(_) => true,
            E::Store(StoreError::Unavailable(_)) => true,
            E::Store(_) => false,
        }
    }

    fn into_store(self) -> StoreError {
        match self {
            E::Store(e) => e,
            E::Pool(e) => StoreError::Unavailable(e.to_string()),
            E::Pg(e) if broken(&e) => StoreError::Unavailable(e.to_string()),
            E::Pg(e) => match e.code().map(|c| c.code()) {
                Some("23505") => StoreError::Conflict(
                    e.as_db_error()
                        .and_then(|d| d.detail().map(str::to_owned))
                        .unwrap_or_else(|| "already exists".into()),
                ),
                Some("23503") => StoreError::NotFound("a referenced row".into()),
                // disk_full
                Some("53100") => StoreError::Full(format!(
                    "no space left for the PostgreSQL database: {}",
                    db_message(&e)
                )),
                _ => StoreError::Internal(match e.as_db_error() {
                    Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
                    None => e.to_string(),
                }),
            },
        }
    }
}

/// Run `$body` with a pooled client `$c`; discard the connection if it broke,
/// and retry once on a fresh one when `$idempotent`. A macro rather than a
/// function taking a closure, because the body borrows the client across awaits.
macro_rules! with_client {
    ($pool:expr, $idempotent:expr, |$c:ident| $body:block) => {{
        let mut attempt = 0;
        loop {
            let outcome: std::result::Result<_, E> = async {
                #[allow(unused_mut)] // only bodies that open a transaction need it mutable
                let mut $c: Object = $pool.get().await.map_err(E::Pool)?;
                let result: std::result::Result<_, E> = async { $body }.await;
                if let Err(E::Pg(e)) = &result {
                    if broken(e) {
                        drop(Object::take($c));
                    }
                }
                result
            }
            .await;
            match outcome {
                Ok(v) => break Ok(v),
                Err(e) if $idempotent && attempt == 0 && e.retryable() => {
                    attempt += 1;
                    tracing::warn!("database connection lost; retrying once on a fresh connection");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
                Err(e) => break Err(e.into_store()),
            }
        }
    }};
}

fn config(url: &str) -> Result<Config> {
    let mut config = Config::from_str(url)
        .map_err(|e| StoreError::Invalid(format!("invalid PostgreSQL URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.keepalives(true).keepalives_idle(KEEPALIVE_IDLE);
    config.tcp_user_timeout(Duration::from_secs(10));
    if config.get_application_name().is_none() {
        config.application_name("avail");
    }
    Ok(config)
}

fn pool(url: &str, max_size: usize) -> Result<Pool> {
    let manager = Manager::from_config(
        config(url)?,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT * 2))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Internal(e.to_string()))
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = config(url)?
        .connect(NoTls)
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

async fn installed_version(client: &tokio_postgres::Client) -> Result<i32> {
    let row = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(|e| E::Pg(e).into_store())?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await
        .map_err(|e| E::Pg(e).into_store())?;
    Ok(row.get(0))
}

pub(crate) async fn status(url: &str, kind: DatabaseKind) -> Result<SchemaStatus> {
    let client = connect(url).await?;
    Ok(schema::status(
        schema::postgres(kind),
        installed_version(&client).await?,
    ))
}

pub(crate) async fn install(url: &str, kind: DatabaseKind) -> Result<SchemaStatus> {
    let mut client = connect(url).await?;
    let scripts = schema::postgres(kind);
    let installed = installed_version(&client).await?;
    let status = schema::status(scripts, installed);
    if status.installed > status.known {
        schema::require_current(kind, &status)?;
    }
    for script in scripts.iter().filter(|s| s.version > installed) {
        let tx = client
            .transaction()
            .await
            .map_err(|e| E::Pg(e).into_store())?;
        tx.batch_execute(script.sql).await.map_err(|e| {
            StoreError::Schema(format!(
                "{kind}: script {} failed: {}",
                script.name,
                db_message(&e)
            ))
        })?;
        tx.commit().await.map_err(|e| E::Pg(e).into_store())?;
        tracing::info!(%kind, script = script.name, "installed schema script");
    }
    Ok(schema::status(scripts, installed_version(&client).await?))
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

async fn open_pool(url: &str, kind: DatabaseKind) -> Result<Pool> {
    let status = status(url, kind).await?;
    schema::require_current(kind, &status)?;
    pool(url, 16)
}

async fn bump(c: &impl GenericClient) -> std::result::Result<(), E> {
    c.execute("UPDATE change_sequence SET seq = seq + 1 WHERE id = 1", &[])
        .await?;
    Ok(())
}

fn not_found(what: impl Into<String>) -> E {
    E::Store(StoreError::NotFound(what.into()))
}

fn conflict(e: E, message: String) -> E {
    match e {
        E::Pg(pg) if pg.code().map(|c| c.code()) == Some("23505") => {
            E::Store(StoreError::Conflict(message))
        }
        other => other,
    }
}

/// The Management DB on PostgreSQL.
pub(crate) struct PgManagement {
    pool: Pool,
}

impl PgManagement {
    pub(crate) async fn open(url: &str) -> Result<Self> {
        Ok(PgManagement {
            pool: open_pool(url, DatabaseKind::Management).await?,
        })
    }
}

const VERSION_COLUMNS: &str = "version_id, package_id, name, version, content_path, size, sha256, published, created_at, updated_at, block_map_sha256, target_oses";

async fn read_version(c: &impl GenericClient, row: &Row) -> std::result::Result<PackageVersion, E> {
    let version_id: Uuid = row.get(0);
    let applications = c
        .query(
            "SELECT app_id, target, arguments FROM applications WHERE version_id = $1 ORDER BY position",
            &[&version_id],
        )
        .await?
        .iter()
        .map(|r| Application {
            id: r.get(0),
            target: r.get(1),
            arguments: r.get(2),
        })
        .collect();
    Ok(PackageVersion {
        package: NewPackageVersion {
            package_id: PackageId(row.get(1)),
            version_id: VersionId(version_id),
            name: row.get(2),
            version: row.get(3),
            content_path: row.get(4),
            size: row.get::<_, i64>(5) as u64,
            sha256: row.get(6),
            block_map_sha256: row.get(10),
            target_oses: crate::target_oses_from_column(row.get(11))?,
            applications,
        },
        published: row.get(7),
        created_at: row.get(8),
        updated_at: row.get(9),
    })
}

async fn get_version(
    c: &impl GenericClient,
    version_id: VersionId,
) -> std::result::Result<PackageVersion, E> {
    let row = c
        .query_opt(
            &format!("SELECT {VERSION_COLUMNS} FROM package_versions WHERE version_id = $1"),
            &[&version_id.0],
        )
        .await?
        .ok_or_else(|| not_found(format!("package version {version_id}")))?;
    read_version(c, &row).await
}

async fn require_group(c: &impl GenericClient, group: &str) -> std::result::Result<(), E> {
    c.query_opt("SELECT 1 FROM groups WHERE name = $1", &[&group])
        .await?
        .map(|_| ())
        .ok_or_else(|| not_found(format!("group {group}")))
}

async fn get_connection_group(
    c: &impl GenericClient,
    id: ConnectionGroupId,
) -> std::result::Result<ConnectionGroup, E> {
    let row = c
        .query_opt(
            "SELECT version_id, name, priority, published, updated_at FROM connection_groups WHERE id = $1",
            &[&id.0],
        )
        .await?
        .ok_or_else(|| not_found(format!("connection group {id}")))?;
    let members = c
        .query(
            "SELECT package_id, version_id, optional FROM connection_group_members WHERE group_id = $1 ORDER BY position",
            &[&id.0],
        )
        .await?
        .iter()
        .map(|r| ConnectionGroupMember {
            package_id: PackageId(r.get(0)),
            version_id: r.get::<_, Option<Uuid>>(1).map(VersionId),
            optional: r.get(2),
        })
        .collect();
    let entitled_groups = c
        .query(
            "SELECT group_name FROM connection_group_entitlements WHERE group_id = $1 ORDER BY group_name",
            &[&id.0],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(ConnectionGroup {
        id,
        version_id: row.get(0),
        name: row.get(1),
        priority: row.get(2),
        members,
        entitled_groups,
        published: row.get(3),
        updated_at: row.get(4),
    })
}

async fn require_principal(c: &impl GenericClient, p: &Principal) -> std::result::Result<(), E> {
    let (table, _, _) = principal_table(p.kind());
    c.query_opt(
        &format!("SELECT 1 FROM {table} WHERE name = $1"),
        &[&p.name()],
    )
    .await?
    .map(|_| ())
    .ok_or_else(|| not_found(format!("{} {}", &table[..table.len() - 1], p.name())))
}

fn read_server(r: &Row) -> PublishingServer {
    PublishingServer {
        name: r.get(0),
        registered_at: r.get(1),
        last_sync_at: r.get(2),
        last_sync_sequence: r.get(3),
    }
}

/// Record a package version unless it is there already (see
/// `add_package_version`); the caller has locked the sequence row.
async fn insert_version(
    tx: &impl GenericClient,
    v: &NewPackageVersion,
) -> std::result::Result<Added<PackageVersion>, E> {
    match get_version(tx, v.version_id).await {
        Ok(existing) if existing.package.sha256 == v.sha256 => {
            return Ok(Added {
                value: existing,
                created: false,
            });
        }
        Ok(_) => {
            return Err(E::Store(StoreError::Conflict(format!(
                "version {} is already imported from a different file",
                v.version_id
            ))));
        }
        Err(E::Store(StoreError::NotFound(_))) => {}
        Err(e) => return Err(e),
    }
    let now = Utc::now();
    tx.execute(
        "INSERT INTO packages (package_id, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&v.package_id.0, &now],
    )
    .await?;
    tx.execute(
        "INSERT INTO package_versions (version_id, package_id, name, version, content_path, size, sha256, published, created_at, updated_at, block_map_sha256, target_oses)
         VALUES ($1, $2, $3, $4, $5, $6, $7, false, $8, $8, $9, $10)",
        &[&v.version_id.0, &v.package_id.0, &v.name, &v.version, &v.content_path, &(v.size as i64), &v.sha256, &now, &v.block_map_sha256, &crate::target_oses_to_column(&v.target_oses)],
    )
    .await?;
    for (i, app) in v.applications.iter().enumerate() {
        tx.execute(
            "INSERT INTO applications (version_id, position, app_id, target, arguments) VALUES ($1, $2, $3, $4, $5)",
            &[&v.version_id.0, &(i as i32), &app.id, &app.target, &app.arguments],
        )
        .await?;
    }
    Ok(Added {
        value: get_version(tx, v.version_id).await?,
        created: true,
    })
}

/// Count one more set of a version's configurations: its new revision, which
/// the configuration set in the same transaction is stamped with.
async fn next_config_revision(
    tx: &impl GenericClient,
    version_id: VersionId,
) -> std::result::Result<i64, E> {
    Ok(tx
        .query_one(
            "UPDATE package_versions SET config_revision = config_revision + 1 WHERE version_id = $1
             RETURNING config_revision",
            &[&version_id.0],
        )
        .await?
        .get(0))
}

/// Copy entitlements and/or the deployment configuration from one version to
/// another; what is copied is a set of the target's configurations (one new revision).
async fn copy_transfer(
    tx: &impl GenericClient,
    from: VersionId,
    to: VersionId,
    what: Transfer,
) -> std::result::Result<(), E> {
    let revision = if what.entitlements || what.deployment_config {
        next_config_revision(tx, to).await?
    } else {
        0
    };
    if what.entitlements {
        tx.execute(
            "INSERT INTO entitlements (version_id, group_name, user_config, user_config_revision, user_config_updated_at)
             SELECT $2, group_name, user_config, $3, now() FROM entitlements WHERE version_id = $1
             ON CONFLICT (version_id, group_name) DO UPDATE SET user_config = excluded.user_config,
                 user_config_revision = excluded.user_config_revision,
                 user_config_updated_at = excluded.user_config_updated_at",
            &[&from.0, &to.0, &revision],
        )
        .await?;
    }
    if what.deployment_config {
        tx.execute(
            "INSERT INTO deployment_configs (version_id, config, updated_at, revision)
             SELECT $2, config, now(), $3 FROM deployment_configs WHERE version_id = $1
             ON CONFLICT (version_id) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at,
                 revision = excluded.revision",
            &[&from.0, &to.0, &revision],
        )
        .await?;
    }
    if what.publish {
        tx.execute(
            "UPDATE package_versions SET published = true, updated_at = now() WHERE version_id = $1 AND NOT published",
            &[&to.0],
        )
        .await?;
        unpublish_others(tx, to).await?;
    }
    Ok(())
}

/// Unpublish every version of `version_id`'s package but `version_id`: a
/// package has at most one published version.
async fn unpublish_others(
    tx: &impl GenericClient,
    version_id: VersionId,
) -> std::result::Result<(), E> {
    tx.execute(
        "UPDATE package_versions SET published = false, updated_at = now()
         WHERE published AND version_id <> $1
           AND package_id = (SELECT package_id FROM package_versions WHERE version_id = $1)",
        &[&version_id.0],
    )
    .await?;
    Ok(())
}

/// Give each connection group that `group` is entitled to a new `version_id`:
/// the group's entitlement is about to go.
async fn renew_entitled_connection_groups(
    tx: &impl GenericClient,
    group: &str,
) -> std::result::Result<(), E> {
    let entitled = tx
        .query(
            "SELECT group_id FROM connection_group_entitlements WHERE group_name = $1",
            &[&group],
        )
        .await?;
    for row in entitled {
        let id: Uuid = row.get(0);
        tx.execute(
            "UPDATE connection_groups SET version_id = $2, updated_at = now() WHERE id = $1",
            &[&id, &Uuid::new_v4()],
        )
        .await?;
    }
    Ok(())
}

/// What `group` holds: its entitlements and memberships.
async fn group_holdings(
    tx: &impl GenericClient,
    group: &str,
) -> std::result::Result<GroupHoldings, E> {
    async fn strings(
        tx: &impl GenericClient,
        sql: &str,
        group: &str,
    ) -> std::result::Result<Vec<String>, E> {
        Ok(tx
            .query(sql, &[&group])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }
    let mut members = Vec::new();
    for kind in PrincipalKind::ALL {
        let (_, table, column) = principal_table(kind);
        let sql = format!("SELECT {column} FROM {table} WHERE group_name = $1 ORDER BY {column}");
        members.extend(
            strings(tx, &sql, group)
                .await?
                .into_iter()
                .map(|name| kind.named(name)),
        );
    }
    Ok(GroupHoldings {
        packages: strings(
            tx,
            "SELECT v.name || ' ' || v.version FROM entitlements e JOIN package_versions v ON v.version_id = e.version_id
             WHERE e.group_name = $1 ORDER BY v.name, v.created_at",
            group,
        )
        .await?,
        connection_groups: strings(
            tx,
            "SELECT c.name FROM connection_group_entitlements e JOIN connection_groups c ON c.id = e.group_id
             WHERE e.group_name = $1 ORDER BY c.name",
            group,
        )
        .await?,
        members,
        member_of: strings(
            tx,
            "SELECT group_name FROM group_groups WHERE member_name = $1 ORDER BY group_name",
            group,
        )
        .await?,
    })
}

/// A principal's direct groups, sorted.
async fn direct_groups(
    c: &impl GenericClient,
    p: &Principal,
) -> std::result::Result<Vec<String>, E> {
    let (_, table, column) = principal_table(p.kind());
    Ok(c.query(
        &format!("SELECT group_name FROM {table} WHERE {column} = $1 ORDER BY group_name"),
        &[&p.name()],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// Insert a user or machine row and its direct memberships; every group must
/// exist (else NotFound naming the missing ones, and the caller's transaction
/// rolls back). The caller has locked the sequence row.
async fn insert_principal_in_groups(
    tx: &impl GenericClient,
    p: &Principal,
    credential_hash: Option<&str>,
    groups: &[String],
) -> std::result::Result<(), E> {
    let missing: Vec<String> = tx
        .query(
            "SELECT g FROM unnest($1::text[]) AS g WHERE NOT EXISTS (SELECT 1 FROM groups WHERE name = g) ORDER BY g",
            &[&groups],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !missing.is_empty() {
        return Err(E::Store(schema::missing_groups(&missing)));
    }
    let (table, members, column) = principal_table(p.kind());
    let name = p.name();
    let kind = &table[..table.len() - 1];
    match credential_hash {
        Some(hash) => {
            tx.execute(
                &format!(
                    "INSERT INTO {table} (name, credential_hash, created_at) VALUES ($1, $2, now())"
                ),
                &[&name, &hash],
            )
            .await
        }
        None => {
            tx.execute(
                &format!("INSERT INTO {table} (name, created_at) VALUES ($1, now())"),
                &[&name],
            )
            .await
        }
    }
    .map_err(|e| conflict(E::Pg(e), format!("{kind} {name} already exists")))?;
    tx.execute(
        &format!("INSERT INTO {members} (group_name, {column}) SELECT unnest($1::text[]), $2"),
        &[&groups, &name],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl ManagementStore for PgManagement {
    async fn change_sequence(&self) -> Result<i64> {
        with_client!(self.pool, true, |c| {
            Ok(
                c.query_one("SELECT seq FROM change_sequence WHERE id = 1", &[])
                    .await?
                    .get(0),
            )
        })
    }

    async fn add_package_version(&self, v: NewPackageVersion) -> Result<Added<PackageVersion>> {
        with_client!(self.pool, true, |c| {
            let tx = c.transaction().await?;
            // Lock the sequence row first: concurrent imports of one VersionId serialise here.
            bump(&tx).await?;
            let added = insert_version(&tx, &v).await?;
            if added.created {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok(added)
        })
    }

    async fn package_version(&self, version_id: VersionId) -> Result<PackageVersion> {
        with_client!(self.pool, true, |c| { get_version(&c, version_id).await })
    }

    async fn list_package_versions(&self, filter: &PackageFilter) -> Result<Vec<PackageVersion>> {
        with_client!(self.pool, true, |c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT {VERSION_COLUMNS} FROM package_versions
                         WHERE ($1::text IS NULL OR strpos(lower(name), lower($1)) > 0)
                           AND ($2::uuid IS NULL OR package_id = $2)
                           AND ($3::boolean IS NULL OR published = $3)
                         ORDER BY created_at, version_id"
                    ),
                    &[
                        &filter.name_contains,
                        &filter.package_id.map(Uuid::from),
                        &filter.published,
                    ],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(read_version(&c, row).await?);
            }
            Ok(out)
        })
    }

    async fn set_published(
        &self,
        version_id: VersionId,
        published: bool,
    ) -> Result<PackageVersion> {
        with_client!(self.pool, true, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            let n = tx
                .execute(
                    "UPDATE package_versions SET published = $2, updated_at = now() WHERE version_id = $1",
                    &[&version_id.0, &published],
                )
                .await?;
            if n == 0 {
                return Err(not_found(format!("package version {version_id}")));
            }
            if published {
                unpublish_others(&tx, version_id).await?;
            }
            let v = get_version(&tx, version_id).await?;
            tx.commit().await?;
            Ok(v)
        })
    }

    async fn remove_package_version(&self, version_id: VersionId) -> Result<PackageVersion> {
        with_client!(self.pool, false, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            let version = get_version(&tx, version_id).await?;
            if let Some(row) = tx
                .query_opt(
                    "SELECT g.name FROM connection_group_members m JOIN connection_groups g ON g.id = m.group_id WHERE m.version_id = $1 LIMIT 1",
                    &[&version_id.0],
                )
                .await?
            {
                let group: String = row.get(0);
                return Err(E::Store(StoreError::Conflict(format!(
                    "version {version_id} is a member of connection group {group}; remove it there first"
                ))));
            }
            tx.execute(
                "DELETE FROM package_versions WHERE version_id = $1",
                &[&version_id.0],
            )
            .await?;
            tx.execute(
                "DELETE FROM packages p WHERE package_id = $1
                   AND NOT EXISTS (SELECT 1 FROM package_versions v WHERE v.package_id = p.package_id)
                   AND NOT EXISTS (SELECT 1 FROM connection_group_members m WHERE m.package_id = p.package_id)",
                &[&version.package.package_id.0],
            )
            .await?;
            tx.commit().await?;
            Ok(version)
        })
    }

    async fn set_deployment_config(
        &self,
        version_id: VersionId,
        config: Option<String>,
    ) -> Result<()> {
        with_client!(self.pool, true, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            get_version(&tx, version_id).await?;
            let revision = next_config_revision(&tx, version_id).await?;
            match &config {
                Some(config) => {
                    tx.execute(
                        "INSERT INTO deployment_configs (version_id, config, updated_at, revision) VALUES ($1, $2, now(), $3)
                         ON CONFLICT (version_id) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at,
                             revision = excluded.revision",
                        &[&version_id.0, config, &revision],
                    )
                    .await?
                }
                None => tx.execute("DELETE FROM deployment_configs WHERE version_id = $1", &[&version_id.0]).await?,
            };
            tx.commit().await?;
            Ok(())
        })
    }

    async fn deployment_config(&self, version_id: VersionId) -> Result<Option<String>> {
        with_client!(self.pool, true, |c| {
            get_version(&c, version_id).await?;
            Ok(c.query_opt(
                "SELECT config FROM deployment_configs WHERE version_id = $1",
                &[&version_id.0],
            )
            .await?
            .map(|r| r.get(0)))
        })
    }

    async fn grant(
        &self,
        version_id: VersionId,
        group: &str,
        user_config: Option<String>,
    ) -> Result<()> {
        with_client!(self.pool, true, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            get_version(&tx, version_id).await?;
            require_group(&tx, group).await?;
            let revision = next_config_revision(&tx, version_id).await?;
            tx.execute(
                "INSERT INTO entitlements (version_id, group_name, user_config, user_config_revision, user_config_updated_at)
                 VALUES ($1, $2, $3, $4, now())
                 ON CONFLICT (version_id, group_name) DO UPDATE SET user_config = excluded.user_config,
                     user_config_revision = excluded.user_config_revision,
                     user_config_updated_at = excluded.user_config_updated_at",
                &[&version_id.0, &group, &user_config, &revision],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    async fn revoke(&self, version_id: VersionId, group: &str) -> Result<()> {
        with_client!(self.pool, false, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            get_version(&tx, version_id).await?;
            let n = tx
                .execute(
                    "DELETE FROM entitlements WHERE version_id = $1 AND group_name = $2",
                    &[&version_id.0, &group],
                )
                .await?;
            if n == 0 {
                return Err(not_found(format!(
                    "entitlement of group {group} to {version_id}"
                )));
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn entitlements(&self, version_id: VersionId) -> Result<Vec<Entitlement>> {
        with_client!(self.pool, true, |c| {
            get_version(&c, version_id).await?;
            Ok(c.query(
                "SELECT group_name, user_config FROM entitlements WHERE version_id = $1 ORDER BY group_name",
                &[&version_id.0],
            )
            .await?
            .iter()
            .map(|r| Entitlement { group: r.get(0), user_config: r.get(1) })
            .collect())
        })
    }

    async fn transfer(&self, from: VersionId, to: VersionId, what: Transfer) -> Result<()> {
        with_client!(self.pool, true, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            get_version(&tx, from).await?;
            get_version(&tx, to).await?;
            copy_transfer(&tx, from, to, what).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    async fn upgrade_package_version(
        &self,
        v: NewPackageVersion,
        from: VersionId,
        what: Transfer,
    ) -> Result<Added<PackageVersion>> {
        with_client!(self.pool, true, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            let previous = get_version(&tx, from).await?;
            rules::check_version_of(from, previous.package.package_id, v.package_id)
                .map_err(|e| E::Store(StoreError::Invalid(e)))?;
            let added = insert_version(&tx, &v).await?;
            copy_transfer(&tx, from, v.version_id, what).await?;
            let value = get_version(&tx, v.version_id).await?;
            tx.commit().await?;
            Ok(Added {
                value,
                created: added.created,
            })
        })
    }

    async fn create_connection_group(&self, name: &str, priority: i32) -> Result<ConnectionGroup> {
        with_client!(self.pool, false, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            let id = Uuid::new_v4();
            tx.execute(
                "INSERT INTO connection_groups (id, version_id, name, priority, published, updated_at) VALUES ($1, $2, $3, $4, false, now())",
                &[&id, &Uuid::new_v4(), &name, &priority],
            )
            .await
            .map_err(|e| conflict(E::Pg(e), format!("a connection group named {name} already exists")))?;
            let g = get_connection_group(&tx, ConnectionGroupId(id)).await?;
            tx.commit().await?;
            Ok(g)
        })
    }

    async fn connection_group(&self, id: ConnectionGroupId) -> Result<ConnectionGroup> {
        with_client!(self.pool, true, |c| { get_connection_group(&c, id).await })
    }

    async fn list_connection_groups(&self) -> Result<Vec<ConnectionGroup>> {
        with_client!(self.pool, true, |c| {
            let ids: Vec<Uuid> = c
                .query(
                    "SELECT id FROM connection_groups ORDER BY priority, name",
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(get_connection_group(&c, ConnectionGroupId(id)).await?);
            }
            Ok(out)
        })
    }

    async fn update_connection_group(
        &self,
        id: ConnectionGroupId,
        changes: Vec<ConnectionGroupChange>,
    ) -> Result<ConnectionGroup> {
        if changes.is_empty() {
            return self.connection_group(id).await;
        }
        let idempotent = !changes.iter().any(|change| {
            matches!(
                change,
                ConnectionGroupChange::RemoveMember(_) | ConnectionGroupChange::Revoke(_)
            )
        });
        with_client!(self.pool, idempotent, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            for change in &changes {
                let current = get_connection_group(&tx, id).await?;
                match change {
                    ConnectionGroupChange::Rename(name) => {
                        tx.execute(
                            "UPDATE connection_groups SET name = $2 WHERE id = $1",
                            &[&id.0, name],
                        )
                        .await
                        .map_err(|e| {
                            conflict(
                                E::Pg(e),
                                format!("a connection group named {name} already exists"),
                            )
                        })?;
                    }
                    ConnectionGroupChange::Priority(p) => {
                        tx.execute(
                            "UPDATE connection_groups SET priority = $2 WHERE id = $1",
                            &[&id.0, p],
                        )
                        .await?;
                    }
                    ConnectionGroupChange::SetMember(m) => {
                        if tx
                            .query_opt(
                                "SELECT 1 FROM packages WHERE package_id = $1",
                                &[&m.package_id.0],
                            )
                            .await?
                            .is_none()
                        {
                            return Err(not_found(format!("package {}", m.package_id)));
                        }
                        if let Some(v) = m.version_id {
                            let version = get_version(&tx, v).await?;
                            rules::check_version_of(v, version.package.package_id, m.package_id)
                                .map_err(|e| E::Store(StoreError::Invalid(e)))?;
                        }
                        let position =
                            rules::member_position(&current.members, m.package_id) as i32;
                        tx.execute(
                        "INSERT INTO connection_group_members (group_id, position, package_id, version_id, optional) VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (group_id, package_id) DO UPDATE SET version_id = excluded.version_id, optional = excluded.optional",
                        &[&id.0, &position, &m.package_id.0, &m.version_id.map(Uuid::from), &m.optional],
                    )
                    .await?;
                    }
                    ConnectionGroupChange::MoveMember {
                        package_id,
                        position,
                    } => {
                        let order = rules::move_member(&current.members, *package_id, *position)
                            .ok_or_else(|| {
                                not_found(format!(
                                    "member {package_id} of connection group {}",
                                    current.name
                                ))
                            })?;
                        for (i, p) in order.iter().enumerate() {
                            tx.execute(
                            "UPDATE connection_group_members SET position = $3 WHERE group_id = $1 AND package_id = $2",
                            &[&id.0, &p.0, &(i as i32)],
                        )
                        .await?;
                        }
                    }
                    ConnectionGroupChange::RemoveMember(package_id) => {
                        let n = tx
                        .execute(
                            "DELETE FROM connection_group_members WHERE group_id = $1 AND package_id = $2",
                            &[&id.0, &package_id.0],
                        )
                        .await?;
                        if n == 0 {
                            return Err(not_found(format!(
                                "member {package_id} of connection group {}",
                                current.name
                            )));
                        }
                    }
                    ConnectionGroupChange::Grant(group) => {
                        require_group(&tx, group).await?;
                        tx.execute(
                        "INSERT INTO connection_group_entitlements (group_id, group_name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&id.0, group],
                    )
                    .await?;
                    }
                    ConnectionGroupChange::Revoke(group) => {
                        let n = tx
                        .execute(
                            "DELETE FROM connection_group_entitlements WHERE group_id = $1 AND group_name = $2",
                            &[&id.0, group],
                        )
                        .await?;
                        if n == 0 {
                            return Err(not_found(format!(
                                "entitlement of group {group} to connection group {}",
                                current.name
                            )));
                        }
                    }
                    ConnectionGroupChange::Publish(published) => {
                        tx.execute(
                            "UPDATE connection_groups SET published = $2 WHERE id = $1",
                            &[&id.0, published],
                        )
                        .await?;
                    }
                }
            }
            tx.execute(
                "UPDATE connection_groups SET version_id = $2, updated_at = now() WHERE id = $1",
                &[&id.0, &Uuid::new_v4()],
            )
            .await?;
            let g = get_connection_group(&tx, id).await?;
            tx.commit().await?;
            Ok(g)
        })
    }

    async fn delete_connection_group(&self, id: ConnectionGroupId) -> Result<()> {
        with_client!(self.pool, false, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            if tx
                .execute("DELETE FROM connection_groups WHERE id = $1", &[&id.0])
                .await?
                == 0
            {
                return Err(not_found(format!("connection group {id}")));
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn create_user(&self, name: &str, groups: &[String]) -> Result<Added<Vec<String>>> {
        let groups = schema::group_set(groups);
        let user = Principal::User(name.to_owned());
        // Idempotent, so safe to retry on a fresh connection.
        with_client!(self.pool, true, |c| {
            let tx = c.transaction().await?;
            // The sequence row lock serialises this with concurrent creations of the same user.
            bump(&tx).await?;
            match require_principal(&tx, &user).await {
                Ok(()) => {
                    let current = direct_groups(&tx, &user).await?;
                    schema::same_groups("user", name, &current, &groups)?;
                    tx.rollback().await?;
                    return Ok(Added {
                        value: groups.clone(),
                        created: false,
                    });
                }
                Err(E::Store(StoreError::NotFound(_))) => {}
                Err(e) => return Err(e),
            }
            insert_principal_in_groups(&tx, &user, None, &groups).await?;
            tx.commit().await?;
            Ok(Added {
                value: groups.clone(),
                created: true,
            })
        })
    }

    async fn create_machine(
        &self,
        name: &str,
        credential_hash: &str,
        groups: &[String],
    ) -> Result<()> {
        let groups = schema::group_set(groups);
        let machine = Principal::Machine(name.to_owned());
        with_client!(self.pool, false, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            insert_principal_in_groups(&tx, &machine, Some(credential_hash), &groups).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    async fn create_group(&self, name: &str) -> Result<()> {
        with_client!(self.pool, false, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            tx.execute(
                "INSERT INTO groups (name, created_at) VALUES ($1, now())",
                &[&name],
            )
            .await
            .map_err(|e| conflict(E::Pg(e), format!("group {name} already exists")))?;
            tx.commit().await?;
            Ok(())
        })
    }

    async fn delete_principal(&self, principal: &Principal) -> Result<()> {
        with_client!(self.pool, false, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            require_principal(&tx, principal).await?;
            if let Principal::Group(group) = principal {
                renew_entitled_connection_groups(&tx, group).await?;
            }
            let (table, _, _) = principal_table(principal.kind());
            tx.execute(
                &format!("DELETE FROM {table} WHERE name = $1"),
                &[&principal.name()],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    async fn delete_group(&self, name: &str, force: bool) -> Result<GroupDeletion> {
        with_client!(self.pool, false, |c| {
            let tx = c.transaction().await?;
            // First: every change waits here for the one before it, so what is
            // read below is what is deleted.
            bump(&tx).await?;
            require_group(&tx, name).await?;
            let holdings = group_holdings(&tx, name).await?;
            if !force && !holdings.is_empty() {
                return Ok(GroupDeletion {
                    deleted: false,
                    holdings,
                });
            }
            renew_entitled_connection_groups(&tx, name).await?;
            tx.execute("DELETE FROM groups WHERE name = $1", &[&name])
                .await?;
            tx.commit().await?;
            Ok(GroupDeletion {
                deleted: true,
                holdings,
            })
        })
    }

    async fn list_principals(&self, kind: PrincipalKind) -> Result<Vec<String>> {
        let (table, _, _) = principal_table(kind);
        with_client!(self.pool, true, |c| {
            Ok(
                c.query(&format!("SELECT name FROM {table} ORDER BY name"), &[])
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect(),
            )
        })
    }

    async fn add_member(&self, group: &str, member: &Principal) -> Result<()> {
        with_client!(self.pool, true, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            require_group(&tx, group).await?;
            require_principal(&tx, member).await?;
            if let Principal::Group(child) = member {
                let cycle: bool = tx
                    .query_one(
                        "WITH RECURSIVE below(name) AS (SELECT $1::text UNION SELECT gg.member_name FROM group_groups gg JOIN below ON gg.group_name = below.name)
                         SELECT EXISTS (SELECT 1 FROM below WHERE name = $2)",
                        &[child, &group],
                    )
                    .await?
                    .get(0);
                if cycle {
                    return Err(E::Store(StoreError::Invalid(format!(
                        "putting group {child} in {group} would make a cycle"
                    ))));
                }
            }
            let (_, table, column) = principal_table(member.kind());
            tx.execute(
                &format!("INSERT INTO {table} (group_name, {column}) VALUES ($1, $2) ON CONFLICT DO NOTHING"),
                &[&group, &member.name()],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    async fn remove_member(&self, group: &str, member: &Principal) -> Result<()> {
        with_client!(self.pool, false, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            let (_, table, column) = principal_table(member.kind());
            let n = tx
                .execute(
                    &format!("DELETE FROM {table} WHERE group_name = $1 AND {column} = $2"),
                    &[&group, &member.name()],
                )
                .await?;
            if n == 0 {
                return Err(not_found(format!("{} in group {group}", member.name())));
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn members(&self, group: &str) -> Result<Vec<Principal>> {
        with_client!(self.pool, true, |c| {
            require_group(&c, group).await?;
            let mut out = Vec::new();
            for kind in PrincipalKind::ALL {
                let (_, table, column) = principal_table(kind);
                for r in c
                    .query(
                        &format!(
                            "SELECT {column} FROM {table} WHERE group_name = $1 ORDER BY {column}"
                        ),
                        &[&group],
                    )
                    .await?
                {
                    out.push(kind.named(r.get(0)));
                }
            }
            Ok(out)
        })
    }

    async fn groups_of(&self, principal: &Principal) -> Result<Vec<String>> {
        with_client!(self.pool, true, |c| {
            require_principal(&c, principal).await?;
            let (_, table, column) = principal_table(principal.kind());
            let sql = format!(
                "WITH RECURSIVE up(name) AS (
                    SELECT group_name FROM {table} WHERE {column} = $1
                    UNION SELECT gg.group_name FROM group_groups gg JOIN up ON gg.member_name = up.name)
                 SELECT name FROM up ORDER BY name"
            );
            Ok(c.query(&sql, &[&principal.name()])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    async fn catalog_snapshot(&self) -> Result<catalog::CatalogSnapshot> {
        with_client!(self.pool, true, |c| {
            // One REPEATABLE READ transaction: every SELECT sees the same snapshot.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let sequence: i64 = tx
                .query_one("SELECT seq FROM change_sequence WHERE id = 1", &[])
                .await?
                .get(0);
            let mut packages = Vec::new();
            for row in tx
                .query(
                    &format!(
                        "SELECT {VERSION_COLUMNS} FROM package_versions WHERE published
                         ORDER BY created_at, version_id"
                    ),
                    &[],
                )
                .await?
            {
                let version = read_version(&tx, &row).await?.package;
                let deployment_config = tx
                    .query_opt(
                        "SELECT config, updated_at, revision FROM deployment_configs WHERE version_id = $1",
                        &[&version.version_id.0],
                    )
                    .await?
                    .map(|r| catalog::Configuration {
                        document: r.get(0),
                        updated_at: r.get(1),
                        revision: r.get(2),
                    });
                let mut user_configs = std::collections::BTreeMap::new();
                let entitlements = tx
                    .query(
                        "SELECT group_name, user_config, user_config_updated_at, user_config_revision
                         FROM entitlements WHERE version_id = $1 ORDER BY group_name",
                        &[&version.version_id.0],
                    )
                    .await?
                    .iter()
                    .map(|r| {
                        let e = Entitlement {
                            group: r.get(0),
                            user_config: r.get(1),
                        };
                        if let (Some(document), Some(updated_at)) = (e.user_config.clone(), r.get(2)) {
                            user_configs.insert(
                                e.group.clone(),
                                catalog::Configuration {
                                    document,
                                    updated_at,
                                    revision: r.get(3),
                                },
                            );
                        }
                        e
                    })
                    .collect();
                packages.push(catalog::PublishedPackage {
                    version,
                    deployment_config,
                    entitlements,
                    user_configs,
                });
            }
            let mut connection_groups = Vec::new();
            for row in tx
                .query(
                    "SELECT id FROM connection_groups WHERE published ORDER BY priority, name",
                    &[],
                )
                .await?
            {
                connection_groups
                    .push(get_connection_group(&tx, ConnectionGroupId(row.get(0))).await?);
            }
            let mut groups: Vec<String> = tx
                .query("SELECT name FROM groups", &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            groups.sort();
            let mut users: Vec<String> = tx
                .query("SELECT name FROM users", &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            users.sort();
            let mut machines: Vec<catalog::MachineCredential> = tx
                .query("SELECT name, credential_hash FROM machines", &[])
                .await?
                .iter()
                .map(|r| catalog::MachineCredential {
                    name: r.get(0),
                    credential_hash: r.get(1),
                })
                .collect();
            machines.sort_by(|a, b| a.name.cmp(&b.name));
            let mut memberships = Vec::new();
            for kind in PrincipalKind::ALL {
                let (_, table, column) = principal_table(kind);
                for r in tx
                    .query(&format!("SELECT group_name, {column} FROM {table}"), &[])
                    .await?
                {
                    memberships.push(catalog::Membership {
                        group: r.get(0),
                        member: kind.named(r.get(1)),
                    });
                }
            }
            memberships.sort();
            tx.commit().await?;
            Ok(catalog::CatalogSnapshot {
                sequence,
                packages,
                connection_groups,
                groups,
                users,
                machines,
                memberships,
            })
        })
    }

    async fn machine_by_credential(&self, credential_hash: &str) -> Result<Option<String>> {
        with_client!(self.pool, true, |c| {
            Ok(c.query_opt(
                "SELECT name FROM machines WHERE credential_hash = $1",
                &[&credential_hash],
            )
            .await?
            .map(|r| r.get(0)))
        })
    }

    async fn register_publishing_server(
        &self,
        name: &str,
        credential_hash: &str,
    ) -> Result<PublishingServer> {
        with_client!(self.pool, false, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            let row = tx
                .query_one(
                    "INSERT INTO publishing_servers (name, credential_hash, registered_at) VALUES ($1, $2, now())
                     RETURNING name, registered_at, last_sync_at, last_sync_sequence",
                    &[&name, &credential_hash],
                )
                .await
                .map_err(|e| conflict(E::Pg(e), format!("publishing server {name} is already registered")))?;
            tx.commit().await?;
            Ok(read_server(&row))
        })
    }

    async fn unregister_publishing_server(&self, name: &str) -> Result<()> {
        with_client!(self.pool, false, |c| {
            let tx = c.transaction().await?;
            bump(&tx).await?;
            if tx
                .execute("DELETE FROM publishing_servers WHERE name = $1", &[&name])
                .await?
                == 0
            {
                return Err(not_found(format!("publishing server {name}")));
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn list_publishing_servers(&self) -> Result<Vec<PublishingServer>> {
        with_client!(self.pool, true, |c| {
            Ok(c.query(
                "SELECT name, registered_at, last_sync_at, last_sync_sequence FROM publishing_servers ORDER BY name",
                &[],
            )
            .await?
            .iter()
            .map(read_server)
            .collect())
        })
    }

    async fn publishing_server_by_credential(
        &self,
        credential_hash: &str,
    ) -> Result<Option<PublishingServer>> {
        with_client!(self.pool, true, |c| {
            Ok(c.query_opt(
                "SELECT name, registered_at, last_sync_at, last_sync_sequence FROM publishing_servers WHERE credential_hash = $1",
                &[&credential_hash],
            )
            .await?
            .map(|r| read_server(&r)))
        })
    }

    async fn record_sync(&self, name: &str, sequence: i64) -> Result<()> {
        with_client!(self.pool, true, |c| {
            let n = c
                .execute(
                    "UPDATE publishing_servers SET last_sync_at = now(), last_sync_sequence = $2 WHERE name = $1",
                    &[&name, &sequence],
                )
                .await?;
            if n == 0 {
                return Err(not_found(format!("publishing server {name}")));
            }
            Ok(())
        })
    }

    async fn add_administrator(&self, name: &str, password_hash: Option<&str>) -> Result<()> {
        with_client!(self.pool, false, |c| {
            c.execute(
                "INSERT INTO administrators (name, password_hash, created_at) VALUES ($1, $2, now())",
                &[&name, &password_hash],
            )
            .await
            .map_err(|e| conflict(E::Pg(e), format!("administrator {name} already exists")))?;
            Ok(())
        })
    }

    async fn remove_administrator(&self, name: &str) -> Result<()> {
        with_client!(self.pool, false, |c| {
            let tx = c.transaction().await?;
            // Lock every administrator row: of two concurrent removals, the second
            // waits for the first and then counts what is left.
            let names: Vec<String> = tx
                .query(
                    "SELECT name FROM administrators ORDER BY name FOR UPDATE",
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if !names.iter().any(|n| n == name) {
                return Err(not_found(format!("administrator {name}")));
            }
            if names.len() == 1 {
                return Err(E::Store(StoreError::Conflict(
                    "the last administrator cannot be removed".into(),
                )));
            }
            tx.execute("DELETE FROM administrators WHERE name = $1", &[&name])
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    async fn list_administrators(&self) -> Result<Vec<Administrator>> {
        with_client!(self.pool, true, |c| {
            Ok(c.query(
                "SELECT name, password_hash IS NOT NULL, created_at FROM administrators ORDER BY name",
                &[],
            )
            .await?
            .iter()
            .map(|r| Administrator { name: r.get(0), has_password: r.get(1), created_at: r.get(2) })
            .collect())
        })
    }

    async fn administrator_password_hash(&self, name: &str) -> Result<Option<String>> {
        with_client!(self.pool, true, |c| {
            Ok(c.query_opt(
                "SELECT password_hash FROM administrators WHERE name = $1",
                &[&name],
            )
            .await?
            .and_then(|r| r.get(0)))
        })
    }

    async fn add_api_token(&self, admin: &str, token_hash: &str, label: &str) -> Result<()> {
        with_client!(self.pool, false, |c| {
            c.execute(
                "INSERT INTO api_tokens (token_hash, admin_name, label, created_at) VALUES ($1, $2, $3, now())",
                &[&token_hash, &admin, &label],
            )
            .await
            .map_err(|e| match E::Pg(e) {
                E::Pg(pg) if pg.code().map(|c| c.code()) == Some("23503") => not_found(format!("administrator {admin}")),
                other => other,
            })?;
            Ok(())
        })
    }

    async fn administrator_by_token(&self, token_hash: &str) -> Result<Option<String>> {
        with_client!(self.pool, true, |c| {
            Ok(c.query_opt(
                "SELECT admin_name FROM api_tokens WHERE token_hash = $1",
                &[&token_hash],
            )
            .await?
            .map(|r| r.get(0)))
        })
    }
}

/// The Reporting DB on PostgreSQL.
pub(crate) struct PgReporting {
    pool: Pool,
}

impl PgReporting {
    pub(crate) async fn open(url: &str) -> Result<Self> {
        Ok(PgReporting {
            pool: open_pool(url, DatabaseKind::Reporting).await?,
        })
    }
}

#[async_trait]
impl ReportingStore for PgReporting {
    /// One statement per table per batch (arrays unnested server-side), so a
    /// batch of a thousand reports costs a handful of round trips. The
    /// inserts are prepared once per connection (`prepare_cached`): the
    /// reporting role commits many small batches, each of which would
    /// otherwise parse and plan every statement again. The two lookups by
    /// `host_name = ANY($1)` are not: a cached (generic) plan of theirs,
    /// made while the table was small, seq-scans it for ever after.
    async fn ingest(&self, reports: &[ClientReport]) -> Result<IngestResult> {
        if reports.is_empty() {
            return Ok(IngestResult::default());
        }
        with_client!(self.pool, true, |c| {
            let tx = c.transaction().await?;
            let ids: Vec<Uuid> = reports.iter().map(|r| r.id).collect();
            let received: Vec<DateTime<Utc>> = reports.iter().map(|r| r.received_at).collect();
            let hosts: Vec<&str> = reports.iter().map(|r| r.source_host.as_str()).collect();
            let bodies: Vec<&str> = reports.iter().map(|r| r.body.as_str()).collect();
            let mut stored: std::collections::HashSet<Uuid> = tx
                .query(
                    &tx.prepare_cached(
                        "INSERT INTO raw_reports (report_id, received_at, source_host, body)
                     SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[])
                     ON CONFLICT DO NOTHING RETURNING report_id",
                    )
                    .await?,
                    &[&ids, &received, &hosts, &bodies],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let fresh: Vec<&ClientReport> =
                // `remove`: a report repeated within the batch is fresh once.
                reports.iter().filter(|r| stored.remove(&r.id)).collect();

            // The newest report of each client decides its ClientInformation and package list.
            // Ordered maps: every batch locks clients' rows in host-name order, so
            // concurrent batches wait for each other instead of deadlocking.
            let latest = rules::latest_per_client(fresh.iter().copied());
            if !latest.information.is_empty() {
                let rs: Vec<&&ClientReport> = latest.information.values().collect();
                let col = |f: fn(&ClientInformation) -> &str| {
                    rs.iter().map(|r| f(&r.client)).collect::<Vec<&str>>()
                };
                let sp: Vec<i32> = rs.iter().map(|r| r.client.os_service_pack).collect();
                let at: Vec<DateTime<Utc>> = rs.iter().map(|r| r.received_at).collect();
                tx.execute(
                    &tx.prepare_cached("INSERT INTO client_information (host_name, client_version, processor_arch, os_version, os_service_pack, os_type, last_report_at)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::timestamptz[])
                     ON CONFLICT (host_name) DO UPDATE SET client_version = excluded.client_version, processor_arch = excluded.processor_arch,
                       os_version = excluded.os_version, os_service_pack = excluded.os_service_pack, os_type = excluded.os_type,
                       last_report_at = excluded.last_report_at
                     WHERE excluded.last_report_at >= client_information.last_report_at").await?,
                    &[
                        &col(|c| &c.host_name),
                        &col(|c| &c.client_version),
                        &col(|c| &c.processor_arch),
                        &col(|c| &c.os_version),
                        &sp,
                        &col(|c| &c.os_type),
                        &at,
                    ],
                )
                .await?;
            }
            // The upsert above locked every client's row, so what is stored cannot
            // change under this check: a list replaces the stored one only when
            // its report is not older ([`rules::supersedes`]).
            let mut package_lists = latest.package_lists;
            if !package_lists.is_empty() {
                let hosts: Vec<&str> = package_lists.keys().copied().collect();
                for row in tx
                    .query(
                        "SELECT host_name, max(reported_at) FROM package_information WHERE host_name = ANY($1) GROUP BY 1",
                        &[&hosts],
                    )
                    .await?
                {
                    let (host, stored): (&str, DateTime<Utc>) = (row.get(0), row.get(1));
                    if package_lists
                        .get(host)
                        .is_some_and(|r| !rules::supersedes(r.received_at, Some(stored)))
                    {
                        package_lists.remove(host);
                    }
                }
            }
            if !package_lists.is_empty() {
                let hosts: Vec<&str> = package_lists.keys().copied().collect();
                tx.execute(
                    "DELETE FROM package_information WHERE host_name = ANY($1)",
                    &[&hosts],
                )
                .await?;
                let (mut h, mut pid, mut vid, mut name, mut ver, mut src, mut pct, mut at) = (
                    vec![],
                    vec![],
                    vec![],
                    vec![],
                    vec![],
                    vec![],
                    vec![],
                    vec![],
                );
                for r in package_lists.values() {
                    for p in rules::distinct_packages(&r.packages) {
                        h.push(r.client.host_name.as_str());
                        pid.push(p.package_id);
                        vid.push(p.version_id);
                        name.push(p.name.as_str());
                        ver.push(p.version.as_deref());
                        src.push(p.source.as_deref());
                        pct.push(p.percent_cached);
                        at.push(r.received_at);
                    }
                }
                tx.execute(
                    &tx.prepare_cached("INSERT INTO package_information (host_name, package_id, version_id, name, version, source, percent_cached, reported_at)
                     SELECT * FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::int[], $8::timestamptz[])").await?,
                    &[&h, &pid, &vid, &name, &ver, &src, &pct, &at],
                )
                .await?;
            }
            let usage: Vec<(&ClientReport, i32, &ApplicationUsage)> = fresh
                .iter()
                .flat_map(|r| {
                    r.usage
                        .iter()
                        .enumerate()
                        .map(move |(i, u)| (*r, i as i32, u))
                })
                .collect();
            if !usage.is_empty() {
                // Binary COPY: the cheapest way into PostgreSQL for ~20 rows per report.
                use tokio_postgres::binary_copy::BinaryCopyInWriter;
                use tokio_postgres::types::{ToSql, Type};
                let sink = tx
                    .copy_in(
                        &tx.prepare_cached("COPY application_usage (report_id, record, host_name, application, application_version, server, user_name,
                           package_version_id, connection_group_version_id, launched_at, launch_status, shutdown_at) FROM STDIN BINARY").await?,
                    )
                    .await?;
                let types = [
                    Type::UUID,
                    Type::INT4,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::UUID,
                    Type::UUID,
                    Type::TIMESTAMPTZ,
                    Type::TEXT,
                    Type::TIMESTAMPTZ,
                ];
                let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
                for (r, i, u) in &usage {
                    let row: [&(dyn ToSql + Sync); 12] = [
                        &r.id,
                        i,
                        &r.client.host_name,
                        &u.application,
                        &u.application_version,
                        &u.server,
                        &u.user,
                        &u.package_version_id,
                        &u.connection_group_version_id,
                        &u.launched_at,
                        &u.launch_status,
                        &u.shutdown_at,
                    ];
                    writer.as_mut().write(&row).await?;
                }
                writer.finish().await?;
            }
            tx.commit().await?;
            Ok(IngestResult {
                stored: fresh.len() as u64,
                duplicates: (reports.len() - fresh.len()) as u64,
            })
        })
    }

    async fn raw_report(&self, id: Uuid) -> Result<Option<RawReport>> {
        with_client!(self.pool, true, |c| {
            Ok(c.query_opt(
                "SELECT received_at, source_host, body FROM raw_reports WHERE report_id = $1",
                &[&id],
            )
            .await?
            .map(|r| RawReport {
                received_at: r.get(0),
                source_host: r.get(1),
                body: r.get(2),
            }))
        })
    }

    async fn launches(&self, grouping: LaunchGrouping) -> Result<Vec<LaunchCount>> {
        let sql = match grouping {
            LaunchGrouping::ApplicationPerDay => {
                "SELECT application, (launched_at AT TIME ZONE 'UTC')::date, COUNT(*) AS n FROM application_usage GROUP BY 1, 2 ORDER BY n DESC, 1, 2"
            }
            LaunchGrouping::User => {
                "SELECT user_name, NULL::date, COUNT(*) AS n FROM application_usage GROUP BY 1 ORDER BY n DESC, 1"
            }
            LaunchGrouping::Package => {
                "SELECT package_version_id::text, NULL::date, COUNT(*) AS n FROM application_usage GROUP BY 1 ORDER BY n DESC, 1"
            }
        };
        with_client!(self.pool, true, |c| {
            Ok(c.query(sql, &[])
                .await?
                .iter()
                .map(|r| LaunchCount {
                    key: r.get(0),
                    day: r.get(1),
                    launches: r.get(2),
                })
                .collect())
        })
    }

    async fn client_caches(&self) -> Result<Vec<ClientCache>> {
        with_client!(self.pool, true, |c| {
            let mut clients: Vec<ClientCache> = c
                .query(
                    "SELECT host_name, client_version, processor_arch, os_version, os_service_pack, os_type, last_report_at
                     FROM client_information ORDER BY host_name",
                    &[],
                )
                .await?
                .iter()
                .map(|r| ClientCache {
                    client: ClientInformation {
                        host_name: r.get(0),
                        client_version: r.get(1),
                        processor_arch: r.get(2),
                        os_version: r.get(3),
                        os_service_pack: r.get(4),
                        os_type: r.get(5),
                    },
                    last_report_at: r.get(6),
                    packages: Vec::new(),
                })
                .collect();
            for cc in &mut clients {
                cc.packages = c
                    .query(
                        "SELECT package_id, version_id, name, version, source, percent_cached FROM package_information
                         WHERE host_name = $1 ORDER BY name, version_id",
                        &[&cc.client.host_name],
                    )
                    .await?
                    .iter()
                    .map(|r| PackageInformation {
                        package_id: r.get(0),
                        version_id: r.get(1),
                        name: r.get(2),
                        version: r.get(3),
                        source: r.get(4),
                        percent_cached: r.get(5),
                    })
                    .collect();
            }
            Ok(clients)
        })
    }
}
