//! The catalog: finding a package version or a connection group by id or by
//! name, removing a version with its file, and setting a connection group
//! member with its place in one transaction.

use avail_model::api::SetMemberRequest;
use avail_model::{
    ConnectionGroup, ConnectionGroupChange, ConnectionGroupId, ConnectionGroupMember,
    PackageFilter, PackageId, PackageVersion, VersionId,
};
use avail_store::{ManagementStore, StoreError};
use uuid::Uuid;

use super::Catalog;
use crate::error::{ApiError, ApiResult};

/// A package version by VersionId, by PackageId (its newest version) or by name (newest version).
pub(crate) async fn resolve_version(
    store: &dyn ManagementStore,
    pkg: &str,
) -> ApiResult<PackageVersion> {
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
        return versions
            .into_iter()
            .next_back()
            .ok_or_else(|| ApiError::Store(StoreError::NotFound(format!("package {pkg}"))));
    }
    let versions = store
        .list_package_versions(&PackageFilter {
            name_contains: Some(pkg.to_owned()),
            ..Default::default()
        })
        .await?;
    let exact: Vec<PackageVersion> = versions
        .into_iter()
        .filter(|v| v.package.name.eq_ignore_ascii_case(pkg))
        .collect();
    let ids: std::collections::BTreeSet<PackageId> =
        exact.iter().map(|v| v.package.package_id).collect();
    if ids.len() > 1 {
        return Err(ApiError::Store(StoreError::Conflict(format!(
            "{} packages are named {pkg}; use a PackageId or VersionId",
            ids.len()
        ))));
    }
    exact
        .into_iter()
        .next_back()
        .ok_or_else(|| ApiError::Store(StoreError::NotFound(format!("package {pkg}"))))
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
