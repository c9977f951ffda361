//! One conformance suite for every store operation, run against SQLite and
//! against a real PostgreSQL started by `avail-testkit`. Both backends must give
//! the same answers, the same typed errors, and the same idempotence.
//!
//! Each case is an async function over a fresh store; `conformance!` makes it
//! two tests, `sqlite::<case>` and `postgres::<case>`, so that a failure names
//! the rule and the backend. The PostgreSQL tests share one throwaway server
//! (`shared_postgres`), each in a database of its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use avail_model::*;
use avail_store::{DatabaseKind, ManagementStore, ReportingStore, StoreError};
use avail_testkit::Postgres;
use chrono::{TimeZone, Utc};
use uuid::Uuid;

fn version(package_id: PackageId, n: u128, name: &str) -> NewPackageVersion {
    NewPackageVersion {
        package_id,
        version_id: VersionId(Uuid::from_u128(n)),
        name: name.into(),
        version: format!("1.0.{n}.0"),
        content_path: format!("packages/{package_id}/{n}.appv"),
        size: 1000 + n as u64,
        sha256: format!("{n:064x}"),
        block_map_sha256: Some(format!("{:064x}", 0xb10c_0000 + n)),
        target_oses: vec![],
        applications: vec![
            Application {
                id: "main".into(),
                target: Some("/opt/x/bin/x".into()),
                arguments: Some("--a".into()),
            },
            Application {
                id: "tool".into(),
                target: None,
                arguments: None,
            },
        ],
    }
}

/// Packages, the directory, entitlements, upgrade with transfer, connection
/// groups and removal, one step after another on one catalog.
async fn catalog(db: Arc<dyn ManagementStore>) {
    let seq0 = db.change_sequence().await.unwrap();
    let pkg = PackageId(Uuid::from_u128(0xAAAA));

    // Import: idempotent on VersionId, conflict on a different file.
    let v1 = version(pkg, 1, "Editor");
    let added = db.add_package_version(v1.clone()).await.unwrap();
    assert!(added.created);
    assert_eq!(added.value.package, v1);
    assert!(!added.value.published);
    let again = db.add_package_version(v1.clone()).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.value, added.value);
    let mut other_file = v1.clone();
    other_file.sha256 = "f".repeat(64);
    assert!(matches!(
        db.add_package_version(other_file).await,
        Err(StoreError::Conflict(_))
    ));
    let seq1 = db.change_sequence().await.unwrap();
    assert!(seq1 > seq0, "an import changes the sequence");

    let v2 = version(pkg, 2, "Editor");
    db.add_package_version(v2.clone()).await.unwrap();
    let other_pkg = PackageId(Uuid::from_u128(0xBBBB));
    db.add_package_version(version(other_pkg, 3, "Viewer"))
        .await
        .unwrap();

    // Listing and filtering.
    let all = db
        .list_package_versions(&PackageFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let editors = db
        .list_package_versions(&PackageFilter {
            name_contains: Some("edit".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        editors
            .iter()
            .map(|v| v.package.version_id)
            .collect::<Vec<_>>(),
        [v1.version_id, v2.version_id]
    );
    let of_pkg = db
        .list_package_versions(&PackageFilter {
            package_id: Some(other_pkg),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(of_pkg.len(), 1);
    assert!(matches!(
        db.package_version(VersionId(Uuid::from_u128(99))).await,
        Err(StoreError::NotFound(_))
    ));

    // Publish.
    let published = db.set_published(v1.version_id, true).await.unwrap();
    assert!(published.published);
    let only_published = db
        .list_package_versions(&PackageFilter {
            published: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(only_published.len(), 1);
    assert!(db.change_sequence().await.unwrap() > seq1);
    assert!(matches!(
        db.set_published(VersionId(Uuid::from_u128(99)), true).await,
        Err(StoreError::NotFound(_))
    ));

    // Deployment configuration.
    assert_eq!(db.deployment_config(v1.version_id).await.unwrap(), None);
    db.set_deployment_config(v1.version_id, Some("<DeploymentConfiguration/>".into()))
        .await
        .unwrap();
    assert_eq!(
        db.deployment_config(v1.version_id)
            .await
            .unwrap()
            .as_deref(),
        Some("<DeploymentConfiguration/>")
    );
    db.set_deployment_config(
        v1.version_id,
        Some("<DeploymentConfiguration a=\"1\"/>".into()),
    )
    .await
    .unwrap();
    assert_eq!(
        db.deployment_config(v1.version_id)
            .await
            .unwrap()
            .as_deref(),
        Some("<DeploymentConfiguration a=\"1\"/>")
    );

    // Directory: users, machines, nested groups.
    db.create_group("staff").await.unwrap();
    db.create_group("engineering").await.unwrap();
    db.create_group("labs").await.unwrap();
    assert!(matches!(
        db.create_group("staff").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(db.create_user("alice", &[]).await.unwrap().created);
    assert!(db.create_user("bob", &[]).await.unwrap().created);
    assert!(
        !db.create_user("alice", &[]).await.unwrap().created,
        "the same user again is a retry, not a conflict"
    );
    db.create_machine("pc1", "hash-pc1", &[]).await.unwrap();
    assert!(matches!(
        db.create_machine("pc1", "hash-other", &[]).await,
        Err(StoreError::Conflict(_))
    ));
    db.add_member("engineering", &Principal::User("alice".into()))
        .await
        .unwrap();
    db.add_member("engineering", &Principal::User("alice".into()))
        .await
        .unwrap(); // idempotent
    db.add_member("staff", &Principal::Group("engineering".into()))
        .await
        .unwrap();
    db.add_member("labs", &Principal::Machine("pc1".into()))
        .await
        .unwrap();
    assert!(matches!(
        db.add_member("engineering", &Principal::Group("staff".into()))
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        db.add_member("nope", &Principal::User("alice".into()))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        db.add_member("staff", &Principal::User("nobody".into()))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        db.groups_of(&Principal::User("alice".into()))
            .await
            .unwrap(),
        ["engineering", "staff"]
    );
    assert_eq!(
        db.groups_of(&Principal::User("bob".into())).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        db.groups_of(&Principal::Machine("pc1".into()))
            .await
            .unwrap(),
        ["labs"]
    );
    assert_eq!(
        db.members("staff").await.unwrap(),
        [Principal::Group("engineering".into())]
    );
    assert_eq!(
        db.list_principals(PrincipalKind::User).await.unwrap(),
        ["alice", "bob"]
    );
    assert_eq!(
        db.list_principals(PrincipalKind::Group).await.unwrap(),
        ["engineering", "labs", "staff"]
    );
    assert_eq!(
        db.machine_by_credential("hash-pc1")
            .await
            .unwrap()
            .as_deref(),
        Some("pc1")
    );
    assert_eq!(db.machine_by_credential("wrong").await.unwrap(), None);
    db.remove_member("staff", &Principal::Group("engineering".into()))
        .await
        .unwrap();
    assert_eq!(
        db.groups_of(&Principal::User("alice".into()))
            .await
            .unwrap(),
        ["engineering"]
    );
    assert!(matches!(
        db.remove_member("staff", &Principal::Group("engineering".into()))
            .await,
        Err(StoreError::NotFound(_))
    ));

    // Entitlements.
    db.grant(v1.version_id, "engineering", None).await.unwrap();
    db.grant(v1.version_id, "labs", Some("<UserConfiguration/>".into()))
        .await
        .unwrap();
    db.grant(
        v1.version_id,
        "labs",
        Some("<UserConfiguration b=\"2\"/>".into()),
    )
    .await
    .unwrap();
    assert!(matches!(
        db.grant(v1.version_id, "ghosts", None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        db.grant(VersionId(Uuid::from_u128(99)), "labs", None).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        db.entitlements(v1.version_id).await.unwrap(),
        [
            Entitlement {
                group: "engineering".into(),
                user_config: None
            },
            Entitlement {
                group: "labs".into(),
                user_config: Some("<UserConfiguration b=\"2\"/>".into())
            },
        ]
    );
    // Upgrade with transfer.
    db.transfer(
        v1.version_id,
        v2.version_id,
        Transfer {
            entitlements: true,
            deployment_config: true,
            publish: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        db.entitlements(v2.version_id).await.unwrap(),
        db.entitlements(v1.version_id).await.unwrap()
    );
    assert_eq!(
        db.deployment_config(v2.version_id).await.unwrap(),
        db.deployment_config(v1.version_id).await.unwrap()
    );
    db.revoke(v1.version_id, "engineering").await.unwrap();
    assert!(matches!(
        db.revoke(v1.version_id, "engineering").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(db.entitlements(v1.version_id).await.unwrap().len(), 1);

    // Connection groups.
    let cg = db.create_connection_group("Office", 5).await.unwrap();
    assert!(cg.members.is_empty() && !cg.published);
    assert!(matches!(
        db.create_connection_group("Office", 1).await,
        Err(StoreError::Conflict(_))
    ));
    let with_editor = db
        .update_connection_group(
            cg.id,
            vec![ConnectionGroupChange::SetMember(ConnectionGroupMember {
                package_id: pkg,
                version_id: Some(v2.version_id),
                optional: false,
            })],
        )
        .await
        .unwrap();
    assert_ne!(
        with_editor.version_id, cg.version_id,
        "every change is a new connection group version"
    );
    let with_viewer = db
        .update_connection_group(
            cg.id,
            vec![ConnectionGroupChange::SetMember(ConnectionGroupMember {
                package_id: other_pkg,
                version_id: None,
                optional: true,
            })],
        )
        .await
        .unwrap();
    assert_eq!(
        with_viewer
            .members
            .iter()
            .map(|m| m.package_id)
            .collect::<Vec<_>>(),
        [pkg, other_pkg]
    );
    assert!(with_viewer.members[1].optional && with_viewer.members[1].version_id.is_none());
    let moved = db
        .update_connection_group(
            cg.id,
            vec![ConnectionGroupChange::MoveMember {
                package_id: other_pkg,
                position: 0,
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        moved
            .members
            .iter()
            .map(|m| m.package_id)
            .collect::<Vec<_>>(),
        [other_pkg, pkg]
    );
    assert!(matches!(
        db.update_connection_group(
            cg.id,
            vec![ConnectionGroupChange::SetMember(ConnectionGroupMember {
                package_id: pkg,
                version_id: Some(VersionId(Uuid::from_u128(3))),
                optional: false
            })]
        )
        .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        db.update_connection_group(
            cg.id,
            vec![ConnectionGroupChange::SetMember(ConnectionGroupMember {
                package_id: PackageId(Uuid::from_u128(77)),
                version_id: None,
                optional: false
            })]
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
    db.update_connection_group(cg.id, vec![ConnectionGroupChange::Grant("staff".into())])
        .await
        .unwrap();
    assert!(matches!(
        db.update_connection_group(cg.id, vec![ConnectionGroupChange::Grant("ghosts".into())])
            .await,
        Err(StoreError::NotFound(_))
    ));
    db.update_connection_group(cg.id, vec![ConnectionGroupChange::Priority(1)])
        .await
        .unwrap();
    db.update_connection_group(
        cg.id,
        vec![ConnectionGroupChange::Rename("Office Suite".into())],
    )
    .await
    .unwrap();
    let published_cg = db
        .update_connection_group(cg.id, vec![ConnectionGroupChange::Publish(true)])
        .await
        .unwrap();
    assert_eq!(published_cg.name, "Office Suite");
    assert_eq!(published_cg.priority, 1);
    assert_eq!(published_cg.entitled_groups, ["staff"]);
    assert!(published_cg.published);
    assert_eq!(db.connection_group(cg.id).await.unwrap(), published_cg);
    let second = db.create_connection_group("Another", 0).await.unwrap();
    assert_eq!(
        db.list_connection_groups()
            .await
            .unwrap()
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        ["Another", "Office Suite"]
    );
    // A version a connection group names cannot be removed.
    assert!(matches!(
        db.remove_package_version(v2.version_id).await,
        Err(StoreError::Conflict(_))
    ));
    db.update_connection_group(cg.id, vec![ConnectionGroupChange::RemoveMember(pkg)])
        .await
        .unwrap();
    assert!(matches!(
        db.update_connection_group(cg.id, vec![ConnectionGroupChange::RemoveMember(pkg)])
            .await,
        Err(StoreError::NotFound(_))
    ));
    db.update_connection_group(cg.id, vec![ConnectionGroupChange::Revoke("staff".into())])
        .await
        .unwrap();
    db.delete_connection_group(second.id).await.unwrap();
    assert!(matches!(
        db.connection_group(second.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        db.delete_connection_group(second.id).await,
        Err(StoreError::NotFound(_))
    ));

    // Remove a version: its entitlements and configuration go with it.
    let removed = db.remove_package_version(v2.version_id).await.unwrap();
    assert_eq!(removed.package.version_id, v2.version_id);
    assert!(matches!(
        db.entitlements(v2.version_id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        db.remove_package_version(v2.version_id).await,
        Err(StoreError::NotFound(_))
    ));

    // Deleting a group removes its entitlements.
    db.delete_principal(&Principal::Group("labs".into()))
        .await
        .unwrap();
    assert!(db.entitlements(v1.version_id).await.unwrap().is_empty());
    assert!(matches!(
        db.delete_principal(&Principal::Group("labs".into())).await,
        Err(StoreError::NotFound(_))
    ));
    db.delete_principal(&Principal::Machine("pc1".into()))
        .await
        .unwrap();
    assert_eq!(db.machine_by_credential("hash-pc1").await.unwrap(), None);
}

/// Publishing servers: registration, credentials, sync records.
async fn publishing_servers(db: Arc<dyn ManagementStore>) {
    let server = db
        .register_publishing_server("pub1", "hash-pub1")
        .await
        .unwrap();
    assert_eq!((server.name.as_str(), server.last_sync_at), ("pub1", None));
    assert!(matches!(
        db.register_publishing_server("pub1", "hash-x").await,
        Err(StoreError::Conflict(_))
    ));
    let seq = db.change_sequence().await.unwrap();
    db.record_sync("pub1", seq).await.unwrap();
    let found = db
        .publishing_server_by_credential("hash-pub1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.last_sync_sequence, Some(seq));
    assert!(found.last_sync_at.is_some());
    assert_eq!(db.list_publishing_servers().await.unwrap().len(), 1);
    assert!(matches!(
        db.record_sync("nope", 1).await,
        Err(StoreError::NotFound(_))
    ));
    db.unregister_publishing_server("pub1").await.unwrap();
    assert!(
        db.publishing_server_by_credential("hash-pub1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        db.unregister_publishing_server("pub1").await,
        Err(StoreError::NotFound(_))
    ));
}

/// Administrators and their tokens; the last one stays.
async fn administrators_and_tokens(db: Arc<dyn ManagementStore>) {
    db.add_administrator("root", Some("$argon2id$hash"))
        .await
        .unwrap();
    db.add_administrator("robot", None).await.unwrap();
    assert!(matches!(
        db.add_administrator("root", None).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        db.administrator_password_hash("root")
            .await
            .unwrap()
            .as_deref(),
        Some("$argon2id$hash")
    );
    assert_eq!(db.administrator_password_hash("robot").await.unwrap(), None);
    assert_eq!(db.administrator_password_hash("ghost").await.unwrap(), None);
    db.add_api_token("robot", "token-hash", "ci").await.unwrap();
    assert!(matches!(
        db.add_api_token("ghost", "t2", "x").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        db.administrator_by_token("token-hash")
            .await
            .unwrap()
            .as_deref(),
        Some("robot")
    );
    let admins = db.list_administrators().await.unwrap();
    assert_eq!(
        admins
            .iter()
            .map(|a| (a.name.as_str(), a.has_password))
            .collect::<Vec<_>>(),
        [("robot", false), ("root", true)]
    );
    db.remove_administrator("robot").await.unwrap();
    match db.remove_administrator("root").await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("last administrator"), "{m}"),
        other => panic!("the last administrator was removed: {other:?}"),
    }
    assert_eq!(
        db.administrator_by_token("token-hash").await.unwrap(),
        None,
        "tokens go with their administrator"
    );
    assert!(matches!(
        db.remove_administrator("robot").await,
        Err(StoreError::NotFound(_))
    ));
}

/// Hostile input is data, never SQL.
async fn hostile_input_is_data(db: Arc<dyn ManagementStore>) {
    let evil = "x'); DROP TABLE users; --";
    db.create_user(evil, &[]).await.unwrap();
    assert!(
        db.list_principals(PrincipalKind::User)
            .await
            .unwrap()
            .contains(&evil.to_owned())
    );
}

fn report(
    id: u128,
    host: &str,
    day: u32,
    apps: &[(&str, &str)],
    packages: &[(u128, i32)],
) -> ClientReport {
    ClientReport {
        id: Uuid::from_u128(id),
        received_at: Utc
            .with_ymd_and_hms(2026, 3, day, 12, 0, id as u32 % 60)
            .unwrap(),
        source_host: "10.0.0.1".into(),
        body: format!("<CLIENT_DATA Host=\"{host}\"/>"),
        client: ClientInformation {
            host_name: host.into(),
            client_version: "5.1.104.0".into(),
            processor_arch: "x64".into(),
            os_version: "6.1".into(),
            os_service_pack: 1,
            os_type: "Client".into(),
        },
        packages: packages
            .iter()
            .map(|(v, pct)| PackageInformation {
                package_id: Uuid::from_u128(*v + 1000),
                version_id: Uuid::from_u128(*v),
                name: format!("pkg{v}"),
                version: Some("1.0".into()),
                source: Some("http://content/x.appv".into()),
                percent_cached: Some(*pct),
            })
            .collect(),
        usage: apps
            .iter()
            .map(|(app, user)| ApplicationUsage {
                application: (*app).into(),
                application_version: "7.5".into(),
                server: "pub1".into(),
                user: (*user).into(),
                package_version_id: Uuid::from_u128(if *app == "Notepad" { 1 } else { 2 }),
                connection_group_version_id: None,
                launched_at: Utc.with_ymd_and_hms(2026, 3, day, 8, 0, 0).unwrap(),
                launch_status: "0-0".into(),
                shutdown_at: Some(Utc.with_ymd_and_hms(2026, 3, day, 9, 0, 0).unwrap()),
            })
            .collect(),
    }
}

/// Ingest, retries, launches and caches.
async fn reporting(db: Arc<dyn ReportingStore>) {
    let batch = vec![
        report(
            1,
            "pc1",
            1,
            &[("Notepad", "alice"), ("Notepad", "bob")],
            &[(1, 40), (2, 100)],
        ),
        report(2, "pc2", 1, &[("Paint", "alice")], &[(1, 10)]),
        report(3, "pc1", 2, &[("Notepad", "alice")], &[]),
    ];
    assert_eq!(
        db.ingest(&batch).await.unwrap(),
        IngestResult {
            stored: 3,
            duplicates: 0
        }
    );
    // A retried batch (and a report repeated inside one) never duplicates.
    let retry = vec![
        batch[0].clone(),
        report(4, "pc1", 3, &[], &[(1, 90)]),
        batch[2].clone(),
    ];
    assert_eq!(
        db.ingest(&retry).await.unwrap(),
        IngestResult {
            stored: 1,
            duplicates: 2
        }
    );
    assert_eq!(db.ingest(&[]).await.unwrap(), IngestResult::default());

    let RawReport {
        received_at: received,
        source_host: source,
        body,
    } = db.raw_report(Uuid::from_u128(2)).await.unwrap().unwrap();
    assert_eq!(
        (source.as_str(), body.as_str()),
        ("10.0.0.1", "<CLIENT_DATA Host=\"pc2\"/>")
    );
    assert_eq!(received, batch[1].received_at);
    assert!(db.raw_report(Uuid::from_u128(99)).await.unwrap().is_none());

    let per_day = db
        .launches(LaunchGrouping::ApplicationPerDay)
        .await
        .unwrap();
    let day = |d| chrono::NaiveDate::from_ymd_opt(2026, 3, d);
    assert_eq!(
        per_day,
        [
            LaunchCount {
                key: "Notepad".into(),
                day: day(1),
                launches: 2
            },
            LaunchCount {
                key: "Notepad".into(),
                day: day(2),
                launches: 1
            },
            LaunchCount {
                key: "Paint".into(),
                day: day(1),
                launches: 1
            },
        ]
    );
    let per_user = db.launches(LaunchGrouping::User).await.unwrap();
    assert_eq!(
        per_user
            .iter()
            .map(|c| (c.key.as_str(), c.launches))
            .collect::<Vec<_>>(),
        [("alice", 3), ("bob", 1)]
    );
    let per_package = db.launches(LaunchGrouping::Package).await.unwrap();
    assert_eq!(
        per_package[0],
        LaunchCount {
            key: Uuid::from_u128(1).to_string(),
            day: None,
            launches: 3
        }
    );

    let caches = db.client_caches().await.unwrap();
    assert_eq!(caches.len(), 2);
    let pc1 = &caches[0];
    assert_eq!(pc1.client.host_name, "pc1");
    assert_eq!(
        pc1.last_report_at,
        Utc.with_ymd_and_hms(2026, 3, 3, 12, 0, 4).unwrap()
    );
    // pc1's latest package list (report 4) replaced the first one.
    assert_eq!(
        pc1.packages
            .iter()
            .map(|p| (p.name.as_str(), p.percent_cached))
            .collect::<Vec<_>>(),
        [("pkg1", Some(90))]
    );
    assert_eq!(caches[1].packages[0].percent_cached, Some(10));
}

/// Forty groups, `team00` to `team39`, created.
async fn teams(db: &dyn ManagementStore) -> Vec<String> {
    let teams: Vec<String> = (0..40).map(|i| format!("team{i:02}")).collect();
    for t in &teams {
        db.create_group(t).await.unwrap();
    }
    teams
}

/// A user or a machine with its groups is created whole or not at all, and a
/// retried user creation is idempotent.
async fn a_user_or_machine_with_groups_is_whole(db: Arc<dyn ManagementStore>) {
    let users = || async { db.list_principals(PrincipalKind::User).await.unwrap() };
    let teams = teams(&*db).await;

    // A user with groups, one of them missing: nothing at all, and the message names it.
    let mut with_ghost = teams.clone();
    with_ghost.insert(20, "ghosts".into());
    match db.create_user("carol", &with_ghost).await {
        Err(StoreError::NotFound(m)) => assert!(m.contains("group ghosts"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!users().await.contains(&"carol".to_owned()));
    for t in &teams {
        assert!(db.members(t).await.unwrap().is_empty(), "{t} got a member");
    }
    // Whole: the user and every membership.
    let created = db.create_user("carol", &teams).await.unwrap();
    assert!(created.created);
    assert_eq!(created.value, teams);
    assert_eq!(
        db.groups_of(&Principal::User("carol".into()))
            .await
            .unwrap(),
        teams
    );
    // A retry (groups in another order, one twice) is not a conflict and changes nothing.
    let seq = db.change_sequence().await.unwrap();
    let mut retry: Vec<String> = teams.iter().rev().cloned().collect();
    retry.push(teams[0].clone());
    let again = db.create_user("carol", &retry).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.value, teams);
    assert_eq!(db.change_sequence().await.unwrap(), seq);
    // Other groups: a conflict that names the difference.
    let mut other = teams[1..].to_vec();
    other.push("team99".into());
    db.create_group("team99").await.unwrap();
    match db.create_user("carol", &other).await {
        Err(StoreError::Conflict(m)) => {
            assert!(
                m.contains("not in team99") && m.contains("also in team00"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }

    // A machine: the same, and a second creation is a conflict (its credential was issued once).
    match db
        .create_machine("pc9", "hash-pc9", &["team00".into(), "nope".into()])
        .await
    {
        Err(StoreError::NotFound(m)) => assert!(m.contains("group nope"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(db.machine_by_credential("hash-pc9").await.unwrap(), None);
    assert!(
        db.list_principals(PrincipalKind::Machine)
            .await
            .unwrap()
            .is_empty()
    );
    db.create_machine("pc9", "hash-pc9", &["team00".into(), "team01".into()])
        .await
        .unwrap();
    assert_eq!(
        db.groups_of(&Principal::Machine("pc9".into()))
            .await
            .unwrap(),
        ["team00", "team01"]
    );
    assert!(matches!(
        db.create_machine("pc9", "hash-again", &["team00".into(), "team01".into()])
            .await,
        Err(StoreError::Conflict(_))
    ));
}

/// Several changes to a connection group, and an upgrade with its transfer,
/// commit whole (with one new version) or not at all; a retried upgrade completes.
async fn multi_row_changes_are_whole(db: Arc<dyn ManagementStore>) {
    teams(&*db).await;
    let pkg = PackageId(Uuid::from_u128(0xCCCC));
    let v1 = version(pkg, 11, "Tool");
    db.add_package_version(v1.clone()).await.unwrap();
    let cg = db.create_connection_group("Tools", 4).await.unwrap();
    let member = |package_id| {
        ConnectionGroupChange::SetMember(ConnectionGroupMember {
            package_id,
            version_id: None,
            optional: false,
        })
    };
    assert!(matches!(
        db.update_connection_group(
            cg.id,
            vec![
                ConnectionGroupChange::Rename("Renamed".into()),
                member(PackageId(Uuid::from_u128(0xDEAD))),
            ],
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(db.connection_group(cg.id).await.unwrap(), cg);
    let changed = db
        .update_connection_group(
            cg.id,
            vec![
                ConnectionGroupChange::Rename("Renamed".into()),
                ConnectionGroupChange::Priority(2),
                member(pkg),
                ConnectionGroupChange::MoveMember {
                    package_id: pkg,
                    position: 0,
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!((changed.name.as_str(), changed.priority), ("Renamed", 2));
    assert_eq!(changed.members.len(), 1);
    assert_ne!(changed.version_id, cg.version_id);
    assert_eq!(
        db.update_connection_group(cg.id, Vec::new()).await.unwrap(),
        changed,
        "no changes, no new version"
    );

    // Upgrade with transfer: the new version and what it inherits in one transaction.
    db.grant(v1.version_id, "team00", Some("<UserConfiguration/>".into()))
        .await
        .unwrap();
    db.set_deployment_config(v1.version_id, Some("<DeploymentConfiguration/>".into()))
        .await
        .unwrap();
    let all = Transfer {
        entitlements: true,
        deployment_config: true,
        publish: false,
    };
    let v2 = version(pkg, 12, "Tool");
    // From a version of another package: refused, and the new version is not recorded.
    let stranger = version(PackageId(Uuid::from_u128(0xEEEE)), 13, "Other");
    db.add_package_version(stranger.clone()).await.unwrap();
    assert!(matches!(
        db.upgrade_package_version(v2.clone(), stranger.version_id, all)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        db.upgrade_package_version(v2.clone(), VersionId(Uuid::from_u128(404)), all)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        db.package_version(v2.version_id).await,
        Err(StoreError::NotFound(_))
    ));
    let upgraded = db
        .upgrade_package_version(v2.clone(), v1.version_id, all)
        .await
        .unwrap();
    assert!(upgraded.created);
    assert_eq!(
        db.entitlements(v2.version_id).await.unwrap(),
        db.entitlements(v1.version_id).await.unwrap()
    );
    assert_eq!(
        db.deployment_config(v2.version_id)
            .await
            .unwrap()
            .as_deref(),
        Some("<DeploymentConfiguration/>")
    );
    // A retry completes rather than fails: the version exists, the transfer applies again.
    db.revoke(v2.version_id, "team00").await.unwrap();
    let retried = db
        .upgrade_package_version(v2.clone(), v1.version_id, all)
        .await
        .unwrap();
    assert!(!retried.created);
    assert_eq!(retried.value, upgraded.value);
    assert_eq!(db.entitlements(v2.version_id).await.unwrap().len(), 1);
    // Without a transfer, only the version.
    let v3 = version(pkg, 14, "Tool");
    db.upgrade_package_version(v3.clone(), v2.version_id, Transfer::default())
        .await
        .unwrap();
    assert!(db.entitlements(v3.version_id).await.unwrap().is_empty());
}

/// A package has at most one published version: publishing one (on its own or
/// with an upgrade) unpublishes the package's others, and no other package's.
async fn publishing_a_version_unpublishes_the_others(db: Arc<dyn ManagementStore>) {
    let (pkg, other) = (
        PackageId(Uuid::from_u128(0xA)),
        PackageId(Uuid::from_u128(0xB)),
    );
    let v1 = version(pkg, 1, "Editor");
    let v2 = version(pkg, 2, "Editor");
    let w1 = version(other, 3, "Viewer");
    for v in [&v1, &v2, &w1] {
        db.add_package_version(v.clone()).await.unwrap();
    }
    let published = |db: Arc<dyn ManagementStore>| async move {
        db.list_package_versions(&PackageFilter {
            published: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.package.version_id)
        .collect::<Vec<_>>()
    };
    db.set_published(v1.version_id, true).await.unwrap();
    db.set_published(w1.version_id, true).await.unwrap();
    let now = db.set_published(v2.version_id, true).await.unwrap();
    assert!(now.published);
    assert_eq!(
        published(db.clone()).await,
        vec![v2.version_id, w1.version_id]
    );
    assert!(!db.package_version(v1.version_id).await.unwrap().published);
    // Publishing the published version again changes nothing.
    db.set_published(v2.version_id, true).await.unwrap();
    assert_eq!(
        published(db.clone()).await,
        vec![v2.version_id, w1.version_id]
    );

    // An upgrade that publishes switches in the same transaction.
    let v3 = version(pkg, 4, "Editor");
    let switch = Transfer {
        publish: true,
        ..Transfer::default()
    };
    let upgraded = db
        .upgrade_package_version(v3.clone(), v2.version_id, switch)
        .await
        .unwrap();
    assert!(upgraded.created && upgraded.value.published);
    assert_eq!(
        published(db.clone()).await,
        vec![w1.version_id, v3.version_id]
    );
    // Its retry too, even after someone published another version meanwhile.
    db.set_published(v1.version_id, true).await.unwrap();
    let retried = db
        .upgrade_package_version(v3.clone(), v2.version_id, switch)
        .await
        .unwrap();
    assert!(!retried.created && retried.value.published);
    assert_eq!(
        published(db.clone()).await,
        vec![w1.version_id, v3.version_id]
    );
    // Without publish, an upgrade leaves publishing alone.
    let v4 = version(pkg, 5, "Editor");
    db.upgrade_package_version(v4.clone(), v3.version_id, Transfer::default())
        .await
        .unwrap();
    assert_eq!(
        published(db.clone()).await,
        vec![w1.version_id, v3.version_id]
    );
    // Unpublishing publishes nothing else.
    db.set_published(v3.version_id, false).await.unwrap();
    assert_eq!(published(db.clone()).await, vec![w1.version_id]);
}

/// App-V's connection group VersionId: every change to a connection group's
/// members or entitlements is a new version, also the entitlement a deleted
/// group takes with it.
async fn every_connection_group_change_is_a_new_version(db: Arc<dyn ManagementStore>) {
    let pkg = PackageId(Uuid::from_u128(0xA));
    db.add_package_version(version(pkg, 1, "Editor"))
        .await
        .unwrap();
    db.create_group("staff").await.unwrap();
    let cg = db.create_connection_group("Suite", 1).await.unwrap();
    let mut seen = vec![cg.version_id];
    let changes = [
        ConnectionGroupChange::SetMember(ConnectionGroupMember {
            package_id: pkg,
            version_id: None,
            optional: false,
        }),
        ConnectionGroupChange::SetMember(ConnectionGroupMember {
            package_id: pkg,
            version_id: None,
            optional: true,
        }),
        ConnectionGroupChange::Grant("staff".into()),
        ConnectionGroupChange::Revoke("staff".into()),
        ConnectionGroupChange::RemoveMember(pkg),
        ConnectionGroupChange::Grant("staff".into()),
    ];
    for change in changes {
        let what = format!("{change:?}");
        let changed = db
            .update_connection_group(cg.id, vec![change])
            .await
            .unwrap();
        assert!(
            !seen.contains(&changed.version_id),
            "{what} kept a version id"
        );
        seen.push(changed.version_id);
    }
    db.delete_principal(&Principal::Group("staff".into()))
        .await
        .unwrap();
    let after = db.connection_group(cg.id).await.unwrap();
    assert!(after.entitled_groups.is_empty());
    assert!(
        !seen.contains(&after.version_id),
        "deleting an entitled group kept the version id"
    );
}

/// A group that holds entitlements or memberships is deleted only by force;
/// unforced, nothing changes and the answer says what it holds.
async fn a_group_in_use_is_deleted_only_by_force(db: Arc<dyn ManagementStore>) {
    let pkg = PackageId(Uuid::from_u128(0xA));
    let v1 = version(pkg, 1, "Editor");
    db.add_package_version(v1.clone()).await.unwrap();
    for g in ["staff", "labs", "empty"] {
        db.create_group(g).await.unwrap();
    }
    db.create_user("alice", &["staff".into()]).await.unwrap();
    db.create_machine("pc1", "hash", &["staff".into()])
        .await
        .unwrap();
    db.add_member("labs", &Principal::Group("staff".into()))
        .await
        .unwrap();
    db.grant(v1.version_id, "staff", None).await.unwrap();
    let cg = db.create_connection_group("Suite", 1).await.unwrap();
    let cg = db
        .update_connection_group(cg.id, vec![ConnectionGroupChange::Grant("staff".into())])
        .await
        .unwrap();
    let expected = GroupHoldings {
        packages: vec![format!("Editor {}", v1.version)],
        connection_groups: vec!["Suite".into()],
        members: vec![
            Principal::User("alice".into()),
            Principal::Machine("pc1".into()),
        ],
        member_of: vec!["labs".into()],
    };
    let sequence = db.change_sequence().await.unwrap();
    let refused = db.delete_group("staff", false).await.unwrap();
    assert_eq!(
        refused,
        GroupDeletion {
            deleted: false,
            holdings: expected.clone()
        }
    );
    assert_eq!(db.change_sequence().await.unwrap(), sequence);
    assert_eq!(db.members("staff").await.unwrap().len(), 2);
    assert_eq!(db.connection_group(cg.id).await.unwrap(), cg);

    let forced = db.delete_group("staff", true).await.unwrap();
    assert_eq!(
        forced,
        GroupDeletion {
            deleted: true,
            holdings: expected
        }
    );
    assert!(db.entitlements(v1.version_id).await.unwrap().is_empty());
    assert!(db.members("labs").await.unwrap().is_empty());
    let after = db.connection_group(cg.id).await.unwrap();
    assert!(after.entitled_groups.is_empty());
    assert_ne!(after.version_id, cg.version_id);
    assert!(db.change_sequence().await.unwrap() > sequence);

    let empty = db.delete_group("empty", false).await.unwrap();
    assert!(empty.deleted && empty.holdings.is_empty());
    assert!(matches!(
        db.delete_group("empty", true).await,
        Err(StoreError::NotFound(_))
    ));
}

/// The last administrator stays, also when the last two are removed at once.
async fn the_last_administrator_stays(db: Arc<dyn ManagementStore>) {
    db.add_administrator("first", None).await.unwrap();
    for round in 0..5 {
        let current = db.list_administrators().await.unwrap()[0].name.clone();
        let fresh = format!("admin{round}");
        db.add_administrator(&fresh, None).await.unwrap();
        let (r1, r2) = tokio::join!(
            db.remove_administrator(&current),
            db.remove_administrator(&fresh)
        );
        assert_eq!(
            db.list_administrators().await.unwrap().len(),
            1,
            "round {round}: {r1:?} {r2:?}"
        );
        assert!(
            matches!(
                (&r1, &r2),
                (Ok(()), Err(StoreError::Conflict(_))) | (Err(StoreError::Conflict(_)), Ok(()))
            ),
            "round {round}: {r1:?} {r2:?}"
        );
    }
}

/// A client's newest report decides its ClientInformation and package list,
/// whatever the order inside a batch: the newer report first, the older last.
async fn the_newest_report_wins_within_a_batch(db: Arc<dyn ReportingStore>) {
    let (newer, older) = newer_and_older("pc7");
    db.ingest(&[newer.clone(), older]).await.unwrap();
    assert_state_of(&*db, &newer).await;
}

/// A report older than what is stored, arriving in a later batch (a client
/// resending its queue), changes neither the client nor its package list.
async fn an_older_report_arriving_later_changes_nothing(db: Arc<dyn ReportingStore>) {
    let (newer, older) = newer_and_older("pc8");
    db.ingest(std::slice::from_ref(&newer)).await.unwrap();
    db.ingest(&[older]).await.unwrap();
    assert_state_of(&*db, &newer).await;
    // A newer report after that still replaces both.
    let mut newest = report(32, "pc8", 9, &[], &[(3, 5)]);
    newest.client.client_version = "5.1.300.0".into();
    db.ingest(std::slice::from_ref(&newest)).await.unwrap();
    assert_state_of(&*db, &newest).await;
}

/// Two reports of one client, a day apart, that differ in client version and package list.
/// The same report twice in one batch (the reporting role keeps this from
/// happening, but the store does not count on it): stored once, counted once
/// as a duplicate, its launches once.
async fn a_report_repeated_within_a_batch_is_stored_once(db: Arc<dyn ReportingStore>) {
    let r = report(9, "pc9", 1, &[("Notepad", "alice"), ("Paint", "bob")], &[]);
    assert_eq!(
        db.ingest(&[r.clone(), r]).await.unwrap(),
        IngestResult {
            stored: 1,
            duplicates: 1
        }
    );
    let launches: i64 = db
        .launches(LaunchGrouping::User)
        .await
        .unwrap()
        .iter()
        .map(|c| c.launches)
        .sum();
    assert_eq!(launches, 2);
}

fn newer_and_older(host: &str) -> (ClientReport, ClientReport) {
    let mut newer = report(31, host, 6, &[("App", "u")], &[(1, 80)]);
    newer.client.client_version = "5.1.200.0".into();
    let mut older = report(30, host, 5, &[("App", "u")], &[(2, 30)]);
    older.client.client_version = "5.1.100.0".into();
    (newer, older)
}

/// The Reporting DB shows `report`'s client and package list for its host.
async fn assert_state_of(db: &dyn ReportingStore, report: &ClientReport) {
    let caches = db.client_caches().await.unwrap();
    let cache = caches
        .iter()
        .find(|c| c.client.host_name == report.client.host_name)
        .expect("the client is known");
    assert_eq!(cache.client, report.client);
    assert_eq!(cache.last_report_at, report.received_at);
    assert_eq!(
        cache
            .packages
            .iter()
            .map(|p| (p.version_id, p.percent_cached))
            .collect::<Vec<_>>(),
        report
            .packages
            .iter()
            .map(|p| (p.version_id, p.percent_cached))
            .collect::<Vec<_>>()
    );
}

// ---- harness: one test per case and backend ----

/// One throwaway PostgreSQL server shared by every test of this binary that
/// runs while it is up, with a database of its own per test. A static would
/// never be dropped (and the server never stopped), so it is held by the
/// tests themselves: the last one to finish stops it, and a later test starts
/// another. Tests run in name order, so the `postgres::*` ones run together.
fn shared_postgres() -> Arc<Postgres> {
    static SHARED: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pg) = shared.upgrade() {
        return pg;
    }
    let pg = Arc::new(Postgres::start().unwrap());
    *shared = Arc::downgrade(&pg);
    pg
}

/// A database name no other test of this process uses.
fn unique_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Where a case's database lives.
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test, removed with it.
struct TestDb {
    url: String,
    _pg: Option<Arc<Postgres>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                TestDb {
                    url: format!("sqlite:{}", dir.path().join("test.db").display()),
                    _pg: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let pg = shared_postgres();
                let name = unique_name();
                pg.create_database(&name).unwrap();
                TestDb {
                    url: pg.url(&name),
                    _pg: Some(pg),
                    _dir: None,
                }
            }
        }
    }

    async fn management(&self) -> Arc<dyn ManagementStore> {
        avail_store::install(&self.url, DatabaseKind::Management)
            .await
            .unwrap();
        avail_store::open_management(&self.url).await.unwrap()
    }

    async fn reporting(&self) -> Arc<dyn ReportingStore> {
        avail_store::install(&self.url, DatabaseKind::Reporting)
            .await
            .unwrap();
        avail_store::open_reporting(&self.url).await.unwrap()
    }
}

/// The publishing catalog is read whole: only published versions and connection
/// groups, with configuration, entitlements, nested memberships and machine
/// credential hashes, at the change sequence it reflects.
async fn catalog_snapshot_is_whole(db: Arc<dyn ManagementStore>) {
    let empty = db.catalog_snapshot().await.unwrap();
    assert_eq!(empty.sequence, db.change_sequence().await.unwrap());
    assert!(empty.packages.is_empty() && empty.groups.is_empty());

    let editor = PackageId(Uuid::from_u128(0xE0));
    let viewer = PackageId(Uuid::from_u128(0xF0));
    let v1 = version(editor, 1, "Editor");
    let v2 = version(editor, 2, "Editor");
    let v3 = version(viewer, 3, "Viewer");
    for v in [&v1, &v2, &v3] {
        db.add_package_version(v.clone()).await.unwrap();
    }
    db.set_published(v2.version_id, true).await.unwrap();
    db.set_deployment_config(v2.version_id, Some("<DeploymentConfiguration/>".into()))
        .await
        .unwrap();
    for g in ["staff", "devs"] {
        db.create_group(g).await.unwrap();
    }
    db.add_member("staff", &Principal::Group("devs".into()))
        .await
        .unwrap();
    db.create_user("alice", &["devs".into()]).await.unwrap();
    db.create_machine("pc1", "hash-pc1", &["staff".into()])
        .await
        .unwrap();
    db.grant(v2.version_id, "staff", Some("<UserConfiguration/>".into()))
        .await
        .unwrap();
    db.grant(v3.version_id, "staff", None).await.unwrap();
    let suite = db.create_connection_group("Suite", 2).await.unwrap();
    db.update_connection_group(
        suite.id,
        vec![
            ConnectionGroupChange::SetMember(ConnectionGroupMember {
                package_id: viewer,
                version_id: None,
                optional: true,
            }),
            ConnectionGroupChange::SetMember(ConnectionGroupMember {
                package_id: editor,
                version_id: None,
                optional: false,
            }),
            ConnectionGroupChange::Grant("devs".into()),
            ConnectionGroupChange::Publish(true),
        ],
    )
    .await
    .unwrap();
    db.create_connection_group("Draft", 1).await.unwrap();

    let snap = db.catalog_snapshot().await.unwrap();
    assert_eq!(snap.sequence, db.change_sequence().await.unwrap());
    assert!(snap.sequence > empty.sequence);
    // v2 only: v1 is not published, v3 is not published either.
    assert_eq!(snap.packages.len(), 1);
    let p = &snap.packages[0];
    assert_eq!(p.version, v2);
    assert_eq!(
        p.deployment_config.as_ref().map(|c| c.document.as_str()),
        Some("<DeploymentConfiguration/>")
    );
    assert_eq!(
        p.entitlements,
        vec![Entitlement {
            group: "staff".into(),
            user_config: Some("<UserConfiguration/>".into()),
        }]
    );
    assert_eq!(snap.connection_groups.len(), 1);
    let cg = &snap.connection_groups[0];
    assert_eq!(cg.name, "Suite");
    assert_eq!(
        cg.members.iter().map(|m| m.package_id).collect::<Vec<_>>(),
        vec![viewer, editor]
    );
    assert_eq!(cg.entitled_groups, vec!["devs".to_string()]);
    assert_eq!(snap.groups, vec!["devs".to_string(), "staff".to_string()]);
    assert_eq!(snap.users, vec!["alice".to_string()]);
    assert_eq!(
        snap.machines,
        vec![catalog::MachineCredential {
            name: "pc1".into(),
            credential_hash: "hash-pc1".into(),
        }]
    );
    let member = |group: &str, member: Principal| catalog::Membership {
        group: group.into(),
        member,
    };
    assert_eq!(
        snap.memberships,
        vec![
            member("devs", Principal::User("alice".into())),
            member("staff", Principal::Machine("pc1".into())),
            member("staff", Principal::Group("devs".into())),
        ]
    );

    // What the catalog resolves from it: alice through devs ⊂ staff.
    let c = catalog::Catalog::new(snap);
    let alice = c.receives(None, Some("alice"));
    assert_eq!(
        alice.packages.iter().copied().collect::<Vec<_>>(),
        vec![v2.version_id]
    );
    assert_eq!(alice.connection_groups.len(), 1);
    assert_eq!(c.machine_by_credential("hash-pc1"), Some("pc1"));

    // Unpublishing moves the sequence and empties the catalog's packages.
    db.set_published(v2.version_id, false).await.unwrap();
    let after = db.catalog_snapshot().await.unwrap();
    assert!(after.sequence > c.sequence());
    assert!(after.packages.is_empty());
}

/// `sqlite::<case>` and `postgres::<case>` for every case, each on a fresh
/// database, so that a failure names the rule and the backend.
macro_rules! conformance {
    ($($open:ident: [$($case:ident),* $(,)?]),* $(,)?) => {
        mod sqlite {
            $($(
                #[tokio::test]
                async fn $case() {
                    let db = super::TestDb::new(super::Backend::Sqlite);
                    super::$case(db.$open().await).await;
                }
            )*)*
        }
        mod postgres {
            $($(
                #[tokio::test]
                async fn $case() {
                    let db = super::TestDb::new(super::Backend::Postgres);
                    super::$case(db.$open().await).await;
                }
            )*)*
        }
    };
}

conformance! {
    management: [
        catalog,
        publishing_servers,
        administrators_and_tokens,
        hostile_input_is_data,
        a_user_or_machine_with_groups_is_whole,
        multi_row_changes_are_whole,
        the_last_administrator_stays,
        publishing_a_version_unpublishes_the_others,
        every_connection_group_change_is_a_new_version,
        a_group_in_use_is_deleted_only_by_force,
        catalog_snapshot_is_whole,
        configuration_revisions_grow_with_each_set,
        target_oses_round_trip,
    ],
    reporting: [
        reporting,
        the_newest_report_wins_within_a_batch,
        an_older_report_arriving_later_changes_nothing,
        a_report_repeated_within_a_batch_is_stored_once,
    ],
}

#[tokio::test]
async fn sqlite_reopening_finds_the_data_and_the_schema() {
    let db = TestDb::new(Backend::Sqlite);
    catalog(db.management().await).await;
    let again = avail_store::open_management(&db.url).await.unwrap();
    assert_eq!(
        again
            .list_package_versions(&PackageFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        avail_store::status(&db.url, DatabaseKind::Management)
            .await
            .unwrap()
            .installed,
        2
    );
}

/// A version's target operating systems round-trip, in order and as written
/// (unknown and odd values too), through every way a version is read: by id,
/// in a list and in the catalog; none is none.
async fn target_oses_round_trip(db: Arc<dyn ManagementStore>) {
    let pkg = PackageId(Uuid::from_u128(0x05));
    let mut v1 = version(pkg, 1, "Targeted");
    v1.target_oses = vec![
        "WindowsClient_10.0_x64".into(),
        "WindowsServer_6.3".into(),
        "Windows \"Future\", [2030]\u{1}".into(),
    ];
    let v2 = version(pkg, 2, "Targeted");
    for v in [&v1, &v2] {
        let added = db.add_package_version(v.clone()).await.unwrap();
        assert_eq!(&added.value.package, v);
        // Imported again: the same row, targets included.
        let again = db.add_package_version(v.clone()).await.unwrap();
        assert!(!again.created);
        assert_eq!(&again.value.package, v);
    }
    for v in [&v1, &v2] {
        let read = db.package_version(v.version_id).await.unwrap().package;
        assert_eq!(read.target_oses, v.target_oses);
    }
    let listed = db
        .list_package_versions(&PackageFilter::default())
        .await
        .unwrap();
    let targets = |id: VersionId| {
        listed
            .iter()
            .find(|l| l.package.version_id == id)
            .map(|l| l.package.target_oses.clone())
    };
    assert_eq!(targets(v1.version_id), Some(v1.target_oses.clone()));
    assert_eq!(targets(v2.version_id), Some(vec![]));
    db.set_published(v1.version_id, true).await.unwrap();
    let snapshot = db.catalog_snapshot().await.unwrap();
    assert_eq!(snapshot.packages[0].version, v1);
}

/// Every set of a deployment or user configuration gives it a higher revision,
/// also when it was cleared or revoked before, and the block map's digest
/// round-trips (`None` for a version without one).
async fn configuration_revisions_grow_with_each_set(db: Arc<dyn ManagementStore>) {
    let pkg = PackageId(Uuid::from_u128(0xC0));
    let v1 = version(pkg, 1, "Editor");
    let mut v2 = version(pkg, 2, "Editor");
    v2.block_map_sha256 = None;
    for v in [&v1, &v2] {
        db.add_package_version(v.clone()).await.unwrap();
    }
    assert_eq!(
        db.package_version(v1.version_id)
            .await
            .unwrap()
            .package
            .block_map_sha256,
        v1.block_map_sha256
    );
    assert_eq!(
        db.package_version(v2.version_id)
            .await
            .unwrap()
            .package
            .block_map_sha256,
        None
    );
    for g in ["devs", "staff"] {
        db.create_group(g).await.unwrap();
    }
    db.set_published(v1.version_id, true).await.unwrap();
    let snapshot = || async { db.catalog_snapshot().await.unwrap().packages.remove(0) };
    let deployment = |p: &catalog::PublishedPackage| p.deployment_config.as_ref().unwrap().revision;
    let user = |p: &catalog::PublishedPackage, g: &str| p.user_configs[g].revision;

    db.set_deployment_config(
        v1.version_id,
        Some("<DeploymentConfiguration A=\"1\"/>".into()),
    )
    .await
    .unwrap();
    let first = snapshot().await;
    assert_eq!(first.version.block_map_sha256, v1.block_map_sha256);
    assert!(first.user_configs.is_empty());
    db.set_deployment_config(
        v1.version_id,
        Some("<DeploymentConfiguration A=\"2\"/>".into()),
    )
    .await
    .unwrap();
    let second = snapshot().await;
    assert!(deployment(&second) > deployment(&first));
    assert!(
        second.deployment_config.as_ref().unwrap().updated_at
            >= first.deployment_config.as_ref().unwrap().updated_at
    );
    // Cleared and set again: still higher.
    db.set_deployment_config(v1.version_id, None).await.unwrap();
    assert!(snapshot().await.deployment_config.is_none());
    db.set_deployment_config(v1.version_id, Some("<DeploymentConfiguration/>".into()))
        .await
        .unwrap();
    let third = snapshot().await;
    assert!(deployment(&third) > deployment(&second));

    // User configurations: per entitlement, each grant a new revision.
    db.grant(
        v1.version_id,
        "staff",
        Some("<UserConfiguration A=\"1\"/>".into()),
    )
    .await
    .unwrap();
    db.grant(v1.version_id, "devs", None).await.unwrap();
    let granted = snapshot().await;
    assert_eq!(granted.user_configs.keys().collect::<Vec<_>>(), ["staff"]);
    assert_eq!(
        granted.user_configs["staff"].document,
        "<UserConfiguration A=\"1\"/>"
    );
    assert!(user(&granted, "staff") > deployment(&third));
    assert_eq!(
        deployment(&granted),
        deployment(&third),
        "a user configuration leaves the deployment one alone"
    );
    db.grant(
        v1.version_id,
        "staff",
        Some("<UserConfiguration A=\"2\"/>".into()),
    )
    .await
    .unwrap();
    let replaced = snapshot().await;
    assert!(user(&replaced, "staff") > user(&granted, "staff"));
    db.revoke(v1.version_id, "staff").await.unwrap();
    db.grant(
        v1.version_id,
        "staff",
        Some("<UserConfiguration A=\"3\"/>".into()),
    )
    .await
    .unwrap();
    db.grant(v1.version_id, "devs", Some("<UserConfiguration/>".into()))
        .await
        .unwrap();
    let regranted = snapshot().await;
    assert!(user(&regranted, "staff") > user(&replaced, "staff"));
    assert!(user(&regranted, "devs") > user(&regranted, "staff"));

    // An upgrade that transfers configurations sets them on the new version.
    let v3 = version(pkg, 3, "Editor");
    db.add_package_version(v3.clone()).await.unwrap();
    db.transfer(
        v1.version_id,
        v3.version_id,
        Transfer {
            entitlements: true,
            deployment_config: true,
            publish: true,
        },
    )
    .await
    .unwrap();
    let moved = snapshot().await;
    assert_eq!(moved.version.version_id, v3.version_id);
    assert_eq!(moved.user_configs.len(), 2);
    assert!(deployment(&moved) >= 1 && user(&moved, "staff") >= 1);
    db.set_deployment_config(
        v3.version_id,
        Some("<DeploymentConfiguration B=\"1\"/>".into()),
    )
    .await
    .unwrap();
    assert!(deployment(&snapshot().await) > deployment(&moved));
}

/// A version 1 database: the 001 script and data written as version 1 wrote it.
const V1_SQLITE: &str = include_str!("../../../sql/sqlite/management/001_initial.sql");
const V1_POSTGRES: &str = include_str!("../../../sql/postgres/management/001_initial.sql");

/// Version 1 rows: a published version with a deployment configuration set at
/// 2026-01-02 03:04:05 UTC and a group's user configuration.
fn v1_rows(timestamp: &str, published: &str) -> String {
    format!(
        "INSERT INTO packages (package_id) VALUES ('{pkg}');
         INSERT INTO package_versions (version_id, package_id, name, version, content_path, size, sha256, published, created_at, updated_at)
           VALUES ('{ver}', '{pkg}', 'Old', '1.0.0.0', 'packages/old.appv', 1, '{sha}', {published}, '{timestamp}', '{timestamp}');
         INSERT INTO deployment_configs (version_id, config, updated_at) VALUES ('{ver}', '<DeploymentConfiguration/>', '{timestamp}');
         INSERT INTO groups (name, created_at) VALUES ('staff', '{timestamp}');
         INSERT INTO entitlements (version_id, group_name, user_config) VALUES ('{ver}', 'staff', '<UserConfiguration/>');",
        pkg = Uuid::from_u128(0x01d),
        ver = Uuid::from_u128(0x01d1),
        sha = "0".repeat(64),
    )
}

/// After `avail db install` a version 1 database is version 2: no block-map
/// digest for the old version, the deployment configuration's revision starts
/// at the ConfigurationId version 1 published (minutes since the epoch mod
/// 65536), the user configuration has a revision and a timestamp, and the next
/// set increases the revision.
async fn assert_upgraded(url: &str) {
    let status = avail_store::status(url, DatabaseKind::Management)
        .await
        .unwrap();
    assert_eq!((status.installed, status.known), (1, 2));
    if !url.starts_with("sqlite:") {
        // PostgreSQL is refused until upgraded (SQLite upgrades itself on open).
        match avail_store::open_management(url).await {
            Err(StoreError::Schema(msg)) => assert!(msg.contains("avail db install"), "{msg}"),
            other => panic!("{:?}", other.err()),
        }
    }
    let status = avail_store::install(url, DatabaseKind::Management)
        .await
        .unwrap();
    assert!(status.is_current() && status.installed == 2);
    let db = avail_store::open_management(url).await.unwrap();
    let old = VersionId(Uuid::from_u128(0x01d1));
    let p = db.catalog_snapshot().await.unwrap().packages.remove(0);
    assert_eq!(p.version.block_map_sha256, None);
    assert!(p.version.target_oses.is_empty());
    let set_at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let config = p.deployment_config.unwrap();
    assert_eq!(config.revision, (set_at.timestamp() / 60) % 65_536);
    assert!(p.user_configs["staff"].revision > 0);
    db.set_deployment_config(old, Some("<DeploymentConfiguration A=\"1\"/>".into()))
        .await
        .unwrap();
    let p = db.catalog_snapshot().await.unwrap().packages.remove(0);
    assert!(p.deployment_config.unwrap().revision > config.revision);
}

#[tokio::test]
async fn sqlite_a_version_1_database_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(V1_SQLITE).unwrap();
    // As rusqlite writes a chrono timestamp.
    conn.execute_batch(&v1_rows("2026-01-02 03:04:05.123456789+00:00", "1"))
        .unwrap();
    drop(conn);
    assert_upgraded(&format!("sqlite:{}", path.display())).await;
}

#[tokio::test]
async fn postgres_a_version_1_database_is_upgraded() {
    let pg = shared_postgres();
    let m = unique_name();
    pg.create_database(&m).unwrap();
    pg.psql(&m, V1_POSTGRES).unwrap();
    pg.psql(&m, &v1_rows("2026-01-02 03:04:05.123456+00", "true"))
        .unwrap();
    assert_upgraded(&pg.url(&m)).await;
}

#[tokio::test]
async fn postgres_refuses_an_uninstalled_database_and_installs_idempotently() {
    let db = TestDb::new(Backend::Postgres);
    // Not installed: opening is refused with a message that says what to do.
    match avail_store::open_management(&db.url).await {
        Err(StoreError::Schema(msg)) => assert!(msg.contains("avail db install"), "{msg}"),
        other => panic!("{:?}", other.err()),
    }
    for _ in 0..2 {
        assert!(
            avail_store::install(&db.url, DatabaseKind::Management)
                .await
                .unwrap()
                .is_current()
        );
    }
}

#[tokio::test]
async fn a_database_newer_than_avail_is_refused() {
    let pg = shared_postgres();
    let m = unique_name();
    pg.create_database(&m).unwrap();
    avail_store::install(&pg.url(&m), DatabaseKind::Management)
        .await
        .unwrap();
    pg.psql(
        &m,
        "INSERT INTO schema_version (version, name) VALUES (99, '099_future')",
    )
    .unwrap();
    for result in [
        avail_store::install(&pg.url(&m), DatabaseKind::Management)
            .await
            .map(|_| ()),
        avail_store::open_management(&pg.url(&m)).await.map(|_| ()),
    ] {
        match result {
            Err(StoreError::Schema(msg)) => {
                assert!(msg.contains("99") && msg.contains("upgrade Avail"), "{msg}")
            }
            other => panic!("{:?}", other.err()),
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let s = format!("sqlite:{}", dir.path().join("m.db").display());
    avail_store::install(&s, DatabaseKind::Management)
        .await
        .unwrap();
    rusqlite::Connection::open(dir.path().join("m.db"))
        .unwrap()
        .execute(
            "INSERT INTO schema_version (version, name) VALUES (99, 'x')",
            [],
        )
        .unwrap();
    assert!(matches!(
        avail_store::open_management(&s).await.err(),
        Some(StoreError::Schema(_))
    ));
}

#[tokio::test]
async fn a_dba_can_install_with_psql_from_the_sql_files() {
    let pg = shared_postgres();
    let name = unique_name();
    pg.create_database(&name).unwrap();
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql/postgres/management");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let out = std::process::Command::new("psql")
            .args([
                "-X",
                "-1",
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-d",
                &pg.url(&name),
                "-f",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let url = pg.url(&name);
    assert!(
        avail_store::status(&url, DatabaseKind::Management)
            .await
            .unwrap()
            .is_current()
    );
    let db = avail_store::open_management(&url).await.unwrap();
    db.create_group("g").await.unwrap();
}

/// Concurrent batches touching the same clients wait for each other rather than
/// deadlock (each batch locks clients in host-name order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ingest_on_postgres_does_not_deadlock() {
    let held = TestDb::new(Backend::Postgres);
    let db = held.reporting().await;
    let hosts = ["pc1", "pc2", "pc3", "pc4", "pc5", "pc6"];
    let tasks: Vec<_> = (0..4u128)
        .map(|t| {
            let db = db.clone();
            tokio::spawn(async move {
                for b in 0..10u128 {
                    // Each task walks the hosts in its own order.
                    let batch: Vec<ClientReport> = (0..hosts.len())
                        .map(|i| {
                            let host = hosts[(i + t as usize * 5) % hosts.len()];
                            report(
                                10_000 + t * 1000 + b * 10 + i as u128,
                                host,
                                1 + (b % 28) as u32,
                                &[("App", "u")],
                                &[(1, 50)],
                            )
                        })
                        .collect();
                    db.ingest(&batch).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let launches: i64 = db
        .launches(LaunchGrouping::User)
        .await
        .unwrap()
        .iter()
        .map(|c| c.launches)
        .sum();
    assert_eq!(launches, 4 * 10 * hosts.len() as i64);
    assert_eq!(db.client_caches().await.unwrap().len(), hosts.len());
}

/// A version 1 Reporting DB: the 001 script and one launch as version 1 stored it.
const V1_REPORTING_SQLITE: &str = include_str!("../../../sql/sqlite/reporting/001_initial.sql");
const V1_REPORTING_POSTGRES: &str = include_str!("../../../sql/postgres/reporting/001_initial.sql");

fn v1_launch(launched_at: &str) -> String {
    format!(
        "INSERT INTO application_usage (report_id, record, host_name, application, application_version,
           server, user_name, package_version_id, launched_at, launch_status)
         VALUES ('{id}', 0, 'pc-old', 'Old', '1.0.0.0', 'srv', 'carol', '{ver}', '{launched_at}', '0-0');",
        id = Uuid::from_u128(0x01d),
        ver = Uuid::from_u128(0x01d1),
    )
}

/// After `avail db install` a version 1 Reporting DB is version 2 (its
/// launches kept, no key on them) and takes reports as before.
async fn assert_reporting_upgraded(url: &str) {
    let status = avail_store::install(url, DatabaseKind::Reporting)
        .await
        .unwrap();
    assert!(status.is_current() && status.installed == 2, "{status:?}");
    let db = avail_store::open_reporting(url).await.unwrap();
    let batch = [report(7, "pc1", 1, &[("Notepad", "alice")], &[])];
    assert_eq!(db.ingest(&batch).await.unwrap().stored, 1);
    assert_eq!(db.ingest(&batch).await.unwrap().duplicates, 1);
    let per_user = db.launches(LaunchGrouping::User).await.unwrap();
    assert_eq!(
        per_user
            .iter()
            .map(|c| (c.key.as_str(), c.launches))
            .collect::<Vec<_>>(),
        [("alice", 1), ("carol", 1)]
    );
}

#[tokio::test]
async fn sqlite_a_version_1_reporting_db_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r1.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(V1_REPORTING_SQLITE).unwrap();
    conn.execute_batch(&v1_launch("2026-01-02T03:04:05Z"))
        .unwrap();
    drop(conn);
    assert_reporting_upgraded(&format!("sqlite:{}", path.display())).await;
}

#[tokio::test]
async fn postgres_a_version_1_reporting_db_is_upgraded() {
    let pg = shared_postgres();
    let r = unique_name();
    pg.create_database(&r).unwrap();
    pg.psql(&r, V1_REPORTING_POSTGRES).unwrap();
    pg.psql(&r, &v1_launch("2026-01-02 03:04:05+00")).unwrap();
    let status = avail_store::status(&pg.url(&r), DatabaseKind::Reporting)
        .await
        .unwrap();
    assert_eq!((status.installed, status.known), (1, 2));
    assert_reporting_upgraded(&pg.url(&r)).await;
}
