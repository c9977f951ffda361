//! Typed endpoints: each request of the management API knows its method, its
//! route template (which the server's router registers) and the concrete path
//! it is sent to (path segments percent-encoded), and what it answers with. The
//! router and the [`ManagementClient`](crate::client) are built from this one
//! table, so that a path cannot differ between them.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::*;
use crate::catalog_delta::CatalogUpdate;
use crate::domain::{
    Administrator, ClientCache, ConnectionGroup, LaunchCount, PackageVersion, PublishingServer,
};

/// HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

/// One operation of the API.
pub trait Endpoint {
    /// Its method.
    const METHOD: Method;
    /// Its route template, as the router registers it (`/api/v1/users/{name}`).
    const ROUTE: &'static str;
    /// What a success answers with (`()` for no body).
    type Response: DeserializeOwned;
    /// The JSON body sent, if any.
    type Body: Serialize;
    /// The concrete path, segments percent-encoded.
    fn path(&self) -> String;
    /// The body to send.
    fn body(&self) -> Option<&Self::Body>;
}

/// What a path segment must not contain unencoded: everything but RFC 3986's
/// unreserved characters, so that a name people type cannot change the path.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One path segment, percent-encoded.
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// `route` with each `{name}` replaced by its value from `segments`, encoded.
fn fill(route: &str, segments: &[(&str, &str)]) -> String {
    let mut path = route.to_owned();
    for (name, value) in segments {
        path = path.replace(&format!("{{{name}}}"), &segment(value));
    }
    path
}

/// Declares each endpoint: a struct with its path segments (strings, as
/// people type them) and its body, and its [`Endpoint`] impl.
macro_rules! endpoints {
    ($(
        $(#[$doc:meta])*
        $name:ident { $($field:ident),* } $(body: $body:ty)? => $method:ident $route:literal -> $resp:ty;
    )*) => {
    $(
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            $(
                #[doc = concat!("The `{", stringify!($field), "}` path segment.")]
                pub $field: String,
            )*
            $(
                /// The request body.
                pub body: $body,
            )?
        }

        impl Endpoint for $name {
            const METHOD: Method = Method::$method;
            const ROUTE: &'static str = $route;
            type Response = $resp;
            type Body = endpoints!(@body $($body)?);

            fn path(&self) -> String {
                fill($route, &[$((stringify!($field), self.$field.as_str())),*])
            }

            fn body(&self) -> Option<&Self::Body> {
                endpoints!(@body_of self $($body)?)
            }
        }
    )*

        /// Every endpoint's method and route template: the table the router
        /// and the OpenAPI document are checked against.
        pub fn table() -> Vec<(Method, &'static str)> {
            vec![
                $((Method::$method, $route),)*
                (ListPackages::METHOD, ListPackages::ROUTE),
                (UpgradePackage::METHOD, UpgradePackage::ROUTE),
                (DeleteGroup::METHOD, DeleteGroup::ROUTE),
                (ReportLaunches::METHOD, ReportLaunches::ROUTE),
                (SyncCatalog::METHOD, SyncCatalog::ROUTE),
            ]
        }
    };
    (@body) => { () };
    (@body $body:ty) => { $body };
    (@body_of $self:ident) => { None };
    (@body_of $self:ident $body:ty) => { Some(&$self.body) };
}

endpoints! {
    /// Import an uploaded package (`Import-AppvServerPackage`); the body is the `.appv` file, sent with [`ManagementClient::upload`](crate::client::ManagementClient::upload).
    UploadPackage {} => Post "/api/v1/packages" -> ImportResponse;
    /// Import a package already in the content store.
    ImportFromStore {} body: ImportFromStoreRequest => Post "/api/v1/packages/import" -> ImportResponse;
    /// A package version with its entitlements and configuration (`Get-AppvServerPackage`).
    ShowPackage { pkg } => Get "/api/v1/packages/{pkg}" -> PackageDetails;
    /// Remove a version (`Remove-AppvServerPackage`).
    RemovePackage { pkg } => Delete "/api/v1/packages/{pkg}" -> PackageVersion;
    /// Publish a version (`Publish-AppvServerPackage`).
    PublishPackage { pkg } => Post "/api/v1/packages/{pkg}/publish" -> PackageVersion;
    /// Unpublish a version (`Unpublish-AppvServerPackage`).
    UnpublishPackage { pkg } => Post "/api/v1/packages/{pkg}/unpublish" -> PackageVersion;
    /// The deployment configuration of a version.
    GetDeploymentConfig { pkg } => Get "/api/v1/packages/{pkg}/deployment-config" -> Option<String>;
    /// Set the deployment configuration.
    SetDeploymentConfig { pkg } body: DeploymentConfigRequest => Put "/api/v1/packages/{pkg}/deployment-config" -> ();
    /// Clear the deployment configuration.
    ClearDeploymentConfig { pkg } => Delete "/api/v1/packages/{pkg}/deployment-config" -> ();
    /// Entitle a group (`Grant-AppvServerPackage`).
    GrantPackage { pkg, group } body: GrantRequest => Put "/api/v1/packages/{pkg}/entitlements/{group}" -> ();
    /// Remove a group's entitlement (`Revoke-AppvServerPackage`).
    RevokePackage { pkg, group } => Delete "/api/v1/packages/{pkg}/entitlements/{group}" -> ();

    /// Connection groups, by priority then name.
    ListConnectionGroups {} => Get "/api/v1/connection-groups" -> Vec<ConnectionGroup>;
    /// Create a connection group (`New-AppvServerConnectionGroup`).
    CreateConnectionGroup {} body: CreateConnectionGroupRequest => Post "/api/v1/connection-groups" -> ConnectionGroup;
    /// One connection group.
    ShowConnectionGroup { cg } => Get "/api/v1/connection-groups/{cg}" -> ConnectionGroup;
    /// Rename a connection group or change its priority.
    UpdateConnectionGroup { cg } body: UpdateConnectionGroupRequest => Patch "/api/v1/connection-groups/{cg}" -> ConnectionGroup;
    /// Delete a connection group.
    DeleteConnectionGroup { cg } => Delete "/api/v1/connection-groups/{cg}" -> ();
    /// Publish a connection group.
    PublishConnectionGroup { cg } => Post "/api/v1/connection-groups/{cg}/publish" -> ConnectionGroup;
    /// Unpublish a connection group.
    UnpublishConnectionGroup { cg } => Post "/api/v1/connection-groups/{cg}/unpublish" -> ConnectionGroup;
    /// Add or change a member package.
    SetMember { cg, pkg } body: SetMemberRequest => Put "/api/v1/connection-groups/{cg}/members/{pkg}" -> ConnectionGroup;
    /// Remove a member package.
    RemoveMember { cg, pkg } => Delete "/api/v1/connection-groups/{cg}/members/{pkg}" -> ConnectionGroup;
    /// Entitle a group to a connection group.
    GrantConnectionGroup { cg, group } => Put "/api/v1/connection-groups/{cg}/entitlements/{group}" -> ConnectionGroup;
    /// Remove a group's entitlement to a connection group.
    RevokeConnectionGroup { cg, group } => Delete "/api/v1/connection-groups/{cg}/entitlements/{group}" -> ConnectionGroup;

    /// Every client that reported, with its packages and how much of each it has cached.
    ReportClients {} => Get "/api/v1/reports/clients" -> Vec<ClientCache>;

    /// Registered publishing servers (`Get-AppvPublishingServer`).
    ListServers {} => Get "/api/v1/publishing-servers" -> Vec<PublishingServer>;
    /// Register a publishing server (`Add-AppvPublishingServer`).
    RegisterServer {} body: RegisterServerRequest => Post "/api/v1/publishing-servers" -> RegisteredServer;
    /// Unregister a publishing server (`Remove-AppvPublishingServer`).
    UnregisterServer { name } => Delete "/api/v1/publishing-servers/{name}" -> ();

    /// Administrators (`Get-AppvServerAdmin`).
    ListAdministrators {} => Get "/api/v1/administrators" -> Vec<Administrator>;
    /// Add an administrator (`Add-AppvServerAdmin`).
    AddAdministrator {} body: AddAdministratorRequest => Post "/api/v1/administrators" -> ();
    /// Remove an administrator (`Remove-AppvServerAdmin`); never the last.
    RemoveAdministrator { name } => Delete "/api/v1/administrators/{name}" -> ();
    /// Create an API token for an administrator.
    CreateToken { name } body: CreateTokenRequest => Post "/api/v1/administrators/{name}/tokens" -> CreatedToken;

    /// Users in the directory.
    ListUsers {} => Get "/api/v1/users" -> Vec<String>;
    /// Add a user, optionally into groups.
    CreateUser {} body: CreateUserRequest => Post "/api/v1/users" -> CreatedUser;
    /// What a user receives through its groups (nested groups resolved).
    ShowUser { name } => Get "/api/v1/users/{name}" -> EffectivePublishing;
    /// Remove a user.
    DeleteUser { name } => Delete "/api/v1/users/{name}" -> ();
    /// Machines in the directory.
    ListMachines {} => Get "/api/v1/machines" -> Vec<String>;
    /// Add a machine, optionally into groups; its credential is in the answer only.
    CreateMachine {} body: CreateMachineRequest => Post "/api/v1/machines" -> CreatedMachine;
    /// What a machine receives through its groups (App-V's global publishing).
    ShowMachine { name } => Get "/api/v1/machines/{name}" -> EffectivePublishing;
    /// Remove a machine.
    DeleteMachine { name } => Delete "/api/v1/machines/{name}" -> ();
    /// Groups in the directory.
    ListGroups {} => Get "/api/v1/groups" -> Vec<String>;
    /// Create a group.
    CreateGroup {} body: CreateGroupRequest => Post "/api/v1/groups" -> ();
    /// A group's direct members.
    ShowGroup { name } => Get "/api/v1/groups/{name}" -> GroupMembers;
    /// Put a user, machine or group (`kind`: [`PrincipalKind::segment`]) into a group.
    AddGroupMember { name, kind, member } => Put "/api/v1/groups/{name}/members/{kind}/{member}" -> ();
    /// Take a user, machine or group out of a group.
    RemoveGroupMember { name, kind, member } => Delete "/api/v1/groups/{name}/members/{kind}/{member}" -> ();
}

/// Package versions, oldest first, narrowed by a [`PackageQuery`] (`Get-AppvServerPackage`).
#[derive(Debug, Clone, Default)]
pub struct ListPackages {
    /// The filter, sent as the query string.
    pub query: PackageQuery,
}

impl Endpoint for ListPackages {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/api/v1/packages";
    type Response = Vec<PackageVersion>;
    type Body = ();

    fn path(&self) -> String {
        let mut query = Vec::new();
        if let Some(name) = &self.query.name {
            query.push(format!("name={}", segment(name)));
        }
        if let Some(published) = self.query.published {
            query.push(format!("published={published}"));
        }
        if query.is_empty() {
            Self::ROUTE.to_owned()
        } else {
            format!("{}?{}", Self::ROUTE, query.join("&"))
        }
    }

    fn body(&self) -> Option<&()> {
        None
    }
}

/// The publishing catalog, for a registered publishing server (its
/// credential as the bearer token), when its sequence is past `since`, after
/// waiting up to `wait_secs` (at most 30) for it to move; no body (`204`) if
/// it did not. The answer ([`CatalogUpdate`], JSON shape in
/// [`catalog_delta`](crate::catalog_delta)) is the changes since `since` when
/// the server still holds the catalog at `since` (this client always sends
/// `delta=true`; without it the server sends the whole catalog, which is what a
/// publishing node of an older Avail reads), else the whole catalog.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncCatalog {
    /// The sequence the caller holds (-1 for none: the whole catalog).
    pub since: i64,
    /// How long the server may wait for a newer sequence, in seconds.
    pub wait_secs: u64,
}

impl Endpoint for SyncCatalog {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/api/v1/catalog";
    type Response = CatalogUpdate;
    type Body = ();

    fn path(&self) -> String {
        format!(
            "{}?since={}&wait={}&delta=true",
            Self::ROUTE,
            self.since,
            self.wait_secs
        )
    }

    fn body(&self) -> Option<&()> {
        None
    }
}

/// Import a new version of a package, optionally with App-V's transfer of
/// entitlements and configuration and the switch of the published version; the
/// body is the `.appv` file, sent with
/// [`ManagementClient::upload`](crate::client::ManagementClient::upload).
#[derive(Debug, Clone)]
pub struct UpgradePackage {
    /// The package: a VersionId, a PackageId, a name or `NAME@VERSION`.
    pub pkg: String,
    /// The query: whether to transfer, whether to publish the new version.
    pub query: UpgradeQuery,
}

impl Endpoint for UpgradePackage {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/api/v1/packages/{pkg}/upgrade";
    type Response = UpgradeResponse;
    type Body = ();

    fn path(&self) -> String {
        format!(
            "{}?transfer={}&publish={}",
            fill(Self::ROUTE, &[("pkg", &self.pkg)]),
            self.query.transfer,
            self.query.publish
        )
    }

    fn body(&self) -> Option<&()> {
        None
    }
}

/// Launch counts from the Reporting DB, most launches first, grouped as
/// [`LaunchesQuery::by`] says.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportLaunches {
    /// The grouping, sent as the query string.
    pub query: LaunchesQuery,
}

impl Endpoint for ReportLaunches {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/api/v1/reports/launches";
    type Response = Vec<LaunchCount>;
    type Body = ();

    fn path(&self) -> String {
        format!("{}?by={}", Self::ROUTE, self.query.by.name())
    }

    fn body(&self) -> Option<&()> {
        None
    }
}

/// Delete a group. Without `force`, a group that holds entitlements (to a
/// package or a connection group) or memberships (it has members, or is a
/// member of another group) is refused with 409 `group_in_use`, naming what
/// would be revoked; with `force` they are revoked with it.
#[derive(Debug, Clone)]
pub struct DeleteGroup {
    /// The group's name.
    pub name: String,
    /// Revoke its entitlements and memberships with it.
    pub force: bool,
}

impl Endpoint for DeleteGroup {
    const METHOD: Method = Method::Delete;
    const ROUTE: &'static str = "/api/v1/groups/{name}";
    type Response = ();
    type Body = ();

    fn path(&self) -> String {
        let path = fill(Self::ROUTE, &[("name", &self.name)]);
        if self.force {
            format!("{path}?force=true")
        } else {
            path
        }
    }

    fn body(&self) -> Option<&()> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_so_that_no_name_changes_the_path() {
        let e = GrantPackage {
            pkg: "a/b c".into(),
            group: "..%2F".into(),
            body: GrantRequest::default(),
        };
        assert_eq!(e.path(), "/api/v1/packages/a%2Fb%20c/entitlements/..%252F");
        let list = ListPackages {
            query: PackageQuery {
                name: Some("Foo & Bar".into()),
                published: None,
            },
        };
        assert_eq!(list.path(), "/api/v1/packages?name=Foo%20%26%20Bar");
    }

    #[test]
    fn query_flags_are_in_the_path() {
        let upgrade = UpgradePackage {
            pkg: "Editor@2.0".into(),
            query: UpgradeQuery {
                transfer: true,
                publish: true,
            },
        };
        assert_eq!(
            upgrade.path(),
            "/api/v1/packages/Editor%402.0/upgrade?transfer=true&publish=true"
        );
        let delete = |force| DeleteGroup {
            name: "staff".into(),
            force,
        };
        assert_eq!(delete(false).path(), "/api/v1/groups/staff");
        assert_eq!(delete(true).path(), "/api/v1/groups/staff?force=true");
    }
}
