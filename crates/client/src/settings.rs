//! The client's settings, named after App-V's client configuration
//! (`Get-AppvClientConfiguration`, `Set-AppvClientConfiguration`), kept in
//! `config.toml` under the daemon's state directory.
//!
//! | name | values | default | takes effect |
//! | --- | --- | --- | --- |
//! | `SharedContentStoreMode` | 0, 1 | 0 | for packages added afterwards |
//! | `AutoLoad` | 0 none, 1 packages read before, 2 all | 1 | at once |
//! | `PackageInstallationRoot` | an absolute directory | `/run/avail/packages` | for packages added afterwards |
//! | `PackageSourceRoot` | `http(s)://…`, `file:///…` or empty | empty | for packages added afterwards |
//! | `CacheQuota` | bytes, with an optional K/M/G/T suffix (powers of 1024) | 10G | when the daemon starts |
//! | `SharedContentStoreMemory` | bytes, as `CacheQuota` | 256M | when the daemon starts |
//! | `RefreshInterval` | seconds, 0 = only at start and on `sync` | 600 | at once |
//! | `ReadTimeout` | seconds a read may wait for its blocks before EIO | 60 | for packages added afterwards |
//! | `ReportingEnabled` | 0, 1 | 0 | at once |
//! | `ReportingServerURL` | `http(s)://…` of a reporting server, or empty | empty | at once |
//! | `ReportingStartTime` | hour of the day, 0–23 | 22 | at once |
//! | `ReportingInterval` | days between sends, at least 1 | 1 | at once |
//! | `ReportingRandomDelay` | most minutes added to the start time, 0–1440 | 30 | at once |
//! | `ReportingDataCacheLimit` | MB of reports kept while unsent, 0–1024 | 20 | at once |
//! | `ReportingDataBlockSize` | bytes of report per request, at least 1024 | 65536 | at once |
//!
//! `AutoLoad` 1 means "packages that were read from": App-V's "previously
//! used" (a launch), which on Linux is the first read through the package's
//! mount. In Shared Content Store mode nothing is loaded in the background,
//! as in App-V.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The settings, as stored (`config.toml`) and as `config get` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct Settings {
    /// 1: only the publishing feature block on disk, the rest in memory.
    pub shared_content_store_mode: u8,
    /// 0, 1 or 2: what to stream in the background.
    pub auto_load: u8,
    /// Where package versions are mounted (`<root>/<PackageId>/<VersionId>`).
    pub package_installation_root: PathBuf,
    /// Replaces the scheme, host and prefix of package URLs (empty: unchanged).
    pub package_source_root: String,
    /// The disk cache's hard quota, in bytes.
    pub cache_quota: u64,
    /// The memory cache's bound in Shared Content Store mode, in bytes.
    pub shared_content_store_memory: u64,
    /// Seconds between publishing refreshes (0: none but at start and on `sync`).
    pub refresh_interval: u64,
    /// Seconds a read may wait for its blocks before it fails with EIO.
    pub read_timeout: u64,
    /// 1: launches are reported to `ReportingServerURL`.
    pub reporting_enabled: u8,
    /// The reporting server.
    #[serde(rename = "ReportingServerURL")]
    pub reporting_server_url: String,
    /// The hour of the day reports are sent.
    pub reporting_start_time: u8,
    /// Days between sends.
    pub reporting_interval: u32,
    /// Most minutes added at random to the start time.
    pub reporting_random_delay: u32,
    /// MB of unsent reports kept; the oldest go first (and are counted).
    pub reporting_data_cache_limit: u64,
    /// Bytes of report body per request.
    pub reporting_data_block_size: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            shared_content_store_mode: 0,
            auto_load: 1,
            package_installation_root: PathBuf::from("/run/avail/packages"),
            package_source_root: String::new(),
            cache_quota: 10 << 30,
            shared_content_store_memory: 256 << 20,
            refresh_interval: 600,
            read_timeout: 60,
            reporting_enabled: 0,
            reporting_server_url: String::new(),
            reporting_start_time: crate::reporting::DEFAULT_START_HOUR,
            reporting_interval: crate::reporting::DEFAULT_INTERVAL_DAYS,
            reporting_random_delay: crate::reporting::DEFAULT_RANDOM_DELAY_MINUTES,
            reporting_data_cache_limit: crate::reporting::DEFAULT_CACHE_LIMIT_BYTES >> 20,
            reporting_data_block_size: crate::reporting::DEFAULT_BLOCK_SIZE_BYTES,
        }
    }
}

/// The setting names, in the order `config get` lists them.
pub const NAMES: [&str; 15] = [
    "SharedContentStoreMode",
    "AutoLoad",
    "PackageInstallationRoot",
    "PackageSourceRoot",
    "CacheQuota",
    "SharedContentStoreMemory",
    "RefreshInterval",
    "ReadTimeout",
    "ReportingEnabled",
    "ReportingServerURL",
    "ReportingStartTime",
    "ReportingInterval",
    "ReportingRandomDelay",
    "ReportingDataCacheLimit",
    "ReportingDataBlockSize",
];

/// A setting name or value that was refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingError(pub String);

impl Settings {
    /// Reads `path`; a missing file is the defaults.
    pub fn load(path: &Path) -> std::io::Result<Settings> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {}", path.display(), e.message()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the settings to `path` atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        crate::state::write_atomically(path, text.as_bytes(), 0o644)
    }

    /// The value of setting `name` (case-insensitive), as text.
    pub fn get(&self, name: &str) -> Result<String, SettingError> {
        Ok(match canonical(name)? {
            "SharedContentStoreMode" => self.shared_content_store_mode.to_string(),
            "AutoLoad" => self.auto_load.to_string(),
            "PackageInstallationRoot" => self.package_installation_root.display().to_string(),
            "PackageSourceRoot" => self.package_source_root.clone(),
            "CacheQuota" => self.cache_quota.to_string(),
            "SharedContentStoreMemory" => self.shared_content_store_memory.to_string(),
            "RefreshInterval" => self.refresh_interval.to_string(),
            "ReadTimeout" => self.read_timeout.to_string(),
            "ReportingEnabled" => self.reporting_enabled.to_string(),
            "ReportingServerURL" => self.reporting_server_url.clone(),
            "ReportingStartTime" => self.reporting_start_time.to_string(),
            "ReportingInterval" => self.reporting_interval.to_string(),
            "ReportingRandomDelay" => self.reporting_random_delay.to_string(),
            "ReportingDataCacheLimit" => self.reporting_data_cache_limit.to_string(),
            _ => self.reporting_data_block_size.to_string(),
        })
    }

    /// Sets `name` (case-insensitive) to `value`, checked; returns the
    /// canonical name. Nothing changes when the value is refused.
    pub fn set(&mut self, name: &str, value: &str) -> Result<&'static str, SettingError> {
        let name = canonical(name)?;
        let value = value.trim();
        match name {
            "SharedContentStoreMode" => self.shared_content_store_mode = flag(name, value, 1)?,
            "AutoLoad" => self.auto_load = flag(name, value, 2)?,
            "PackageInstallationRoot" => {
                let path = PathBuf::from(value);
                if !path.is_absolute() || path.parent().is_none() {
                    return Err(SettingError(format!(
                        "PackageInstallationRoot must be an absolute directory other than /, not {value:?}"
                    )));
                }
                self.package_installation_root = path;
            }
            "PackageSourceRoot" => {
                let ok = value.is_empty()
                    || ["http://", "https://", "file:///"]
                        .iter()
                        .any(|p| value.to_ascii_lowercase().starts_with(p));
                if !ok {
                    return Err(SettingError(format!(
                        "PackageSourceRoot must start with http://, https:// or file:/// (or be empty), not {value:?}"
                    )));
                }
                self.package_source_root = value.to_owned();
            }
            "CacheQuota" => self.cache_quota = size(name, value, 1 << 20)?,
            "SharedContentStoreMemory" => {
                self.shared_content_store_memory = size(name, value, 1 << 20)?
            }
            "RefreshInterval" => self.refresh_interval = seconds(name, value, 0)?,
            "ReadTimeout" => self.read_timeout = seconds(name, value, 1)?,
            "ReportingEnabled" => self.reporting_enabled = flag(name, value, 1)?,
            "ReportingServerURL" => {
                let lower = value.to_ascii_lowercase();
                if !(value.is_empty()
                    || lower.starts_with("http://")
                    || lower.starts_with("https://"))
                {
                    return Err(SettingError(format!(
                        "ReportingServerURL must be an http:// or https:// URL (or empty), not {value:?}"
                    )));
                }
                self.reporting_server_url = value.to_owned();
            }
            "ReportingStartTime" => self.reporting_start_time = number(name, value, 0, 23)? as u8,
            "ReportingInterval" => self.reporting_interval = number(name, value, 1, 365)? as u32,
            "ReportingRandomDelay" => {
                self.reporting_random_delay = number(name, value, 0, 1440)? as u32
            }
            "ReportingDataCacheLimit" => {
                self.reporting_data_cache_limit = number(name, value, 0, 1024)?
            }
            _ => self.reporting_data_block_size = number(name, value, 1024, 64 << 20)?,
        }
        Ok(name)
    }
}

/// The canonical spelling of a setting name.
fn canonical(name: &str) -> Result<&'static str, SettingError> {
    NAMES
        .iter()
        .find(|n| n.eq_ignore_ascii_case(name))
        .copied()
        .ok_or_else(|| {
            SettingError(format!(
                "unknown setting {name:?}; the settings are {}",
                NAMES.join(", ")
            ))
        })
}

fn flag(name: &str, value: &str, max: u8) -> Result<u8, SettingError> {
    value
        .parse::<u8>()
        .ok()
        .filter(|v| *v <= max)
        .ok_or_else(|| SettingError(format!("{name} takes 0..={max}, not {value:?}")))
}

fn number(name: &str, value: &str, min: u64, max: u64) -> Result<u64, SettingError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| {
            SettingError(format!(
                "{name} takes a number from {min} to {max}, not {value:?}"
            ))
        })
}

impl Settings {
    /// The reporting settings, as the reporting queue takes them.
    pub fn reporting(&self) -> crate::reporting::ReportingSettings {
        crate::reporting::ReportingSettings {
            enabled: self.reporting_enabled == 1,
            server_url: self.reporting_server_url.clone(),
            start_time_hour: self.reporting_start_time,
            interval_days: self.reporting_interval,
            random_delay_minutes: self.reporting_random_delay,
            data_cache_limit_bytes: self.reporting_data_cache_limit << 20,
            data_block_size_bytes: self.reporting_data_block_size,
        }
    }
}

fn seconds(name: &str, value: &str, min: u64) -> Result<u64, SettingError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|v| (min..=365 * 24 * 3600).contains(v))
        .ok_or_else(|| {
            SettingError(format!(
                "{name} takes a number of seconds from {min} to 31536000, not {value:?}"
            ))
        })
}

/// A byte size: digits with an optional K, M, G or T suffix (powers of 1024,
/// an optional `iB`/`B` after it), at least `min`.
fn size(name: &str, value: &str, min: u64) -> Result<u64, SettingError> {
    let refused = || {
        SettingError(format!(
            "{name} takes a size in bytes such as 10G, 512M or 1073741824 (at least 1M), not {value:?}"
        ))
    };
    let upper = value.to_ascii_uppercase();
    let trimmed = upper.trim_end_matches("IB").trim_end_matches('B');
    let (digits, shift) = match trimmed.char_indices().last() {
        Some((i, 'K')) => (&trimmed[..i], 10),
        Some((i, 'M')) => (&trimmed[..i], 20),
        Some((i, 'G')) => (&trimmed[..i], 30),
        Some((i, 'T')) => (&trimmed[..i], 40),
        _ => (trimmed, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| refused())?;
    n.checked_mul(1 << shift)
        .filter(|v| *v >= min)
        .ok_or_else(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_named_like_app_v() {
        let mut s = Settings::default();
        assert_eq!(s.set("autoload", "2").unwrap(), "AutoLoad");
        assert_eq!(s.get("AUTOLOAD").unwrap(), "2");
        assert!(s.set("AutoLoad", "3").is_err());
        assert_eq!(s.auto_load, 2);
        s.set("CacheQuota", "2GiB").unwrap();
        assert_eq!(s.cache_quota, 2 << 30);
        s.set("CacheQuota", "512m").unwrap();
        assert_eq!(s.cache_quota, 512 << 20);
        assert!(s.set("CacheQuota", "12").is_err());
        assert!(s.set("CacheQuota", "99999999999T").is_err());
        assert!(s.set("PackageInstallationRoot", "relative").is_err());
        assert!(s.set("PackageInstallationRoot", "/").is_err());
        assert!(s.set("PackageSourceRoot", "ftp://x").is_err());
        s.set("PackageSourceRoot", "file:///srv/share").unwrap();
        assert!(s.set("ReadTimeout", "0").is_err());
        s.set("RefreshInterval", "0").unwrap();
        assert!(s.set("ReportingStartTime", "24").is_err());
        assert!(s.set("ReportingServerURL", "ftp://x").is_err());
        s.set("reportingserverurl", "http://reports:8082").unwrap();
        s.set("ReportingDataCacheLimit", "5").unwrap();
        assert_eq!(s.reporting().data_cache_limit_bytes, 5 << 20);
        assert!(s.reporting().validate().is_ok());
        let err = s.set("Nope", "1").unwrap_err();
        assert!(err.0.contains("SharedContentStoreMode"), "{err}");
    }

    #[test]
    fn settings_round_trip_through_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert_eq!(Settings::load(&path).unwrap(), Settings::default());
        let mut s = Settings::default();
        s.set("SharedContentStoreMode", "1").unwrap();
        s.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("SharedContentStoreMode = 1"), "{text}");
        assert_eq!(Settings::load(&path).unwrap(), s);
        std::fs::write(&path, "Bogus = 1\n").unwrap();
        assert!(Settings::load(&path).is_err());
    }
}
