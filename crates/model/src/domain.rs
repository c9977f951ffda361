//! The domain types the Management and Reporting databases hold, in App-V's words.
//!
//! No SQL or driver type appears here, so the HTTP layer and the CLI can use them
//! (and serialise them) without knowing which database is behind the store.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::ids::{ConnectionGroupId, PackageId, VersionId};

/// An application a package version offers (from its manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Application {
    /// Application id, unique within the version.
    pub id: String,
    /// What it runs (an absolute path for Linux packages).
    pub target: Option<String>,
    /// Arguments, as one string.
    pub arguments: Option<String>,
}

/// What the management service records when it imports a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewPackageVersion {
    /// `appv:PackageId`: the package across its versions.
    pub package_id: PackageId,
    /// `appv:VersionId`: this version.
    pub version_id: VersionId,
    /// Display name.
    pub name: String,
    /// Version string (`1.2.0.0`).
    pub version: String,
    /// Where the package file lives in the content store (a relative path).
    pub content_path: String,
    /// Size of the package file in bytes.
    pub size: u64,
    /// SHA-256 of the package file, hex: the same VersionId must always be the same file.
    pub sha256: String,
    /// SHA-256 of the package's uncompressed `AppxBlockMap.xml`, hex; `None` for
    /// versions imported before schema version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_map_sha256: Option<String>,
    /// The operating systems the package targets, as its manifest names them
    /// (`Prerequisites/appv:TargetOSes/appv:TargetOS`, such as
    /// `WindowsClient_10.0_x64`; see [`crate::publishing::TargetOs`]); empty
    /// for every operating system, and for versions imported before it was
    /// recorded. Values that do not parse are kept as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_oses: Vec<String>,
    /// Applications from the manifest.
    pub applications: Vec<Application>,
}

/// A package version as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PackageVersion {
    /// What was imported.
    #[serde(flatten)]
    pub package: NewPackageVersion,
    /// Whether the version is published (offered to entitled groups).
    pub published: bool,
    /// When it was imported.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The result of an idempotent insert: the row, and whether this call created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added<T> {
    /// The stored row (new or existing).
    pub value: T,
    /// `true` when this call created it, `false` when it already existed.
    pub created: bool,
}

/// What a group holds — what deleting it would revoke.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupHoldings {
    /// The package versions it is entitled to, as `NAME VERSION`, sorted.
    pub packages: Vec<String>,
    /// The connection groups it is entitled to, sorted.
    pub connection_groups: Vec<String>,
    /// Its direct members: users, then machines, then groups, each sorted.
    pub members: Vec<Principal>,
    /// The groups it is a direct member of, sorted.
    pub member_of: Vec<String>,
}

impl GroupHoldings {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
            && self.connection_groups.is_empty()
            && self.members.is_empty()
            && self.member_of.is_empty()
    }
}

/// The outcome of a group deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDeletion {
    /// Whether the group was deleted (false: it held something and was not forced).
    pub deleted: bool,
    /// What it held (and, when deleted, what went with it).
    pub holdings: GroupHoldings,
}

/// Narrow the package list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PackageFilter {
    /// Names containing this (case-insensitive).
    pub name_contains: Option<String>,
    /// Only versions of this package.
    pub package_id: Option<PackageId>,
    /// Only published (`Some(true)`) or unpublished (`Some(false)`) versions.
    pub published: Option<bool>,
}

/// A group entitled to a package version (App-V: "access", granted per AD group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Entitlement {
    /// The group.
    pub group: String,
    /// A per-group user configuration (App-V's UserConfiguration document), if any.
    pub user_config: Option<String>,
}

/// What an upgrade carries from the previous version (App-V: "transfer access and configuration").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct Transfer {
    /// Copy the groups entitled, with their user configurations.
    pub entitlements: bool,
    /// Copy the deployment configuration.
    pub deployment_config: bool,
    /// Publish the new version, unpublishing the package's other versions.
    pub publish: bool,
}

/// A member package of a connection group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionGroupMember {
    /// The member package.
    pub package_id: PackageId,
    /// The version to use; `None` means any version (App-V's `VersionId="*"`).
    pub version_id: Option<VersionId>,
    /// Whether the group works without this package (App-V's `IsOptional`).
    pub optional: bool,
}

/// A connection group: packages that share one virtual environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionGroup {
    /// `AppConnectionGroupId`.
    pub id: ConnectionGroupId,
    /// Changes with every change to the group, as App-V's group `VersionId`.
    pub version_id: Uuid,
    /// Display name, unique.
    pub name: String,
    /// Priority among groups (lower wins, as in App-V).
    pub priority: i32,
    /// Members in precedence order (first wins).
    pub members: Vec<ConnectionGroupMember>,
    /// Groups entitled to the connection group.
    pub entitled_groups: Vec<String>,
    /// Whether it is published.
    pub published: bool,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A change to a connection group; every change gives the group a new `version_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ConnectionGroupChange {
    /// New display name.
    Rename(String),
    /// New priority.
    Priority(i32),
    /// Add a member at the end, or change an existing member's version and optional flag.
    SetMember(ConnectionGroupMember),
    /// Move a member to a position (0 = highest precedence).
    MoveMember {
        /// The member package.
        package_id: PackageId,
        /// Its new position.
        position: usize,
    },
    /// Remove a member.
    RemoveMember(PackageId),
    /// Entitle a group.
    Grant(String),
    /// Remove a group's entitlement.
    Revoke(String),
    /// Publish (`true`) or unpublish.
    Publish(bool),
}

/// Someone or something in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Principal {
    /// A user.
    User(String),
    /// A machine.
    Machine(String),
    /// A group (groups nest).
    Group(String),
}

impl Principal {
    /// What kind of principal it is.
    pub fn kind(&self) -> PrincipalKind {
        match self {
            Principal::User(_) => PrincipalKind::User,
            Principal::Machine(_) => PrincipalKind::Machine,
            Principal::Group(_) => PrincipalKind::Group,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        match self {
            Principal::User(n) | Principal::Machine(n) | Principal::Group(n) => n,
        }
    }
}

impl PrincipalKind {
    /// Every kind, in the order the directory lists them.
    pub const ALL: [PrincipalKind; 3] = [
        PrincipalKind::User,
        PrincipalKind::Machine,
        PrincipalKind::Group,
    ];

    /// The path segment the API names the kind by (`users`, `machines`, `groups`).
    pub fn segment(self) -> &'static str {
        match self {
            PrincipalKind::User => "users",
            PrincipalKind::Machine => "machines",
            PrincipalKind::Group => "groups",
        }
    }

    /// The kind a path segment names (singular or plural), if any.
    pub fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "users" | "user" => Some(PrincipalKind::User),
            "machines" | "machine" => Some(PrincipalKind::Machine),
            "groups" | "group" => Some(PrincipalKind::Group),
            _ => None,
        }
    }

    /// A principal of this kind with `name`.
    pub fn named(self, name: String) -> Principal {
        match self {
            PrincipalKind::User => Principal::User(name),
            PrincipalKind::Machine => Principal::Machine(name),
            PrincipalKind::Group => Principal::Group(name),
        }
    }
}

/// The kinds of principal the directory holds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// Users.
    User,
    /// Machines.
    Machine,
    /// Groups.
    Group,
}

/// A raw report as the reporting service received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RawReport {
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// The address or name it came from.
    pub source_host: String,
    /// The body as received.
    pub body: String,
}

/// A registered publishing server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublishingServer {
    /// Its name.
    pub name: String,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
    /// When it last synced its catalog.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// The change sequence it last synced.
    pub last_sync_sequence: Option<i64>,
}

/// An administrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Administrator {
    /// Login name.
    pub name: String,
    /// Whether a password is set (else tokens only).
    pub has_password: bool,
    /// When added.
    pub created_at: DateTime<Utc>,
}

/// A report as the reporting service received it, with what it says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClientReport {
    /// Report id: the client's, or derived from the host and body; a retry has the same id.
    pub id: Uuid,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// The address or name it came from.
    pub source_host: String,
    /// The body as received (UTF-8).
    pub body: String,
    /// The client (`CLIENT_DATA`).
    pub client: ClientInformation,
    /// Packages on the client (`PKG_LIST`).
    pub packages: Vec<PackageInformation>,
    /// Application launches (`APP_RECORDS`).
    pub usage: Vec<ApplicationUsage>,
}

/// `CLIENT_DATA`: App-V's ClientInformation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClientInformation {
    /// `Host`: the client's FQDN.
    pub host_name: String,
    /// `Ver`: the client's version.
    pub client_version: String,
    /// `ProcessorArch`.
    pub processor_arch: String,
    /// `OSVer`.
    pub os_version: String,
    /// `OSServicePack`.
    pub os_service_pack: i32,
    /// `OSType` (Client or Server).
    pub os_type: String,
}

/// `PKG_DATA`: App-V's PackageInformation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PackageInformation {
    /// `Guid`: package or connection group id.
    pub package_id: Uuid,
    /// `VerGuid`.
    pub version_id: Uuid,
    /// `Name`.
    pub name: String,
    /// `Ver`.
    pub version: Option<String>,
    /// `Source`: where the package came from.
    pub source: Option<String>,
    /// `PctCached`.
    pub percent_cached: Option<i32>,
}

/// `APP_RECORD`: App-V's ApplicationUsage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApplicationUsage {
    /// `Name`: the application.
    pub application: String,
    /// `Ver`.
    pub application_version: String,
    /// `Server`: where the package came from.
    pub server: String,
    /// `User`.
    pub user: String,
    /// `PackageVersion`.
    pub package_version_id: Uuid,
    /// `ConnectionGroupVersion`.
    pub connection_group_version_id: Option<Uuid>,
    /// `Launched` (UTC).
    pub launched_at: DateTime<Utc>,
    /// `LaunchStatus`.
    pub launch_status: String,
    /// `Shutdown` (UTC).
    pub shutdown_at: Option<DateTime<Utc>>,
}

/// What a batch of reports did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct IngestResult {
    /// Reports stored now.
    pub stored: u64,
    /// Reports already stored earlier (retries), left as they were.
    pub duplicates: u64,
}

/// Launch counts, for the reports App-V administrators run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LaunchCount {
    /// What is counted: an application name, a user, or a package version id.
    pub key: String,
    /// The day (UTC), for per-day counts.
    pub day: Option<chrono::NaiveDate>,
    /// Launches.
    pub launches: i64,
}

/// How launches are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum LaunchGrouping {
    /// Per application and day.
    ApplicationPerDay,
    /// Per user.
    User,
    /// Per package version.
    Package,
}

/// A client and how much of each package it has cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClientCache {
    /// The client.
    pub client: ClientInformation,
    /// When it last reported.
    pub last_report_at: DateTime<Utc>,
    /// Its packages with their cache percentage.
    pub packages: Vec<PackageInformation>,
}

/// Whether a database's schema is one this Avail can use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SchemaStatus {
    /// The version installed (0 = nothing installed).
    pub installed: i32,
    /// The newest version this Avail knows.
    pub known: i32,
}

impl SchemaStatus {
    /// Installed and current.
    pub fn is_current(&self) -> bool {
        self.installed == self.known
    }
}
