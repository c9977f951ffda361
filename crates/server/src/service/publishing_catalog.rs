//! The publishing catalog as the server builds it: one consistent read of the
//! Management DB ([`ManagementStore::catalog_snapshot`]) indexed by
//! [`avail_model::catalog::Catalog`], and the management API's view of what a
//! user or machine receives, answered by the catalog's own resolution
//! ([`Catalog::receives`]) so that the API and a publishing node cannot differ.
//!
//! The management API builds the catalog per request: it is an administrator's
//! occasional question, and the catalog is built from one read. A publishing
//! node keeps one catalog in memory and rebuilds it only when the change
//! sequence moves.

use avail_model::api::{EffectiveConnectionGroup, EffectivePackage, EffectivePublishing};
use avail_model::catalog::Catalog;
use avail_model::{Principal, PrincipalKind};
use avail_store::{ManagementStore, StoreError};

use crate::error::{ApiError, ApiResult};

/// The catalog as of now, from one consistent read.
pub(crate) async fn load(store: &dyn ManagementStore) -> ApiResult<Catalog> {
    Ok(Catalog::new(store.catalog_snapshot().await?))
}

/// What a user or machine receives. A group, or a user or machine the catalog
/// does not hold, is NotFound.
pub(crate) fn effective(
    catalog: &Catalog,
    principal: &Principal,
) -> ApiResult<EffectivePublishing> {
    let kind = principal.kind();
    if kind == PrincipalKind::Group || !catalog.contains(principal) {
        let what = &kind.segment()[..kind.segment().len() - 1];
        return Err(ApiError::Store(StoreError::NotFound(format!(
            "{what} {}",
            principal.name()
        ))));
    }
    let name = principal.name();
    let receives = match kind {
        PrincipalKind::User => catalog.receives(None, Some(name)),
        _ => catalog.receives(Some(name), None),
    };
    let packages = receives
        .packages
        .iter()
        .filter_map(|&v| catalog.package(v))
        .map(|p| EffectivePackage {
            package_id: p.version.package_id,
            version_id: p.version.version_id,
            name: p.version.name.clone(),
            version: p.version.version.clone(),
        })
        .collect();
    let connection_groups = receives
        .connection_groups
        .iter()
        .filter_map(|&id| catalog.connection_group(id))
        .map(|g| EffectiveConnectionGroup {
            id: g.id,
            name: g.name.clone(),
            priority: g.priority,
        })
        .collect();
    Ok(EffectivePublishing {
        name: name.to_owned(),
        kind,
        groups: catalog.groups_of(principal).to_vec(),
        packages,
        connection_groups,
        sequence: catalog.sequence(),
    })
}

#[cfg(test)]
mod tests {
    use avail_model::{Application, NewPackageVersion, PackageId, VersionId};
    use uuid::Uuid;

    use super::*;

    #[tokio::test]
    async fn users_and_machines_receive_through_nested_groups() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("management.db").display());
        let store = avail_store::open_management(&url).await.unwrap();
        let package_id = PackageId(Uuid::from_u128(1));
        let version_id = VersionId(Uuid::from_u128(2));
        store
            .add_package_version(NewPackageVersion {
                package_id,
                version_id,
                name: "Editor".into(),
                version: "1.0.0.0".into(),
                content_path: format!("packages/{package_id}/{version_id}.appv"),
                size: 1,
                sha256: "0".repeat(64),
                block_map_sha256: None,
                target_oses: vec![],
                applications: vec![Application {
                    id: "editor".into(),
                    target: Some("/opt/editor/bin/editor".into()),
                    arguments: None,
                }],
            })
            .await
            .unwrap();
        store.set_published(version_id, true).await.unwrap();
        for g in ["staff", "devs", "lab"] {
            store.create_group(g).await.unwrap();
        }
        store
            .add_member("staff", &Principal::Group("devs".into()))
            .await
            .unwrap();
        store.grant(version_id, "staff", None).await.unwrap();
        store.create_user("alice", &["devs".into()]).await.unwrap();
        store
            .create_machine("pc1", "hash", &["lab".into()])
            .await
            .unwrap();

        let catalog = load(store.as_ref()).await.unwrap();
        let alice = effective(&catalog, &Principal::User("alice".into())).unwrap();
        assert_eq!(alice.groups, ["devs", "staff"]);
        assert_eq!(alice.packages.len(), 1);
        assert_eq!(alice.packages[0].version_id, version_id);
        assert_eq!(alice.sequence, store.change_sequence().await.unwrap());
        let pc1 = effective(&catalog, &Principal::Machine("pc1".into())).unwrap();
        assert_eq!(pc1.groups, ["lab"]);
        assert!(pc1.packages.is_empty());
        for unknown in [
            Principal::User("mallory".into()),
            Principal::Machine("alice".into()),
            Principal::Group("staff".into()),
        ] {
            assert!(matches!(
                effective(&catalog, &unknown),
                Err(ApiError::Store(StoreError::NotFound(_)))
            ));
        }
    }
}
