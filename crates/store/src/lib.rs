//! Avail's two databases, as App-V has them: the Management DB (packages,
//! entitlements, connection groups, the directory, publishing servers,
//! administrators, the change sequence) and the Reporting DB (raw reports and
//! App-V's ClientInformation, PackageInformation and ApplicationUsage tables).
//!
//! Callers see narrow, domain-shaped async traits ([`ManagementStore`],
//! [`ReportingStore`]) and the domain types of `avail-model`; SQLite (the embedded
//! default, `rusqlite`) and PostgreSQL (`tokio-postgres` with a `deadpool`
//! pool, for high availability) stay behind them. A PostgreSQL URL may name
//! several hosts with `target_session_attrs=read-write`: that is App-V's
//! "failover partner", and the store carries on through a failover without being
//! reopened. The schema comes from the numbered scripts under `sql/`.

mod error;
mod postgres;
mod schema;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

pub use error::{Result, StoreError};
pub use schema::DatabaseKind;

use avail_model::*;

/// The Management DB.
#[async_trait]
pub trait ManagementStore: Send + Sync {
    /// The current change sequence; every change to the catalog increases it.
    async fn change_sequence(&self) -> Result<i64>;

    /// Record an imported package version. Idempotent on `version_id`: the same
    /// file again returns the existing row (`created == false`); a different file
    /// (another SHA-256) under a known VersionId is a conflict.
    async fn add_package_version(
        &self,
        version: NewPackageVersion,
    ) -> Result<Added<PackageVersion>>;
    /// One version.
    async fn package_version(&self, version_id: VersionId) -> Result<PackageVersion>;
    /// Versions, oldest first.
    async fn list_package_versions(&self, filter: &PackageFilter) -> Result<Vec<PackageVersion>>;
    /// Publish or unpublish a version. A package has at most one published
    /// version: publishing one unpublishes the package's others in the same
    /// transaction.
    async fn set_published(&self, version_id: VersionId, published: bool)
    -> Result<PackageVersion>;
    /// Remove a version (with its entitlements and configuration); returns what was removed.
    /// A version that a connection group names explicitly is a conflict.
    async fn remove_package_version(&self, version_id: VersionId) -> Result<PackageVersion>;
    /// Set or clear the deployment configuration of a version.
    async fn set_deployment_config(
        &self,
        version_id: VersionId,
        config: Option<String>,
    ) -> Result<()>;
    /// The deployment configuration of a version.
    async fn deployment_config(&self, version_id: VersionId) -> Result<Option<String>>;
    /// Entitle a group to a version (again: replaces its user configuration).
    async fn grant(
        &self,
        version_id: VersionId,
        group: &str,
        user_config: Option<String>,
    ) -> Result<()>;
    /// Remove a group's entitlement.
    async fn revoke(&self, version_id: VersionId, group: &str) -> Result<()>;
    /// The groups entitled to a version.
    async fn entitlements(&self, version_id: VersionId) -> Result<Vec<Entitlement>>;
    /// Copy entitlements and/or configuration from one version to another (upgrade with transfer).
    async fn transfer(&self, from: VersionId, to: VersionId, what: Transfer) -> Result<()>;
    /// Record an imported version as an upgrade of `from` (a version of the same
    /// package) and copy what `what` names from it, in one transaction: either the
    /// version is recorded with its transfer, or nothing is. Idempotent like
    /// [`add_package_version`](Self::add_package_version); when the version
    /// exists already (`created == false`) the transfer is applied again, so a
    /// retried upgrade completes rather than fails. `from` missing is NotFound,
    /// `from` of another package Invalid. With `what.publish` the new version is
    /// published and the package's others unpublished in the same transaction.
    async fn upgrade_package_version(
        &self,
        version: NewPackageVersion,
        from: VersionId,
        what: Transfer,
    ) -> Result<Added<PackageVersion>>;

    /// Create an empty, unpublished connection group.
    async fn create_connection_group(&self, name: &str, priority: i32) -> Result<ConnectionGroup>;
    /// One connection group.
    async fn connection_group(&self, id: ConnectionGroupId) -> Result<ConnectionGroup>;
    /// All connection groups, by priority then name.
    async fn list_connection_groups(&self) -> Result<Vec<ConnectionGroup>>;
    /// Change a connection group: the changes apply in order in one transaction
    /// (all of them or none), and the group gets one new `version_id`. No changes:
    /// the group as it is.
    async fn update_connection_group(
        &self,
        id: ConnectionGroupId,
        changes: Vec<ConnectionGroupChange>,
    ) -> Result<ConnectionGroup>;
    /// Delete a connection group.
    async fn delete_connection_group(&self, id: ConnectionGroupId) -> Result<()>;

    /// Add a user to the directory as a direct member of `groups`, in one
    /// transaction: a group that does not exist is NotFound (naming it) and adds
    /// nothing. Idempotent, so a retry is safe: the user existing already as a
    /// member of exactly these groups gives `created == false`; existing with other
    /// groups is a conflict naming the difference. The value is the groups, sorted.
    async fn create_user(&self, name: &str, groups: &[String]) -> Result<Added<Vec<String>>>;
    /// Add a machine with the hash of its credential as a direct member of
    /// `groups`, in one transaction (a missing group is NotFound and adds nothing).
    /// An existing machine is a conflict: its credential cannot be issued twice.
    async fn create_machine(
        &self,
        name: &str,
        credential_hash: &str,
        groups: &[String],
    ) -> Result<()>;
    /// Add a group.
    async fn create_group(&self, name: &str) -> Result<()>;
    /// Remove a user, machine or group (and its memberships and entitlements).
    async fn delete_principal(&self, principal: &Principal) -> Result<()>;
    /// Delete a group, in one transaction: unless `force`, a group that holds
    /// entitlements or memberships is left alone (`deleted == false`) and the
    /// answer names what it holds; otherwise all of that goes with it, and each
    /// connection group it was entitled to gets a new `version_id`. A missing
    /// group is NotFound.
    async fn delete_group(&self, name: &str, force: bool) -> Result<GroupDeletion>;
    /// Names of all principals of a kind, sorted.
    async fn list_principals(&self, kind: PrincipalKind) -> Result<Vec<String>>;
    /// Put a principal in a group.
    async fn add_member(&self, group: &str, member: &Principal) -> Result<()>;
    /// Take a principal out of a group.
    async fn remove_member(&self, group: &str, member: &Principal) -> Result<()>;
    /// Direct members of a group.
    async fn members(&self, group: &str) -> Result<Vec<Principal>>;
    /// Every group a principal is in, directly or through nested groups, sorted.
    async fn groups_of(&self, principal: &Principal) -> Result<Vec<String>>;
    /// The machine a credential hash belongs to.
    async fn machine_by_credential(&self, credential_hash: &str) -> Result<Option<String>>;

    /// Everything a publishing node needs, read in one consistent snapshot (one
    /// read transaction) together with the change sequence it reflects:
    /// published versions with applications, deployment configuration and
    /// entitlements; published connection groups; groups, users, machines with
    /// their credential hashes, and every direct membership.
    async fn catalog_snapshot(&self) -> Result<catalog::CatalogSnapshot>;

    /// Register a publishing server with the hash of its credential.
    async fn register_publishing_server(
        &self,
        name: &str,
        credential_hash: &str,
    ) -> Result<PublishingServer>;
    /// Unregister one.
    async fn unregister_publishing_server(&self, name: &str) -> Result<()>;
    /// All registered publishing servers.
    async fn list_publishing_servers(&self) -> Result<Vec<PublishingServer>>;
    /// The publishing server a credential hash belongs to.
    async fn publishing_server_by_credential(
        &self,
        credential_hash: &str,
    ) -> Result<Option<PublishingServer>>;
    /// Record that a publishing server synced the catalog at `sequence`.
    async fn record_sync(&self, name: &str, sequence: i64) -> Result<()>;

    /// Add an administrator (a password hash, or none for token-only).
    async fn add_administrator(&self, name: &str, password_hash: Option<&str>) -> Result<()>;
    /// Remove an administrator and their tokens. The last administrator is never
    /// removed (a conflict), also not by concurrent removals of the last two.
    async fn remove_administrator(&self, name: &str) -> Result<()>;
    /// All administrators.
    async fn list_administrators(&self) -> Result<Vec<Administrator>>;
    /// The password hash of an administrator, if they exist and have one.
    async fn administrator_password_hash(&self, name: &str) -> Result<Option<String>>;
    /// Store the hash of a new API token for an administrator.
    async fn add_api_token(&self, admin: &str, token_hash: &str, label: &str) -> Result<()>;
    /// The administrator an API token hash belongs to.
    async fn administrator_by_token(&self, token_hash: &str) -> Result<Option<String>>;
}

/// The Reporting DB.
#[async_trait]
pub trait ReportingStore: Send + Sync {
    /// Store reports, raw and processed, in one transaction. Idempotent on the
    /// report id: a report stored before is counted as a duplicate and left alone.
    /// A client's ClientInformation and package list come from its newest report
    /// ([`rules::latest_per_client`](avail_model::rules::latest_per_client)),
    /// within a batch and across batches: a report older than what is stored
    /// changes neither.
    async fn ingest(&self, reports: &[ClientReport]) -> Result<IngestResult>;
    /// A raw report as received.
    async fn raw_report(&self, id: Uuid) -> Result<Option<RawReport>>;
    /// Launch counts, most launches first.
    async fn launches(&self, grouping: LaunchGrouping) -> Result<Vec<LaunchCount>>;
    /// Every client with its packages and their cache percentages.
    async fn client_caches(&self) -> Result<Vec<ClientCache>>;
}

/// Which backend a URL names.
enum Backend<'a> {
    Sqlite(&'a str),
    Postgres(&'a str),
}

/// `NewPackageVersion::target_oses` as both backends' `target_oses` column
/// holds it (schema version 2): a JSON array of the strings, NULL for none.
fn target_oses_to_column(target_oses: &[String]) -> Option<String> {
    (!target_oses.is_empty())
        .then(|| serde_json::to_string(target_oses).expect("strings always serialise"))
}

/// The `target_oses` column of a package version as
/// `NewPackageVersion::target_oses`: NULL (and, for safety, an empty text) is
/// none.
fn target_oses_from_column(column: Option<String>) -> Result<Vec<String>> {
    match column.as_deref().map(str::trim) {
        None | Some("") => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json).map_err(|e| {
            StoreError::Internal(format!(
                "a package version's target_oses {json:?} is not a JSON array of strings: {e}"
            ))
        }),
    }
}

fn backend(url: &str) -> Result<Backend<'_>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres(url))
    } else if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Ok(Backend::Sqlite(path))
    } else {
        Err(StoreError::Invalid(format!(
            "database URL {url:?} is neither postgres://… nor sqlite:PATH"
        )))
    }
}

/// Open the Management DB. A SQLite file is created and installed if needed (the
/// embedded default); a PostgreSQL database must already carry the current schema.
pub async fn open_management(url: &str) -> Result<Arc<dyn ManagementStore>> {
    Ok(match backend(url)? {
        Backend::Sqlite(path) => Arc::new(sqlite::SqliteManagement::open(path).await?),
        Backend::Postgres(url) => Arc::new(postgres::PgManagement::open(url).await?),
    })
}

/// Open the Reporting DB, as [`open_management`] does.
pub async fn open_reporting(url: &str) -> Result<Arc<dyn ReportingStore>> {
    Ok(match backend(url)? {
        Backend::Sqlite(path) => Arc::new(sqlite::SqliteReporting::open(path).await?),
        Backend::Postgres(url) => Arc::new(postgres::PgReporting::open(url).await?),
    })
}

/// Install (or upgrade) a database's schema by running the scripts it lacks, each
/// in its own transaction. Refuses a database newer than this Avail.
pub async fn install(url: &str, kind: DatabaseKind) -> Result<SchemaStatus> {
    match backend(url)? {
        Backend::Sqlite(path) => sqlite::install(path, kind).await,
        Backend::Postgres(url) => postgres::install(url, kind).await,
    }
}

/// The schema status of a database, without changing it.
pub async fn status(url: &str, kind: DatabaseKind) -> Result<SchemaStatus> {
    match backend(url)? {
        Backend::Sqlite(path) => sqlite::status(path, kind).await,
        Backend::Postgres(url) => postgres::status(url, kind).await,
    }
}
