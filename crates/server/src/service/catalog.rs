//! The catalog: finding a package version (the one rule for every PKG the API
//! takes) or a connection group by id or by name, removing a version with its
//! file, and setting a connection group member with its place in one
//! transaction.

use avail_model::api::SetMemberRequest;
use avail_model::{
    ConnectionGroup, ConnectionGroupChange, ConnectionGroupId, ConnectionGroupMember,
    PackageFilter, PackageId, PackageVersion, VersionId,
};
use avail_store::{ManagementStore, StoreError};
use uuid::Uuid;

use super::Catalog;
use crate::error::{ApiError, ApiResult};

/// The version a package stands for: its published one (a package has at most
/// one), else its newest. `versions` are one package's, oldest first.
fn current(versions: Vec<PackageVersion>) -> Option<PackageVersion> {
    match versions.iter().position(|v| v.published) {
        Some(i) => versions.into_iter().nth(i),
        None => versions.into_iter().next_back(),
    }
}

/// A package version named as people name it: a VersionId; a PackageId (the
/// package's published version, else its newest); a display name
/// (case-insensitive, the same rule); or `NAME@VERSION` (that exact version
/// string, else the same version written shorter: `1.2` for `1.2.0.0`). A name
/// that several packages (different PackageIds) carry is a conflict naming
/// them.
pub(crate) async fn resolve_version(
    store: &dyn ManagementStore,
    pkg: &str,
) -> ApiResult<PackageVersion> {
    let not_found = || ApiError::Store(StoreError::NotFound(format!("package {pkg}")));
    if let Ok(id) = Uuid::parse_str(pkg) {
        match store.package_version(VersionId(id)).await {
            Ok(v) => return Ok(v),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let versions = store
            .list_package_versions(&PackageFilter {
                package_id: Some(PackageId(id)),
                ..Default::default()
            })
            .await?;
        return current(versions).ok_or_else(not_found);
    }
    let named = versions_named(store, pkg).await?;
    if !named.is_empty() {
        return current(one_package(pkg, named)?).ok_or_else(not_found);
    }
    if let Some((name, version)) = pkg.rsplit_once('@') {
        let named = versions_named(store, name).await?;
        // The exact version string; else the same version written shorter
        // (`1.2` for the `1.2.0.0` that `avail package pack --version 1.2` makes).
        let exact: Vec<PackageVersion> = named
            .iter()
            .filter(|v| v.package.version == version)
            .cloned()
            .collect();
        let matching = if exact.is_empty() {
            named
                .into_iter()
                .filter(|v| four_part(&v.package.version) == four_part(version))
                .collect()
        } else {
            exact
        };
        return one_package(pkg, matching)?
            .into_iter()
            .next_back()
            .ok_or_else(not_found);
    }
    Err(not_found())
}

/// A version string with its missing components as `.0`, up to App-V's four.
fn four_part(version: &str) -> String {
    let parts = version.split('.').count();
    format!("{version}{}", ".0".repeat(4usize.saturating_sub(parts)))
}

/// Every version whose display name is `name` (case-insensitive), oldest first.
async fn versions_named(store: &dyn ManagementStore, name: &str) -> ApiResult<Vec<PackageVersion>> {
    Ok(store
        .list_package_versions(&PackageFilter {
            name_contains: Some(name.to_owned()),
            ..Default::default()
        })
        .await?
        .into_iter()
        .filter(|v| v.package.name.eq_ignore_ascii_case(name))
        .collect())
}

/// `versions` if they are all of one package; a conflict naming the packages otherwise.
fn one_package(pkg: &str, versions: Vec<PackageVersion>) -> ApiResult<Vec<PackageVersion>> {
    let ids: std::collections::BTreeSet<PackageId> =
        versions.iter().map(|v| v.package.package_id).collect();
    if ids.len() > 1 {
        let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        return Err(ApiError::Store(StoreError::Conflict(format!(
            "{} packages are named {pkg} (PackageIds {}); name one by its PackageId or VersionId",
            ids.len(),
            ids.join(", ")
        ))));
    }
    Ok(versions)
}

/// A connection group by id or by name (case-insensitive).
pub(crate) async fn resolve_connection_group(
    store: &dyn ManagementStore,
    cg: &str,
) -> ApiResult<ConnectionGroup> {
    if let Ok(id) = Uuid::parse_str(cg) {
        return Ok(store.connection_group(ConnectionGroupId(id)).await?);
    }
    store
        .list_connection_groups()
        .await?
        .into_iter()
        .find(|g| g.name.eq_ignore_ascii_case(cg))
        .ok_or_else(|| ApiError::Store(StoreError::NotFound(format!("connection group {cg}"))))
}

/// Remove a version (its entitlements and configuration with it), then its
/// file: the row goes first, so a client never sees a version whose file is
/// missing; a file left behind is only logged.
pub(crate) async fn remove_package_version(
    catalog: &Catalog,
    pkg: &str,
) -> ApiResult<PackageVersion> {
    let version = resolve_version(&*catalog.store, pkg).await?;
    let removed = catalog
        .store
        .remove_package_version(version.package.version_id)
        .await?;
    if let Err(e) =
        tokio::fs::remove_file(catalog.content_root.join(&removed.package.content_path)).await
    {
        tracing::warn!(path = %removed.package.content_path, "could not remove a removed version's file: {e}");
    }
    Ok(removed)
}

/// Add package `pkg` to connection group `cg` or change it, and place it: one
/// transaction, one new version of the group.
pub(crate) async fn set_member(
    catalog: &Catalog,
    cg: &str,
    pkg: &str,
    req: SetMemberRequest,
) -> ApiResult<ConnectionGroup> {
    let group = resolve_connection_group(&*catalog.store, cg).await?;
    let version = resolve_version(&*catalog.store, pkg).await?;
    let version_id = match (req.any_version, req.version_id) {
        (true, Some(_)) => {
            return Err(ApiError::BadRequest(
                "give either version_id or any_version, not both".into(),
            ));
        }
        (true, None) => None,
        (false, Some(v)) => Some(v),
        (false, None) => Some(version.package.version_id),
    };
    let package_id = version.package.package_id;
    let mut changes = vec![ConnectionGroupChange::SetMember(ConnectionGroupMember {
        package_id,
        version_id,
        optional: req.optional,
    })];
    if let Some(position) = req.position {
        changes.push(ConnectionGroupChange::MoveMember {
            package_id,
            position,
        });
    }
    Ok(catalog
        .store
        .update_connection_group(group.id, changes)
        .await?)
}
