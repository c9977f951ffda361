//! The SQLite backend: the embedded default, one file per database in the data directory.
//!
//! One connection per database behind a mutex, used from `spawn_blocking`:
//! SQLite has one writer at a time anyway. WAL journal, `synchronous=FULL` (an
//! acknowledged write survives a power cut), foreign keys on, and a busy
//! timeout so that a second process (`avail db status`) does not fail at once.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use uuid::Uuid;

use crate::schema::{self, DatabaseKind, principal_table};
use crate::{ManagementStore, ReportingStore, Result, StoreError};
use avail_model::rules;
use avail_model::*;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, ref msg) = e {
            match f.extended_code {
                // SQLITE_CONSTRAINT_PRIMARYKEY, _UNIQUE
                1555 | 2067 => {
                    return StoreError::Conflict(format!(
                        "already exists ({})",
                        msg.as_deref().unwrap_or("unique")
                    ));
                }
                // SQLITE_CONSTRAINT_FOREIGNKEY
                787 => return StoreError::NotFound("a referenced row".into()),
                _ if f.code == rusqlite::ErrorCode::DatabaseBusy
                    || f.code == rusqlite::ErrorCode::DatabaseLocked =>
                {
                    return StoreError::Unavailable(
                        "the SQLite database is locked by another process".into(),
                    );
                }
                // SQLITE_FULL: "database or disk is full"; `Db::run` names the file.
                _ if f.code == rusqlite::ErrorCode::DiskFull => {
                    return StoreError::Full("the SQLite database or its disk is full".into());
                }
                _ => {}
            }
        }
        StoreError::Internal(e.to_string())
    }
}

/// A connection shared by blocking tasks, and the file it is open on.
#[derive(Clone)]
struct Db {
    conn: Arc<Mutex<Connection>>,
    path: Arc<str>,
}

/// Create the database file private to Avail's user (0600, whatever the umask)
/// when it does not exist yet; SQLite gives its `-wal` and `-shm` files the
/// mode of the database file. An existing file keeps the mode it has.
fn create_private(path: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if path.is_empty() || path.starts_with(':') || path.starts_with("file:") {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot create SQLite database {path}: {e}"
        ))),
    }
}

impl Db {
    fn open(path: &str) -> Result<Db> {
        create_private(path)?;
        let conn = Connection::open(path).map_err(|e| {
            StoreError::Unavailable(format!("cannot open SQLite database {path}: {e}"))
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::from(path),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.conn.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut conn = db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("database task failed: {e}")))?;
        result.map_err(|e| match e {
            StoreError::Full(_) => StoreError::Full(format!(
                "no space left for the SQLite database {} (database or disk is full)",
                self.path
            )),
            other => other,
        })
    }

    /// Run `f` in a write transaction.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })
        .await
    }
}

fn installed_version(conn: &Connection) -> Result<i32> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?)
}

fn install_sync(conn: &mut Connection, kind: DatabaseKind) -> Result<SchemaStatus> {
    let scripts = schema::sqlite(kind);
    let installed = installed_version(conn)?;
    let status = schema::status(scripts, installed);
    if status.installed > status.known {
        schema::require_current(kind, &status)?;
    }
    for script in scripts.iter().filter(|s| s.version > installed) {
        let tx = conn.transaction()?;
        tx.execute_batch(script.sql).map_err(|e| {
            StoreError::Schema(format!("{kind}: script {} failed: {e}", script.name))
        })?;
        tx.commit()?;
        tracing::info!(%kind, script = script.name, "installed schema script");
    }
    Ok(schema::status(scripts, installed_version(conn)?))
}

pub(crate) async fn install(path: &str, kind: DatabaseKind) -> Result<SchemaStatus> {
    Db::open(path)?
        .run(move |conn| install_sync(conn, kind))
        .await
}

pub(crate) async fn status(path: &str, kind: DatabaseKind) -> Result<SchemaStatus> {
    if !std::path::Path::new(path).exists() {
        return Ok(schema::status(schema::sqlite(kind), 0));
    }
    Db::open(path)?
        .run(move |conn| {
            Ok(schema::status(
                schema::sqlite(kind),
                installed_version(conn)?,
            ))
        })
        .await
}

async fn open_installed(path: &str, kind: DatabaseKind) -> Result<Db> {
    let db = Db::open(path)?;
    let status = db.run(move |conn| install_sync(conn, kind)).await?;
    schema::require_current(kind, &status)?;
    Ok(db)
}

/// A UUID stored as text, as the id type the caller wants.
fn uuid<T: From<Uuid>>(s: String) -> rusqlite::Result<T> {
    Uuid::parse_str(&s).map(T::from).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn bump(tx: &Transaction<'_>) -> Result<()> {
    tx.execute("UPDATE change_sequence SET seq = seq + 1 WHERE id = 1", [])?;
    Ok(())
}

fn not_found(what: impl Into<String>) -> StoreError {
    StoreError::NotFound(what.into())
}

/// The Management DB on SQLite.
pub(crate) struct SqliteManagement {
    db: Db,
}

impl SqliteManagement {
    pub(crate) async fn open(path: &str) -> Result<Self> {
        Ok(SqliteManagement {
            db: open_installed(path, DatabaseKind::Management).await?,
        })
    }
}

const VERSION_COLUMNS: &str = "version_id, package_id, name, version, content_path, size, sha256, published, created_at, updated_at, block_map_sha256, target_oses";

fn read_version(conn: &Connection, row: &rusqlite::Row<'_>) -> Result<PackageVersion> {
    let version_id: VersionId = uuid(row.get(0)?)?;
    let mut apps = conn.prepare_cached(
        "SELECT app_id, target, arguments FROM applications WHERE version_id = ?1 ORDER BY position",
    )?;
    let applications = apps
        .query_map([version_id.to_string()], |r| {
            Ok(Application {
                id: r.get(0)?,
                target: r.get(1)?,
                arguments: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(PackageVersion {
        package: NewPackageVersion {
            package_id: uuid(row.get(1)?)?,
            version_id,
            name: row.get(2)?,
            version: row.get(3)?,
            content_path: row.get(4)?,
            size: row.get::<_, i64>(5)? as u64,
            sha256: row.get(6)?,
            block_map_sha256: row.get(10)?,
            target_oses: crate::target_oses_from_column(row.get(11)?)?,
            applications,
        },
        published: row.get(7)?,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
    })
}

fn get_version(conn: &Connection, version_id: VersionId) -> Result<PackageVersion> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS} FROM package_versions WHERE version_id = ?1"
    ))?;
    let mut rows = stmt.query([version_id.to_string()])?;
    match rows.next()? {
        Some(row) => read_version(conn, row),
        None => Err(not_found(format!("package version {version_id}"))),
    }
}

fn require_group(conn: &Connection, group: &str) -> Result<()> {
    let found: Option<i32> = conn
        .query_row("SELECT 1 FROM groups WHERE name = ?1", [group], |r| {
            r.get(0)
        })
        .optional()?;
    found
        .map(|_| ())
        .ok_or_else(|| not_found(format!("group {group}")))
}

fn get_connection_group(conn: &Connection, id: ConnectionGroupId) -> Result<ConnectionGroup> {
    let row = conn
        .query_row(
            "SELECT version_id, name, priority, published, updated_at FROM connection_groups WHERE id = ?1",
            [id.to_string()],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?
        .ok_or_else(|| not_found(format!("connection group {id}")))?;
    let mut members = conn.prepare_cached(
        "SELECT package_id, version_id, optional FROM connection_group_members WHERE group_id = ?1 ORDER BY position",
    )?;
    let members = members
        .query_map([id.to_string()], |r| {
            Ok(ConnectionGroupMember {
                package_id: uuid(r.get(0)?)?,
                version_id: r.get::<_, Option<String>>(1)?.map(uuid).transpose()?,
                optional: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut groups = conn.prepare_cached(
        "SELECT group_name FROM connection_group_entitlements WHERE group_id = ?1 ORDER BY group_name",
    )?;
    let entitled_groups = groups
        .query_map([id.to_string()], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ConnectionGroup {
        id,
        version_id: uuid(row.0)?,
        name: row.1,
        priority: row.2,
        members,
        entitled_groups,
        published: row.3,
        updated_at: row.4,
    })
}

fn require_principal(conn: &Connection, p: &Principal) -> Result<()> {
    let (table, _, _) = principal_table(p.kind());
    let found: Option<i32> = conn
        .query_row(
            &format!("SELECT 1 FROM {table} WHERE name = ?1"),
            [p.name()],
            |r| r.get(0),
        )
        .optional()?;
    found
        .map(|_| ())
        .ok_or_else(|| not_found(format!("{} {}", &table[..table.len() - 1], p.name())))
}

fn read_server(r: &rusqlite::Row<'_>) -> rusqlite::Result<PublishingServer> {
    Ok(PublishingServer {
        name: r.get(0)?,
        registered_at: r.get(1)?,
        last_sync_at: r.get(2)?,
        last_sync_sequence: r.get(3)?,
    })
}

/// Record a package version unless it is there already (see `add_package_version`).
fn insert_version(tx: &Transaction<'_>, v: &NewPackageVersion) -> Result<Added<PackageVersion>> {
    match get_version(tx, v.version_id) {
        Ok(existing) if existing.package.sha256 == v.sha256 => {
            return Ok(Added {
                value: existing,
                created: false,
            });
        }
        Ok(_) => {
            return Err(StoreError::Conflict(format!(
                "version {} is already imported from a different file",
                v.version_id
            )));
        }
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let now = Utc::now();
    tx.execute(
        "INSERT INTO packages (package_id, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![v.package_id.to_string(), now],
    )?;
    tx.execute(
        "INSERT INTO package_versions (version_id, package_id, name, version, content_path, size, sha256, published, created_at, updated_at, block_map_sha256, target_oses)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?8, ?9, ?10)",
        params![
            v.version_id.to_string(),
            v.package_id.to_string(),
            v.name,
            v.version,
            v.content_path,
            v.size as i64,
            v.sha256,
            now,
            v.block_map_sha256,
            crate::target_oses_to_column(&v.target_oses)
        ],
    )?;
    for (i, app) in v.applications.iter().enumerate() {
        tx.execute(
            "INSERT INTO applications (version_id, position, app_id, target, arguments) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![v.version_id.to_string(), i as i64, app.id, app.target, app.arguments],
        )?;
    }
    bump(tx)?;
    Ok(Added {
        value: get_version(tx, v.version_id)?,
        created: true,
    })
}

/// Count one more set of a version's configurations: its new revision, which
/// the configuration set in the same transaction is stamped with.
fn next_config_revision(tx: &Transaction<'_>, version_id: VersionId) -> Result<i64> {
    Ok(tx.query_row(
        "UPDATE package_versions SET config_revision = config_revision + 1 WHERE version_id = ?1
         RETURNING config_revision",
        [version_id.to_string()],
        |r| r.get(0),
    )?)
}

/// Copy entitlements and/or the deployment configuration from one version to
/// another; what is copied is a set of the target's configurations (one new revision).
fn copy_transfer(
    tx: &Transaction<'_>,
    from: VersionId,
    to: VersionId,
    what: Transfer,
) -> Result<()> {
    let revision = if what.entitlements || what.deployment_config {
        next_config_revision(tx, to)?
    } else {
        0
    };
    if what.entitlements {
        tx.execute(
            "INSERT INTO entitlements (version_id, group_name, user_config, user_config_revision, user_config_updated_at)
             SELECT ?2, group_name, user_config, ?3, ?4 FROM entitlements WHERE version_id = ?1
             ON CONFLICT (version_id, group_name) DO UPDATE SET user_config = excluded.user_config,
                 user_config_revision = excluded.user_config_revision,
                 user_config_updated_at = excluded.user_config_updated_at",
            params![from.to_string(), to.to_string(), revision, Utc::now()],
        )?;
    }
    if what.deployment_config {
        tx.execute(
            "INSERT INTO deployment_configs (version_id, config, updated_at, revision)
             SELECT ?2, config, ?3, ?4 FROM deployment_configs WHERE version_id = ?1
             ON CONFLICT (version_id) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at,
                 revision = excluded.revision",
            params![from.to_string(), to.to_string(), Utc::now(), revision],
        )?;
    }
    if what.publish {
        tx.execute(
            "UPDATE package_versions SET published = 1, updated_at = ?2 WHERE version_id = ?1 AND published = 0",
            params![to.to_string(), Utc::now()],
        )?;
        unpublish_others(tx, to)?;
    }
    Ok(())
}

/// Unpublish every version of `version_id`'s package but `version_id`: a
/// package has at most one published version.
fn unpublish_others(tx: &Transaction<'_>, version_id: VersionId) -> Result<()> {
    tx.execute(
        "UPDATE package_versions SET published = 0, updated_at = ?2
         WHERE published = 1 AND version_id <> ?1
           AND package_id = (SELECT package_id FROM package_versions WHERE version_id = ?1)",
        params![version_id.to_string(), Utc::now()],
    )?;
    Ok(())
}

/// Give each connection group that `group` is entitled to a new `version_id`:
/// the group's entitlement is about to go.
fn renew_entitled_connection_groups(tx: &Transaction<'_>, group: &str) -> Result<()> {
    let entitled = tx
        .prepare("SELECT group_id FROM connection_group_entitlements WHERE group_name = ?1")?
        .query_map([group], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for id in entitled {
        tx.execute(
            "UPDATE connection_groups SET version_id = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, Uuid::new_v4().to_string(), Utc::now()],
        )?;
    }
    Ok(())
}

/// What `group` holds: its entitlements and memberships.
fn group_holdings(tx: &Transaction<'_>, group: &str) -> Result<GroupHoldings> {
    let strings = |sql: &str| -> Result<Vec<String>> {
        Ok(tx
            .prepare(sql)?
            .query_map([group], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    };
    let mut members = Vec::new();
    for kind in PrincipalKind::ALL {
        let (_, table, column) = principal_table(kind);
        members.extend(
            strings(&format!(
                "SELECT {column} FROM {table} WHERE group_name = ?1 ORDER BY {column}"
            ))?
            .into_iter()
            .map(|name| kind.named(name)),
        );
    }
    Ok(GroupHoldings {
        packages: strings(
            "SELECT v.name || ' ' || v.version FROM entitlements e JOIN package_versions v ON v.version_id = e.version_id
             WHERE e.group_name = ?1 ORDER BY v.name, v.created_at",
        )?,
        connection_groups: strings(
            "SELECT c.name FROM connection_group_entitlements e JOIN connection_groups c ON c.id = e.group_id
             WHERE e.group_name = ?1 ORDER BY c.name",
        )?,
        members,
        member_of: strings(
            "SELECT group_name FROM group_groups WHERE member_name = ?1 ORDER BY group_name",
        )?,
    })
}

/// A principal's direct groups, sorted.
fn direct_groups(conn: &Connection, p: &Principal) -> Result<Vec<String>> {
    let (_, table, column) = principal_table(p.kind());
    Ok(conn
        .prepare(&format!(
            "SELECT group_name FROM {table} WHERE {column} = ?1 ORDER BY group_name"
        ))?
        .query_map([p.name()], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?)
}

/// Insert a user or machine row and its direct memberships; every group must
/// exist (else NotFound naming the missing ones, and the caller's transaction
/// rolls back).
fn insert_principal_in_groups(
    tx: &Transaction<'_>,
    p: &Principal,
    credential_hash: Option<&str>,
    groups: &[String],
) -> Result<()> {
    let mut missing = Vec::new();
    for g in groups {
        match require_group(tx, g) {
            Ok(()) => {}
            Err(StoreError::NotFound(_)) => missing.push(g.clone()),
            Err(e) => return Err(e),
        }
    }
    if !missing.is_empty() {
        return Err(schema::missing_groups(&missing));
    }
    let (table, members, column) = principal_table(p.kind());
    let name = p.name();
    let kind = &table[..table.len() - 1];
    match credential_hash {
        Some(hash) => tx.execute(
            &format!("INSERT INTO {table} (name, credential_hash, created_at) VALUES (?1, ?2, ?3)"),
            params![name, hash, Utc::now()],
        ),
        None => tx.execute(
            &format!("INSERT INTO {table} (name, created_at) VALUES (?1, ?2)"),
            params![name, Utc::now()],
        ),
    }
    .map_err(|e| conflict_as(e, format!("{kind} {name} already exists")))?;
    let mut insert = tx.prepare(&format!(
        "INSERT INTO {members} (group_name, {column}) VALUES (?1, ?2)"
    ))?;
    for g in groups {
        insert.execute(params![g, name])?;
    }
    bump(tx)
}

#[async_trait]
impl ManagementStore for SqliteManagement {
    async fn change_sequence(&self) -> Result<i64> {
        self.db
            .run(|c| {
                Ok(
                    c.query_row("SELECT seq FROM change_sequence WHERE id = 1", [], |r| {
                        r.get(0)
                    })?,
                )
            })
            .await
    }

    async fn add_package_version(&self, v: NewPackageVersion) -> Result<Added<PackageVersion>> {
        self.db.write(move |tx| insert_version(tx, &v)).await
    }

    async fn package_version(&self, version_id: VersionId) -> Result<PackageVersion> {
        self.db.run(move |c| get_version(c, version_id)).await
    }

    async fn list_package_versions(&self, filter: &PackageFilter) -> Result<Vec<PackageVersion>> {
        let filter = filter.clone();
        self.db
            .run(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {VERSION_COLUMNS} FROM package_versions
                     WHERE (?1 IS NULL OR instr(lower(name), lower(?1)) > 0)
                       AND (?2 IS NULL OR package_id = ?2)
                       AND (?3 IS NULL OR published = ?3)
                     ORDER BY created_at, version_id"
                ))?;
                let mut rows = stmt.query(params![
                    filter.name_contains,
                    filter.package_id.map(|u| u.to_string()),
                    filter.published
                ])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(read_version(c, row)?);
                }
                Ok(out)
            })
            .await
    }

    async fn set_published(
        &self,
        version_id: VersionId,
        published: bool,
    ) -> Result<PackageVersion> {
        self.db
            .write(move |tx| {
                let n = tx.execute(
                    "UPDATE package_versions SET published = ?2, updated_at = ?3 WHERE version_id = ?1",
                    params![version_id.to_string(), published, Utc::now()],
                )?;
                if n == 0 {
                    return Err(not_found(format!("package version {version_id}")));
                }
                if published {
                    unpublish_others(tx, version_id)?;
                }
                bump(tx)?;
                get_version(tx, version_id)
            })
            .await
    }

    async fn remove_package_version(&self, version_id: VersionId) -> Result<PackageVersion> {
        self.db
            .write(move |tx| {
                let version = get_version(tx, version_id)?;
                let used: Option<String> = tx
                    .query_row(
                        "SELECT g.name FROM connection_group_members m JOIN connection_groups g ON g.id = m.group_id WHERE m.version_id = ?1",
                        [version_id.to_string()],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(group) = used {
                    return Err(StoreError::Conflict(format!(
                        "version {version_id} is a member of connection group {group}; remove it there first"
                    )));
                }
                tx.execute("DELETE FROM package_versions WHERE version_id = ?1", [version_id.to_string()])?;
                let package = version.package.package_id.to_string();
                let others: i64 = tx.query_row(
                    "SELECT (SELECT COUNT(*) FROM package_versions WHERE package_id = ?1) + (SELECT COUNT(*) FROM connection_group_members WHERE package_id = ?1)",
                    [&package],
                    |r| r.get(0),
                )?;
                if others == 0 {
                    tx.execute("DELETE FROM packages WHERE package_id = ?1", [&package])?;
                }
                bump(tx)?;
                Ok(version)
            })
            .await
    }

    async fn set_deployment_config(
        &self,
        version_id: VersionId,
        config: Option<String>,
    ) -> Result<()> {
        self.db
            .write(move |tx| {
                get_version(tx, version_id)?;
                let revision = next_config_revision(tx, version_id)?;
                match config {
                    Some(config) => tx.execute(
                        "INSERT INTO deployment_configs (version_id, config, updated_at, revision) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (version_id) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at,
                             revision = excluded.revision",
                        params![version_id.to_string(), config, Utc::now(), revision],
                    )?,
                    None => tx.execute("DELETE FROM deployment_configs WHERE version_id = ?1", [version_id.to_string()])?,
                };
                bump(tx)
            })
            .await
    }

    async fn deployment_config(&self, version_id: VersionId) -> Result<Option<String>> {
        self.db
            .run(move |c| {
                get_version(c, version_id)?;
                Ok(c.query_row(
                    "SELECT config FROM deployment_configs WHERE version_id = ?1",
                    [version_id.to_string()],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await
    }

    async fn grant(
        &self,
        version_id: VersionId,
        group: &str,
        user_config: Option<String>,
    ) -> Result<()> {
        let group = group.to_owned();
        self.db
            .write(move |tx| {
                get_version(tx, version_id)?;
                require_group(tx, &group)?;
                let revision = next_config_revision(tx, version_id)?;
                tx.execute(
                    "INSERT INTO entitlements (version_id, group_name, user_config, user_config_revision, user_config_updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (version_id, group_name) DO UPDATE SET user_config = excluded.user_config,
                         user_config_revision = excluded.user_config_revision,
                         user_config_updated_at = excluded.user_config_updated_at",
                    params![version_id.to_string(), group, user_config, revision, Utc::now()],
                )?;
                bump(tx)
            })
            .await
    }

    async fn revoke(&self, version_id: VersionId, group: &str) -> Result<()> {
        let group = group.to_owned();
        self.db
            .write(move |tx| {
                get_version(tx, version_id)?;
                let n = tx.execute(
                    "DELETE FROM entitlements WHERE version_id = ?1 AND group_name = ?2",
                    params![version_id.to_string(), group],
                )?;
                if n == 0 {
                    return Err(not_found(format!(
                        "entitlement of group {group} to {version_id}"
                    )));
                }
                bump(tx)
            })
            .await
    }

    async fn entitlements(&self, version_id: VersionId) -> Result<Vec<Entitlement>> {
        self.db
            .run(move |c| {
                get_version(c, version_id)?;
                let mut stmt = c.prepare_cached(
                    "SELECT group_name, user_config FROM entitlements WHERE version_id = ?1 ORDER BY group_name",
                )?;
                let rows = stmt
                    .query_map([version_id.to_string()], |r| Ok(Entitlement { group: r.get(0)?, user_config: r.get(1)? }))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
    }

    async fn transfer(&self, from: VersionId, to: VersionId, what: Transfer) -> Result<()> {
        self.db
            .write(move |tx| {
                get_version(tx, from)?;
                get_version(tx, to)?;
                copy_transfer(tx, from, to, what)?;
                bump(tx)
            })
            .await
    }

    async fn upgrade_package_version(
        &self,
        v: NewPackageVersion,
        from: VersionId,
        what: Transfer,
    ) -> Result<Added<PackageVersion>> {
        self.db
            .write(move |tx| {
                let previous = get_version(tx, from)?;
                rules::check_version_of(from, previous.package.package_id, v.package_id)
                    .map_err(StoreError::Invalid)?;
                let added = insert_version(tx, &v)?;
                copy_transfer(tx, from, v.version_id, what)?;
                bump(tx)?;
                Ok(Added {
                    value: get_version(tx, v.version_id)?,
                    created: added.created,
                })
            })
            .await
    }

    async fn create_connection_group(&self, name: &str, priority: i32) -> Result<ConnectionGroup> {
        let name = name.to_owned();
        self.db
            .write(move |tx| {
                let id = ConnectionGroupId::new_v4();
                tx.execute(
                    "INSERT INTO connection_groups (id, version_id, name, priority, published, updated_at) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                    params![id.to_string(), Uuid::new_v4().to_string(), name, priority, Utc::now()],
                )
                .map_err(|e| match StoreError::from(e) {
                    StoreError::Conflict(_) => StoreError::Conflict(format!("a connection group named {name} already exists")),
                    other => other,
                })?;
                bump(tx)?;
                get_connection_group(tx, id)
            })
            .await
    }

    async fn connection_group(&self, id: ConnectionGroupId) -> Result<ConnectionGroup> {
        self.db.run(move |c| get_connection_group(c, id)).await
    }

    async fn list_connection_groups(&self) -> Result<Vec<ConnectionGroup>> {
        self.db
            .run(|c| {
                let ids = c
                    .prepare("SELECT id FROM connection_groups ORDER BY priority, name")?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                ids.into_iter()
                    .map(|id| get_connection_group(c, uuid(id)?))
                    .collect()
            })
            .await
    }

    async fn update_connection_group(
        &self,
        id: ConnectionGroupId,
        changes: Vec<ConnectionGroupChange>,
    ) -> Result<ConnectionGroup> {
        self.db
            .write(move |tx| {
                let gid = id.to_string();
                if changes.is_empty() {
                    return get_connection_group(tx, id);
                }
                for change in changes {
                    let current = get_connection_group(tx, id)?;
                    match change {
                        ConnectionGroupChange::Rename(name) => {
                            tx.execute("UPDATE connection_groups SET name = ?2 WHERE id = ?1", params![gid, name])
                                .map_err(|e| match StoreError::from(e) {
                                    StoreError::Conflict(_) => StoreError::Conflict(format!("a connection group named {name} already exists")),
                                    other => other,
                                })?;
                        }
                        ConnectionGroupChange::Priority(p) => {
                            tx.execute("UPDATE connection_groups SET priority = ?2 WHERE id = ?1", params![gid, p])?;
                        }
                        ConnectionGroupChange::SetMember(m) => {
                            let known: Option<i32> = tx
                                .query_row("SELECT 1 FROM packages WHERE package_id = ?1", [m.package_id.to_string()], |r| r.get(0))
                                .optional()?;
                            if known.is_none() {
                                return Err(not_found(format!("package {}", m.package_id)));
                            }
                            if let Some(v) = m.version_id {
                                let version = get_version(tx, v)?;
                                rules::check_version_of(v, version.package.package_id, m.package_id).map_err(StoreError::Invalid)?;
                            }
                            let position = rules::member_position(&current.members, m.package_id) as i64;
                            tx.execute(
                                "INSERT INTO connection_group_members (group_id, position, package_id, version_id, optional) VALUES (?1, ?2, ?3, ?4, ?5)
                                 ON CONFLICT (group_id, package_id) DO UPDATE SET version_id = excluded.version_id, optional = excluded.optional",
                                params![gid, position, m.package_id.to_string(), m.version_id.map(|v| v.to_string()), m.optional],
                            )?;
                        }
                        ConnectionGroupChange::MoveMember { package_id, position } => {
                            let order = rules::move_member(&current.members, package_id, position)
                                .ok_or_else(|| not_found(format!("member {package_id} of connection group {}", current.name)))?;
                            for (i, p) in order.iter().enumerate() {
                                tx.execute(
                                    "UPDATE connection_group_members SET position = ?3 WHERE group_id = ?1 AND package_id = ?2",
                                    params![gid, p.to_string(), i as i64],
                                )?;
                            }
                        }
                        ConnectionGroupChange::RemoveMember(package_id) => {
                            let n = tx.execute(
                                "DELETE FROM connection_group_members WHERE group_id = ?1 AND package_id = ?2",
                                params![gid, package_id.to_string()],
                            )?;
                            if n == 0 {
                                return Err(not_found(format!("member {package_id} of connection group {}", current.name)));
                            }
                        }
                        ConnectionGroupChange::Grant(group) => {
                            require_group(tx, &group)?;
                            tx.execute(
                                "INSERT INTO connection_group_entitlements (group_id, group_name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                                params![gid, group],
                            )?;
                        }
                        ConnectionGroupChange::Revoke(group) => {
                            let n = tx.execute(
                                "DELETE FROM connection_group_entitlements WHERE group_id = ?1 AND group_name = ?2",
                                params![gid, group],
                            )?;
                            if n == 0 {
                                return Err(not_found(format!("entitlement of group {group} to connection group {}", current.name)));
                            }
                        }
                        ConnectionGroupChange::Publish(published) => {
                            tx.execute("UPDATE connection_groups SET published = ?2 WHERE id = ?1", params![gid, published])?;
                        }
                    }
                }
                tx.execute(
                    "UPDATE connection_groups SET version_id = ?2, updated_at = ?3 WHERE id = ?1",
                    params![gid, Uuid::new_v4().to_string(), Utc::now()],
                )?;
                bump(tx)?;
                get_connection_group(tx, id)
            })
            .await
    }

    async fn delete_connection_group(&self, id: ConnectionGroupId) -> Result<()> {
        self.db
            .write(move |tx| {
                if tx.execute(
                    "DELETE FROM connection_groups WHERE id = ?1",
                    [id.to_string()],
                )? == 0
                {
                    return Err(not_found(format!("connection group {id}")));
                }
                bump(tx)
            })
            .await
    }

    async fn create_user(&self, name: &str, groups: &[String]) -> Result<Added<Vec<String>>> {
        let (name, groups) = (name.to_owned(), schema::group_set(groups));
        self.db
            .write(move |tx| {
                let user = Principal::User(name.clone());
                match require_principal(tx, &user) {
                    Ok(()) => {
                        schema::same_groups("user", &name, &direct_groups(tx, &user)?, &groups)?;
                        return Ok(Added {
                            value: groups,
                            created: false,
                        });
                    }
                    Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
                insert_principal_in_groups(tx, &user, None, &groups)?;
                Ok(Added {
                    value: groups,
                    created: true,
                })
            })
            .await
    }

    async fn create_machine(
        &self,
        name: &str,
        credential_hash: &str,
        groups: &[String],
    ) -> Result<()> {
        let (name, hash, groups) = (
            name.to_owned(),
            credential_hash.to_owned(),
            schema::group_set(groups),
        );
        self.db
            .write(move |tx| {
                insert_principal_in_groups(tx, &Principal::Machine(name), Some(&hash), &groups)
            })
            .await
    }

    async fn create_group(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO groups (name, created_at) VALUES (?1, ?2)",
                    params![name, Utc::now()],
                )
                .map_err(|e| conflict_as(e, format!("group {name} already exists")))?;
                bump(tx)
            })
            .await
    }

    async fn delete_principal(&self, principal: &Principal) -> Result<()> {
        let p = principal.clone();
        self.db
            .write(move |tx| {
                require_principal(tx, &p)?;
                if let Principal::Group(group) = &p {
                    renew_entitled_connection_groups(tx, group)?;
                }
                let (table, _, _) = principal_table(p.kind());
                tx.execute(&format!("DELETE FROM {table} WHERE name = ?1"), [p.name()])?;
                bump(tx)
            })
            .await
    }

    async fn delete_group(&self, name: &str, force: bool) -> Result<GroupDeletion> {
        let name = name.to_owned();
        self.db
            .write(move |tx| {
                require_group(tx, &name)?;
                let holdings = group_holdings(tx, &name)?;
                if !force && !holdings.is_empty() {
                    return Ok(GroupDeletion {
                        deleted: false,
                        holdings,
                    });
                }
                renew_entitled_connection_groups(tx, &name)?;
                tx.execute("DELETE FROM groups WHERE name = ?1", [&name])?;
                bump(tx)?;
                Ok(GroupDeletion {
                    deleted: true,
                    holdings,
                })
            })
            .await
    }

    async fn list_principals(&self, kind: PrincipalKind) -> Result<Vec<String>> {
        let (table, _, _) = principal_table(kind);
        self.db
            .run(move |c| {
                Ok(
                    c.prepare(&format!("SELECT name FROM {table} ORDER BY name"))?
                        .query_map([], |r| r.get(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()?,
                )
            })
            .await
    }

    async fn add_member(&self, group: &str, member: &Principal) -> Result<()> {
        let (group, member) = (group.to_owned(), member.clone());
        self.db
            .write(move |tx| {
                require_group(tx, &group)?;
                require_principal(tx, &member)?;
                if let Principal::Group(child) = &member {
                    let cycle: bool = tx.query_row(
                        "WITH RECURSIVE below(name) AS (SELECT ?1 UNION SELECT gg.member_name FROM group_groups gg JOIN below ON gg.group_name = below.name)
                         SELECT EXISTS (SELECT 1 FROM below WHERE name = ?2)",
                        params![child, group],
                        |r| r.get(0),
                    )?;
                    if cycle {
                        return Err(StoreError::Invalid(format!("putting group {child} in {group} would make a cycle")));
                    }
                }
                let (_, table, column) = principal_table(member.kind());
                tx.execute(
                    &format!("INSERT INTO {table} (group_name, {column}) VALUES (?1, ?2) ON CONFLICT DO NOTHING"),
                    params![group, member.name()],
                )?;
                bump(tx)
            })
            .await
    }

    async fn remove_member(&self, group: &str, member: &Principal) -> Result<()> {
        let (group, member) = (group.to_owned(), member.clone());
        self.db
            .write(move |tx| {
                let (_, table, column) = principal_table(member.kind());
                let n = tx.execute(
                    &format!("DELETE FROM {table} WHERE group_name = ?1 AND {column} = ?2"),
                    params![group, member.name()],
                )?;
                if n == 0 {
                    return Err(not_found(format!("{} in group {group}", member.name())));
                }
                bump(tx)
            })
            .await
    }

    async fn members(&self, group: &str) -> Result<Vec<Principal>> {
        let group = group.to_owned();
        self.db
            .run(move |c| {
                require_group(c, &group)?;
                let mut out = Vec::new();
                for kind in PrincipalKind::ALL {
                    let (_, table, column) = principal_table(kind);
                    let mut stmt = c.prepare(&format!(
                        "SELECT {column} FROM {table} WHERE group_name = ?1 ORDER BY {column}"
                    ))?;
                    for name in stmt.query_map([&group], |r| r.get::<_, String>(0))? {
                        out.push(kind.named(name?));
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn groups_of(&self, principal: &Principal) -> Result<Vec<String>> {
        let p = principal.clone();
        self.db
            .run(move |c| {
                require_principal(c, &p)?;
                let (_, table, column) = principal_table(p.kind());
                let sql = format!(
                    "WITH RECURSIVE up(name) AS (
                        SELECT group_name FROM {table} WHERE {column} = ?1
                        UNION SELECT gg.group_name FROM group_groups gg JOIN up ON gg.member_name = up.name)
                     SELECT name FROM up ORDER BY name"
                );
                Ok(c.prepare(&sql)?
                    .query_map([p.name()], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?)
            })
            .await
    }

    async fn catalog_snapshot(&self) -> Result<catalog::CatalogSnapshot> {
        self.db
            .run(|conn| {
                // One read transaction: every SELECT below sees the same database.
                let c = conn.transaction()?;
                let sequence =
                    c.query_row("SELECT seq FROM change_sequence WHERE id = 1", [], |r| {
                        r.get(0)
                    })?;
                let mut packages = Vec::new();
                {
                    let mut stmt = c.prepare(&format!(
                        "SELECT {VERSION_COLUMNS} FROM package_versions WHERE published = 1
                         ORDER BY created_at, version_id"
                    ))?;
                    let mut rows = stmt.query([])?;
                    let mut config = c.prepare_cached(
                        "SELECT config, updated_at, revision FROM deployment_configs WHERE version_id = ?1",
                    )?;
                    let mut entitled = c.prepare_cached(
                        "SELECT group_name, user_config, user_config_updated_at, user_config_revision
                         FROM entitlements WHERE version_id = ?1 ORDER BY group_name",
                    )?;
                    while let Some(row) = rows.next()? {
                        let version = read_version(&c, row)?.package;
                        let id = version.version_id.to_string();
                        let deployment_config = config
                            .query_row([&id], |r| {
                                Ok(catalog::Configuration {
                                    document: r.get(0)?,
                                    updated_at: r.get(1)?,
                                    revision: r.get(2)?,
                                })
                            })
                            .optional()?;
                        let mut user_configs = std::collections::BTreeMap::new();
                        let entitlements = entitled
                            .query_map([&id], |r| {
                                let e = Entitlement {
                                    group: r.get(0)?,
                                    user_config: r.get(1)?,
                                };
                                let updated_at: Option<DateTime<Utc>> = r.get(2)?;
                                Ok((e, updated_at, r.get::<_, i64>(3)?))
                            })?
                            .map(|row| {
                                let (e, updated_at, revision) = row?;
                                if let (Some(document), Some(updated_at)) =
                                    (e.user_config.clone(), updated_at)
                                {
                                    user_configs.insert(
                                        e.group.clone(),
                                        catalog::Configuration {
                                            document,
                                            updated_at,
                                            revision,
                                        },
                                    );
                                }
                                Ok(e)
                            })
                            .collect::<rusqlite::Result<Vec<_>>>()?;
                        packages.push(catalog::PublishedPackage {
                            version,
                            deployment_config,
                            entitlements,
                            user_configs,
                        });
                    }
                }
                let ids = c
                    .prepare(
                        "SELECT id FROM connection_groups WHERE published = 1 ORDER BY priority, name",
                    )?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let connection_groups = ids
                    .into_iter()
                    .map(|id| get_connection_group(&c, uuid(id)?))
                    .collect::<Result<Vec<_>>>()?;
                let names = |sql: &str| -> Result<Vec<String>> {
                    let mut names = c
                        .prepare(sql)?
                        .query_map([], |r| r.get(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    names.sort();
                    Ok(names)
                };
                let groups = names("SELECT name FROM groups")?;
                let users = names("SELECT name FROM users")?;
                let mut machines = c
                    .prepare("SELECT name, credential_hash FROM machines")?
                    .query_map([], |r| {
                        Ok(catalog::MachineCredential {
                            name: r.get(0)?,
                            credential_hash: r.get(1)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut memberships = Vec::new();
                for kind in PrincipalKind::ALL {
 let (_, table, column) = principal_table(kind);
                    let mut stmt = c.prepare(&format!("SELECT group_name, {column} FROM {table}"))?;
                    for row in stmt.query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })? {
                        let (group, name) = row?;
                        memberships.push(catalog::Membership {
                            group,
                            member: kind.named(name),
                        });
                    }
                }
                machines.sort_by(|a, b| a.name.cmp(&b.name));
                memberships.sort();
                c.commit()?;
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
            .await
    }

    async fn machine_by_credential(&self, credential_hash: &str) -> Result<Option<String>> {
        let hash = credential_hash.to_owned();
        self.db
            .run(move |c| {
                Ok(c.query_row(
                    "SELECT name FROM machines WHERE credential_hash = ?1",
                    [hash],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await
    }

    async fn register_publishing_server(
        &self,
        name: &str,
        credential_hash: &str,
    ) -> Result<PublishingServer> {
        let (name, hash) = (name.to_owned(), credential_hash.to_owned());
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO publishing_servers (name, credential_hash, registered_at) VALUES (?1, ?2, ?3)",
                    params![name, hash, Utc::now()],
                )
                .map_err(|e| conflict_as(e, format!("publishing server {name} is already registered")))?;
                bump(tx)?;
                Ok(tx.query_row(
                    "SELECT name, registered_at, last_sync_at, last_sync_sequence FROM publishing_servers WHERE name = ?1",
                    [&name],
                    read_server,
                )?)
            })
            .await
    }

    async fn unregister_publishing_server(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.db
            .write(move |tx| {
                if tx.execute("DELETE FROM publishing_servers WHERE name = ?1", [&name])? == 0 {
                    return Err(not_found(format!("publishing server {name}")));
                }
                bump(tx)
            })
            .await
    }

    async fn list_publishing_servers(&self) -> Result<Vec<PublishingServer>> {
        self.db
            .run(|c| {
                Ok(c.prepare("SELECT name, registered_at, last_sync_at, last_sync_sequence FROM publishing_servers ORDER BY name")?
                    .query_map([], read_server)?
                    .collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    async fn publishing_server_by_credential(
        &self,
        credential_hash: &str,
    ) -> Result<Option<PublishingServer>> {
        let hash = credential_hash.to_owned();
        self.db
            .run(move |c| {
                Ok(c.query_row(
                    "SELECT name, registered_at, last_sync_at, last_sync_sequence FROM publishing_servers WHERE credential_hash = ?1",
                    [hash],
                    read_server,
                )
                .optional()?)
            })
            .await
    }

    async fn record_sync(&self, name: &str, sequence: i64) -> Result<()> {
        let name = name.to_owned();
        self.db
            .run(move |c| {
                let n = c.execute(
                    "UPDATE publishing_servers SET last_sync_at = ?2, last_sync_sequence = ?3 WHERE name = ?1",
                    params![name, Utc::now(), sequence],
                )?;
                if n == 0 {
                    return Err(not_found(format!("publishing server {name}")));
                }
                Ok(())
            })
            .await
    }

    async fn add_administrator(&self, name: &str, password_hash: Option<&str>) -> Result<()> {
        let (name, hash) = (name.to_owned(), password_hash.map(str::to_owned));
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO administrators (name, password_hash, created_at) VALUES (?1, ?2, ?3)",
                    params![name, hash, Utc::now()],
                )
                .map_err(|e| conflict_as(e, format!("administrator {name} already exists")))?;
                Ok(())
            })
            .await
    }

    async fn remove_administrator(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.db
            .write(move |tx| {
                // An immediate transaction: concurrent removals count one after the other.
                let (exists, total): (bool, i64) = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM administrators WHERE name = ?1), COUNT(*) FROM administrators",
                    [&name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if !exists {
                    return Err(not_found(format!("administrator {name}")));
                }
                if total == 1 {
                    return Err(StoreError::Conflict(
                        "the last administrator cannot be removed".into(),
                    ));
                }
                tx.execute("DELETE FROM administrators WHERE name = ?1", [&name])?;
                Ok(())
            })
            .await
    }

    async fn list_administrators(&self) -> Result<Vec<Administrator>> {
        self.db
            .run(|c| {
                Ok(c.prepare("SELECT name, password_hash IS NOT NULL, created_at FROM administrators ORDER BY name")?
                    .query_map([], |r| Ok(Administrator { name: r.get(0)?, has_password: r.get(1)?, created_at: r.get(2)? }))?
                    .collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    async fn administrator_password_hash(&self, name: &str) -> Result<Option<String>> {
        let name = name.to_owned();
        self.db
            .run(move |c| {
                Ok(c.query_row(
                    "SELECT password_hash FROM administrators WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()?
                .flatten())
            })
            .await
    }

    async fn add_api_token(&self, admin: &str, token_hash: &str, label: &str) -> Result<()> {
        let (admin, hash, label) = (admin.to_owned(), token_hash.to_owned(), label.to_owned());
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO api_tokens (token_hash, admin_name, label, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![hash, admin, label, Utc::now()],
                )
                .map_err(|e| match StoreError::from(e) {
                    StoreError::NotFound(_) => not_found(format!("administrator {admin}")),
                    other => other,
                })?;
                Ok(())
            })
            .await
    }

    async fn administrator_by_token(&self, token_hash: &str) -> Result<Option<String>> {
        let hash = token_hash.to_owned();
        self.db
            .run(move |c| {
                Ok(c.query_row(
                    "SELECT admin_name FROM api_tokens WHERE token_hash = ?1",
                    [hash],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await
    }
}

fn conflict_as(e: rusqlite::Error, message: String) -> StoreError {
    match StoreError::from(e) {
        StoreError::Conflict(_) => StoreError::Conflict(message),
        other => other,
    }
}

/// The Reporting DB on SQLite.
pub(crate) struct SqliteReporting {
    db: Db,
}

impl SqliteReporting {
    pub(crate) async fn open(path: &str) -> Result<Self> {
        Ok(SqliteReporting {
            db: open_installed(path, DatabaseKind::Reporting).await?,
        })
    }
}

#[async_trait]
impl ReportingStore for SqliteReporting {
    async fn ingest(&self, reports: &[ClientReport]) -> Result<IngestResult> {
        let reports = reports.to_vec();
        self.db
            .write(move |tx| {
                let mut result = IngestResult::default();
                let mut fresh = Vec::new();
                for r in &reports {
                    let inserted = tx.execute(
                        "INSERT INTO raw_reports (report_id, received_at, source_host, body) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                        params![r.id.to_string(), r.received_at, r.source_host, r.body],
                    )?;
                    if inserted == 0 {
                        result.duplicates += 1;
                        continue;
                    }
                    result.stored += 1;
                    fresh.push(r);
                    let mut stmt = tx.prepare_cached(
                        "INSERT INTO application_usage (report_id, record, host_name, application, application_version, server, user_name,
                           package_version_id, connection_group_version_id, launched_at, launch_status, shutdown_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    )?;
                    for (i, u) in r.usage.iter().enumerate() {
                        stmt.execute(params![
                            r.id.to_string(),
                            i as i64,
                            r.client.host_name,
                            u.application,
                            u.application_version,
                            u.server,
                            u.user,
                            u.package_version_id.to_string(),
                            u.connection_group_version_id.map(|v| v.to_string()),
                            u.launched_at,
                            u.launch_status,
                            u.shutdown_at
                        ])?;
                    }
                }
                // The newest report of each client decides its ClientInformation
                // and package list, also against what earlier batches stored.
                let latest = rules::latest_per_client(fresh);
                for (host, r) in latest.information {
                    let c = &r.client;
                    tx.execute(
                        "INSERT INTO client_information (host_name, client_version, processor_arch, os_version, os_service_pack, os_type, last_report_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT (host_name) DO UPDATE SET client_version = excluded.client_version, processor_arch = excluded.processor_arch,
                           os_version = excluded.os_version, os_service_pack = excluded.os_service_pack, os_type = excluded.os_type,
                           last_report_at = excluded.last_report_at
                         WHERE excluded.last_report_at >= client_information.last_report_at",
                        params![host, c.client_version, c.processor_arch, c.os_version, c.os_service_pack, c.os_type, r.received_at],
                    )?;
                }
                for (host, r) in latest.package_lists {
                    let stored: Option<DateTime<Utc>> = tx.query_row(
                        "SELECT max(reported_at) FROM package_information WHERE host_name = ?1",
                        [host],
                        |row| row.get(0),
                    )?;
                    if !rules::supersedes(r.received_at, stored) {
                        continue;
                    }
                    tx.execute("DELETE FROM package_information WHERE host_name = ?1", [host])?;
                    let mut stmt = tx.prepare_cached(
                        "INSERT INTO package_information (host_name, package_id, version_id, name, version, source, percent_cached, reported_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?;
                    for p in rules::distinct_packages(&r.packages) {
                        stmt.execute(params![
                            host,
                            p.package_id.to_string(),
                            p.version_id.to_string(),
                            p.name,
                            p.version,
                            p.source,
                            p.percent_cached,
                            r.received_at
                        ])?;
                    }
                }
                Ok(result)
            })
            .await
    }

    async fn raw_report(&self, id: Uuid) -> Result<Option<RawReport>> {
        self.db
            .run(move |c| {
                Ok(c.query_row(
                    "SELECT received_at, source_host, body FROM raw_reports WHERE report_id = ?1",
                    [id.to_string()],
                    |r| {
                        Ok(RawReport {
                            received_at: r.get(0)?,
                            source_host: r.get(1)?,
                            body: r.get(2)?,
                        })
                    },
                )
                .optional()?)
            })
            .await
    }

    async fn launches(&self, grouping: LaunchGrouping) -> Result<Vec<LaunchCount>> {
        self.db
            .run(move |c| {
                let sql = match grouping {
                    LaunchGrouping::ApplicationPerDay => {
                        "SELECT application, date(launched_at), COUNT(*) AS n FROM application_usage GROUP BY 1, 2 ORDER BY n DESC, 1, 2"
                    }
                    LaunchGrouping::User => "SELECT user_name, NULL, COUNT(*) AS n FROM application_usage GROUP BY 1 ORDER BY n DESC, 1",
                    LaunchGrouping::Package => {
                        "SELECT package_version_id, NULL, COUNT(*) AS n FROM application_usage GROUP BY 1 ORDER BY n DESC, 1"
                    }
                };
                Ok(c.prepare(sql)?
                    .query_map([], |r| {
                        Ok(LaunchCount {
                            key: r.get(0)?,
                            day: r
                                .get::<_, Option<String>>(1)?
                                .map(|d| chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d"))
                                .transpose()
                                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e)))?,
                            launches: r.get(2)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    async fn client_caches(&self) -> Result<Vec<ClientCache>> {
        self.db
            .run(|c| {
                let clients = c
                    .prepare(
                        "SELECT host_name, client_version, processor_arch, os_version, os_service_pack, os_type, last_report_at
                         FROM client_information ORDER BY host_name",
                    )?
                    .query_map([], |r| {
                        Ok(ClientCache {
                            client: ClientInformation {
                                host_name: r.get(0)?,
                                client_version: r.get(1)?,
                                processor_arch: r.get(2)?,
                                os_version: r.get(3)?,
                                os_service_pack: r.get(4)?,
                                os_type: r.get(5)?,
                            },
                            last_report_at: r.get(6)?,
                            packages: Vec::new(),
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut stmt = c.prepare(
                    "SELECT package_id, version_id, name, version, source, percent_cached FROM package_information
                     WHERE host_name = ?1 ORDER BY name, version_id",
                )?;
                clients
                    .into_iter()
                    .map(|mut cc| {
                        cc.packages = stmt
                            .query_map([&cc.client.host_name], |r| {
                                Ok(PackageInformation {
                                    package_id: uuid(r.get(0)?)?,
                                    version_id: uuid(r.get(1)?)?,
                                    name: r.get(2)?,
                                    version: r.get(3)?,
                                    source: r.get(4)?,
                                    percent_cached: r.get(5)?,
                                })
                            })?
                            .collect::<rusqlite::Result<Vec<_>>>()?;
                        Ok(cc)
                    })
                    .collect()
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLITE_FULL ("database or disk is full") is `StoreError::Full` naming the
    /// file, and the failed change leaves nothing behind.
    #[tokio::test]
    async fn a_full_database_says_so_and_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("management.db");
        let store = SqliteManagement::open(path.to_str().unwrap())
            .await
            .unwrap();
        // Cap the file at the pages it has: a change that needs another page is SQLITE_FULL.
        store
            .db
            .run(|c| {
                let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                c.pragma_update(None, "max_page_count", pages)?;
                Ok(())
            })
            .await
            .unwrap();
        let big = "g".repeat(200_000);
        match store.create_group(&big).await {
            Err(StoreError::Full(m)) => {
                assert!(m.contains(path.to_str().unwrap()), "{m}");
                assert!(m.contains("full"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            store
                .list_principals(PrincipalKind::Group)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
