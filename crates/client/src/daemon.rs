//! `avail client daemon`: the machine's one client process. It holds the
//! publishing servers, refreshes what they publish (at start, on an interval
//! and on `sync`), adds each published package version — its metadata and
//! publishing feature block into the cache — mounts it read-only under
//! `PackageInstallationRoot/<PackageId>/<VersionId>`, streams the rest on
//! demand or in the background (`AutoLoad`), and answers `avail client …` over
//! a Unix socket ([`crate::protocol`]).
//!
//! Who asks is the socket's peer: root may do everything; any other user may
//! look (status, settings, servers without their credentials), refresh for
//! themselves, and see the packages published to the machine or to them.
//!
//! A refresh asks every server for the machine and for each user the daemon
//! knows (those who asked once), applies each answer to that server and
//! audience alone ([`crate::publications`]) and then makes the mounts match:
//! what no answer lists any more is unmounted, what is new is added; a
//! server that did not answer keeps what it published. With no server
//! answering, the daemon starts from the publications it saved last.
//!
//! The socket takes 64 connections at a time (8 per user other than root), a
//! request line of at most 64 KiB within 10 s, and drops a caller that does
//! not read an answer line within 30 s; a client that goes away does not
//! stop the work it asked for. On SIGTERM or SIGINT every mount is unmounted
//! before exit, and mounts a killed daemon left behind are unmounted at the
//! next start.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use avail_format::Limits;
use avail_model::publishing::AnswerConnectionGroup;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

use crate::blocks::{CacheMode, PackageReader};
use crate::cache::{BlockStore, DiskCache, MemoryCache};
use crate::desktop::PackageDesktop;
use crate::fetch::{
    FetchConfig, Fetcher, OpenedRanges, RemotePackage, apply_package_source_root, split_package_url,
};
use crate::fs::{Mount, MountOptions, mount, unmount_stale};
use crate::protocol::{Answer, Failure, FailureKind, MAX_REQUEST, Progress, Request};
use crate::publications::{Audience, Publications};
use crate::refresh::{Outcome, PublishingServer, Refresher};
use crate::reporting::{
    ClientIdentity, Launch, PackageState, ReportQueue, http_client, launch_status,
    next_send_time_local,
};
use crate::settings::{NAMES, Settings};
use crate::state::{AddedByUrl, read_json, write_atomically, write_json};

/// Connections the socket serves at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;

/// Connections one user other than root may hold at once.
const PER_USER_CONNECTIONS: usize = 8;

/// How long writing one answer line to a caller may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One publishing request (per URL) of a refresh.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);

/// One request of a usage report send.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often background loading (`AutoLoad`) is considered.
const AUTOLOAD_EVERY: Duration = Duration::from_secs(2);

/// Where the daemon lives.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The Unix socket `avail client` speaks to.
    pub socket: PathBuf,
    /// The state directory (settings, servers, publications, the block cache).
    pub state_dir: PathBuf,
    /// Overrides the `PackageInstallationRoot` setting.
    pub mount_root: Option<PathBuf>,
    /// Where the desktop entries of packages published to the machine go
    /// (an XDG data directory: `applications/`, `icons/` below it).
    pub desktop_dir: PathBuf,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

fn start_error(what: impl std::fmt::Display, e: impl std::fmt::Display) -> StartError {
    StartError(format!("{what}: {e}"))
}

type Reply = Result<Value, Failure>;

/// Who sent a request: the socket peer's user.
#[derive(Debug, Clone)]
struct Caller {
    uid: u32,
    name: String,
}

impl Caller {
    fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// A package version added and (normally) mounted.
struct Added {
    package_id: Uuid,
    version_id: Uuid,
    name: String,
    version: String,
    reader: PackageReader,
    mount: Option<Mount>,
    mountpoint: PathBuf,
    read_seen: Arc<AtomicBool>,
    /// Set when a background load started (it runs once per add).
    loading: AtomicBool,
}

/// What should be added: a package version, its URLs.
#[derive(Debug, Clone)]
struct Wanted {
    package_id: Uuid,
    version_id: Uuid,
    name: String,
    version: String,
    urls: Vec<String>,
    block_map_sha256: Option<String>,
}

struct Daemon {
    state_dir: PathBuf,
    desktop_dir: PathBuf,
    mount_root_override: Option<PathBuf>,
    settings: Mutex<Settings>,
    servers: Mutex<Vec<PublishingServer>>,
    publications: Mutex<Publications>,
    by_url: Mutex<Vec<AddedByUrl>>,
    added: Mutex<BTreeMap<Uuid, Arc<Added>>>,
    /// Why a wanted version could not be added, by VersionId (kept until it is).
    add_errors: Mutex<HashMap<Uuid, String>>,
    disk: Arc<DiskCache>,
    memory: Arc<dyn BlockStore>,
    refresher: Refresher,
    /// One refresh, add or remove at a time.
    work: tokio::sync::Mutex<()>,
    last_refresh: Mutex<Option<Value>>,
    started: SystemTime,
    /// Launches and shutdowns waiting to be reported.
    reports: ReportQueue,
    /// The HTTP client reports are sent with (no redirects).
    report_client: reqwest::Client,
    /// What the reports say about this machine.
    identity: ClientIdentity,
    /// One send at a time.
    sending: tokio::sync::Mutex<()>,
    /// Open connections per caller uid.
    connections: Mutex<HashMap<u32, usize>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::new(FailureKind::Internal, e.to_string())
}

/// Runs the daemon until `shutdown` completes, then unmounts everything.
pub async fn run(
    options: DaemonOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let daemon = Arc::new(Daemon::open(&options)?);
    let root = daemon.mount_root();
    match unmount_stale(&root) {
        Ok(gone) if !gone.is_empty() => {
            tracing::info!(count = gone.len(), root = %root.display(), "unmounted what a previous daemon left mounted")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the mount table"),
    }
    let listener = bind(&options.socket)?;
    tracing::info!(socket = %options.socket.display(), state = %options.state_dir.display(), mounts = %root.display(), "client daemon ready");

    let refresher = tokio::spawn(refresh_loop(daemon.clone()));
    let loader = tokio::spawn(autoload_loop(daemon.clone()));
    let reporter = tokio::spawn(report_loop(daemon.clone()));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        // The user's slot is taken here, in the order of
                        // accepting, not in the spawned task.
                        let user = stream
                            .peer_cred()
                            .map(|cred| (cred.uid(), UserSlot::take(&daemon, cred.uid())));
                        let daemon = daemon.clone();
                        tokio::spawn(async move {
                            match user {
                                Ok((uid, slot)) => serve(daemon, stream, uid, slot).await,
                                Err(e) => tracing::warn!(error = %e, "no peer credentials; connection closed"),
                            }
                            drop(permit);
                        });
                    }
                    Err(_) => tracing::warn!("connection cap reached; a connection was closed"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    tracing::info!("shutting down: unmounting every package");
    refresher.abort();
    loader.abort();
    reporter.abort();
    let _ = std::fs::remove_file(&options.socket);
    let _work = daemon.work.lock().await;
    let added: Vec<Arc<Added>> = std::mem::take(&mut *lock(&daemon.added))
        .into_values()
        .collect();
    for a in added {
        unmount_added(a).await;
    }
    Ok(())
}

/// Binds the socket, replacing a stale socket file, open to every local user
/// (who may do what is decided per request).
fn bind(socket: &Path) -> Result<UnixListener, StartError> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| start_error(dir.display(), e))?;
    }
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(StartError(format!(
            "another client daemon answers on {}",
            socket.display()
        )));
    }
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(|e| start_error(socket.display(), e))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| start_error(socket.display(), e))?;
    Ok(listener)
}

/// One connection: a request line, then progress lines and the result.
/// One connection from `uid`, holding `slot` (`None`: the user has too many).
async fn serve(daemon: Arc<Daemon>, stream: UnixStream, uid: u32, slot: Option<UserSlot>) {
    // A user other than root holds at most PER_USER_CONNECTIONS of the
    // socket's connections, so that one cannot keep the others out.
    let Some(_slot) = slot else {
        let mut stream = stream;
        let refusal = Answer::Error(Failure::new(
            FailureKind::Unavailable,
            format!("uid {uid} has {PER_USER_CONNECTIONS} connections to the daemon open already"),
        ));
        if let Ok(mut line) = serde_json::to_vec(&refusal) {
            line.push(b'\n');
            let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&line)).await;
        }
        return;
    };
    // The name service may be remote (LDAP): not on a runtime thread.
    let name = tokio::task::spawn_blocking(move || {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default();
    let caller = Caller { uid, name };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64 + 1);
    let mut line = Vec::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let request = match read {
        Ok(Ok(_)) if line.ends_with(b"\n") => serde_json::from_slice::<Request>(&line)
            .map_err(|e| Failure::new(FailureKind::Invalid, format!("not a request: {e}"))),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => Err(Failure::new(
            FailureKind::Invalid,
            format!("the request is longer than {MAX_REQUEST} bytes"),
        )),
        Ok(_) => return,
        Err(_) => Err(Failure::new(
            FailureKind::Invalid,
            "no request line within 10 s",
        )),
    };
    let (tx, mut rx) = mpsc::channel::<Answer>(16);
    match request {
        Ok(request) => {
            tracing::debug!(uid = caller.uid, ?request, "request");
            // The work goes on if the caller goes away.
            tokio::spawn(async move {
                let reply = daemon.handle(&caller, request, &tx).await;
                let _ = tx
                    .send(match reply {
                        Ok(v) => Answer::Ok(v),
                        Err(f) => Answer::Error(f),
                    })
                    .await;
            });
        }
        Err(f) => {
            let _ = tx.send(Answer::Error(f)).await;
            drop(tx);
        }
    }
    while let Some(answer) = rx.recv().await {
        let Ok(mut bytes) = serde_json::to_vec(&answer) else {
            return;
        };
        bytes.push(b'\n');
        // A caller that stops reading is dropped; the work goes on.
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&bytes)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

/// One of a user's connections, counted while it is open.
struct UserSlot {
    daemon: Arc<Daemon>,
    uid: u32,
}

impl UserSlot {
    fn take(daemon: &Arc<Daemon>, uid: u32) -> Option<UserSlot> {
        let mut open = lock(&daemon.connections);
        let n = open.entry(uid).or_default();
        if uid != 0 && *n >= PER_USER_CONNECTIONS {
            return None;
        }
        *n += 1;
        Some(UserSlot {
            daemon: daemon.clone(),
            uid,
        })
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.daemon.connections);
        if let Some(n) = open.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

fn permission_denied(what: &str) -> Failure {
    Failure::new(
        FailureKind::PermissionDenied,
        format!("only root may {what}; run it with sudo"),
    )
}

impl Daemon {
    fn open(options: &DaemonOptions) -> Result<Daemon, StartError> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = &options.state_dir;
        std::fs::create_dir_all(dir).map_err(|e| start_error(dir.display(), e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| start_error(dir.display(), e))?;
        let mut settings =
            Settings::load(&dir.join("config.toml")).map_err(|e| start_error("settings", e))?;
        if let Some(root) = &options.mount_root {
            settings.package_installation_root = root.clone();
        }
        let servers: Vec<PublishingServer> =
            read_json(&dir.join("servers.json")).map_err(|e| start_error("servers", e))?;
        let publications = Publications::load(&dir.join("publications.json"))
            .map_err(|e| start_error("publications", e))?;
        let by_url: Vec<AddedByUrl> =
            read_json(&dir.join("added.json")).map_err(|e| start_error("added packages", e))?;
        let disk = DiskCache::open(dir.join("cache"), settings.cache_quota)
            .map_err(|e| start_error("the block cache", e))?;
        // Every block is verified again when read from the cache, so one that
        // a power failure lost or tore is fetched again: no fsync per block
        // (which cost cold reads most of their time).
        disk.set_fsync(false);
        // The blocks stored last are served from memory, not hashed again.
        disk.set_memory(crate::cache::RECENT_MEMORY);
        let memory: Arc<dyn BlockStore> =
            Arc::new(MemoryCache::new(settings.shared_content_store_memory));
        let refresher =
            Refresher::new(REFRESH_TIMEOUT).map_err(|e| start_error("the HTTP client", e))?;
        let reports = ReportQueue::open(&dir.join("reports"), settings.reporting().cache_limit())
            .map_err(|e| start_error("the report queue", e))?;
        let report_client =
            http_client(REPORT_TIMEOUT).map_err(|e| start_error("the HTTP client", e))?;
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into());
        let identity = ClientIdentity::detect(&host, env!("CARGO_PKG_VERSION"));
        Ok(Daemon {
            state_dir: dir.clone(),
            desktop_dir: options.desktop_dir.clone(),
            mount_root_override: options.mount_root.clone(),
            settings: Mutex::new(settings),
            servers: Mutex::new(servers),
            publications: Mutex::new(publications),
            by_url: Mutex::new(by_url),
            added: Mutex::new(BTreeMap::new()),
            add_errors: Mutex::new(HashMap::new()),
            disk: Arc::new(disk),
            memory,
            refresher,
            work: tokio::sync::Mutex::new(()),
            last_refresh: Mutex::new(None),
            started: SystemTime::now(),
            reports,
            report_client,
            identity,
            sending: tokio::sync::Mutex::new(()),
            connections: Mutex::new(HashMap::new()),
        })
    }

    /// Where the structure of an added version is kept ([`OpenedRanges`]),
    /// so that it opens again with every mirror down.
    fn opened_path(&self, version_id: Uuid) -> PathBuf {
        self.state_dir.join("opened").join(version_id.to_string())
    }

    /// Forgets the saved structure of a version no longer added.
    fn forget_opened(&self, version_id: Uuid) {
        let path = self.opened_path(version_id);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove");
        }
    }

    fn mount_root(&self) -> PathBuf {
        lock(&self.settings).package_installation_root.clone()
    }

    async fn handle(&self, caller: &Caller, request: Request, tx: &mpsc::Sender<Answer>) -> Reply {
        let root = caller.is_root();
        match request {
            Request::Status => Ok(self.status()),
            Request::ServerList => Ok(self.server_list()),
            Request::ConfigGet { name } => self.config_get(name.as_deref()),
            Request::Launch { app } => self.launch(caller, &app, tx).await,
            Request::Layers { package } => self.layers(caller, &package),
            Request::ReportSend => self.send_reports().await,
            Request::Desktop => Ok(self.user_desktop(caller)),
            Request::ReportStatus => Ok(self.report_status()),
            Request::LaunchEnded {
                launch_id,
                exit_code,
                signal,
            } => Ok(self.launch_ended(caller, launch_id, exit_code, signal)),
            Request::PackageList => Ok(self.package_list(caller)),
            Request::Sync { user } => {
                let user = match (user, root) {
                    (Some(u), true) => Some(u),
                    (Some(u), false) if u == caller.name => Some(u),
                    (Some(_), false) => return Err(permission_denied("refresh for another user")),
                    (None, _) if root || caller.name.is_empty() => None,
                    (None, _) => Some(caller.name.clone()),
                };
                Ok(self.refresh(user, Some(tx)).await)
            }
            _ if !root => Err(permission_denied(match request {
                Request::ServerAdd { .. } => "add a publishing server",
                Request::ServerRemove { .. } => "remove a publishing server",
                Request::PackageAdd { .. } => "add a package",
                Request::PackageMount { .. } => "load a package",
                Request::PackageRemove { .. } => "remove a package",
                _ => "change the settings",
            })),
            Request::ServerAdd {
                name,
                urls,
                credential,
            } => self.server_add(name, urls, credential).await,
            Request::ServerRemove { name } => self.server_remove(&name).await,
            Request::PackageAdd { url, mirrors } => self.package_add(url, mirrors).await,
            Request::PackageMount { package } => self.package_mount(&package, tx).await,
            Request::PackageRemove { package } => self.package_remove(&package).await,
            Request::ConfigSet { name, value } => self.config_set(&name, &value),
        }
    }

    fn status(&self) -> Value {
        let added = lock(&self.added);
        let mounted = added.values().filter(|a| a.mount.is_some()).count();
        let settings = lock(&self.settings).clone();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": self.started.elapsed().map_or(0, |d| d.as_secs()),
            "servers": lock(&self.servers).len(),
            "packages": added.len(),
            "mounted": mounted,
            "not_added": lock(&self.add_errors).len(),
            "mount_root": settings.package_installation_root,
            "shared_content_store_mode": settings.shared_content_store_mode == 1,
            "cache": {
                "dir": self.disk.dir(),
                "used_bytes": self.disk.used_bytes(),
                "quota_bytes": settings.cache_quota,
            },
            "last_refresh": lock(&self.last_refresh).clone(),
        })
    }

    fn server_list(&self) -> Value {
        let publications = lock(&self.publications);
        let servers: Vec<Value> = lock(&self.servers)
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "urls": s.urls,
                    "last_refresh_unix": publications.last_refresh(&s.name),
                })
            })
            .collect();
        Value::Array(servers)
    }

    async fn server_add(
        &self,
        name: Option<String>,
        urls: Vec<String>,
        credential: String,
    ) -> Reply {
        if urls.is_empty() {
            return Err(Failure::new(FailureKind::Invalid, "give at least one URL"));
        }
        for url in &urls {
            let ok = reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(Failure::new(
                    FailureKind::Invalid,
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
        }
        if credential.trim().is_empty() {
            return Err(Failure::new(
                FailureKind::Invalid,
                "give the machine's credential (avail admin machine add prints it)",
            ));
        }
        let name = name.unwrap_or_else(|| {
            reqwest::Url::parse(&urls[0])
                .ok()
                .and_then(|u| {
                    u.host_str().map(|h| match u.port() {
                        Some(p) => format!("{h}:{p}"),
                        None => h.to_owned(),
                    })
                })
                .unwrap_or_else(|| urls[0].clone())
        });
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(Failure::new(
                FailureKind::Invalid,
                "a server name is 1 to 200 printable characters",
            ));
        }
        let _work = self.work.lock().await;
        {
            let mut servers = lock(&self.servers);
            if servers.iter().any(|s| s.name == name) {
                return Err(Failure::new(
                    FailureKind::Invalid,
                    format!("a server named {name:?} exists; remove it first or give --name"),
                ));
            }
            servers.push(PublishingServer {
                name: name.clone(),
                urls: urls.clone(),
                credential,
            });
            if let Err(e) = write_json(&self.state_dir.join("servers.json"), &*servers, 0o600) {
                servers.pop();
                return Err(internal(format!("cannot save the servers: {e}")));
            }
        }
        Ok(json!({ "name": name, "urls": urls }))
    }

    async fn server_remove(&self, name: &str) -> Reply {
        let _work = self.work.lock().await;
        {
            let mut servers = lock(&self.servers);
            let before = servers.clone();
            servers.retain(|s| s.name != name);
            if servers.len() == before.len() {
                return Err(Failure::new(
                    FailureKind::NotFound,
                    format!("no publishing server named {name:?} (avail client server list)"),
                ));
            }
            if let Err(e) = write_json(&self.state_dir.join("servers.json"), &*servers, 0o600) {
                *servers = before;
                return Err(internal(format!("cannot save the servers: {e}")));
            }
        }
        self.update_publications(|p| p.forget_server(name))?;
        let changes = self.reconcile(None).await;
        self.sync_machine_desktop().await;
        Ok(json!({ "removed": name, "packages": changes }))
    }

    fn update_publications<R>(&self, f: impl FnOnce(&mut Publications) -> R) -> Result<R, Failure> {
        let mut publications = lock(&self.publications);
        let mut next = publications.clone();
        let result = f(&mut next);
        next.save(&self.state_dir.join("publications.json"))
            .map_err(|e| internal(format!("cannot save the publications: {e}")))?;
        *publications = next;
        Ok(result)
    }

    /// A publishing refresh (see the module doc) for the machine, and for
    /// `user` or, when `None`, every user known.
    async fn refresh(
        &self,
        user: Option<String>,
        progress: Option<&mpsc::Sender<Answer>>,
    ) -> Value {
        let _work = self.work.lock().await;
        let servers = lock(&self.servers).clone();
        let mut audiences = vec![Audience::Machine];
        match user {
            Some(u) => audiences.push(Audience::User(u)),
            None => audiences.extend(
                lock(&self.publications)
                    .users()
                    .into_iter()
                    .map(Audience::User),
            ),
        }
        let mut results = Vec::new();
        let total = (servers.len() * audiences.len()) as u64;
        for server in &servers {
            for who in &audiences {
                if let Some(tx) = progress {
                    let _ = tx.try_send(Answer::Progress(Progress {
                        done: results.len() as u64,
                        total,
                        bytes: false,
                        message: format!("refreshing {}", server.name),
                    }));
                }
                let etag = lock(&self.publications)
                    .etag(&server.name, who)
                    .map(str::to_owned);
                let user = match who {
                    Audience::Machine => None,
                    Audience::User(u) => Some(u.as_str()),
                };
                let label = match who {
                    Audience::Machine => "machine".to_owned(),
                    Audience::User(u) => format!("user:{u}"),
                };
                let result = match self.refresher.refresh(server, user, etag.as_deref()).await {
                    Ok(outcome) => {
                        let (status, url) = match &outcome {
                            Outcome::Changed { url, .. } => ("changed", url.clone()),
                            Outcome::Unchanged { url } => ("unchanged", url.clone()),
                        };
                        let now = now_unix();
                        match self.update_publications(|p| p.apply(&server.name, who, outcome, now))
                        {
                            Ok(true) => {
                                json!({"server": server.name, "audience": label, "result": status, "url": url})
                            }
                            Ok(false) => {
                                tracing::warn!(server = %server.name, url = %url, "the answer comes from an older catalog than the one held; not applied");
                                json!({"server": server.name, "audience": label, "result": "older", "url": url})
                            }
                            Err(f) => {
                                json!({"server": server.name, "audience": label, "result": "failed", "error": f.message})
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(server = %server.name, audience = %label, error = %e, "publishing refresh failed; keeping what the server published before");
                        json!({"server": server.name, "audience": label, "result": "failed", "error": e.to_string()})
                    }
                };
                results.push(result);
            }
        }
        let packages = self.reconcile(progress).await;
        self.sync_machine_desktop().await;
        let report = json!({ "at_unix": now_unix(), "servers": results, "packages": packages });
        *lock(&self.last_refresh) = Some(report.clone());
        report
    }

    /// What should be added: every published version and every one added by URL.
    fn wanted(&self) -> BTreeMap<Uuid, Wanted> {
        let mut wanted = BTreeMap::new();
        for p in lock(&self.publications).packages() {
            wanted.insert(
                p.version_id.0,
                Wanted {
                    package_id: p.package_id.0,
                    version_id: p.version_id.0,
                    name: p.name,
                    version: p.version,
                    urls: p.urls,
                    block_map_sha256: p.block_map_sha256,
                },
            );
        }
        for a in lock(&self.by_url).iter() {
            wanted.entry(a.version_id).or_insert_with(|| Wanted {
                package_id: a.package_id,
                version_id: a.version_id,
                name: a.name.clone(),
                version: a.version.clone(),
                urls: a.urls.clone(),
                block_map_sha256: None,
            });
        }
        wanted
    }

    /// Makes the added versions match [`Daemon::wanted`]; the caller holds `work`.
    async fn reconcile(&self, progress: Option<&mpsc::Sender<Answer>>) -> Value {
        let wanted = self.wanted();
        let to_add = {
            let added = lock(&self.added);
            wanted.keys().filter(|v| !added.contains_key(v)).count() as u64
        };
        let gone: Vec<Arc<Added>> = {
            let mut added = lock(&self.added);
            let ids: Vec<Uuid> = added
                .keys()
                .filter(|v| !wanted.contains_key(v))
                .copied()
                .collect();
            ids.iter().filter_map(|v| added.remove(v)).collect()
        };
        let mut removed = Vec::new();
        for a in gone {
            removed.push(format!("{} {}", a.name, a.version));
            self.forget_opened(a.version_id);
            unmount_added(a).await;
        }
        let abandoned: Vec<Uuid> = lock(&self.add_errors)
            .keys()
            .filter(|v| !wanted.contains_key(v))
            .copied()
            .collect();
        for v in abandoned {
            lock(&self.add_errors).remove(&v);
            self.forget_opened(v);
        }
        let mut new = Vec::new();
        let mut failed = Vec::new();
        for (vid, w) in wanted {
            if lock(&self.added).contains_key(&vid) {
                continue;
            }
            if let Some(tx) = progress {
                let _ = tx.try_send(Answer::Progress(Progress {
                    done: (new.len() + failed.len()) as u64,
                    total: to_add,
                    bytes: false,
                    message: format!("adding {} {}", w.name, w.version),
                }));
            }
            match self.add(&w).await {
                Ok(a) => {
                    lock(&self.add_errors).remove(&vid);
                    new.push(format!("{} {}", a.name, a.version));
                    lock(&self.added).insert(vid, a);
                }
                Err(e) => {
                    tracing::warn!(package = %w.name, version_id = %vid, error = %e.message, "cannot add a package version; retried at the next refresh");
                    failed.push(json!({"package": w.name, "version_id": vid, "error": e.message}));
                    lock(&self.add_errors).insert(vid, e.message);
                }
            }
        }
        json!({ "added": new, "removed": removed, "failed": failed })
    }

    /// Adds one version: opens it through its mirrors (metadata only), loads
    /// its publishing feature block and mounts it.
    async fn add(&self, w: &Wanted) -> Result<Arc<Added>, Failure> {
        let settings = lock(&self.settings).clone();
        let unavailable = |m: String| Failure::new(FailureKind::Unavailable, m);
        let mut bases = Vec::new();
        let mut path = None;
        for url in &w.urls {
            let url = apply_package_source_root(url, &settings.package_source_root);
            let Some((base, p)) = split_package_url(&url) else {
                return Err(Failure::new(
                    FailureKind::Invalid,
                    format!("{url} does not end with packages/<PackageId>/<VersionId>.appv"),
                ));
            };
            if path.get_or_insert_with(|| p.to_owned()) == p && !bases.contains(&base.to_owned()) {
                bases.push(base.to_owned());
            }
        }
        let path = path.ok_or_else(|| unavailable(format!("{} has no URL", w.name)))?;
        let config = FetchConfig {
            read_timeout: Duration::from_secs(settings.read_timeout),
            ..FetchConfig::default()
        };
        let fetcher = Fetcher::new(&bases, config).map_err(|e| unavailable(e.to_string()))?;
        let opened_path = self.opened_path(w.version_id);
        let saved = std::fs::read(&opened_path)
            .ok()
            .and_then(|bytes| OpenedRanges::decode(&bytes));
        let from_saved = match saved {
            Some(saved) => RemotePackage::open_saved(fetcher.clone(), path.clone(), Limits::default(), saved)
                .await
                .inspect_err(|e| tracing::warn!(version_id = %w.version_id, error = %e, "the saved structure of a package version does not open; opening it from its mirrors"))
                .ok(),
            None => None,
        };
        let remote = match from_saved {
            Some(remote) => remote,
            None => {
                let remote = RemotePackage::open(fetcher, path, Limits::default())
                    .await
                    .map_err(|e| unavailable(format!("cannot open {}: {e}", bases.join(" or "))))?;
                let encoded = remote.opened_ranges().encode();
                let saved = opened_path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| write_atomically(&opened_path, &encoded, 0o600));
                if let Err(e) = saved {
                    tracing::warn!(path = %opened_path.display(), error = %e, "cannot save the structure of a package version; it will need a mirror to open again");
                }
                remote
            }
        };
        let manifest = remote.package().manifest();
        let name = if w.name.is_empty() {
            manifest.name.clone()
        } else {
            w.name.clone()
        };
        let version = if w.version.is_empty() {
            manifest.version.clone()
        } else {
            w.version.clone()
        };
        if manifest.version_id.is_some_and(|v| v != w.version_id)
            || manifest.package_id.is_some_and(|p| p != w.package_id)
        {
            return Err(Failure::new(
                FailureKind::Invalid,
                format!(
                    "the file of {} at {} is another package version",
                    name,
                    bases.join(", ")
                ),
            ));
        }
        if let Some(expected) = &w.block_map_sha256 {
            // It may read the block map from a mirror again: blocking work.
            let package = remote.clone();
            let actual = tokio::task::spawn_blocking(move || package.package().block_map_sha256())
                .await
                .map_err(internal)?
                .map_err(|e| unavailable(e.to_string()))?;
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(Failure::new(
                    FailureKind::Invalid,
                    format!(
                        "the file of {} does not have the published block map (SHA-256 {actual}, published {expected})",
                        name
                    ),
                ));
            }
        }
        let mode = if settings.shared_content_store_mode == 1 {
            CacheMode::SharedContentStore {
                memory: self.memory.clone(),
            }
        } else {
            CacheMode::Normal
        };
        let disk: Arc<dyn BlockStore> = self.disk.clone();
        let reader = PackageReader::new(remote, disk, mode);
        reader.load_publishing().await.map_err(|e| {
            unavailable(format!(
                "cannot load the publishing feature block of {}: {e}",
                name
            ))
        })?;
        let mountpoint = settings
            .package_installation_root
            .join(w.package_id.to_string())
            .join(w.version_id.to_string());
        let read_seen = Arc::new(AtomicBool::new(false));
        let options = MountOptions {
            allow_other: nix::unistd::geteuid().is_root(),
            fs_name: format!("avail:{}", name.replace([' ', ','], "_")),
            read_seen: Some(read_seen.clone()),
            ..MountOptions::default()
        };
        let mounted = {
            let reader = reader.clone();
            let mountpoint = mountpoint.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&mountpoint)?;
                mount(reader, &mountpoint, &options)
            })
            .await
            .map_err(internal)?
        };
        let mount = match mounted {
            Ok(m) => Some(m),
            Err(e) => {
                reader.release();
                return Err(unavailable(format!(
                    "cannot mount {} on {}: {e}",
                    name,
                    mountpoint.display()
                )));
            }
        };
        tracing::info!(package = %name, version = %version, mountpoint = %mountpoint.display(), "package version added");
        Ok(Arc::new(Added {
            package_id: w.package_id,
            version_id: w.version_id,
            name,
            version,
            reader,
            mount,
            mountpoint,
            read_seen,
            loading: AtomicBool::new(false),
        }))
    }

    fn package_list(&self, caller: &Caller) -> Value {
        let visible = {
            let publications = lock(&self.publications);
            if caller.is_root() {
                publications.packages()
            } else {
                publications.visible_to(Some(&caller.name))
            }
        };
        let by_url: Vec<Uuid> = lock(&self.by_url).iter().map(|a| a.version_id).collect();
        let added = lock(&self.added).clone();
        let errors = lock(&self.add_errors).clone();
        let mut rows = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut row = |vid: Uuid, name: &str, version: &str, pid: Uuid, published: Value| {
            if !seen.insert(vid) {
                return;
            }
            let a = added.get(&vid);
            let cached = a.map(|a| a.reader.cached());
            rows.push(json!({
                "name": name,
                "version": version,
                "package_id": pid,
                "version_id": vid,
                "published": published,
                "mount": a.and_then(|a| a.mount.as_ref().map(|_| a.mountpoint.clone())),
                "cached_percent": cached.map(|c| (c.percent() * 10.0).round() / 10.0),
                "cached_bytes": cached.map(|c| c.cached_bytes),
                "size_bytes": cached.map(|c| c.total_bytes),
                "error": errors.get(&vid),
            }));
        };
        for p in visible {
            let users: Vec<&String> = if caller.is_root() {
                p.users.iter().collect()
            } else {
                p.users.iter().filter(|u| **u == caller.name).collect()
            };
            let published = json!({"machine": p.machine, "users": users, "servers": p.servers});
            row(
                p.version_id.0,
                &p.name,
                &p.version,
                p.package_id.0,
                published,
            );
        }
        for vid in by_url {
            if let Some(a) = added.get(&vid) {
                row(
                    vid,
                    &a.name,
                    &a.version,
                    a.package_id,
                    json!({"by_url": true}),
                );
            } else if let Some(a) = lock(&self.by_url).iter().find(|a| a.version_id == vid) {
                row(
                    vid,
                    &a.name,
                    &a.version,
                    a.package_id,
                    json!({"by_url": true}),
                );
            }
        }
        Value::Array(rows)
    }

    async fn package_add(&self, url: String, mirrors: Vec<String>) -> Reply {
        let _work = self.work.lock().await;
        let mut urls = vec![url];
        urls.extend(mirrors);
        let Some((_, path)) = split_package_url(&urls[0]) else {
            return Err(Failure::new(
                FailureKind::Invalid,
                format!(
                    "{} does not end with packages/<PackageId>/<VersionId>.appv",
                    urls[0]
                ),
            ));
        };
        // The ids come from the path, and are checked against the manifest at add.
        let mut ids = path.split('/').skip(1);
        let pid = ids.next().and_then(|s| Uuid::parse_str(s).ok());
        let vid = ids
            .next()
            .and_then(|f| f.get(..f.len().saturating_sub(5)))
            .and_then(|s| Uuid::parse_str(s).ok());
        let (Some(package_id), Some(version_id)) = (pid, vid) else {
            return Err(Failure::new(
                FailureKind::Invalid,
                format!(
                    "{} is not packages/<PackageId>/<VersionId>.appv with two GUIDs",
                    urls[0]
                ),
            ));
        };
        if lock(&self.added).contains_key(&version_id) {
            return Err(Failure::new(
                FailureKind::Invalid,
                format!("version {version_id} is added already"),
            ));
        }
        let wanted = Wanted {
            package_id,
            version_id,
            name: String::new(),
            version: String::new(),
            urls: urls.clone(),
            block_map_sha256: None,
        };
        let added = self.add(&wanted).await?;
        let record = AddedByUrl {
            package_id,
            version_id,
            name: added.name.clone(),
            version: added.version.clone(),
            urls,
        };
        let saved = {
            let mut by_url = lock(&self.by_url);
            by_url.push(record);
            let saved = write_json(&self.state_dir.join("added.json"), &*by_url, 0o600);
            if saved.is_err() {
                by_url.pop();
            }
            saved
        };
        if let Err(e) = saved {
            self.forget_opened(version_id);
            unmount_added(added).await;
            return Err(internal(format!("cannot save the added packages: {e}")));
        }
        let answer = json!({
            "name": added.name, "version": added.version,
            "package_id": package_id, "version_id": version_id,
            "mount": added.mountpoint,
        });
        lock(&self.added).insert(version_id, added);
        self.sync_machine_desktop().await;
        Ok(answer)
    }

    /// Deletes from the disk cache the blocks of `removed` that no version
    /// still added uses (App-V's `Remove-AppvClientPackage` frees the
    /// package's cache); its pins are released first. Returns the bytes freed.
    fn free_blocks(&self, removed: &Added) -> u64 {
        removed.reader.release();
        let mut kept = std::collections::HashSet::new();
        for a in lock(&self.added).values() {
            for f in a.reader.remote().package().files() {
                kept.extend(f.map.blocks.iter().map(|b| b.hash));
            }
        }
        let mut freed = 0;
        for f in removed.reader.remote().package().files() {
            for (k, b) in f.map.blocks.iter().enumerate() {
                if !kept.contains(&b.hash) && self.disk.forget(&b.hash) {
                    freed += f.map.block_len(k) as u64 + crate::cache::HEADER_LEN as u64;
                }
            }
        }
        freed
    }

    fn find(&self, what: &str) -> Result<Arc<Added>, Failure> {
        let added = lock(&self.added);
        let id = Uuid::parse_str(what).ok();
        let found: Vec<&Arc<Added>> = added
            .values()
            .filter(|a| {
                Some(a.version_id) == id
                    || Some(a.package_id) == id
                    || a.name.eq_ignore_ascii_case(what)
            })
            .collect();
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Failure::new(
                FailureKind::NotFound,
                format!("no added package named {what:?} (avail client package list)"),
            )),
            _ => Err(Failure::new(
                FailureKind::Invalid,
                format!(
                    "{what:?} names {} versions; give the VersionId",
                    found.len()
                ),
            )),
        }
    }

    async fn package_mount(&self, what: &str, tx: &mpsc::Sender<Answer>) -> Reply {
        let added = self.find(what)?;
        added.loading.store(true, Ordering::Relaxed);
        let total = added.reader.cached().total_bytes;
        let message = format!("loading {} {}", added.name, added.version);
        let reader = added.reader.clone();
        let mut load = tokio::spawn(async move { reader.load_all().await });
        let result = loop {
            tokio::select! {
                done = &mut load => break done,
                () = tokio::time::sleep(Duration::from_millis(250)) => {
                    let done = added.reader.cached().cached_bytes;
                    let _ = tx.try_send(Answer::Progress(Progress {
                        done,
                        total,
                        bytes: true,
                        message: message.clone(),
                    }));
                }
            }
        };
        let summary = result.map_err(internal)?.map_err(|e| {
            Failure::new(
                FailureKind::Unavailable,
                format!("cannot load {}: {e}", added.name),
            )
        })?;
        let cached = added.reader.cached();
        Ok(json!({
            "name": added.name, "version": added.version, "version_id": added.version_id,
            "fetched_blocks": summary.fetched_blocks, "blocks": summary.blocks,
            "cached_percent": (cached.percent() * 10.0).round() / 10.0,
        }))
    }

    async fn package_remove(&self, what: &str) -> Reply {
        let _work = self.work.lock().await;
        let added = self.find(what)?;
        let vid = added.version_id;
        {
            let mut by_url = lock(&self.by_url);
            if by_url.iter().any(|a| a.version_id == vid) {
                let before = by_url.clone();
                by_url.retain(|a| a.version_id != vid);
                if let Err(e) = write_json(&self.state_dir.join("added.json"), &*by_url, 0o600) {
                    *by_url = before;
                    return Err(internal(format!("cannot save the added packages: {e}")));
                }
            }
        }
        lock(&self.added).remove(&vid);
        self.forget_opened(vid);
        let freed = self.free_blocks(&added);
        let answer = json!({
            "removed": format!("{} {}", added.name, added.version),
            "version_id": vid,
            "freed_bytes": freed,
        });
        self.sync_machine_desktop().await;
        unmount_added(added).await;
        Ok(answer)
    }

    /// The added versions `caller` may use: published to the machine or to
    /// them (root: all), and those added by URL.
    fn usable(&self, caller: &Caller) -> Vec<Arc<Added>> {
        let visible: std::collections::HashSet<Uuid> = {
            let publications = lock(&self.publications);
            let user = (!caller.is_root()).then_some(caller.name.as_str());
            publications
                .visible_to(user)
                .into_iter()
                .map(|p| p.version_id.0)
                .chain(lock(&self.by_url).iter().map(|a| a.version_id))
                .collect()
        };
        lock(&self.added)
            .values()
            .filter(|a| visible.contains(&a.version_id))
            .cloned()
            .collect()
    }

    /// Resolves `app` for `caller` (see [`Request::Launch`]), makes the
    /// primary feature block of its package local, and answers what to run
    /// over which layers.
    async fn launch(&self, caller: &Caller, app: &str, tx: &mpsc::Sender<Answer>) -> Reply {
        let usable = self.usable(caller);
        let mut found = Vec::new();
        for a in &usable {
            let manifest = a.reader.remote().package().manifest();
            let by_name = a.name.eq_ignore_ascii_case(app);
            for (i, application) in manifest.applications.iter().enumerate() {
                let file_name = application
                    .target
                    .as_deref()
                    .and_then(|t| t.rsplit('/').next());
                if application.id.eq_ignore_ascii_case(app)
                    || file_name == Some(app)
                    || (by_name && i == 0)
                {
                    found.push((a.clone(), application.clone()));
                }
            }
        }
        let (added, application) = match found.len() {
            1 => found.remove(0),
            0 => {
                return Err(Failure::new(
                    FailureKind::NotFound,
                    format!(
                        "no application {app:?} is published to you (avail client package list; avail client sync)"
                    ),
                ));
            }
            _ => {
                let names: Vec<String> = found
                    .iter()
                    .map(|(a, app)| format!("{} in {} {}", app.id, a.name, a.version))
                    .collect();
                return Err(Failure::new(
                    FailureKind::Invalid,
                    format!(
                        "{app:?} names several applications: {}; give the application id",
                        names.join(", ")
                    ),
                ));
            }
        };
        let Some(target) = application.target.clone().filter(|t| t.starts_with('/')) else {
            return Err(Failure::new(
                FailureKind::Invalid,
                format!(
                    "application {} of {} has no absolute Linux target to run",
                    application.id, added.name
                ),
            ));
        };
        let (group, members) = self.group_of(caller, &added, &usable)?;
        let _ = tx.try_send(Answer::Progress(Progress {
            done: 0,
            total: 1,
            bytes: false,
            message: format!("loading {} {}", added.name, added.version),
        }));
        added.reader.load_primary().await.map_err(|e| {
            Failure::new(
                FailureKind::Unavailable,
                format!(
                    "cannot load the primary feature block of {}: {e}",
                    added.name
                ),
            )
        })?;
        let launch_id = Uuid::new_v4();
        tracing::info!(%launch_id, user = %caller.name, application = %application.id, package = %added.name, version = %added.version, "launch");
        let server = lock(&self.publications)
            .packages()
            .into_iter()
            .find(|p| p.version_id.0 == added.version_id)
            .and_then(|p| p.servers.into_iter().next())
            .unwrap_or_default();
        let record = Launch {
            id: launch_id,
            application: application.id.clone(),
            application_version: added.version.clone(),
            package_version_id: added.version_id,
            connection_group_version_id: group.as_ref().map(|g| g.version_id),
            server,
            user: if caller.name.is_empty() {
                format!("uid {}", caller.uid)
            } else {
                caller.name.clone()
            },
            launched: chrono::Utc::now(),
            status: launch_status(0, 0),
        };
        if let Err(e) = self.reports.record_launch(&record) {
            tracing::warn!(%launch_id, error = %e, "cannot queue the launch for usage reporting");
        }
        let layer = group.as_ref().map_or(added.package_id, |g| g.id.0);
        Ok(json!({
            "launch_id": launch_id,
            "application": application.id,
            "target": target,
            "arguments": application.arguments,
            "environment": added.reader.remote().package().manifest().environment,
            "package": {
                "name": added.name, "version": added.version,
                "package_id": added.package_id, "version_id": added.version_id,
            },
            "connection_group": group.map(|g| json!({"id": g.id, "name": g.name, "version_id": g.version_id})),
            "layer": layer,
            "lowers": members.iter().map(|m| m.mountpoint.clone()).collect::<Vec<_>>(),
        }))
    }

    /// The connection group `added` runs in for `caller` (the one with the
    /// lowest priority number among those published to them that hold its
    /// package) and the added versions of its members in order; else none
    /// and `added` alone. A member pinned to a version uses that version; one
    /// of "any version" the version of that package published; an optional
    /// member that is not there is left out, a required one is an error.
    fn group_of(
        &self,
        caller: &Caller,
        added: &Arc<Added>,
        usable: &[Arc<Added>],
    ) -> Result<(Option<AnswerConnectionGroup>, Vec<Arc<Added>>), Failure> {
        let user = (!caller.is_root()).then_some(caller.name.as_str());
        let group = lock(&self.publications)
            .connection_groups(user)
            .into_iter()
            .filter(|g| g.members.iter().any(|m| m.package_id.0 == added.package_id))
            .min_by_key(|g| g.priority);
        let Some(group) = group else {
            return Ok((None, vec![added.clone()]));
        };
        let mut members = Vec::new();
        for m in &group.members {
            let chosen = if m.package_id.0 == added.package_id {
                Some(added.clone())
            } else {
                // "Any version": the newest of those added.
                usable
                    .iter()
                    .filter(|a| a.package_id == m.package_id.0)
                    .filter(|a| m.version_id.is_none_or(|v| v.0 == a.version_id))
                    .max_by_key(|a| version_key(&a.version))
                    .cloned()
            };
            match chosen {
                Some(a) => members.push(a),
                None if m.optional => {}
                None => {
                    return Err(Failure::new(
                        FailureKind::Unavailable,
                        format!(
                            "connection group {} needs package {} (a required member), which is not added here; avail client sync",
                            group.name, m.package_id
                        ),
                    ));
                }
            }
        }
        Ok((Some(group), members))
    }

    /// The added versions published to `user` (and not to the machine), or
    /// with `None` those published to the machine or added by URL, as
    /// desktop integration takes them.
    fn desktop_packages(&self, user: Option<&str>) -> Vec<PackageDesktop> {
        let mut wanted: Vec<Uuid> = lock(&self.publications)
            .packages()
            .into_iter()
            .filter(|p| match user {
                None => p.machine,
                Some(u) => !p.machine && p.users.contains(u),
            })
            .map(|p| p.version_id.0)
            .collect();
        if user.is_none() {
            wanted.extend(lock(&self.by_url).iter().map(|a| a.version_id));
        }
        let added = lock(&self.added);
        wanted
            .iter()
            .filter_map(|v| added.get(v))
            .filter(|a| a.mount.is_some())
            .map(|a| PackageDesktop {
                package_id: a.package_id,
                version_id: a.version_id,
                name: a.name.clone(),
                mount: a.mountpoint.clone(),
                applications: a.reader.remote().package().manifest().applications.clone(),
            })
            .collect()
    }

    /// Makes the machine's desktop entries match what is published to it.
    async fn sync_machine_desktop(&self) {
        let packages = self.desktop_packages(None);
        let dir = self.desktop_dir.clone();
        let bin = avail_bin();
        match tokio::task::spawn_blocking(move || crate::desktop::sync(&dir, &packages, &bin)).await
        {
            Ok(Ok(summary)) if !summary.installed.is_empty() || !summary.removed.is_empty() => {
                tracing::info!(
                    installed = summary.installed.len(),
                    removed = summary.removed.len(),
                    "desktop entries updated"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(dir = %self.desktop_dir.display(), error = %e, "cannot update the desktop entries")
            }
            Err(e) => tracing::warn!(error = %e, "cannot update the desktop entries"),
        }
    }

    /// What the caller's own desktop integration needs: the versions
    /// published to them (not to the machine), with their mounts and
    /// applications.
    fn user_desktop(&self, caller: &Caller) -> Value {
        let packages: Vec<Value> = self
            .desktop_packages(Some(&caller.name))
            .into_iter()
            .map(|p| {
                json!({
                    "package_id": p.package_id,
                    "version_id": p.version_id,
                    "name": p.name,
                    "mount": p.mount,
                    "applications": p.applications.iter().map(|a| json!({
                        "id": a.id, "target": a.target, "arguments": a.arguments,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "avail": avail_bin(), "packages": packages })
    }

    fn layers(&self, caller: &Caller, what: &str) -> Reply {
        let usable = self.usable(caller);
        let id = Uuid::parse_str(what).ok();
        let mut packages: Vec<&Arc<Added>> = usable
            .iter()
            .filter(|a| {
                Some(a.version_id) == id
                    || Some(a.package_id) == id
                    || a.name.eq_ignore_ascii_case(what)
                    || a.reader
                        .remote()
                        .package()
                        .manifest()
                        .applications
                        .iter()
                        .any(|app| {
                            app.id.eq_ignore_ascii_case(what)
                                || app.target.as_deref().and_then(|t| t.rsplit('/').next())
                                    == Some(what)
                        })
            })
            .collect();
        packages.dedup_by_key(|a| a.package_id);
        let [added] = packages.as_slice() else {
            return Err(Failure::new(
                if packages.is_empty() {
                    FailureKind::NotFound
                } else {
                    FailureKind::Invalid
                },
                format!(
                    "{what:?} names {} packages published to you; give a PackageId",
                    packages.len()
                ),
            ));
        };
        let user = (!caller.is_root()).then_some(caller.name.as_str());
        let mut layers = vec![added.package_id];
        layers.extend(
            lock(&self.publications)
                .connection_groups(user)
                .into_iter()
                .filter(|g| g.members.iter().any(|m| m.package_id.0 == added.package_id))
                .map(|g| g.id.0),
        );
        Ok(json!({ "package": added.name, "layers": layers }))
    }

    fn launch_ended(
        &self,
        caller: &Caller,
        launch_id: Uuid,
        exit_code: Option<i32>,
        signal: Option<i32>,
    ) -> Value {
        tracing::info!(%launch_id, user = %caller.name, ?exit_code, ?signal, "application exited");
        let recorded = match self.reports.record_shutdown(launch_id, SystemTime::now()) {
            Ok(known) => known,
            Err(e) => {
                tracing::warn!(%launch_id, error = %e, "cannot queue the shutdown for usage reporting");
                false
            }
        };
        json!({ "launch_id": launch_id, "recorded": recorded })
    }

    fn report_status(&self) -> Value {
        let status = self.reports.pending();
        let settings = lock(&self.settings).reporting();
        json!({
            "enabled": settings.enabled,
            "server_url": settings.server_url,
            "events": status.events,
            "bytes": status.bytes,
            "complete_records": status.complete_records,
            "running": status.running,
            "dropped": status.dropped,
            "outbox": status.outbox,
            "outbox_records": status.outbox_records,
        })
    }

    /// Sends the queued reports now to `ReportingServerURL`.
    async fn send_reports(&self) -> Reply {
        let settings = lock(&self.settings).reporting();
        if settings.server_url.is_empty() {
            return Err(Failure::new(
                FailureKind::Invalid,
                "no reporting server: avail client config set ReportingServerURL http://host:8082",
            ));
        }
        let _one = self.sending.lock().await;
        let packages: Vec<PackageState> = lock(&self.added)
            .values()
            .map(|a| PackageState {
                package_id: a.package_id,
                version_id: a.version_id,
                name: a.name.clone(),
                version: a.version.clone(),
                source: a.reader.remote().package().source().path().to_owned(),
                percent_cached: a.reader.cached().percent().round().clamp(0.0, 100.0) as u8,
            })
            .collect();
        match self
            .reports
            .send(
                &self.report_client,
                &settings.server_url,
                &self.identity,
                &packages,
                settings.block_size(),
            )
            .await
        {
            Ok(sent) => {
                Ok(json!({"reports": sent.batches, "records": sent.records, "bytes": sent.bytes}))
            }
            Err(e) => Err(Failure::new(FailureKind::Unavailable, e.to_string())),
        }
    }

    fn config_get(&self, name: Option<&str>) -> Reply {
        let settings = lock(&self.settings).clone();
        let invalid = |e: crate::settings::SettingError| Failure::new(FailureKind::NotFound, e.0);
        match name {
            Some(n) => Ok(json!({ n: settings.get(n).map_err(invalid)? })),
            None => {
                let mut all = serde_json::Map::new();
                for n in NAMES {
                    all.insert(
                        n.to_owned(),
                        Value::String(settings.get(n).map_err(invalid)?),
                    );
                }
                Ok(Value::Object(all))
            }
        }
    }

    fn config_set(&self, name: &str, value: &str) -> Reply {
        let mut settings = lock(&self.settings);
        let mut next = settings.clone();
        let name = next
            .set(name, value)
            .map_err(|e| Failure::new(FailureKind::Invalid, e.0))?;
        if name == "PackageInstallationRoot" && self.mount_root_override.is_some() {
            return Err(Failure::new(
                FailureKind::Invalid,
                "PackageInstallationRoot is set by AVAIL_CLIENT_MOUNT_ROOT (or --mount-root) for this daemon",
            ));
        }
        next.save(&self.state_dir.join("config.toml"))
            .map_err(|e| internal(format!("cannot save the settings: {e}")))?;
        if name == "ReportingDataCacheLimit"
            && let Err(e) = self.reports.set_cache_limit(next.reporting().cache_limit())
        {
            tracing::warn!(error = %e, "cannot apply the report cache limit");
        }
        *settings = next;
        let when = match name {
            "CacheQuota" | "SharedContentStoreMemory" => "when the daemon restarts",
            "AutoLoad" | "RefreshInterval" => "now",
            n if n.starts_with("Reporting") => "now",
            _ => "for package versions added from now on",
        };
        Ok(
            json!({ "name": name, "value": settings.get(name).map_err(|e| internal(e.0))?, "takes_effect": when }),
        )
    }
}

/// The `avail` binary desktop entries run (this daemon's own).
fn avail_bin() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "avail".into())
}

/// A dotted version as numbers, for ordering (`1.10.0.0` after `1.9.0.0`).
fn version_key(version: &str) -> Vec<u64> {
    version.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Unmounts and forgets one added version (its blocks stay cached, unpinned).
async fn unmount_added(added: Arc<Added>) {
    let name = format!("{} {}", added.name, added.version);
    let result = tokio::task::spawn_blocking(move || {
        added.reader.release();
        let point = added.mountpoint.clone();
        // The last reference unmounts (Mount's drop) if a request still holds one.
        let result = match Arc::try_unwrap(added) {
            Ok(mut a) => a.mount.take().map_or(Ok(()), Mount::unmount),
            Err(_) => Ok(()),
        };
        let _ = std::fs::remove_dir(&point);
        if let Some(parent) = point.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        result
    })
    .await;
    match result {
        Ok(Ok(())) => tracing::info!(package = %name, "package version removed"),
        Ok(Err(e)) => tracing::warn!(package = %name, error = %e, "unmounting failed"),
        Err(e) => tracing::warn!(package = %name, error = %e, "unmounting failed"),
    }
}

/// Refreshes at start and then every `RefreshInterval` seconds (re-read
/// each time; 0 means only at start).
async fn refresh_loop(daemon: Arc<Daemon>) {
    daemon.refresh(None, None).await;
    let mut waited = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        waited += 1;
        let interval = lock(&daemon.settings).refresh_interval;
        if interval > 0 && waited >= interval {
            waited = 0;
            daemon.refresh(None, None).await;
        }
    }
}

/// Sends the usage reports at the times the `Reporting*` settings give
/// (re-read every minute), when reporting is enabled and a server is set.
async fn report_loop(daemon: Arc<Daemon>) {
    let mut planned: Option<(crate::reporting::ReportingSettings, SystemTime)> = None;
    loop {
        let settings = lock(&daemon.settings).reporting();
        let now = SystemTime::now();
        let due = match &planned {
            Some((s, at)) if *s == settings => *at,
            _ => {
                let at = next_send_time_local(&settings, now);
                planned = Some((settings.clone(), at));
                at
            }
        };
        if now >= due {
            planned = None;
            if settings.enabled && !settings.server_url.is_empty() {
                match daemon.send_reports().await {
                    Ok(sent) => tracing::info!(%sent, "usage reports sent"),
                    Err(e) => {
                        tracing::warn!(error = %e.message, "usage reports not sent; kept for the next time")
                    }
                }
            }
        }
        let wait = due
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::time::sleep(wait).await;
    }
}

/// Starts background loads as `AutoLoad` says (never in Shared Content Store
/// mode): 2 every added version, 1 those read from.
async fn autoload_loop(daemon: Arc<Daemon>) {
    loop {
        tokio::time::sleep(AUTOLOAD_EVERY).await;
        let auto_load = lock(&daemon.settings).auto_load;
        if auto_load == 0 {
            continue;
        }
        let added: Vec<Arc<Added>> = lock(&daemon.added).values().cloned().collect();
        for a in added {
            let wanted = !a.reader.is_shared_content_store()
                && (auto_load == 2 || a.read_seen.load(Ordering::Relaxed));
            if wanted && !a.loading.swap(true, Ordering::Relaxed) {
                tokio::spawn(async move {
                    match a.reader.load_all().await {
                        Ok(s) => {
                            tracing::info!(package = %a.name, fetched_blocks = s.fetched_blocks, "loaded in the background")
                        }
                        Err(e) => {
                            tracing::warn!(package = %a.name, error = %e, "background load failed; tried again later");
                            a.loading.store(false, Ordering::Relaxed);
                        }
                    }
                });
            }
        }
    }
}
