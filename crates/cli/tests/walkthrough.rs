//! The README's walkthrough, run as written: the shell block between
//! `<!-- walkthrough:start -->` and `<!-- walkthrough:end -->` goes to bash in
//! a scratch directory holding a link to the repository's `examples/`, with
//! the `avail` under test first on the `PATH`, as root (the client daemon
//! mounts). It must exit 0, and `avail run hello-avail` must print the
//! greeting and the SHA-256 of the example's data. Afterwards nothing it
//! started is left running or mounted. It uses the default ports
//! 8080–8083, as the walkthrough does.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The SHA-256 of `examples/hello-avail/tree/opt/hello-avail/data/*`, in name order.
const DATA_SHA256: &str = "46d3102f6bbc825c33d81adc7869247b48a0eb074a653e3158b9ad11ecbbf9f6";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shell block of the README's walkthrough.
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("README.md has no walkthrough:start marker");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("README.md has no walkthrough:end marker");
    let block = &readme[start..end];
    let code = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(code, _)| code)
        .expect("the walkthrough is one ```sh block");
    code.to_owned()
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    assert!(
        nix_is_root(),
        "the walkthrough test runs as root (the client daemon mounts with FUSE); CI runs as root"
    );
    for port in 8080..=8083 {
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is taken: the walkthrough uses Avail's default ports 8080-8083"
        );
    }
    let scratch = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        repository().join("examples"),
        scratch.path().join("examples"),
    )
    .unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_avail")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // As written, plus: stop at the first failure, and stop what it started
    // (the daemon's SIGTERM unmounts) whatever happens.
    let script = format!(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{}",
        walkthrough()
    );
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(scratch.path())
        .env("PATH", path)
        .env_remove("AVAIL_SERVER")
        .env_remove("AVAIL_TOKEN")
        .env_remove("AVAIL_DATA_DIR")
        .env("AVAIL_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the walkthrough did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        status.success(),
        "the walkthrough failed ({status})\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    assert!(
        out.contains("Hello from Avail, root! This is run 1."),
        "no greeting:\n{out}\n{err}"
    );
    assert!(
        out.contains(&format!("data: {DATA_SHA256}")),
        "the data's SHA-256 differs:\n{out}"
    );
    // Nothing left mounted under the scratch directory.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let scratch_path = scratch.path().canonicalize().unwrap();
    assert!(
        !mounts.contains(scratch_path.to_str().unwrap()),
        "the walkthrough left a mount behind:\n{mounts}"
    );
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}
