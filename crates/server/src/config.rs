//! Server configuration: defaults, then a TOML file, then `AVAIL_*` environment
//! variables, then command-line flags (applied by the caller), so that
//! `avail server` alone on a fresh machine gives a working system on SQLite and
//! a content directory inside the data directory.
//!
//! Secrets (the database URLs, which may hold a password) can also come from a
//! file: `AVAIL_X_FILE` names a file whose first line is the value of
//! `AVAIL_X` (what container secrets and systemd credentials provide); setting
//! both is an error. `Debug` of a configuration and every message show
//! database URLs with the password replaced ([`redact`]).

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
    pub const AVAILABLE: [Role; 4] = [
        Role::Management,
        Role::Publishing,
        Role::Reporting,
        Role::Content,
    ];

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
                "the {} role is not part of this version of Avail yet; available: {}",
                role.name(),
                Role::AVAILABLE.map(Role::name).join(", ")
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
    /// The publishing role.
    pub publishing: PublishingConfig,
    /// The reporting role.
    pub reporting: ReportingConfig,
}

/// `[management]`.
#[derive(Clone, Deserialize)]
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
    /// PEM certificate chain to serve HTTPS with (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl std::fmt::Debug for ManagementConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementConfig")
            .field("listen", &self.listen)
            .field("database_url", &self.database_url.as_deref().map(redact))
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("max_concurrent_uploads", &self.max_concurrent_uploads)
            .field(
                "password_failures_per_minute",
                &self.password_failures_per_minute,
            )
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
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
    /// PEM certificate chain to serve HTTPS with (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
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

/// `[publishing]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishingConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Management servers to sync the catalog from, tried in order with
    /// failover; empty: follow this node's Management DB directly.
    pub management_urls: Vec<String>,
    /// This node's publishing-server credential (`avail admin server register`).
    pub credential: Option<String>,
    /// The base URL the publishing document's `PackageUrl`s start with; unset:
    /// this node's content role, at its listen address. A trailing slash is
    /// dropped at load.
    pub content_base_url: Option<String>,
    /// Further base URLs serving the same content store, in order. A trailing
    /// slash is dropped at load.
    pub content_mirrors: Vec<String>,
}

impl std::fmt::Debug for PublishingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishingConfig")
            .field("listen", &self.listen)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("management_urls", &self.management_urls)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .field("content_base_url", &self.content_base_url)
            .field("content_mirrors", &self.content_mirrors)
            .finish()
    }
}

/// `[reporting]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportingConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Reporting DB URL; a SQLite file in the data directory when unset.
    pub database_url: Option<String>,
    /// Largest SetReport body, in bytes; larger ones get `413`.
    pub max_body_bytes: usize,
    /// Reports received at once (each holds its body in memory); more wait up
    /// to five seconds for a turn, then get `503`.
    pub max_concurrent_requests: usize,
    /// Deadline of a report, body included, in seconds (0: none).
    pub request_timeout_secs: u64,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl std::fmt::Debug for ReportingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportingConfig")
            .field("listen", &self.listen)
            .field("database_url", &self.database_url.as_deref().map(redact))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

/// A role's HTTPS certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The environment variables that hold secrets, each also readable from the
/// file named by `<name>_FILE`.
const SECRETS: [&str; 3] = [
    "AVAIL_MANAGEMENT_DATABASE_URL",
    "AVAIL_REPORTING_DATABASE_URL",
    "AVAIL_PUBLISHING_CREDENTIAL",
];

/// A database URL with its password, if any, replaced by `***`: in the
/// user-info part (`postgres://user:secret@host/db`) and in a `password=`
/// parameter.
pub fn redact(url: &str) -> String {
    let mut out = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    };
    let mut from = 0;
    while let Some(found) = out[from..].find("password=") {
        let start = from + found + "password=".len();
        let at_param = start == "password=".len()
            || matches!(
                out.as_bytes()[start - "password=".len() - 1],
                b'?' | b'&' | b' '
            );
        let end = out[start..]
            .find(['&', ' ', '#'])
            .map_or(out.len(), |e| start + e);
        if at_param {
            out.replace_range(start..end, "***");
            from = start + 3;
        } else {
            from = start;
        }
    }
    out
}

/// Why `url` is not an absolute `http` or `https` URL with a host, if it is not.
fn http_url(url: &str) -> Result<(), &'static str> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "a URL")?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("an http or https URL");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("a URL with a host");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("a base URL (it has a query or fragment)");
    }
    Ok(())
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
            publishing: PublishingConfig::default(),
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
            tls_cert: None,
            tls_key: None,
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
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for PublishingConfig {
    fn default() -> Self {
        PublishingConfig {
            listen: addr(8081),
            tls_cert: None,
            tls_key: None,
            management_urls: Vec::new(),
            credential: None,
            content_base_url: None,
            content_mirrors: Vec::new(),
        }
    }
}

impl Default for ReportingConfig {
    fn default() -> Self {
        ReportingConfig {
            listen: addr(8082),
            database_url: None,
            max_body_bytes: 4 << 20,
            max_concurrent_requests: 64,
            request_timeout_secs: 60,
            tls_cert: None,
            tls_key: None,
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
    /// A secret is given both directly and as a file.
    #[error("both {name} and {name}_FILE are set; set one of them")]
    SecretTwice {
        /// The variable.
        name: &'static str,
    },
    /// The file named by `<name>_FILE` cannot be read or is empty.
    #[error("cannot read {name} from {path} ({name}_FILE): {message}")]
    SecretFile {
        /// The variable.
        name: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The secret `name` from the environment: `name` itself, or the first line of
/// the file that `<name>_FILE` names.
fn secret(
    env: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<String>, ConfigError> {
    let file = env(&format!("{name}_FILE"));
    match (env(name), file) {
        (Some(_), Some(_)) => Err(ConfigError::SecretTwice { name }),
        (Some(value), None) => Ok(Some(value)),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let path = PathBuf::from(path);
            let failed = |message: String| ConfigError::SecretFile {
                name,
                path: path.clone(),
                message,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| failed(e.to_string()))?;
            let value = text.lines().next().unwrap_or("").trim();
            if value.is_empty() {
                return Err(failed("the file is empty".into()));
            }
            Ok(Some(value.to_owned()))
        }
    }
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
        let publishing = &mut config.publishing;
        for url in publishing
            .content_base_url
            .iter_mut()
            .chain(&mut publishing.content_mirrors)
        {
            url.truncate(url.trim_end_matches('/').len());
        }
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
        let [management_url, reporting_url, publishing_credential] = SECRETS;
        if let Some(v) = secret(&env, management_url)? {
            self.management.database_url = Some(v);
        }
        if let Some(v) = secret(&env, reporting_url)? {
            self.reporting.database_url = Some(v);
        }
        if let Some(v) = secret(&env, publishing_credential)? {
            self.publishing.credential = Some(v);
        }
        if let Some(v) = env("AVAIL_PUBLISHING_MANAGEMENT_URLS") {
            self.publishing.management_urls = v
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = env("AVAIL_PUBLISHING_CONTENT_BASE_URL") {
            self.publishing.content_base_url = Some(v.trim().to_owned());
        }
        if let Some(v) = env("AVAIL_CONTENT_MIRRORS") {
            self.publishing.content_mirrors = v
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
        }
        let tls = [
            (
                "AVAIL_MANAGEMENT_TLS_CERT",
                "AVAIL_MANAGEMENT_TLS_KEY",
                &mut self.management.tls_cert,
                &mut self.management.tls_key,
            ),
            (
                "AVAIL_PUBLISHING_TLS_CERT",
                "AVAIL_PUBLISHING_TLS_KEY",
                &mut self.publishing.tls_cert,
                &mut self.publishing.tls_key,
            ),
            (
                "AVAIL_REPORTING_TLS_CERT",
                "AVAIL_REPORTING_TLS_KEY",
                &mut self.reporting.tls_cert,
                &mut self.reporting.tls_key,
            ),
            (
                "AVAIL_CONTENT_TLS_CERT",
                "AVAIL_CONTENT_TLS_KEY",
                &mut self.content.tls_cert,
                &mut self.content.tls_key,
            ),
        ];
        for (cert_var, key_var, cert, key) in tls {
            if let Some(v) = env(cert_var) {
                *cert = Some(PathBuf::from(v));
            }
            if let Some(v) = env(key_var) {
                *key = Some(PathBuf::from(v));
            }
        }
        if let Some(v) = env("AVAIL_CONTENT_ROOT") {
            self.content.root = Some(PathBuf::from(v));
        }
        if let Some(v) = env("AVAIL_MAX_UPLOAD_BYTES") {
            self.management.max_upload_bytes = parse("AVAIL_MAX_UPLOAD_BYTES", v)?;
        }
        if let Some(v) = env("AVAIL_REPORTING_MAX_BODY_BYTES") {
            self.reporting.max_body_bytes = parse("AVAIL_REPORTING_MAX_BODY_BYTES", v)?;
        }
        if let Some(v) = env("AVAIL_REPORTING_MAX_CONCURRENT_REQUESTS") {
            self.reporting.max_concurrent_requests =
                parse("AVAIL_REPORTING_MAX_CONCURRENT_REQUESTS", v)?;
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
            (
                "reporting.max_body_bytes",
                self.reporting.max_body_bytes as u64,
            ),
            (
                "reporting.max_concurrent_requests",
                self.reporting.max_concurrent_requests as u64,
            ),
        ];
        if !self.publishing.management_urls.is_empty() && self.publishing.credential.is_none() {
            return Err(
                "publishing.management_urls needs publishing.credential (AVAIL_PUBLISHING_CREDENTIAL)"
                    .into(),
            );
        }
        let content_urls = self
            .publishing
            .content_base_url
            .iter()
            .map(|u| ("publishing.content_base_url", u))
            .chain(
                self.publishing
                    .content_mirrors
                    .iter()
                    .map(|u| ("publishing.content_mirrors", u)),
            );
        for (name, url) in content_urls {
            http_url(url).map_err(|why| format!("{name}: {url:?} is not {why}"))?;
        }
        if let Some((name, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        // Semaphores count in u32 steps; a million connections per role is
        // far beyond what one process can hold open anyway.
        if self.http.max_connections > 1 << 20 {
            return Err("http.max_connections must be at most 1048576".into());
        }
        for role in [
            Role::Management,
            Role::Publishing,
            Role::Reporting,
            Role::Content,
        ] {
            let (cert, key) = self.tls_paths(role);
            if cert.is_some() != key.is_some() {
                return Err(format!(
                    "{role}.tls_cert and {role}.tls_key must be set together"
                ));
            }
        }
        Ok(())
    }

    fn tls_paths(&self, role: Role) -> (&Option<PathBuf>, &Option<PathBuf>) {
        match role {
            Role::Management => (&self.management.tls_cert, &self.management.tls_key),
            Role::Publishing => (&self.publishing.tls_cert, &self.publishing.tls_key),
            Role::Reporting => (&self.reporting.tls_cert, &self.reporting.tls_key),
            Role::Content => (&self.content.tls_cert, &self.content.tls_key),
        }
    }

    /// The certificate and key a role serves HTTPS with, if it does.
    pub fn tls(&self, role: Role) -> Option<TlsFiles> {
        match self.tls_paths(role) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// A role's listen address (port 0: any free port).
    pub fn listen(&self, role: Role) -> SocketAddr {
        match role {
            Role::Management => self.management.listen,
            Role::Publishing => self.publishing.listen,
            Role::Reporting => self.reporting.listen,
            Role::Content => self.content.listen,
        }
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

    /// Where the publishing document's package URLs start: `[publishing]
    /// content_base_url`, else this node's content role at its listen address
    /// (`https` with the content role's TLS files). A wildcard listen address
    /// gives a URL only this machine can use, so a deployment with clients
    /// elsewhere sets `content_base_url`.
    pub fn content_base_url(&self) -> String {
        match &self.publishing.content_base_url {
            Some(url) => url.clone(),
            None => {
                let scheme = if self.tls(Role::Content).is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}", self.listen(Role::Content))
            }
        }
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

    /// The Reporting DB's URL: the configured one, else `reporting.db` in the data directory.
    pub fn reporting_database_url(&self) -> String {
        self.reporting
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", self.data_dir.join("reporting.db").display()))
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
        let (r, d) = (&c.reporting, ReportingConfig::default());
        assert_eq!(
            (
                r.max_body_bytes,
                r.max_concurrent_requests,
                r.request_timeout_secs
            ),
            (
                d.max_body_bytes,
                d.max_concurrent_requests,
                d.request_timeout_secs
            )
        );
        assert_eq!(c.check(), Ok(()));
        assert_eq!(c.roles().unwrap(), Role::AVAILABLE);
    }

    #[test]
    fn reporting_settings_come_from_the_environment() {
        let c = Config::default();
        assert_eq!(c.reporting.max_body_bytes, 4 << 20);
        assert_eq!(
            c.reporting_database_url(),
            format!(
                "sqlite:{}",
                Path::new("./avail-data/reporting.db").display()
            )
        );
        let env = |k: &str| match k {
            "AVAIL_REPORTING_MAX_BODY_BYTES" => Some("1000".to_owned()),
            "AVAIL_REPORTING_MAX_CONCURRENT_REQUESTS" => Some("3".to_owned()),
            "AVAIL_REPORTING_DATABASE_URL" => Some("sqlite:r.db".to_owned()),
            "AVAIL_ROLES" => Some("reporting".to_owned()),
            _ => None,
        };
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.reporting.max_body_bytes, 1000);
        assert_eq!(c.reporting.max_concurrent_requests, 3);
        assert_eq!(c.reporting_database_url(), "sqlite:r.db");
        assert_eq!(c.roles().unwrap(), [Role::Reporting]);
        let c = Config {
            reporting: ReportingConfig {
                max_body_bytes: 0,
                ..ReportingConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(
            c.check(),
            Err("reporting.max_body_bytes must be at least 1".to_owned())
        );
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
        assert_eq!(c.roles().unwrap(), [Role::Publishing]);
    }

    #[test]
    fn publishing_sync_settings_come_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credential");
        std::fs::write(&file, "avail_pub_s3cret\n").unwrap();
        let file = file.to_str().unwrap().to_owned();
        let env = |k: &str| match k {
            "AVAIL_PUBLISHING_MANAGEMENT_URLS" => Some(" http://m1:8080, ,http://m2:8080".into()),
            "AVAIL_PUBLISHING_CREDENTIAL_FILE" => Some(file.clone()),
            _ => None,
        };
        let c = Config::load(None, env).unwrap();
        assert_eq!(
            c.publishing.management_urls,
            ["http://m1:8080", "http://m2:8080"]
        );
        assert_eq!(c.publishing.credential.as_deref(), Some("avail_pub_s3cret"));
        assert_eq!(c.check(), Ok(()));
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");

        // URLs without a credential cannot sync.
        let env = |k: &str| (k == "AVAIL_PUBLISHING_MANAGEMENT_URLS").then(|| "http://m1".into());
        let e = Config::load(None, env).unwrap().check().unwrap_err();
        assert!(e.contains("publishing.credential"), "{e}");
    }

    #[test]
    fn content_urls_default_to_the_local_content_role() {
        let c = Config::default();
        assert_eq!(c.content_base_url(), "http://127.0.0.1:8083");
        assert!(c.publishing.content_mirrors.is_empty());
        let env = |k: &str| (k == "AVAIL_CONTENT_LISTEN").then(|| "0.0.0.0:9000".into());
        // A wildcard address is kept as it is: multi-node deployments set
        // content_base_url.
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.content_base_url(), "http://0.0.0.0:9000");
    }

    #[test]
    fn content_urls_come_from_file_and_environment_without_trailing_slash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("avail.toml");
        std::fs::write(
            &path,
            "[publishing]\ncontent_base_url = \"https://content.example/avail/\"\n\
             content_mirrors = [\"http://m1.example/\", \"https://m2.example:8443/c//\"]\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), |_| None).unwrap();
        assert_eq!(c.content_base_url(), "https://content.example/avail");
        assert_eq!(
            c.publishing.content_mirrors,
            ["http://m1.example", "https://m2.example:8443/c"]
        );
        assert_eq!(c.check(), Ok(()));

        let env = |k: &str| match k {
            "AVAIL_PUBLISHING_CONTENT_BASE_URL" => Some(" http://cdn.example/ ".into()),
            "AVAIL_CONTENT_MIRRORS" => Some("http://a.example/, ,https://b.example".into()),
            _ => None,
        };
        let c = Config::load(Some(&path), env).unwrap();
        assert_eq!(c.content_base_url(), "http://cdn.example");
        assert_eq!(
            c.publishing.content_mirrors,
            ["http://a.example", "https://b.example"]
        );
        assert_eq!(c.check(), Ok(()));
    }

    #[test]
    fn content_urls_must_be_http_base_urls() {
        for (name, value, setting) in [
            (
                "AVAIL_PUBLISHING_CONTENT_BASE_URL",
                "ftp://content.example",
                "publishing.content_base_url",
            ),
            (
                "AVAIL_PUBLISHING_CONTENT_BASE_URL",
                "content.example:8083",
                "publishing.content_base_url",
            ),
            (
                "AVAIL_CONTENT_MIRRORS",
                "http://ok.example,not a url",
                "publishing.content_mirrors",
            ),
            (
                "AVAIL_CONTENT_MIRRORS",
                "https://m.example/?x=1",
                "publishing.content_mirrors",
            ),
            (
                "AVAIL_CONTENT_MIRRORS",
                "file:///srv",
                "publishing.content_mirrors",
            ),
        ] {
            let env = |k: &str| (k == name).then(|| value.to_owned());
            let e = Config::load(None, env).unwrap().check().unwrap_err();
            assert!(e.starts_with(setting), "{value}: {e}");
        }
    }

    #[test]
    fn secrets_come_from_files_and_are_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("url");
        std::fs::write(
            &secret,
            "postgres://avail:s3cret@db1:5432,db2:5432/avail_management\nignored\n",
        )
        .unwrap();
        let file = secret.to_str().unwrap().to_owned();
        let env = |k: &str| (k == "AVAIL_MANAGEMENT_DATABASE_URL_FILE").then(|| file.clone());
        let c = Config::load(None, env).unwrap();
        assert_eq!(
            c.management_database_url(),
            "postgres://avail:s3cret@db1:5432,db2:5432/avail_management"
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://avail:***@db1:5432"), "{shown}");

        // Both ways at once, an empty file, a missing file: named errors.
        let env = |k: &str| match k {
            "AVAIL_REPORTING_DATABASE_URL" => Some("sqlite:r.db".to_owned()),
            "AVAIL_REPORTING_DATABASE_URL_FILE" => Some(file.clone()),
            _ => None,
        };
        let e = Config::load(None, env).unwrap_err();
        assert!(matches!(
            e,
            ConfigError::SecretTwice {
                name: "AVAIL_REPORTING_DATABASE_URL"
            }
        ));
        std::fs::write(&secret, "\n").unwrap();
        let env = |k: &str| (k == "AVAIL_REPORTING_DATABASE_URL_FILE").then(|| file.clone());
        let e = Config::load(None, env).unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains(&file), "{e}");
        let env = |k: &str| {
            (k == "AVAIL_MANAGEMENT_DATABASE_URL_FILE").then(|| "/nonexistent/url".to_owned())
        };
        let e = Config::load(None, env).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/url"), "{e}");
    }

    #[test]
    fn passwords_are_redacted() {
        for (url, shown) in [
            ("postgres://avail:pw@db/x", "postgres://avail:***@db/x"),
            ("postgres://avail@db/x", "postgres://avail@db/x"),
            (
                "postgres://db/x?user=a&password=pw&sslmode=require",
                "postgres://db/x?user=a&password=***&sslmode=require",
            ),
            ("host=db password=pw user=a", "host=db password=*** user=a"),
            ("password=pw", "password=***"),
            (
                "sqlite:/srv/my_password=x.db",
                "sqlite:/srv/my_password=x.db",
            ),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn tls_files_per_role() {
        let env = |k: &str| match k {
            "AVAIL_CONTENT_TLS_CERT" => Some("/etc/avail/cert.pem".to_owned()),
            "AVAIL_CONTENT_TLS_KEY" => Some("/etc/avail/key.pem".to_owned()),
            "AVAIL_MANAGEMENT_TLS_CERT" => Some("/etc/avail/cert.pem".to_owned()),
            _ => None,
        };
        let c = Config::load(None, env).unwrap();
        assert_eq!(
            c.tls(Role::Content),
            Some(TlsFiles {
                cert: "/etc/avail/cert.pem".into(),
                key: "/etc/avail/key.pem".into()
            })
        );
        assert_eq!(c.tls(Role::Publishing), None);
        // A certificate without its key is a mistake, not plain HTTP.
        let e = c.check().unwrap_err();
        assert!(e.contains("management.tls_key"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("avail.toml");
        std::fs::write(
            &file,
            "[reporting]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), |_| None).unwrap();
        assert_eq!(c.tls(Role::Reporting).unwrap().key, PathBuf::from("k.pem"));
        assert_eq!(c.check(), Ok(()));
    }
}
