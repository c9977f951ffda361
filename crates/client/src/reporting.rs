//! The client's usage reporting (App-V's `Reporting*` settings, MS-VAPR §3.2
//! SetReport): launches and shutdowns of virtual applications are queued
//! durably on disk and sent to the reporting server as SetReport bodies.
//!
//! # Settings
//!
//! [`ReportingSettings`] carries App-V 5.1's seven settings with its defaults:
//! reporting off, no server, sending at 22:00 local time (`ReportingStartTime`),
//! every day (`ReportingInterval`), after a random delay of up to 30 minutes
//! (`ReportingRandomDelay`), a cache of at most 20 MB (`ReportingDataCacheLimit`,
//! which App-V gives in MB, 0-1024) and bodies of at most 65536 bytes
//! (`ReportingDataBlockSize`, at least 1024). [`next_send_time`] turns the
//! first three into the next moment to send.
//!
//! # The queue on disk
//!
//! ```text
//! DIR/events/<seq>.json     one event (a launch or a shutdown), seq = 20 digits, increasing
//! DIR/outbox/<report>.json  at most one batch: its report id, the rendered body and the seqs it covers
//! DIR/dropped.json          {"dropped": n, "covers": [seq…]}: records lost to the cache limit or damage
//! ```
//!
//! Every file is written whole or not at all (a temporary file, fsynced,
//! renamed, the directory fsynced: [`crate::state::write_atomically`]), mode
//! 0600, so once [`ReportQueue::record_launch`] or
//! [`ReportQueue::record_shutdown`] returns `Ok` the event survives a crash.
//!
//! # Sending, and why a crash neither loses nor duplicates a launch
//!
//! A record (a launch and its shutdown) is sent only once it is complete, in
//! the order of the launches. [`ReportQueue::send`] first posts the batch in
//! the outbox, if any; otherwise it builds one from the oldest complete
//! records (as many as fit in the block size, at least one), writes it to the
//! outbox durably and only *then* deletes the events it covers. It posts the
//! body (UTF-16LE without a BOM or an XML declaration, as App-V does) with
//! `Avail-Report-Id: <report id>`; only a `200` deletes the batch from the
//! outbox. Any other answer (a redirect too: App-V's 307 bug), a connection
//! error or a timeout keeps it and ends the send with a [`SendError`].
//!
//! * A crash before the outbox file is renamed into place leaves the events
//!   as they were and nothing was posted.
//! * A crash after that and before the covered events are deleted is repaired
//!   by [`ReportQueue::open`], which deletes every event an outbox batch
//!   covers before it reads the rest: no event is in two batches.
//! * A crash while posting or before the outbox file is deleted makes the next
//!   send post the same body with the same report id, which the server counts
//!   once.
//!
//! The cache limit counts the events' bytes on disk. Past it the oldest
//! complete records are dropped first (then the oldest unfinished launches),
//! never the event just recorded; each dropped record, and each event file
//! found damaged, adds one to the persisted `dropped` counter. The counter and
//! the seqs being dropped are saved before the files go, so a crash in between
//! neither loses the count nor counts twice.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::state::write_atomically;

/// The HTTP header naming a report's id (the server dedups on it).
pub const REPORT_ID_HEADER: &str = "Avail-Report-Id";
/// The Content-Type of a SetReport body.
pub const CONTENT_TYPE: &str = "text/xml; charset=utf-16";

/// App-V's default `ReportingStartTime`: 22:00.
pub const DEFAULT_START_HOUR: u8 = 22;
/// App-V's default `ReportingInterval`: every day.
pub const DEFAULT_INTERVAL_DAYS: u32 = 1;
/// App-V's default `ReportingRandomDelay`: up to 30 minutes.
pub const DEFAULT_RANDOM_DELAY_MINUTES: u32 = 30;
/// App-V's default `ReportingDataCacheLimit`: 20 MB.
pub const DEFAULT_CACHE_LIMIT_BYTES: u64 = 20 << 20;
/// App-V's default `ReportingDataBlockSize`: 65536 bytes.
pub const DEFAULT_BLOCK_SIZE_BYTES: u64 = 65536;
/// The largest `ReportingDataCacheLimit` App-V accepts: 1024 MB.
pub const MAX_CACHE_LIMIT_BYTES: u64 = 1024 << 20;
/// The smallest `ReportingDataBlockSize` App-V accepts.
pub const MIN_BLOCK_SIZE_BYTES: u64 = 1024;
/// The largest block this client builds (App-V has no upper bound; a body is
/// held in memory and servers bound what they take: Avail's role 4 MiB by
/// default).
pub const MAX_BLOCK_SIZE_BYTES: u64 = 64 << 20;

/// The largest event file read or written.
pub const MAX_EVENT_BYTES: u64 = 64 << 10;
/// The most events kept (past it the oldest are dropped as for the cache limit).
pub const MAX_EVENTS: usize = 1 << 20;
/// The largest outbox file read (a block plus one oversized record, JSON-escaped).
const MAX_OUTBOX_BYTES: u64 = 4 * MAX_BLOCK_SIZE_BYTES;
/// The largest `dropped.json` read.
const MAX_DROPPED_BYTES: u64 = 64 << 20;
/// The most characters of one attribute value sent (the server's bound).
const MAX_VALUE_CHARS: usize = 4096;
/// Permission bits of every file written.
const FILE_MODE: u32 = 0o600;

/// App-V's reporting settings (`Get-AppvClientConfiguration`), with its
/// defaults. Sizes are in bytes here (App-V gives the cache limit in MB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportingSettings {
    /// `ReportingEnabled`: collect and send (default off).
    pub enabled: bool,
    /// `ReportingServerURL`: where reports are posted (default none).
    pub server_url: String,
    /// `ReportingStartTime`: the local hour (0-23) sending starts at (22).
    pub start_time_hour: u8,
    /// `ReportingInterval`: days between sends (1).
    pub interval_days: u32,
    /// `ReportingRandomDelay`: the most minutes a send waits after the start
    /// hour, chosen at random each time (30).
    pub random_delay_minutes: u32,
    /// `ReportingDataCacheLimit` in bytes (20 MB); the oldest records roll
    /// over past it.
    pub data_cache_limit_bytes: u64,
    /// `ReportingDataBlockSize`: the most bytes of one SetReport body (65536).
    pub data_block_size_bytes: u64,
}

impl Default for ReportingSettings {
    fn default() -> Self {
        ReportingSettings {
            enabled: false,
            server_url: String::new(),
            start_time_hour: DEFAULT_START_HOUR,
            interval_days: DEFAULT_INTERVAL_DAYS,
            random_delay_minutes: DEFAULT_RANDOM_DELAY_MINUTES,
            data_cache_limit_bytes: DEFAULT_CACHE_LIMIT_BYTES,
            data_block_size_bytes: DEFAULT_BLOCK_SIZE_BYTES,
        }
    }
}

impl ReportingSettings {
    /// Checks the values against App-V's ranges; the message names the
    /// setting at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.start_time_hour > 23 {
            return Err(format!(
                "ReportingStartTime must be an hour of 0-23, not {}",
                self.start_time_hour
            ));
        }
        if self.interval_days == 0 {
            return Err("ReportingInterval must be at least 1 day".into());
        }
        if self.data_cache_limit_bytes > MAX_CACHE_LIMIT_BYTES {
            return Err(format!(
                "ReportingDataCacheLimit must be at most 1024 MB, not {} bytes",
                self.data_cache_limit_bytes
            ));
        }
        if self.data_block_size_bytes < MIN_BLOCK_SIZE_BYTES {
            return Err(format!(
                "ReportingDataBlockSize must be at least {MIN_BLOCK_SIZE_BYTES} bytes, not {}",
                self.data_block_size_bytes
            ));
        }
        if self.enabled && !self.server_url.is_empty() {
            let lower = self.server_url.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                return Err(format!(
                    "ReportingServerURL must be an http or https URL, not {:?}",
                    self.server_url
                ));
            }
        }
        Ok(())
    }

    /// The block size used: the setting within
    /// [`MIN_BLOCK_SIZE_BYTES`]..=[`MAX_BLOCK_SIZE_BYTES`].
    pub fn block_size(&self) -> u64 {
        self.data_block_size_bytes
            .clamp(MIN_BLOCK_SIZE_BYTES, MAX_BLOCK_SIZE_BYTES)
    }

    /// The cache limit used: the setting, at most [`MAX_CACHE_LIMIT_BYTES`].
    pub fn cache_limit(&self) -> u64 {
        self.data_cache_limit_bytes.min(MAX_CACHE_LIMIT_BYTES)
    }
}

/// The next moment to send, in `now`'s time zone: the first start hour
/// (`ReportingStartTime`, on the days of the `ReportingInterval` grid, which is
/// anchored at 0001-01-01 so that it needs no state) strictly after `now`, plus
/// a delay of `random % (ReportingRandomDelay × 60 + 1)` seconds. Called again
/// after a send (with `now` past the start hour) it gives the next slot; a
/// slot missed while the machine was off is not caught up, as with App-V's
/// scheduled task. A start hour that does not exist on a day (a DST gap) is
/// taken an hour later.
pub fn next_send_time<Tz: TimeZone>(
    settings: &ReportingSettings,
    now: &DateTime<Tz>,
    random: u64,
) -> DateTime<Tz> {
    use chrono::Datelike as _;
    let hour = u32::from(settings.start_time_hour.min(23));
    let interval = i64::from(settings.interval_days.max(1));
    let tz = now.timezone();
    let mut day = now.date_naive();
    let slot = loop {
        if i64::from(day.num_days_from_ce()).rem_euclid(interval) == 0 {
            let naive = day.and_time(NaiveTime::from_hms_opt(hour, 0, 0).unwrap_or_default());
            let local = tz.from_local_datetime(&naive).earliest().or_else(|| {
                tz.from_local_datetime(&(naive + chrono::Duration::hours(1)))
                    .earliest()
            });
            if let Some(slot) = local.filter(|s| s > now) {
                break slot;
            }
        }
        match day.checked_add_days(Days::new(1)) {
            Some(next) => day = next,
            None => break now.clone(),
        }
    };
    let span = u64::from(settings.random_delay_minutes) * 60 + 1;
    slot + chrono::Duration::seconds((random % span) as i64)
}

/// [`next_send_time`] in the machine's local time zone with a random delay.
pub fn next_send_time_local(settings: &ReportingSettings, now: SystemTime) -> SystemTime {
    let now: DateTime<chrono::Local> = now.into();
    let random = Uuid::new_v4().as_u64_pair().0;
    next_send_time(settings, &now, random).into()
}

/// An HTTP client fit for [`ReportQueue::send`]: it never follows a redirect
/// (a redirect is not success) and gives up after `timeout`.
pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(30)))
        .timeout(timeout)
        .build()
}

/// A `LaunchStatus` value (`Status1-Status2`, implementation-specific): `0-0`
/// for a launch that worked.
pub fn launch_status(first: u32, second: u32) -> String {
    format!("{first:X}-{second:X}")
}

/// One launch of a virtual application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// The launch's own id, which its shutdown names.
    pub id: Uuid,
    /// The application's name (`APP_RECORD Name`).
    pub application: String,
    /// Its version (`Ver`): up to four dotted numbers, padded with zeros
    /// (anything else is sent as `0.0.0.0`).
    pub application_version: String,
    /// The package's VersionId (`PackageVersion`).
    pub package_version_id: Uuid,
    /// The connection group's VersionId when launched in one.
    pub connection_group_version_id: Option<Uuid>,
    /// The publishing server the package came from (`Server`).
    pub server: String,
    /// The user who launched it (`User`, e.g. `CORP\alice`).
    pub user: String,
    /// When (UTC).
    pub launched: DateTime<Utc>,
    /// `LaunchStatus`, two hexadecimal numbers joined by `-` ([`launch_status`]).
    pub status: String,
}

/// A package as listed in a report (`PKG_DATA`), with its cached percentage at
/// send time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageState {
    /// PackageId (`Guid`).
    pub package_id: Uuid,
    /// VersionId (`VerGuid`).
    pub version_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its version (four dotted numbers; left out otherwise).
    pub version: String,
    /// Where it was added from (an URL); left out when empty.
    pub source: String,
    /// How much of it is cached, 0-100.
    pub percent_cached: u8,
}

/// The client machine as `CLIENT_DATA` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientIdentity {
    /// The machine's name (`Host`, an FQDN in App-V).
    pub host: String,
    /// The client's version (`Ver`, four dotted numbers of 0-65535).
    pub version: String,
    /// `x64` or `x86` (the only values MS-VAPR and the server allow).
    pub processor_arch: String,
    /// `OSVer`: major.minor.
    pub os_version: String,
    /// `OSType`: `Client` or `Server`.
    pub os_type: String,
}

impl ClientIdentity {
    /// This machine: `ProcessorArch` is `x64` on a 64-bit machine (x86_64,
    /// aarch64, …) and `x86` on a 32-bit one; `OSVer` is the kernel's
    /// major.minor (`6.8` for `6.8.0-45-generic`, from
    /// `/proc/sys/kernel/osrelease`); `OSType` is `Client` (Linux draws no
    /// client/server line; the daemon may override it); `OSServicePack` is
    /// always 0.
    pub fn detect(host: &str, client_version: &str) -> ClientIdentity {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        ClientIdentity {
            host: host.to_owned(),
            version: client_version.to_owned(),
            processor_arch: if cfg!(target_pointer_width = "64") {
                "x64"
            } else {
                "x86"
            }
            .to_owned(),
            os_version: os_version_of(&release),
            os_type: "Client".to_owned(),
        }
    }
}

/// `major.minor` of a kernel release (`0.0` when unreadable).
fn os_version_of(release: &str) -> String {
    let number = |s: Option<&str>| {
        s.map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .filter(|d| !d.is_empty() && d.parse::<u32>().is_ok())
        .unwrap_or_else(|| "0".to_owned())
    };
    let mut parts = release.trim().split('.');
    let major = number(parts.next());
    let minor = number(parts.next());
    format!("{major}.{minor}")
}

/// What the queue holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStatus {
    /// Event files in `events/`.
    pub events: usize,
    /// Their bytes (what the cache limit counts).
    pub bytes: u64,
    /// Launches that have shut down, ready to send.
    pub complete_records: usize,
    /// Launches still running.
    pub running: usize,
    /// Records lost to the cache limit or to damage since the queue was made.
    pub dropped: u64,
    /// The report id of the batch waiting in the outbox.
    pub outbox: Option<Uuid>,
    /// The records that batch holds.
    pub outbox_records: usize,
}

/// What a send delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendSummary {
    /// Reports the server answered `200` to.
    pub batches: usize,
    /// Application records in them.
    pub records: usize,
    /// Their body bytes.
    pub bytes: u64,
}

/// Why a send stopped; whatever was not acknowledged is kept. `sent` tells
/// what was delivered before.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No answer: the connection failed or timed out.
    #[error(
        "the reporting server {url} did not answer report {report_id}: {source}; the report is kept"
    )]
    Unreachable {
        /// The URL posted to.
        url: String,
        /// The report.
        report_id: Uuid,
        /// The transport error.
        source: reqwest::Error,
        /// Delivered before.
        sent: SendSummary,
    },
    /// An answer other than `200` (a redirect included).
    #[error(
        "the reporting server {url} answered {status} to report {report_id}{message}; the report is kept"
    )]
    Refused {
        /// The URL posted to.
        url: String,
        /// The report.
        report_id: Uuid,
        /// The HTTP status.
        status: u16,
        /// What the server said (its body's start) or why it is no success.
        message: String,
        /// Delivered before.
        sent: SendSummary,
    },
    /// The queue's files could not be read or written.
    #[error("the reporting queue failed: {source}")]
    Io {
        /// The error.
        source: io::Error,
        /// Delivered before.
        sent: SendSummary,
    },
}

impl SendError {
    /// What was delivered before the failure.
    pub fn sent(&self) -> SendSummary {
        match self {
            SendError::Unreachable { sent, .. }
            | SendError::Refused { sent, .. }
            | SendError::Io { sent, .. } => *sent,
        }
    }
}

/// One event file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Event {
    Launch(Launch),
    Shutdown { launch: Uuid, at: DateTime<Utc> },
}

/// The outbox file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Batch {
    report_id: Uuid,
    /// The event seqs this batch covers.
    covers: Vec<u64>,
    records: usize,
    /// Whether the body lists packages.
    packages: bool,
    /// The body (sent as UTF-16LE).
    body: String,
}

/// `dropped.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Dropped {
    dropped: u64,
    /// The seqs of the last drop, deleted again on open.
    covers: Vec<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    launch: Uuid,
    is_launch: bool,
    size: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    launch_seq: u64,
    shutdown: Option<(u64, DateTime<Utc>)>,
}

#[derive(Debug)]
struct State {
    events: BTreeMap<u64, Meta>,
    launches: HashMap<Uuid, Slot>,
    bytes: u64,
    next_seq: u64,
    dropped: u64,
    limit: u64,
    outbox: Option<Batch>,
}

impl State {
    /// Indexes the launch event `seq` (`size` bytes on disk).
    fn add_launch(&mut self, seq: u64, launch: Uuid, size: u64) {
        self.launches.insert(
            launch,
            Slot {
                launch_seq: seq,
                shutdown: None,
            },
        );
        self.index(seq, launch, true, size);
    }

    /// Indexes the shutdown event `seq` of `launch`, completing its record
    /// when the launch is queued.
    fn add_shutdown(&mut self, seq: u64, launch: Uuid, at: DateTime<Utc>, size: u64) {
        if let Some(slot) = self.launches.get_mut(&launch) {
            slot.shutdown = Some((seq, at));
        }
        self.index(seq, launch, false, size);
    }

    fn index(&mut self, seq: u64, launch: Uuid, is_launch: bool, size: u64) {
        self.events.insert(
            seq,
            Meta {
                launch,
                is_launch,
                size,
            },
        );
        self.bytes += size;
    }
}

struct Inner {
    dir: PathBuf,
    state: Mutex<State>,
    sending: tokio::sync::Mutex<()>,
}

/// The durable queue of launches and shutdowns waiting to be reported (see
/// the module documentation). Cheap to clone; clones share the queue.
#[derive(Clone)]
pub struct ReportQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ReportQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportQueue")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.into())
}

fn event_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Reads at most `max` bytes of `path`; `None` when it is larger.
fn read_bounded(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

fn make_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Removes temporary files a crash left in `dir`.
fn remove_temporaries(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

impl ReportQueue {
    /// Opens (creating) the queue in `dir`, with a cache limit of `limit`
    /// bytes, and repairs what a crash left: temporary files go, events an
    /// outbox batch covers or the last drop named are deleted, damaged event
    /// files are dropped and counted, and the cache limit is applied.
    pub fn open(dir: &Path, limit: u64) -> io::Result<ReportQueue> {
        make_dir(dir)?;
        let events_dir = dir.join("events");
        let outbox_dir = dir.join("outbox");
        make_dir(&events_dir)?;
        make_dir(&outbox_dir)?;
        remove_temporaries(dir)?;
        remove_temporaries(&events_dir)?;
        remove_temporaries(&outbox_dir)?;

        let dropped_path = dir.join("dropped.json");
        let dropped: Dropped = match read_bounded(&dropped_path, MAX_DROPPED_BYTES) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::error!(path = %dropped_path.display(), error = %e, "the dropped-records counter is damaged; starting it again at 0");
                Dropped::default()
            }),
            Ok(None) => {
                tracing::error!(path = %dropped_path.display(), "the dropped-records counter is too large; starting it again at 0");
                Dropped::default()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Dropped::default(),
            Err(e) => return Err(e),
        };

        // The outbox: at most one batch by construction.
        let mut outbox: Option<Batch> = None;
        let mut max_seq = dropped.covers.iter().copied().max().unwrap_or(0);
        let mut names: Vec<_> = std::fs::read_dir(&outbox_dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        for name in names {
            let path = outbox_dir.join(&name);
            let batch = read_bounded(&path, MAX_OUTBOX_BYTES)?
                .and_then(|bytes| serde_json::from_slice::<Batch>(&bytes).ok())
                .filter(|b| format!("{}.json", b.report_id) == name);
            match batch {
                Some(batch) if outbox.is_none() => {
                    max_seq = max_seq.max(batch.covers.iter().copied().max().unwrap_or(0));
                    outbox = Some(batch);
                }
                Some(batch) => {
                    // Not made by this code; keep it aside rather than lose it.
                    tracing::error!(path = %path.display(), report = %batch.report_id, "a second outbox batch; set aside");
                    std::fs::rename(&path, path.with_extension("extra"))?;
                }
                None => {
                    tracing::error!(path = %path.display(), "a damaged outbox batch; set aside, its records are lost");
                    std::fs::rename(&path, path.with_extension("damaged"))?;
                }
            }
        }

        // Events already covered by the outbox or the last drop.
        let mut gone: Vec<u64> = dropped.covers.clone();
        if let Some(batch) = &outbox {
            gone.extend(&batch.covers);
        }
        let mut removed_any = false;
        for seq in gone {
            match std::fs::remove_file(events_dir.join(event_name(seq))) {
                Ok(()) => removed_any = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if removed_any {
            sync_dir(&events_dir)?;
        }

        // The events, oldest first.
        let mut seqs: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(&events_dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            let seq = name
                .strip_suffix(".json")
                .filter(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok());
            match seq {
                Some(seq) => seqs.push(seq),
                None => tracing::warn!(file = %name, "not an event file; ignored"),
            }
        }
        seqs.sort_unstable();
        max_seq = max_seq.max(seqs.last().copied().unwrap_or(0));

        let mut state = State {
            events: BTreeMap::new(),
            launches: HashMap::new(),
            bytes: 0,
            next_seq: max_seq + 1,
            dropped: dropped.dropped,
            limit,
            outbox,
        };
        let queue = ReportQueue {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                state: Mutex::new(State {
                    events: BTreeMap::new(),
                    launches: HashMap::new(),
                    bytes: 0,
                    next_seq: 0,
                    dropped: 0,
                    limit,
                    outbox: None,
                }),
                sending: tokio::sync::Mutex::new(()),
            }),
        };

        let mut damaged: Vec<u64> = Vec::new();
        let mut orphans: Vec<u64> = Vec::new();
        for seq in seqs {
            let path = events_dir.join(event_name(seq));
            let event = match read_bounded(&path, MAX_EVENT_BYTES) {
                Ok(Some(bytes)) => serde_json::from_slice::<Event>(&bytes)
                    .map(|e| (e, bytes.len() as u64))
                    .map_err(|e| e.to_string()),
                Ok(None) => Err(format!("larger than {MAX_EVENT_BYTES} bytes")),
                Err(e) => Err(e.to_string()),
            };
            match event {
                Ok((Event::Launch(launch), size)) => {
                    if state.launches.contains_key(&launch.id) {
                        tracing::warn!(path = %path.display(), launch = %launch.id, "a launch recorded twice; the copy is dropped");
                        damaged.push(seq);
                        continue;
                    }
                    state.add_launch(seq, launch.id, size);
                }
                Ok((Event::Shutdown { launch, at }, size)) => {
                    match state.launches.get_mut(&launch) {
                        Some(slot) if slot.shutdown.is_none() => {
                            state.add_shutdown(seq, launch, at, size);
                        }
                        // Its launch was dropped (or it repeats): nothing to report.
                        _ => orphans.push(seq),
                    }
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "a damaged reporting event; dropped and counted");
                    damaged.push(seq);
                }
            }
        }
        for seq in &orphans {
            let _ = std::fs::remove_file(events_dir.join(event_name(*seq)));
        }
        {
            let mut guard = queue.lock();
            *guard = state;
            if !damaged.is_empty() {
                let count = damaged.len() as u64;
                queue.drop_events(&mut guard, damaged, count)?;
            }
            queue.enforce_limit(&mut guard, None)?;
        }
        Ok(queue)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn events_dir(&self) -> PathBuf {
        self.inner.dir.join("events")
    }

    fn outbox_path(&self, report_id: Uuid) -> PathBuf {
        self.inner
            .dir
            .join("outbox")
            .join(format!("{report_id}.json"))
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Changes the cache limit (applying it at once).
    pub fn set_cache_limit(&self, limit: u64) -> io::Result<()> {
        let mut state = self.lock();
        state.limit = limit;
        self.enforce_limit(&mut state, None)
    }

    /// What the queue holds.
    pub fn pending(&self) -> QueueStatus {
        let state = self.lock();
        let complete = state
            .launches
            .values()
            .filter(|s| s.shutdown.is_some())
            .count();
        QueueStatus {
            events: state.events.len(),
            bytes: state.bytes,
            complete_records: complete,
            running: state.launches.len() - complete,
            dropped: state.dropped,
            outbox: state.outbox.as_ref().map(|b| b.report_id),
            outbox_records: state.outbox.as_ref().map_or(0, |b| b.records),
        }
    }

    /// Records a launch durably (fsynced before this returns). A launch id
    /// already queued is refused (`AlreadyExists`); an empty application or
    /// user, a malformed status or an event over [`MAX_EVENT_BYTES`] is
    /// refused (`InvalidInput`).
    pub fn record_launch(&self, launch: &Launch) -> io::Result<()> {
        if launch.application.trim().is_empty() {
            return Err(invalid("a launch needs an application name"));
        }
        if launch.user.trim().is_empty() {
            return Err(invalid("a launch needs a user"));
        }
        if !valid_status(&launch.status) {
            return Err(invalid(format!(
                "LaunchStatus must be two hexadecimal numbers joined by '-', not {:?}",
                launch.status
            )));
        }
        let bytes = serde_json::to_vec(&Event::Launch(launch.clone())).map_err(io::Error::other)?;
        if bytes.len() as u64 > MAX_EVENT_BYTES {
            return Err(invalid(format!(
                "a launch event is larger than {MAX_EVENT_BYTES} bytes"
            )));
        }
        let mut state = self.lock();
        if state.launches.contains_key(&launch.id) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("launch {} is already recorded", launch.id),
            ));
        }
        let seq = state.next_seq;
        write_atomically(&self.events_dir().join(event_name(seq)), &bytes, FILE_MODE)?;
        state.next_seq += 1;
        state.add_launch(seq, launch.id, bytes.len() as u64);
        // The launch is durable now: a failure to apply the limit must not
        // make the caller believe otherwise (it is applied again later).
        if let Err(e) = self.enforce_limit(&mut state, Some(seq)) {
            tracing::warn!(error = %e, "could not apply the reporting cache limit");
        }
        Ok(())
    }

    /// Records the shutdown of launch `launch_id` durably, which completes its
    /// record. `Ok(false)` when no such launch is queued (never recorded,
    /// dropped, or already shut down): nothing is written.
    pub fn record_shutdown(
        &self,
        launch_id: Uuid,
        at: impl Into<DateTime<Utc>>,
    ) -> io::Result<bool> {
        let at = at.into();
        let mut state = self.lock();
        let Some(slot) = state.launches.get(&launch_id).copied() else {
            tracing::debug!(launch = %launch_id, "shutdown of a launch not queued; ignored");
            return Ok(false);
        };
        if slot.shutdown.is_some() {
            return Ok(false);
        }
        let bytes = serde_json::to_vec(&Event::Shutdown {
            launch: launch_id,
            at,
        })
        .map_err(io::Error::other)?;
        let seq = state.next_seq;
        write_atomically(&self.events_dir().join(event_name(seq)), &bytes, FILE_MODE)?;
        state.next_seq += 1;
        state.add_shutdown(seq, launch_id, at, bytes.len() as u64);
        if let Err(e) = self.enforce_limit(&mut state, Some(seq)) {
            tracing::warn!(error = %e, "could not apply the reporting cache limit");
        }
        Ok(true)
    }

    /// Drops the oldest records while the events exceed the limit (bytes) or
    /// [`MAX_EVENTS`]; never the record of `keep`.
    fn enforce_limit(&self, state: &mut State, keep: Option<u64>) -> io::Result<()> {
        let over = |s: &State, freed: u64, count: usize| {
            s.bytes - freed > s.limit || s.events.len() - count > MAX_EVENTS
        };
        if !over(state, 0, 0) {
            return Ok(());
        }
        let kept_launch = keep.and_then(|k| state.events.get(&k)).map(|m| m.launch);
        let mut victims: Vec<u64> = Vec::new();
        let mut freed = 0u64;
        let mut records = 0u64;
        // Complete records first, then unfinished launches; oldest first.
        for complete in [true, false] {
            for (seq, meta) in &state.events {
                if !over(state, freed, victims.len()) {
                    break;
                }
                if !meta.is_launch || Some(meta.launch) == kept_launch {
                    continue;
                }
                let Some(slot) = state.launches.get(&meta.launch) else {
                    continue;
                };
                if slot.shutdown.is_some() != complete {
                    continue;
                }
                victims.push(*seq);
                freed += meta.size;
                if let Some((shutdown, _)) = slot.shutdown {
                    victims.push(shutdown);
                    freed += state.events.get(&shutdown).map_or(0, |m| m.size);
                }
                records += 1;
            }
        }
        if victims.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            records,
            limit = state.limit,
            "the reporting cache is full; the oldest records are dropped"
        );
        self.drop_events(state, victims, records)
    }

    /// Deletes `seqs` (and their records), adding `count` to the persisted
    /// counter first.
    fn drop_events(&self, state: &mut State, seqs: Vec<u64>, count: u64) -> io::Result<()> {
        let record = Dropped {
            dropped: state.dropped + count,
            covers: seqs.clone(),
        };
        let bytes = serde_json::to_vec(&record).map_err(io::Error::other)?;
        write_atomically(&self.inner.dir.join("dropped.json"), &bytes, FILE_MODE)?;
        state.dropped = record.dropped;
        let events_dir = self.events_dir();
        for seq in &seqs {
            if let Some(meta) = state.events.remove(seq) {
                state.bytes -= meta.size;
                if meta.is_launch {
                    state.launches.remove(&meta.launch);
                }
            }
            match std::fs::remove_file(events_dir.join(event_name(*seq))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(seq, error = %e, "could not delete a dropped event; it goes at the next open");
                }
                _ => {}
            }
        }
        sync_dir(&events_dir)
    }

    /// The batch to post next: the outbox's, else a new one built from the
    /// oldest complete records (written to the outbox before their events
    /// are deleted). `None` when there is nothing to send.
    fn prepare(
        &self,
        identity: &ClientIdentity,
        packages: Option<&[PackageState]>,
        block_size: u64,
    ) -> io::Result<Option<Batch>> {
        let mut state = self.lock();
        if let Some(batch) = &state.outbox {
            return Ok(Some(batch.clone()));
        }
        let complete: Vec<(u64, Uuid)> = {
            let mut v: Vec<(u64, Uuid)> = state
                .launches
                .iter()
                .filter(|(_, s)| s.shutdown.is_some())
                .map(|(id, s)| (s.launch_seq, *id))
                .collect();
            v.sort_unstable();
            v
        };
        if complete.is_empty() && packages.is_none() {
            return Ok(None);
        }
        let mut body = render_header(identity, packages.unwrap_or(&[]));
        let mut size = utf16_len(&body) + utf16_len(FOOTER);
        let mut covers = Vec::new();
        let mut records = 0usize;
        let mut damaged = Vec::new();
        let events_dir = self.events_dir();
        for (launch_seq, id) in complete {
            let Some((shutdown_seq, at)) = state.launches.get(&id).and_then(|s| s.shutdown) else {
                continue;
            };
            let path = events_dir.join(event_name(launch_seq));
            let launch = match read_bounded(&path, MAX_EVENT_BYTES) {
                Ok(Some(bytes)) => match serde_json::from_slice::<Event>(&bytes) {
                    Ok(Event::Launch(launch)) if launch.id == id => Some(launch),
                    _ => None,
                },
                Ok(None) => None,
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            let Some(launch) = launch else {
                tracing::warn!(path = %path.display(), "a damaged reporting event; dropped and counted");
                damaged.push(launch_seq);
                damaged.push(shutdown_seq);
                continue;
            };
            let record = render_record(&launch, at);
            let len = utf16_len(&record);
            if records > 0 && size + len > block_size {
                break;
            }
            body.push_str(&record);
            size += len;
            covers.push(launch_seq);
            covers.push(shutdown_seq);
            records += 1;
        }
        if !damaged.is_empty() {
            let count = (damaged.len() / 2) as u64;
            self.drop_events(&mut state, damaged, count)?;
        }
        if records == 0 && packages.is_none() {
            return Ok(None);
        }
        body.push_str(FOOTER);
        let batch = Batch {
            report_id: Uuid::new_v4(),
            covers,
            records,
            packages: packages.is_some(),
            body,
        };
        let bytes = serde_json::to_vec(&batch).map_err(io::Error::other)?;
        // The batch is durable before any event it covers goes.
        write_atomically(&self.outbox_path(batch.report_id), &bytes, FILE_MODE)?;
        for seq in &batch.covers {
            if let Some(meta) = state.events.remove(seq) {
                state.bytes -= meta.size;
                if meta.is_launch {
                    state.launches.remove(&meta.launch);
                }
            }
            match std::fs::remove_file(events_dir.join(event_name(*seq))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(seq, error = %e, "could not delete a batched event; it goes at the next open");
                }
                _ => {}
            }
        }
        if let Err(e) = sync_dir(&events_dir) {
            tracing::warn!(error = %e, "could not sync the events directory");
        }
        state.outbox = Some(batch.clone());
        Ok(Some(batch))
    }

    /// Forgets the outbox batch `report_id` once the server has it.
    fn acknowledge(&self, report_id: Uuid) -> io::Result<()> {
        let mut state = self.lock();
        let path = self.outbox_path(report_id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        sync_dir(&self.inner.dir.join("outbox"))?;
        if state.outbox.as_ref().map(|b| b.report_id) == Some(report_id) {
            state.outbox = None;
        }
        Ok(())
    }

    /// Sends everything complete to `url`, one SetReport body of at most
    /// `block_size` bytes at a time (a single record larger than that goes
    /// alone): first the batch left in the outbox, then new batches until no
    /// complete record is left. The first new batch lists `packages` (each
    /// package's cached percentage now); at least one report is sent, so the
    /// server hears of the client and its packages even without launches. It
    /// stops at the first failure, keeping what was not acknowledged with a
    /// `200`.
    ///
    /// `client` must not follow redirects ([`http_client`]); should it, a
    /// response from another URL is taken as a failure all the same.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        url: &str,
        identity: &ClientIdentity,
        packages: &[PackageState],
        block_size: u64,
    ) -> Result<SendSummary, SendError> {
        let _sending = self.inner.sending.lock().await;
        let block_size = block_size.clamp(MIN_BLOCK_SIZE_BYTES, MAX_BLOCK_SIZE_BYTES);
        let mut sent = SendSummary::default();
        let mut packages_sent = false;
        loop {
            let queue = self.clone();
            let identity = identity.clone();
            let listed = (!packages_sent).then(|| packages.to_vec());
            let batch = tokio::task::spawn_blocking(move || {
                queue.prepare(&identity, listed.as_deref(), block_size)
            })
            .await
            .map_err(|e| SendError::Io {
                source: io::Error::other(e),
                sent,
            })?
            .map_err(|source| SendError::Io { source, sent })?;
            let Some(batch) = batch else {
                break;
            };
            let body: Vec<u8> = batch
                .body
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect();
            let length = body.len() as u64;
            let response = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .header(REPORT_ID_HEADER, batch.report_id.to_string())
                .body(body)
                .send()
                .await
                .map_err(|source| SendError::Unreachable {
                    url: url.to_owned(),
                    report_id: batch.report_id,
                    source,
                    sent,
                })?;
            let status = response.status();
            let redirected = response.url().as_str() != url
                && reqwest::Url::parse(url).ok().as_ref() != Some(response.url());
            if status != reqwest::StatusCode::OK || redirected {
                let message = if status.is_redirection() || redirected {
                    " (a redirect is not success)".to_owned()
                } else {
                    let text = response.text().await.unwrap_or_default();
                    let text: String = text.trim().chars().take(200).collect();
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {text}")
                    }
                };
                return Err(SendError::Refused {
                    url: url.to_owned(),
                    report_id: batch.report_id,
                    status: status.as_u16(),
                    message,
                    sent,
                });
            }
            let queue = self.clone();
            let report_id = batch.report_id;
            tokio::task::spawn_blocking(move || queue.acknowledge(report_id))
                .await
                .map_err(|e| SendError::Io {
                    source: io::Error::other(e),
                    sent,
                })?
                .map_err(|source| SendError::Io { source, sent })?;
            tracing::debug!(report = %report_id, records = batch.records, bytes = length, "report delivered");
            sent.batches += 1;
            sent.records += batch.records;
            sent.bytes += length;
            packages_sent |= batch.packages;
        }
        Ok(sent)
    }
}

/// Whether `status` is `Status1-Status2`, each up to 32 bits in hexadecimal.
fn valid_status(status: &str) -> bool {
    let part = |s: &str| {
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        !digits.is_empty() && digits.len() <= 8 && digits.bytes().all(|b| b.is_ascii_hexdigit())
    };
    status
        .split_once('-')
        .is_some_and(|(a, b)| part(a) && part(b))
}

const FOOTER: &str = "</APP_RECORDS></CLIENT_DATA>";

fn utf16_len(text: &str) -> u64 {
    2 * text.encode_utf16().count() as u64
}

/// `value` with up to four dotted numbers of at most `max`, padded to four,
/// or `None`.
fn four_part(value: &str, max: u32) -> Option<String> {
    let parts: Vec<&str> = value.trim().split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut numbers = Vec::with_capacity(4);
    for part in parts {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        numbers.push(part.parse::<u32>().ok().filter(|n| *n <= max)?);
    }
    numbers.resize(4, 0);
    Some(
        numbers
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// Appends ` name="value"`, `value` escaped (characters XML 1.0 cannot carry
/// become U+FFFD; tabs and line breaks become character references so they
/// survive attribute normalisation) and cut to the server's bound.
fn attribute(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, " {name}=\"");
    for c in value.chars().take(MAX_VALUE_CHARS) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A required text: `fallback` when blank.
fn text_or<'a>(value: &'a str, fallback: &'a str) -> &'a str {
    if value.trim().is_empty() {
        fallback
    } else {
        value
    }
}

fn date_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `<CLIENT_DATA …><PKG_LIST>…</PKG_LIST><APP_RECORDS>`.
fn render_header(identity: &ClientIdentity, packages: &[PackageState]) -> String {
    let mut out = String::from("<CLIENT_DATA");
    attribute(&mut out, "Host", text_or(&identity.host, "localhost"));
    let version = four_part(&identity.version, u32::from(u16::MAX));
    attribute(&mut out, "Ver", version.as_deref().unwrap_or("0.0.0.0"));
    let arch = if identity.processor_arch == "x86" {
        "x86"
    } else {
        "x64"
    };
    attribute(&mut out, "ProcessorArch", arch);
    attribute(&mut out, "OSVer", &os_version_of(&identity.os_version));
    attribute(&mut out, "OSServicePack", "0");
    let os_type = if identity.os_type == "Server" {
        "Server"
    } else {
        "Client"
    };
    attribute(&mut out, "OSType", os_type);
    out.push_str("><PKG_LIST>");
    for package in packages {
        out.push_str("<PKG_DATA");
        attribute(&mut out, "Guid", &format!("{{{}}}", package.package_id));
        attribute(&mut out, "VerGuid", &format!("{{{}}}", package.version_id));
        let fallback = package.package_id.to_string();
        attribute(&mut out, "Name", text_or(&package.name, &fallback));
        if let Some(version) = four_part(&package.version, u32::MAX) {
            attribute(&mut out, "Ver", &version);
        }
        if !package.source.trim().is_empty() {
            attribute(&mut out, "Source", &package.source);
        }
        attribute(
            &mut out,
            "PctCached",
            &package.percent_cached.min(100).to_string(),
        );
        out.push_str("/>");
    }
    out.push_str("</PKG_LIST><APP_RECORDS>");
    out
}

/// One `<APP_RECORD …/>`.
fn render_record(launch: &Launch, shutdown: DateTime<Utc>) -> String {
    let mut out = String::from("<APP_RECORD");
    attribute(&mut out, "Name", text_or(&launch.application, "?"));
    let version = four_part(&launch.application_version, u32::MAX);
    attribute(&mut out, "Ver", version.as_deref().unwrap_or("0.0.0.0"));
    attribute(&mut out, "Server", &launch.server);
    attribute(&mut out, "User", text_or(&launch.user, "?"));
    attribute(
        &mut out,
        "PackageVersion",
        &launch.package_version_id.to_string(),
    );
    if let Some(group) = launch.connection_group_version_id {
        attribute(&mut out, "ConnectionGroupVersion", &group.to_string());
    }
    attribute(&mut out, "Launched", &date_time(launch.launched));
    attribute(&mut out, "LaunchStatus", &launch.status);
    attribute(
        &mut out,
        "Shutdown",
        &date_time(shutdown.max(launch.launched)),
    );
    out.push_str("/>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_padded_or_refused() {
        assert_eq!(four_part("7.5", u32::MAX).as_deref(), Some("7.5.0.0"));
        assert_eq!(four_part("1.2.3.4", 65535).as_deref(), Some("1.2.3.4"));
        assert_eq!(four_part("1.2.3.70000", 65535), None);
        assert_eq!(four_part("1.2.3.4.5", u32::MAX), None);
        assert_eq!(four_part("v1", u32::MAX), None);
    }

    #[test]
    fn attributes_are_escaped() {
        let mut out = String::new();
        attribute(&mut out, "A", "a&b<c>\"d'\te\u{1}");
        assert_eq!(out, " A=\"a&amp;b&lt;c&gt;&quot;d&apos;&#9;e\u{FFFD}\"");
    }

    #[test]
    fn kernel_releases_give_major_minor() {
        assert_eq!(os_version_of("6.8.0-45-generic\n"), "6.8");
        assert_eq!(os_version_of("5.15"), "5.15");
        assert_eq!(os_version_of(""), "0.0");
        assert_eq!(os_version_of("6"), "6.0");
    }

    #[test]
    fn statuses_are_checked() {
        assert!(valid_status("0-0"));
        assert!(valid_status("0x80070005-1F"));
        assert!(!valid_status("ok"));
        assert!(!valid_status("0-"));
        assert_eq!(launch_status(0x8007_0005, 0), "80070005-0");
    }
}
