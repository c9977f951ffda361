//! The management API's request and response types, shared by the server, the
//! `avail admin` CLI and the OpenAPI document, so the three cannot drift apart.
//!
//! Each operation is a request type and a response type, after App-V's
//! AppvServer cmdlets; the domain types themselves are in [`crate::domain`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::Entitlement;
use crate::domain::{PackageVersion, Principal, PrincipalKind, PublishingServer};
use crate::ids::{ConnectionGroupId, PackageId, VersionId};

/// The API's base path.
pub const BASE: &str = "/api/v1";
/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// Import a package that is already in the content store (App-V: `Import-AppvServerPackage -PackagePath`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImportFromStoreRequest {
    /// Path of the package file relative to the content store's root.
    pub path: String,
}

/// An imported package version; `created` is false when the same file was imported before.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImportResponse {
    /// Whether this request created the version.
    pub created: bool,
    /// The version.
    pub version: PackageVersion,
}

/// A package version with its entitlements and configuration (`Get-AppvServerPackage`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PackageDetails {
    /// The version.
    pub version: PackageVersion,
    /// Groups entitled to it.
    pub entitlements: Vec<Entitlement>,
    /// Its deployment configuration.
    pub deployment_config: Option<String>,
}

/// Query of an upgrade (`Import` of a new version, then App-V's transfer of access and configuration).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct UpgradeQuery {
    /// Copy the previous version's entitlements and deployment configuration.
    #[serde(default)]
    pub transfer: bool,
    /// Publish the new version in the same transaction, which unpublishes the
    /// package's other versions (App-V's switch to the new version).
    #[serde(default)]
    pub publish: bool,
}

/// The result of an upgrade.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpgradeResponse {
    /// The version upgraded from.
    pub previous: VersionId,
    /// The new version.
    pub version: PackageVersion,
    /// Whether entitlements and configuration were transferred.
    pub transferred: bool,
}

/// Query of a group deletion.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct DeleteGroupQuery {
    /// Delete the group even though it holds entitlements or memberships,
    /// revoking them; without it such a group is refused with 409 `group_in_use`.
    #[serde(default)]
    pub force: bool,
}

/// Filter of the package list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct PackageQuery {
    /// Names containing this (case-insensitive).
    pub name: Option<String>,
    /// Only published or only unpublished versions.
    pub published: Option<bool>,
}

/// Entitle a group (`Grant-AppvServerPackage`), with an optional user configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct GrantRequest {
    /// The group's UserConfiguration document.
    pub user_config: Option<String>,
}

/// Set the deployment configuration (`Set-AppvServerPackage -DynamicDeploymentConfiguration`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeploymentConfigRequest {
    /// The DeploymentConfiguration document.
    pub config: String,
}

/// Create a connection group (`New-AppvServerConnectionGroup`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateConnectionGroupRequest {
    /// Display name, unique.
    pub name: String,
    /// Priority (lower wins).
    #[serde(default)]
    pub priority: i32,
}

/// Rename a connection group or change its priority (`Set-AppvServerConnectionGroup`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct UpdateConnectionGroupRequest {
    /// New name.
    pub name: Option<String>,
    /// New priority.
    pub priority: Option<i32>,
}

/// Add or change a member package (`Add-AppvServerConnectionGroupPackage`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SetMemberRequest {
    /// The version to use; when absent and `any_version` is false, the version
    /// the path's package names (for a name or a PackageId: the published
    /// version, else the newest).
    pub version_id: Option<VersionId>,
    /// Use whatever version the client has (App-V's `VersionId="*"`).
    #[serde(default)]
    pub any_version: bool,
    /// The group works without this package.
    #[serde(default)]
    pub optional: bool,
    /// Position in the member order (0 = highest precedence); the end when absent.
    pub position: Option<usize>,
}

/// Add a user (and put it in groups).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateUserRequest {
    /// User name.
    pub name: String,
    /// Groups to put it in.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A user as created, or as it was already (a retried creation with the same groups).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedUser {
    /// User name.
    pub name: String,
    /// The groups it is a direct member of, sorted.
    pub groups: Vec<String>,
    /// Whether this request created it.
    pub created: bool,
}

/// Add a machine; its credential is returned once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateMachineRequest {
    /// Machine name.
    pub name: String,
    /// Groups to put it in.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A machine just created, with the credential its client uses (shown only now).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedMachine {
    /// Machine name.
    pub name: String,
    /// Bearer credential for publishing refreshes and reports.
    pub credential: String,
}

/// Create a group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateGroupRequest {
    /// Group name.
    pub name: String,
}

/// A group's direct members.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupMembers {
    /// Group name.
    pub name: String,
    /// Direct members.
    pub members: Vec<Principal>,
}

/// What a user or machine receives, resolved by the publishing catalog's own
/// function ([`Catalog::receives`](crate::catalog::Catalog::receives)) from the
/// catalog at `sequence`: the same answer a publishing node gives.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EffectivePublishing {
    /// The user's or machine's name.
    pub name: String,
    /// Whether it is a user or a machine.
    pub kind: PrincipalKind,
    /// Every group it is in, directly or through nested groups, sorted.
    pub groups: Vec<String>,
    /// The published package versions it receives.
    pub packages: Vec<EffectivePackage>,
    /// The published connection groups it receives.
    pub connection_groups: Vec<EffectiveConnectionGroup>,
    /// The catalog's change sequence.
    pub sequence: i64,
}

/// A package version a principal receives.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EffectivePackage {
    /// The package.
    pub package_id: PackageId,
    /// Its published version.
    pub version_id: VersionId,
    /// Display name.
    pub name: String,
    /// Version string.
    pub version: String,
}

/// A connection group a principal receives.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EffectiveConnectionGroup {
    /// The connection group.
    pub id: ConnectionGroupId,
    /// Display name.
    pub name: String,
    /// Priority.
    pub priority: i32,
}

/// Register a publishing server (`Add-AppvPublishingServer`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisterServerRequest {
    /// Server name.
    pub name: String,
}

/// A registered publishing server, with its credential (shown only now).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisteredServer {
    /// The server.
    pub server: PublishingServer,
    /// Its credential (`AVAIL_PUBLISHING_CREDENTIAL`).
    pub credential: String,
}

/// Add an administrator (`Add-AppvServerAdmin`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddAdministratorRequest {
    /// Login name.
    pub name: String,
    /// Password, for Basic authentication; token-only when absent.
    pub password: Option<String>,
}

/// Create an API token for an administrator.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateTokenRequest {
    /// What the token is for.
    pub label: String,
}

/// A token just created (shown only now).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// Bearer token.
    pub token: String,
}

/// Health and readiness.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or what is wrong.
    pub status: String,
}

/// How `GET /api/v1/reports/launches` groups launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LaunchesBy {
    /// Per application and day (UTC).
    #[default]
    Day,
    /// Per user.
    User,
    /// Per package version.
    Package,
    /// Per application, all days together.
    Application,
}

impl LaunchesBy {
    /// Its name in the query string and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LaunchesBy::Day => "day",
            LaunchesBy::User => "user",
            LaunchesBy::Package => "package",
            LaunchesBy::Application => "application",
        }
    }
}

/// Query of the launch report.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct LaunchesQuery {
    /// The grouping (default `day`).
    #[serde(default)]
    pub by: LaunchesBy,
}
