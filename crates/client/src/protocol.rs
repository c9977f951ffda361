//! What `avail client …` and the daemon say to each other over the Unix
//! socket: one request, a JSON object on one line, then any number of
//! progress lines and one final line, the result or an error.
//!
//! The daemon learns who asks from the socket's peer credentials, never from
//! the request. [`call`] is the blocking client side the command line uses.

use std::io::{BufRead, BufReader, Read as _, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The default socket path (`AVAIL_CLIENT_SOCKET` overrides it).
pub const DEFAULT_SOCKET: &str = "/run/avail-client.sock";

/// The longest request line the daemon reads.
pub const MAX_REQUEST: usize = 64 * 1024;

/// The longest answer line the command line reads.
pub const MAX_ANSWER: usize = 64 << 20;

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// The daemon's state in brief.
    Status,
    /// Add a publishing server (root only).
    ServerAdd {
        /// A name for it; derived from the first URL when absent.
        name: Option<String>,
        /// Its URLs, tried in order (the nodes or load balancers of one server).
        urls: Vec<String>,
        /// The machine credential it knows this machine by.
        credential: String,
    },
    /// The publishing servers.
    ServerList,
    /// Remove a publishing server and unpublish what it published (root only).
    ServerRemove {
        /// Its name.
        name: String,
    },
    /// A publishing refresh: the machine's and the caller's (root: every
    /// user's the daemon knows, or `user`'s alone).
    Sync {
        /// For root: refresh this user (as well as the machine).
        user: Option<String>,
    },
    /// The package versions the caller may see.
    PackageList,
    /// Add a package version from a URL of its file, outside any publishing
    /// server (root only).
    PackageAdd {
        /// The package file's URL (`http(s)://…/packages/<P>/<V>.appv` or `file:///…`).
        url: String,
        /// Further mirrors of the same file.
        mirrors: Vec<String>,
    },
    /// Load every block of a package version into the cache (root only).
    PackageMount {
        /// Name, PackageId or VersionId.
        package: String,
    },
    /// Unmount a package version and let its blocks go (root only).
    PackageRemove {
        /// Name, PackageId or VersionId.
        package: String,
    },
    /// One setting, or all of them.
    ConfigGet {
        /// The setting's name; all when absent.
        name: Option<String>,
    },
    /// Prepare a launch of an application the caller is published: its
    /// package's primary feature block made local, the layers of its
    /// connection group, what to run.
    Launch {
        /// An application id, a package name (its first application) or the
        /// file name of an application's target.
        app: String,
    },
    /// The copy-on-write layers of an application or package (`avail client
    /// repair`): its package's, and those of the connection groups holding it.
    Layers {
        /// An application as for [`Request::Launch`], or a package's name,
        /// PackageId or VersionId.
        package: String,
    },
    /// A launch's application exited.
    LaunchEnded {
        /// The id [`Request::Launch`] answered with.
        launch_id: uuid::Uuid,
        /// Its exit code, when it exited.
        exit_code: Option<i32>,
        /// The signal that ended it, when one did.
        signal: Option<i32>,
    },
    /// The versions published to the caller (not to the machine), for the
    /// caller's own desktop entries.
    Desktop,
    /// Send the queued usage reports now (`Send-AppvClientReport`).
    ReportSend,
    /// What the usage report queue holds.
    ReportStatus,
    /// Change a setting (root only).
    ConfigSet {
        /// The setting's name.
        name: String,
        /// Its new value.
        value: String,
    },
}

/// One line of the daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    /// Work in progress.
    Progress(Progress),
    /// The result: the last line.
    Ok(serde_json::Value),
    /// The failure: the last line.
    Error(Failure),
}

/// How far long work has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Done so far.
    pub done: u64,
    /// The whole.
    pub total: u64,
    /// Whether `done` and `total` count bytes (else items: servers, packages).
    #[serde(default)]
    pub bytes: bool,
    /// What is being done.
    pub message: String,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What happened and what to do, for a person.
    pub message: String,
}

/// The kinds of [`Failure`], each with its exit status on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The request or one of its values is wrong (exit 2, as for a bad command line).
    Invalid,
    /// No such server, package or setting (exit 4).
    NotFound,
    /// Only root may do that (exit 77, `EX_NOPERM`).
    PermissionDenied,
    /// A server, mirror or mount could not be reached or made (exit 69, `EX_UNAVAILABLE`).
    Unavailable,
    /// Anything else (exit 1).
    Internal,
}

impl FailureKind {
    /// The exit status `avail client` ends with.
    pub fn exit_status(self) -> u8 {
        match self {
            FailureKind::Invalid => 2,
            FailureKind::NotFound => 4,
            FailureKind::PermissionDenied => 77,
            FailureKind::Unavailable => 69,
            FailureKind::Internal => 1,
        }
    }
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// Why [`call`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The socket could not be reached.
    #[error(
        "cannot reach the client daemon at {socket}: {source} (is `avail client daemon` running? \
         systemctl start avail-client; AVAIL_CLIENT_SOCKET names another socket)"
    )]
    Connect {
        /// The socket path.
        socket: String,
        /// Why.
        source: std::io::Error,
    },
    /// The conversation broke off or made no sense.
    #[error("the client daemon's answer broke off: {0}")]
    Broken(String),
    /// The daemon refused or failed.
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// Sends `request` to the daemon at `socket` and returns its result, calling
/// `progress` for each progress line.
pub fn call(
    socket: &Path,
    request: &Request,
    mut progress: impl FnMut(&Progress),
) -> Result<serde_json::Value, CallError> {
    let stream = UnixStream::connect(socket).map_err(|source| CallError::Connect {
        socket: socket.display().to_string(),
        source,
    })?;
    let broken = |e: std::io::Error| CallError::Broken(e.to_string());
    // Long work reports progress at least every few seconds.
    stream
        .set_read_timeout(Some(Duration::from_secs(600)))
        .map_err(broken)?;
    let mut line = serde_json::to_vec(request).map_err(|e| CallError::Broken(e.to_string()))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(broken)?;
    let mut reader = BufReader::new(&stream).take(MAX_ANSWER as u64);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(broken)? == 0 {
            return Err(CallError::Broken("the daemon closed the connection".into()));
        }
        match serde_json::from_str::<Answer>(&line) {
            Ok(Answer::Progress(p)) => progress(&p),
            Ok(Answer::Ok(value)) => return Ok(value),
            Ok(Answer::Error(failure)) => return Err(CallError::Failed(failure)),
            Err(e) => return Err(CallError::Broken(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_are_one_json_line_each() {
        let r = Request::ServerAdd {
            name: None,
            urls: vec!["http://a".into()],
            credential: "c".into(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""command":"server-add""#), "{text}");
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        let a = Answer::Error(Failure::new(FailureKind::NotFound, "no such package"));
        let text = serde_json::to_string(&a).unwrap();
        assert!(!text.contains('\n'));
        assert_eq!(serde_json::from_str::<Answer>(&text).unwrap(), a);
        assert!(serde_json::from_str::<Request>(r#"{"command":"rm-rf"}"#).is_err());
    }
}
