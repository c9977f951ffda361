//! Catalog sync for a publishing node without a Management DB: it follows one
//! or more management servers (`[publishing] management_urls`) with its
//! publishing-server credential, through the management API's
//! [`SyncCatalog`] endpoint.
//!
//! The loop asks the management server that answered last (the first at
//! start) for a catalog newer than the one held, sending the held sequence
//! (`since`) and letting the server wait up to [`WAIT_SECS`] for a change
//! (long poll); when it cannot be reached, refuses, or answers with a body
//! that does not parse, the next URL is tried, and after every URL failed the
//! loop pauses [`BACKOFF`] and starts over; a server that answers "nothing
//! newer" without waiting is asked at most once per [`BACKOFF`]. The answer is
//! the whole catalog or, when the server still holds the catalog at `since`,
//! the changes since
//! ([`CatalogDelta`](avail_model::catalog_delta::CatalogDelta)), which are
//! applied to the catalog held; changes that do not apply to it (made from
//! another sequence, or not fitting) are dropped and the whole catalog is
//! asked for (`since=-1`). A newer catalog, whole or made from changes, is
//! written to `<data_dir>/publishing-catalog.json` atomically (temporary file,
//! fsync, rename) and then served; an older or equal one is dropped, so a failed or
//! partial sync never empties or regresses what is served. At start the node
//! serves the disk copy until a management server answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use avail_model::catalog::{Catalog, CatalogSnapshot};
use avail_model::catalog_delta::CatalogUpdate;
use avail_model::client::ManagementClient;
use avail_model::endpoint::SyncCatalog;

use crate::publishing::PublishingState;

/// The disk copy of the catalog, in the data directory.
pub(crate) const CATALOG_FILE: &str = "publishing-catalog.json";

/// How long a management server may hold a sync waiting for a change.
const WAIT_SECS: u64 = 25;

/// How long to wait for a management server's connection before trying the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The pause after every management server failed.
const BACKOFF: Duration = Duration::from_secs(1);

/// The catalog before any: no sequence, so any real one is newer.
pub(crate) fn no_catalog() -> Catalog {
    Catalog::new(CatalogSnapshot {
        sequence: -1,
        ..CatalogSnapshot::default()
    })
}

/// The disk copy at `path`, if there is one that parses.
pub(crate) fn read_copy(path: &Path) -> Option<Catalog> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!("cannot read the catalog copy {}: {e}", path.display());
            return None;
        }
    };
    match serde_json::from_slice::<CatalogSnapshot>(&text) {
        Ok(snapshot) => Some(Catalog::new(snapshot)),
        Err(e) => {
            tracing::warn!("ignoring the catalog copy {}: {e}", path.display());
            None
        }
    }
}

/// Write `snapshot` to `path` in one step: a reader sees the old copy or the
/// whole new one, also after a crash.
fn write_copy(path: &Path, snapshot: &CatalogSnapshot) -> std::io::Result<()> {
    let text = serde_json::to_string(snapshot)?;
    crate::write_atomically(path, &text, 0o600)
}

/// Store `snapshot` on disk and serve it, unless it is not newer than the
/// catalog served; `from` is the sequence of the catalog it was made from by
/// a delta, if it was. Whether it was taken.
async fn accept(
    snapshot: CatalogSnapshot,
    from: Option<i64>,
    state: &PublishingState,
    path: &Path,
) -> bool {
    if snapshot.sequence <= state.sequence() {
        return false;
    }
    let path = path.to_owned();
    let built = tokio::task::spawn_blocking(move || {
        if let Err(e) = write_copy(&path, &snapshot) {
            tracing::error!("cannot write the catalog copy {}: {e}", path.display());
        }
        Catalog::new(snapshot)
    })
    .await;
    match built {
        Ok(catalog) => {
            let sequence = catalog.sequence();
            state.replace(catalog);
            match from {
                Some(from) => {
                    tracing::info!(sequence, from, "publishing catalog synced from a delta")
                }
                None => tracing::info!(sequence, "publishing catalog synced"),
            }
            true
        }
        Err(e) => {
            tracing::error!("building the catalog failed: {e}");
            false
        }
    }
}

/// One client per management URL, authenticating with `credential`.
pub(crate) fn clients(urls: &[String], credential: &str) -> anyhow::Result<Vec<ManagementClient>> {
    let http = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(WAIT_SECS) + Duration::from_secs(30))
        .build()?;
    Ok(urls
        .iter()
        .map(|url| ManagementClient::with_http(http.clone(), url, Some(credential.to_owned())))
        .collect())
}

/// Take what a management server answered: a whole catalog as it is, the
/// changes applied to the catalog served. Whether the whole catalog must be
/// asked for because the changes do not apply to the catalog served.
async fn take(update: CatalogUpdate, state: &PublishingState, path: &Path) -> bool {
    match update {
        CatalogUpdate::Snapshot(snapshot) => {
            accept(snapshot, None, state, path).await;
            false
        }
        CatalogUpdate::Delta(delta) => match state.with_snapshot(|held| delta.apply(held)) {
            Ok(snapshot) => {
                accept(snapshot, Some(delta.from), state, path).await;
                false
            }
            Err(e) => {
                tracing::warn!("catalog changes dropped, asking for the whole catalog: {e}");
                true
            }
        },
    }
}

/// Follow the management servers `clients` forever (see the module
/// documentation), keeping `data_dir`'s copy current.
pub(crate) async fn follow(
    clients: Vec<ManagementClient>,
    state: PublishingState,
    data_dir: PathBuf,
) {
    let path = data_dir.join(CATALOG_FILE);
    let mut current = 0;
    let mut failing = false;
    let mut whole = false;
    loop {
        let mut answered = false;
        for step in 0..clients.len() {
            let at = (current + step) % clients.len();
            let client = &clients[at];
            let sync = SyncCatalog {
                since: if whole { -1 } else { state.sequence() },
                wait_secs: WAIT_SECS,
            };
            let asked = tokio::time::Instant::now();
            match client.send(&sync).await {
                Ok(reply) => {
                    if failing || at != current {
                        tracing::info!(url = client.base(), "syncing the catalog");
                    }
                    (current, answered, failing) = (at, true, false);
                    match reply.value {
                        Some(update) => whole = take(update, &state, &path).await,
                        // Nothing newer without a wait (the server's waiters
                        // are all taken): at most one such ask per BACKOFF.
                        None => tokio::time::sleep_until(asked + BACKOFF).await,
                    }
                    break;
                }
                Err(e) if !failing => {
                    tracing::warn!(url = client.base(), "catalog sync failed: {e}");
                }
                Err(_) => {}
            }
        }
        if !answered {
            failing = true;
            tokio::time::sleep(BACKOFF).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publishing::ContentUrls;

    fn snapshot(sequence: i64, users: &[&str]) -> CatalogSnapshot {
        CatalogSnapshot {
            sequence,
            users: users.iter().map(|u| (*u).to_owned()).collect(),
            ..CatalogSnapshot::default()
        }
    }

    fn content() -> ContentUrls {
        ContentUrls {
            base: "http://content".into(),
            mirrors: vec![],
        }
    }

    #[tokio::test]
    async fn a_newer_catalog_is_stored_and_served_an_older_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CATALOG_FILE);
        let state = PublishingState::new(no_catalog(), content());
        assert!(read_copy(&path).is_none());

        assert!(accept(snapshot(5, &["alice"]), None, &state, &path).await);
        assert_eq!(state.sequence(), 5);
        assert_eq!(
            read_copy(&path).unwrap().snapshot(),
            &snapshot(5, &["alice"])
        );

        // Older or equal: neither served nor written.
        assert!(!accept(snapshot(4, &[]), None, &state, &path).await);
        assert!(!accept(snapshot(5, &[]), None, &state, &path).await);
        assert_eq!(state.sequence(), 5);
        assert_eq!(
            read_copy(&path).unwrap().snapshot(),
            &snapshot(5, &["alice"])
        );

        assert!(accept(snapshot(7, &["bob"]), None, &state, &path).await);
        assert_eq!(read_copy(&path).unwrap().snapshot(), &snapshot(7, &["bob"]));
    }

    #[tokio::test]
    async fn changes_are_applied_to_the_catalog_held_and_refused_from_another() {
        use avail_model::catalog_delta::CatalogDelta;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CATALOG_FILE);
        let state = PublishingState::new(Catalog::new(snapshot(5, &["alice"])), content());
        let delta = |from, to, users: &[&str]| {
            CatalogUpdate::Delta(Box::new(CatalogDelta::between(
                &snapshot(from, &["alice"]),
                &snapshot(to, users),
            )))
        };

        // Made from the catalog held: applied, stored, served.
        assert!(!take(delta(5, 6, &["alice", "bob"]), &state, &path).await);
        assert_eq!(state.sequence(), 6);
        assert_eq!(
            read_copy(&path).unwrap().snapshot(),
            &snapshot(6, &["alice", "bob"])
        );

        // Made from another sequence: dropped, the whole catalog is asked for.
        assert!(take(delta(5, 7, &[]), &state, &path).await);
        assert_eq!(state.sequence(), 6);
        assert_eq!(
            read_copy(&path).unwrap().snapshot(),
            &snapshot(6, &["alice", "bob"])
        );

        // A whole catalog is taken as it is; never an older one.
        let whole = |sequence, users| CatalogUpdate::Snapshot(snapshot(sequence, users));
        assert!(!take(whole(8, &["carol"]), &state, &path).await);
        assert!(!take(whole(7, &[]), &state, &path).await);
        assert_eq!(state.sequence(), 8);
        assert_eq!(
            read_copy(&path).unwrap().snapshot(),
            &snapshot(8, &["carol"])
        );
    }

    #[test]
    fn the_copy_is_replaced_whole_and_a_broken_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CATALOG_FILE);
        write_copy(&path, &snapshot(1, &["alice"])).unwrap();
        write_copy(&path, &snapshot(2, &["bob"])).unwrap();
        assert_eq!(read_copy(&path).unwrap().snapshot(), &snapshot(2, &["bob"]));
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [CATALOG_FILE]);
        // A truncated copy (written by something else) is ignored, not served.
        std::fs::write(&path, b"{\"sequence\": 3, \"pack").unwrap();
        assert!(read_copy(&path).is_none());
    }

    #[tokio::test]
    async fn an_unreachable_list_leaves_the_catalog_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state = PublishingState::new(Catalog::new(snapshot(3, &["alice"])), content());
        // A port nothing listens on, and a server that answers garbage.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let garbage_url = format!("http://{}", garbage.local_addr().unwrap());
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            loop {
                let (mut socket, _) = garbage.accept().await.unwrap();
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\n{\"sequen")
                    .await;
            }
        });
        let clients = clients(&[dead_url, garbage_url], "avail_pub_x").unwrap();
        let task = tokio::spawn(follow(clients, state.clone(), dir.path().to_owned()));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        task.abort();
        assert_eq!(state.sequence(), 3);
        assert!(read_copy(&dir.path().join(CATALOG_FILE)).is_none());
    }
}
