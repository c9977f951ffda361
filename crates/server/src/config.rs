//! Server configuration: defaults, then a TOML file, then `AVAIL_*` environment
//! variables, then command-line flags (applied by the caller), so that
//! `avail server` alone on a fresh machine gives a working system on SQLite and
//! a content directory inside the data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// A server role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The admin API.
    Management,
    /// Publishing refresh (MS-VAPR GetPackage).
    Publishing,
    /// Usage reports (MS-VAPR SetReport).
    Reporting,
    /// The content store over HTTP.
    Content,
}

impl Role {
    /// The roles this build can run.
    pub const AVAILABLE: [Role; 2] = [Role::Management, Role::Content];

    /// Its name on the command line and in the config.
    pub fn name(self) -> &'static str {
        match self {
            Role::Management => "management",
            Role::Publishing => "publishing",
            Role::Reporting => "reporting",
            Role::Content => "content",
        }
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let role = match s.trim() {
            "management" => Role::Management,
            "publishing" => Role::Publishing,
            "reporting" => Role::Reporting,
            "content" => Role::Content,
            other => {
                return Err(format!(
                    "unknown role {other:?} (management, publishing, reporting, content)"
                ));
            }
        };
        if !Role::AVAILABLE.contains(&role) {
            return Err(format!(
                "the {} role is not part of this version of Avail yet; available: management, content",
                role.name()
            ));
        }
        Ok(role)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The whole configuration, as `avail.toml` spells it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where SQLite files, the content store and the bootstrap token live.
    pub data_dir: PathBuf,
    /// Roles to run (names as on the command line); empty means all available.
    pub roles: Vec<String>,
    /// The management role.
    pub management: ManagementConfig,
    /// The content role.
    pub content: ContentConfig,
    /// Connection limits and timeouts, the same for every role's listener.
    pub http: HttpConfig,
    /// Listeners of roles still to come, kept so that configs written for them parse.
    pub publishing: ListenConfig,
    /// See `publishing`.
    pub reporting: ReportingConfig,
}

/// `[management]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Management DB URL; a SQLite file in the data directory when unset.
    pub database_url: Option<String>,
    /// Largest package upload, in bytes.
    pub max_upload_bytes: u64,
    /// Most requests (other than uploads) handled at once; more wait up to
    /// five seconds for a turn, then get `503`.
    pub max_concurrent_requests: usize,
    /// Most package uploads received and verified at once, counted apart from
    /// other requests so that slow uploads cannot starve them.
    pub max_concurrent_uploads: usize,
    /// Failed password sign-ins allowed per minute, per source address and per
    /// administrator name; beyond it, `429` without checking the password.
    pub password_failures_per_minute: u32,
    /// Timeout for requests other than uploads, in seconds.
    pub request_timeout_secs: u64,
}

/// `[content]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// The content store directory; `<data_dir>/content` when unset.
    pub root: Option<PathBuf>,
    /// Require a machine credential (Bearer) to read packages, instead of serving
    /// them openly as App-V's content share does.
    pub require_machine_credential: bool,
}

/// `[http]`: what every role's listener allows its clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Seconds a client has to send a request's headers, counted from the
    /// connection or from the request's first byte.
    pub header_read_timeout_secs: u64,
    /// Seconds a kept-alive connection may sit between requests, and a
    /// response may wait for the client to read it.
    pub idle_timeout_secs: u64,
    /// Seconds a request body may go without sending any data before it is cut off.
    pub body_progress_timeout_secs: u64,
    /// Open connections per role; more are answered `503` and closed at once.
    pub max_connections: usize,
}

/// A role's listener only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Listen address.
    pub listen: SocketAddr,
}

/// `[reporting]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportingConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Reporting DB URL; a SQLite file in the data directory when unset.
    pub database_url: Option<String>,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./avail-data"),
            roles: Vec::new(),
            management: ManagementConfig::default(),
            content: ContentConfig::default(),
            http: HttpConfig::default(),
            publishing: ListenConfig { listen: addr(8081) },
            reporting: ReportingConfig::default(),
        }
    }
}

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig {
            listen: addr(8080),
            database_url: None,
            max_upload_bytes: 64 << 30,
            max_concurrent_requests: 256,
            max_concurrent_uploads: 32,
            password_failures_per_minute: 5,
            request_timeout_secs: 60,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_progress_timeout_secs: 30,
            max_connections: 4096,
        }
    }
}

impl Default for ContentConfig {
    fn default() -> Self {
        ContentConfig {
            listen: addr(8083),
            root: None,
            require_machine_credential: false,
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig { listen: addr(8081) }
    }
}

impl Default for ReportingConfig {
    fn default() -> Self {
        ReportingConfig {
            listen: addr(8082),
            database_url: None,
        }
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid configuration in {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its position.
        message: String,
    },
    /// An environment variable has an invalid value.
    #[error("invalid value {value:?} in {name}: {message}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Defaults, then the file (if given), then the environment.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: FromStr>(name: &'static str, value: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse().map_err(|e: T::Err| ConfigError::Env {
                name,
                message: e.to_string(),
                value,
            })
        }
        if let Some(v) = env("AVAIL_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("AVAIL_ROLES") {
            self.roles = v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(v) = env("AVAIL_MANAGEMENT_LISTEN") {
            self.management.listen = parse("AVAIL_MANAGEMENT_LISTEN", v)?;
        }
        if let Some(v) = env("AVAIL_PUBLISHING_LISTEN") {
            self.publishing.listen = parse("AVAIL_PUBLISHING_LISTEN", v)?;
        }
        if let Some(v) = env("AVAIL_REPORTING_LISTEN") {
            self.reporting.listen = parse("AVAIL_REPORTING_LISTEN", v)?;
        }
        if let Some(v) = env("AVAIL_CONTENT_LISTEN") {
            self.content.listen = parse("AVAIL_CONTENT_LISTEN", v)?;
        }
        if let Some(v) = env("AVAIL_MANAGEMENT_DATABASE_URL") {
            self.management.database_url = Some(v);
        }
        if let Some(v) = env("AVAIL_REPORTING_DATABASE_URL") {
            self.reporting.database_url = Some(v);
        }
        if let Some(v) = env("AVAIL_CONTENT_ROOT") {
            self.content.root = Some(PathBuf::from(v));
        }
        if let Some(v) = env("AVAIL_MAX_UPLOAD_BYTES") {
            self.management.max_upload_bytes = parse("AVAIL_MAX_UPLOAD_BYTES", v)?;
        }
        if let Some(v) = env("AVAIL_MAX_CONCURRENT_REQUESTS") {
            self.management.max_concurrent_requests = parse("AVAIL_MAX_CONCURRENT_REQUESTS", v)?;
        }
        if let Some(v) = env("AVAIL_MAX_CONCURRENT_UPLOADS") {
            self.management.max_concurrent_uploads = parse("AVAIL_MAX_CONCURRENT_UPLOADS", v)?;
        }
        if let Some(v) = env("AVAIL_PASSWORD_FAILURES_PER_MINUTE") {
            self.management.password_failures_per_minute =
                parse("AVAIL_PASSWORD_FAILURES_PER_MINUTE", v)?;
        }
        if let Some(v) = env("AVAIL_HEADER_READ_TIMEOUT_SECS") {
            self.http.header_read_timeout_secs = parse("AVAIL_HEADER_READ_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = env("AVAIL_IDLE_TIMEOUT_SECS") {
            self.http.idle_timeout_secs = parse("AVAIL_IDLE_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = env("AVAIL_BODY_PROGRESS_TIMEOUT_SECS") {
            self.http.body_progress_timeout_secs = parse("AVAIL_BODY_PROGRESS_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = env("AVAIL_MAX_CONNECTIONS") {
            self.http.max_connections = parse("AVAIL_MAX_CONNECTIONS", v)?;
        }
        Ok(())
    }

    /// Limits that would make a role unusable, named.
    pub fn check(&self) -> Result<(), String> {
        let at_least_one = [
            (
                "http.header_read_timeout_secs",
                self.http.header_read_timeout_secs,
            ),
            ("http.idle_timeout_secs", self.http.idle_timeout_secs),
            (
                "http.body_progress_timeout_secs",
                self.http.body_progress_timeout_secs,
            ),
            ("http.max_connections", self.http.max_connections as u64),
            (
                "management.max_concurrent_requests",
                self.management.max_concurrent_requests as u64,
            ),
            (
                "management.max_concurrent_uploads",
                self.management.max_concurrent_uploads as u64,
            ),
            (
                "management.password_failures_per_minute",
                u64::from(self.management.password_failures_per_minute),
            ),
        ];
        if let Some((name, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        // Semaphores count in u32 steps; a million connections per role is
        // far beyond what one process can hold open anyway.
        if self.http.max_connections > 1 << 20 {
            return Err("http.max_connections must be at most 1048576".into());
        }
        Ok(())
    }

    /// The roles to run, checked.
    pub fn roles(&self) -> Result<Vec<Role>, String> {
        if self.roles.is_empty() {
            return Ok(Role::AVAILABLE.to_vec());
        }
        let mut roles = self
            .roles
            .iter()
            .map(|r| r.parse())
            .collect::<Result<Vec<Role>, _>>()?;
        roles.sort();
        roles.dedup();
        Ok(roles)
    }

    /// The content store directory.
    pub fn content_root(&self) -> PathBuf {
        self.content
            .root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("content"))
    }

    /// The Management DB URL.
    pub fn management_database_url(&self) -> String {
        self.management
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", self.data_dir.join("management.db").display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("avail.toml");
        std::fs::write(
            &file,
            "data_dir = \"/srv/avail\"\n[management]\nlisten = \"0.0.0.0:9000\"\n",
        )
        .unwrap();
        let env = |k: &str| (k == "AVAIL_CONTENT_LISTEN").then(|| "127.0.0.1:9999".to_owned());
        let c = Config::load(Some(&file), env).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/avail"));
        assert_eq!(c.management.listen.port(), 9000);
        assert_eq!(c.content.listen.port(), 9999);
        assert_eq!(c.content_root(), PathBuf::from("/srv/avail/content"));
        assert_eq!(
            c.management_database_url(),
            "sqlite:/srv/avail/management.db"
        );
        assert_eq!(c.roles().unwrap(), Role::AVAILABLE);
    }

    #[test]
    fn the_example_config_in_deploy_parses() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/avail.toml");
        let c = Config::load(Some(&file), |_| None).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/avail"));
        assert_eq!(
            c.management.max_upload_bytes,
            ManagementConfig::default().max_upload_bytes
        );
        // The file spells out every default.
        let (m, d) = (&c.management, ManagementConfig::default());
        assert_eq!(
            (
                m.max_concurrent_requests,
                m.max_concurrent_uploads,
                m.password_failures_per_minute,
                m.request_timeout_secs
            ),
            (
                d.max_concurrent_requests,
                d.max_concurrent_uploads,
                d.password_failures_per_minute,
                d.request_timeout_secs
            )
        );
        let (h, d) = (&c.http, HttpConfig::default());
        assert_eq!(
            (
                h.header_read_timeout_secs,
                h.idle_timeout_secs,
                h.body_progress_timeout_secs,
                h.max_connections
            ),
            (
                d.header_read_timeout_secs,
                d.idle_timeout_secs,
                d.body_progress_timeout_secs,
                d.max_connections
            )
        );
        assert_eq!(c.check(), Ok(()));
        assert_eq!(c.roles().unwrap(), Role::AVAILABLE);
    }

    #[test]
    fn connection_limits_from_file_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("avail.toml");
        std::fs::write(
            &file,
            "[http]\nheader_read_timeout_secs = 3\nmax_connections = 100\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "AVAIL_IDLE_TIMEOUT_SECS" => Some("7".to_owned()),
            "AVAIL_BODY_PROGRESS_TIMEOUT_SECS" => Some("2".to_owned()),
            "AVAIL_MAX_CONNECTIONS" => Some("50".to_owned()),
            "AVAIL_MAX_CONCURRENT_REQUESTS" => Some("8".to_owned()),
            "AVAIL_MAX_CONCURRENT_UPLOADS" => Some("2".to_owned()),
            "AVAIL_PASSWORD_FAILURES_PER_MINUTE" => Some("3".to_owned()),
            _ => None,
        };
        let c = Config::load(Some(&file), env).unwrap();
        assert_eq!(c.http.header_read_timeout_secs, 3);
        assert_eq!(c.http.idle_timeout_secs, 7);
        assert_eq!(c.http.body_progress_timeout_secs, 2);
        assert_eq!(c.http.max_connections, 50);
        assert_eq!(c.management.max_concurrent_requests, 8);
        assert_eq!(c.management.max_concurrent_uploads, 2);
        assert_eq!(c.management.password_failures_per_minute, 3);
        assert_eq!(c.check(), Ok(()));

        let mut zero = c.clone();
        zero.http.header_read_timeout_secs = 0;
        assert!(
            zero.check()
                .unwrap_err()
                .contains("header_read_timeout_secs")
        );
        let mut zero = c.clone();
        zero.management.max_concurrent_uploads = 0;
        assert!(zero.check().unwrap_err().contains("max_concurrent_uploads"));
        let mut huge = c;
        huge.http.max_connections = 1 << 21;
        assert!(huge.check().unwrap_err().contains("max_connections"));
    }

    #[test]
    fn mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("avail.toml");
        std::fs::write(&file, "[managment]\n").unwrap();
        assert!(matches!(
            Config::load(Some(&file), |_| None),
            Err(ConfigError::Parse { .. })
        ));
        let env = |k: &str| (k == "AVAIL_MANAGEMENT_LISTEN").then(|| "nonsense".to_owned());
        assert!(matches!(
            Config::load(None, env),
            Err(ConfigError::Env {
                name: "AVAIL_MANAGEMENT_LISTEN",
                ..
            })
        ));
        let c = Config {
            roles: vec!["publishing".into()],
            ..Config::default()
        };
        assert!(c.roles().unwrap_err().contains("not part of this version"));
    }
}
