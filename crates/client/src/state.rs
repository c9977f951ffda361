//! What the daemon keeps in its state directory between runs, and how it
//! writes it: each file whole or not at all (a temporary file beside it,
//! fsynced, renamed over it, the directory fsynced).
//!
//! ```text
//! STATE/config.toml          settings (settings.rs)
//! STATE/servers.json         publishing servers with their credentials (0600)
//! STATE/publications.json    the last answer of each server, per audience
//! STATE/added.json           package versions added by URL, outside any server
//! STATE/opened/<VersionId>   the bytes opening an added version read (fetch::OpenedRanges)
//! STATE/cache/               the block cache (cache.rs)
//! ```

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Writes `bytes` to `path` atomically with permission bits `mode`. The
/// temporary file is new (never one left behind, never through a symlink):
/// named by the process and a counter, created exclusively.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        // The umask may have taken bits away.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Reads JSON from `path`; a missing file is `T::default()`.
pub fn read_json<T: DeserializeOwned + Default>(path: &Path) -> std::io::Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is damaged: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e),
    }
}

/// Writes `value` as JSON to `path` atomically with permission bits `mode`.
pub fn write_json<T: Serialize>(path: &Path, value: &T, mode: u32) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_atomically(path, &bytes, mode)
}

/// A package version added by the URL of its file (`avail client package
/// add`), kept across restarts until removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedByUrl {
    /// The package.
    pub package_id: uuid::Uuid,
    /// The version.
    pub version_id: uuid::Uuid,
    /// The package's name, from its manifest.
    pub name: String,
    /// Its version number, from its manifest.
    pub version: String,
    /// The file's URL, then its mirrors.
    pub urls: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_replaced_whole_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("servers.json");
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), Vec::<u32>::new());
        write_json(&path, &vec![1u32, 2], 0o600).unwrap();
        write_json(&path, &vec![3u32], 0o600).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), vec![3]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Nothing but the file itself is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(&path, b"[1,").unwrap();
        let err = read_json::<Vec<u32>>(&path).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
