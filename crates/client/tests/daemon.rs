//! The daemon's socket against well-formed and hostile callers, with no
//! publishing server: answers and errors by kind, settings kept across a
//! restart, garbage and oversized request lines refused without harm, a
//! second daemon on the same socket refused, and the socket gone after
//! shutdown. (Publishing, mounts and streaming with the real binaries and
//! servers are in the `avail-cli` crate's `client` tests.)

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use avail_client::daemon::{DaemonOptions, run};
use avail_client::protocol::{Answer, CallError, FailureKind, Request, call};
use tokio::sync::oneshot;

struct Daemon {
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let socket = dir.join("client.sock");
        let options = DaemonOptions {
            socket: socket.clone(),
            state_dir: dir.join("state"),
            mount_root: Some(dir.join("mnt")),
            desktop_dir: dir.join("desktop"),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(run(options, async {
                let _ = stopped.await;
            }))
            .map_err(|e| e.to_string())
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "the daemon did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            socket,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn call(&self, request: Request) -> Result<serde_json::Value, CallError> {
        call(&self.socket, &request, |_| {})
    }

    fn stop(mut self) -> Result<(), String> {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn failure(result: Result<serde_json::Value, CallError>) -> (FailureKind, String) {
    match result {
        Err(CallError::Failed(f)) => (f.kind, f.message),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Sends raw bytes and returns the one answer line.
fn raw(socket: &Path, bytes: &[u8]) -> Answer {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The daemon may answer and close before reading everything.
    let _ = stream.write_all(bytes);
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn daemon_answers_requests_refuses_bad_ones_and_keeps_settings() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());

    let status = d.call(Request::Status).unwrap();
    assert_eq!(status["servers"], 0);
    assert_eq!(status["packages"], 0);
    assert_eq!(d.call(Request::PackageList).unwrap(), serde_json::json!([]));
    assert_eq!(d.call(Request::ServerList).unwrap(), serde_json::json!([]));
    // A refresh with no server adds nothing and fails nothing.
    let sync = d.call(Request::Sync { user: None }).unwrap();
    assert_eq!(sync["servers"], serde_json::json!([]));
    assert_eq!(sync["packages"]["failed"], serde_json::json!([]));

    // Settings: checked, saved, named case-insensitively.
    let set = d
        .call(Request::ConfigSet {
            name: "autoload".into(),
            value: "2".into(),
        })
        .unwrap();
    assert_eq!(set["name"], "AutoLoad");
    let (kind, message) = failure(d.call(Request::ConfigSet {
        name: "AutoLoad".into(),
        value: "7".into(),
    }));
    assert_eq!(kind, FailureKind::Invalid);
    assert!(message.contains("0..=2"), "{message}");
    let (kind, _) = failure(d.call(Request::ConfigGet {
        name: Some("NoSuchSetting".into()),
    }));
    assert_eq!(kind, FailureKind::NotFound);
    // The mount root is the daemon's option here, not a setting to change.
    let (kind, _) = failure(d.call(Request::ConfigSet {
        name: "PackageInstallationRoot".into(),
        value: "/srv/elsewhere".into(),
    }));
    assert_eq!(kind, FailureKind::Invalid);

    // Servers: bad URLs and empty credentials refused; a good one kept, once.
    for (urls, credential) in [
        (vec!["ftp://x".to_owned()], "c"),
        (vec!["not a url".to_owned()], "c"),
        (Vec::new(), "c"),
        (vec!["http://127.0.0.1:9".to_owned()], " "),
    ] {
        let (kind, _) = failure(d.call(Request::ServerAdd {
            name: None,
            urls,
            credential: credential.into(),
        }));
        assert_eq!(kind, FailureKind::Invalid);
    }
    let add = Request::ServerAdd {
        name: Some("pub".into()),
        urls: vec!["http://127.0.0.1:9".into()],
        credential: "secret".into(),
    };
    d.call(add.clone()).unwrap();
    assert_eq!(failure(d.call(add)).0, FailureKind::Invalid);
    let servers = d.call(Request::ServerList).unwrap();
    assert_eq!(servers[0]["name"], "pub");
    assert!(
        !servers.to_string().contains("secret"),
        "the credential was shown: {servers}"
    );
    // A server that does not answer: the refresh says so and changes nothing.
    let sync = d.call(Request::Sync { user: None }).unwrap();
    assert_eq!(sync["servers"][0]["result"], "failed", "{sync}");

    // Unknown packages.
    let (kind, _) = failure(d.call(Request::PackageRemove {
        package: "Nothing".into(),
    }));
    assert_eq!(kind, FailureKind::NotFound);
    let (kind, _) = failure(d.call(Request::PackageAdd {
        url: "http://127.0.0.1:9/not-a-package".into(),
        mirrors: Vec::new(),
    }));
    assert_eq!(kind, FailureKind::Invalid);

    // Hostile lines: garbage, an unknown command, a line longer than 64 KiB,
    // and a connection that sends nothing at all — each refused, none fatal.
    for bytes in [
        b"{not json\n".to_vec(),
        b"{\"command\":\"format-disk\"}\n".to_vec(),
        [vec![b'x'; 70 * 1024], b"\n".to_vec()].concat(),
    ] {
        match raw(&d.socket, &bytes) {
            Answer::Error(f) => assert_eq!(f.kind, FailureKind::Invalid),
            other => panic!("{other:?}"),
        }
    }
    let silent = UnixStream::connect(&d.socket).unwrap();
    // A second daemon on the same socket is refused while this one answers.
    let second = tempfile::tempdir().unwrap();
    let options = DaemonOptions {
        socket: d.socket.clone(),
        state_dir: second.path().join("state"),
        mount_root: Some(second.path().join("mnt")),
        desktop_dir: second.path().join("desktop"),
    };
    let refused = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(run(options, std::future::pending()));
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("another client daemon")
    );
    assert!(d.call(Request::Status).is_ok());
    drop(silent);

    // Settings and servers outlive a restart; the socket does not outlive the daemon.
    let socket = d.socket.clone();
    d.stop().unwrap();
    assert!(!socket.exists(), "the socket was left behind");
    let d = Daemon::start(dir.path());
    let auto_load = d
        .call(Request::ConfigGet {
            name: Some("AutoLoad".into()),
        })
        .unwrap();
    assert_eq!(auto_load["AutoLoad"], "2");
    assert_eq!(d.call(Request::ServerList).unwrap()[0]["name"], "pub");
    let removed = d
        .call(Request::ServerRemove { name: "pub".into() })
        .unwrap();
    assert_eq!(removed["removed"], "pub");
    assert_eq!(d.call(Request::ServerList).unwrap(), serde_json::json!([]));
    d.stop().unwrap();
}

/// A user other than root holds at most 8 of the socket's connections: the
/// ninth is refused with a line saying so, and root still gets in.
#[test]
fn daemon_limits_the_connections_of_one_user() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(dir.path());
    // As nobody: nine connections that send nothing; the ninth's answer.
    let script = format!(
        "import socket\n\
         held = []\n\
         for _ in range(8):\n\
         \x20   s = socket.socket(socket.AF_UNIX); s.connect({path:?}); held.append(s)\n\
         s = socket.socket(socket.AF_UNIX); s.connect({path:?}); s.settimeout(10)\n\
         print(s.recv(4096).decode())\n",
        path = d.socket.to_str().unwrap()
    );
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .output()
        .expect("setpriv (util-linux) and Debian's /usr/bin/python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("8 connections to the daemon open already"),
        "{text}"
    );
    assert!(d.call(Request::Status).is_ok(), "root is not limited");
    d.stop().unwrap();
}
