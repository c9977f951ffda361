//! A PostgreSQL failover in the middle of a stream of writes.
//!
//! A primary with a synchronous hot standby (`pg_basebackup -R`,
//! `synchronous_standby_names`), one Management store and one Reporting store
//! opened with both hosts (`target_session_attrs=read-write`), writes in a
//! loop; the primary is killed and the standby promoted in the middle. Every
//! write the store acknowledged must be there afterwards, none twice, and the
//! same store objects must carry on without being reopened. The test prints
//! the longest write stall it saw (`cargo test -- --nocapture` shows it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use avail_model::*;
use avail_store::DatabaseKind;
use avail_testkit::Postgres;
use chrono::Utc;
use uuid::Uuid;

const WRITES: usize = 300;
const FAIL_AFTER: usize = 100;
const GIVE_UP: Duration = Duration::from_secs(60);

fn version(i: usize) -> NewPackageVersion {
    NewPackageVersion {
        package_id: PackageId(Uuid::from_u128(7)),
        version_id: VersionId(Uuid::from_u128(1000 + i as u128)),
        name: "Failover".into(),
        version: format!("1.0.{i}.0"),
        content_path: format!("packages/7/{i}.appv"),
        size: i as u64,
        sha256: format!("{i:064x}"),
        block_map_sha256: None,
        target_oses: vec![],
        applications: vec![],
    }
}

fn report(i: usize) -> ClientReport {
    ClientReport {
        id: Uuid::from_u128(5000 + i as u128),
        received_at: Utc::now(),
        source_host: "127.0.0.1".into(),
        body: format!("<CLIENT_DATA Host=\"pc{i}\"/>"),
        client: ClientInformation {
            host_name: format!("pc{}", i % 10),
            client_version: "5.1.104.0".into(),
            processor_arch: "x64".into(),
            os_version: "6.1".into(),
            os_service_pack: 1,
            os_type: "Client".into(),
        },
        packages: vec![],
        usage: vec![ApplicationUsage {
            application: "App".into(),
            application_version: "1".into(),
            server: "pub".into(),
            user: "alice".into(),
            package_version_id: Uuid::from_u128(1),
            connection_group_version_id: None,
            launched_at: Utc::now(),
            launch_status: "0-0".into(),
            shutdown_at: None,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_primary_failover() {
    let primary = Postgres::start_primary().unwrap();
    for db in ["avail_management", "avail_reporting"] {
        primary.create_database(db).unwrap();
    }
    avail_store::install(&primary.url("avail_management"), DatabaseKind::Management)
        .await
        .unwrap();
    avail_store::install(&primary.url("avail_reporting"), DatabaseKind::Reporting)
        .await
        .unwrap();
    let standby = primary.start_standby().unwrap();
    let url = |db: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write&connect_timeout=2",
            primary.port(),
            standby.port()
        )
    };
    let management = avail_store::open_management(&url("avail_management"))
        .await
        .unwrap();
    let reporting = avail_store::open_reporting(&url("avail_reporting"))
        .await
        .unwrap();

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let writer = {
        let acknowledged = acknowledged.clone();
        let (management, reporting) = (management.clone(), reporting.clone());
        tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut failures = 0;
            for i in 0..WRITES {
                let started = Instant::now();
                // A client retries an unacknowledged write with the same ids until it is acknowledged.
                loop {
                    let result = async {
                        management.add_package_version(version(i)).await?;
                        reporting.ingest(&[report(i)]).await
                    }
                    .await;
                    match result {
                        Ok(_) => break,
                        Err(e) => {
                            failures += 1;
                            assert!(
                                started.elapsed() < GIVE_UP,
                                "write {i} not acknowledged after {GIVE_UP:?}: {e}"
                            );
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                longest = longest.max(started.elapsed());
                acknowledged.store(i + 1, Ordering::SeqCst);
            }
            (longest, failures)
        })
    };

    while acknowledged.load(Ordering::SeqCst) < FAIL_AFTER {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = acknowledged.load(Ordering::SeqCst);
    primary.kill().unwrap();
    // Give the writer time to hit the dead primary and the still read-only standby,
    // as an operator or Patroni would take a moment to promote.
    tokio::time::sleep(Duration::from_secs(1)).await;
    standby.promote().unwrap();
    let (longest, failures) = writer.await.unwrap();
    println!(
        "failover after {killed_at} writes: {WRITES} writes acknowledged, {failures} failed attempts retried, longest write stall {longest:?}"
    );

    // Every acknowledged write is there exactly once, read through the same store objects…
    let versions = management
        .list_package_versions(&PackageFilter::default())
        .await
        .unwrap();
    assert_eq!(versions.len(), WRITES);
    let mut ids: Vec<VersionId> = versions.iter().map(|v| v.package.version_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids,
        (0..WRITES)
            .map(|i| version(i).version_id)
            .collect::<Vec<_>>()
    );
    let launches: i64 = reporting
        .launches(LaunchGrouping::User)
        .await
        .unwrap()
        .iter()
        .map(|c| c.launches)
        .sum();
    assert_eq!(
        launches, WRITES as i64,
        "one usage row per acknowledged report, none duplicated"
    );
    // …and on the promoted server itself.
    assert_eq!(
        standby
            .psql("avail_reporting", "SELECT count(*) FROM raw_reports")
            .unwrap()
            .trim(),
        WRITES.to_string()
    );
    // The sequence counted every import exactly once more than before.
    assert!(management.change_sequence().await.unwrap() >= WRITES as i64);
    // And the stores keep working on the new primary.
    management.create_group("after-failover").await.unwrap();
}
