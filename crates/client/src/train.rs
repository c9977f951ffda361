//! Recording a launch's primary feature block (FB1), as App-V's sequencer does
//! when it "launches applications to optimize streaming": the package file is
//! mounted on a temporary directory with a mount that notes every block read
//! ([`crate::fs::MountOptions::read_log`]), the application runs once in its
//! environment over that mount, and the blocks it read become the stream
//! map's primary feature block, as runs per file.
//!
//! The mount reads the file directly (`file://`), with blocks kept in memory;
//! it needs what any mount needs (`/dev/fuse`; root, or `fusermount3`).

use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use avail_format::names;
use avail_format::streammap::FeatureFile;

use crate::blocks::{CacheMode, PackageReader};
use crate::cache::{BlockStore, MemoryCache};
use crate::fetch::{FetchConfig, Fetcher, RemotePackage};
use crate::fs::{MountOptions, ReadLog, mount};

/// Memory for the blocks a recording reads.
const MEMORY: u64 = 512 << 20;

/// Why a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The package could not be opened or mounted, or the command not started.
    #[error("{0}")]
    Setup(String),
}

fn setup(what: &str) -> impl Fn(&dyn std::fmt::Display) -> TrainError + '_ {
    move |e| TrainError::Setup(format!("{what}: {e}"))
}

/// What a recording found: the primary feature block, and what the
/// application did.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Block runs per payload file, in package order.
    pub primary: Vec<FeatureFile>,
    /// Blocks read in all.
    pub blocks: u64,
    /// Whether the application was still running at the time limit (and was
    /// stopped).
    pub stopped: bool,
}

/// Mounts `package` (a local file), runs what `start` starts — given the
/// mount's directory, it starts the application in its environment over it —
/// for at most `limit` (then SIGTERM, and SIGKILL 5 s later), and returns the
/// blocks it read.
pub fn record(
    package: &Path,
    start: impl FnOnce(&Path) -> std::io::Result<Child>,
    limit: Duration,
) -> Result<Recording, TrainError> {
    let package = package
        .canonicalize()
        .map_err(|e| setup(&package.display().to_string())(&e))?;
    let (dir, file) = match (package.parent(), package.file_name()) {
        (Some(d), Some(f)) => (d.to_owned(), f.to_string_lossy().into_owned()),
        _ => {
            return Err(TrainError::Setup(format!(
                "{} is not a file",
                package.display()
            )));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| setup("the runtime")(&e))?;
    let base = format!("file://{}", dir.display());
    let remote = runtime
        .block_on(async {
            let fetcher = Fetcher::new(&[base], FetchConfig::default())?;
            RemotePackage::open(fetcher, file, avail_format::Limits::default()).await
        })
        .map_err(|e| setup(&package.display().to_string())(&e))?;
    let memory: Arc<dyn BlockStore> = Arc::new(MemoryCache::new(MEMORY));
    let reader = PackageReader::new(remote.clone(), memory, CacheMode::Normal);
    let scratch = tempfile::Builder::new()
        .prefix("avail-record-")
        .tempdir()
        .map_err(|e| setup("a temporary directory")(&e))?;
    let point = scratch.path().join("mnt");
    std::fs::create_dir(&point).map_err(|e| setup("the mount point")(&e))?;
    let log: Arc<ReadLog> = Arc::default();
    let options = MountOptions {
        read_log: Some(log.clone()),
        allow_other: nix::unistd::geteuid().is_root(),
        ..MountOptions::default()
    };
    let mounted = mount(reader, &point, &options).map_err(|e| setup("mounting the package")(&e))?;
    let mut child = start(&point).map_err(|e| setup("starting the application")(&e))?;
    let deadline = Instant::now() + limit;
    let mut stopped = false;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                stopped = true;
                stop(&mut child);
                break;
            }
            Err(e) => return Err(setup("waiting for the application")(&e)),
        }
    }
    drop(mounted);
    let read = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));
    let files = remote.package().files();
    let mut primary = Vec::new();
    let mut blocks = 0u64;
    for (index, set) in read {
        let Some(f) = files.get(index) else { continue };
        if !names::same_part(f.map.name.split('\\').next().unwrap_or(""), "Root") {
            continue;
        }
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for k in set {
            let k = k as u64;
            blocks += 1;
            match runs.last_mut() {
                Some((start, count)) if *start + *count == k => *count += 1,
                _ => runs.push((k, 1)),
            }
        }
        let whole = f.map.blocks.len() as u64;
        if runs == [(0, whole)] {
            // The whole file: no runs, as the stream map says it.
            runs.clear();
        }
        primary.push(FeatureFile {
            name: f.map.name.clone(),
            runs,
        });
    }
    Ok(Recording {
        primary,
        blocks,
        stopped,
    })
}

/// SIGTERM, then SIGKILL if the child is still there 5 s later.
fn stop(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
