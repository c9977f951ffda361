//! Imports under failure, with the real `avail` binary: a process killed during
//! an upload or between storing a package and recording it (`kill -9`, then a
//! restart on the same data), a full disk under the content store or the
//! Management DB (a small tmpfs, when the tests run as root), and import from
//! the content store through symbolic links.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use avail_testkit::AvailNode;
use serde_json::Value;

fn start(env: &[(&str, &str)]) -> AvailNode {
    AvailNode::start(Path::new(env!("CARGO_BIN_EXE_avail")), None, env).unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Pack a tree holding `payload` into a package with the given ids.
fn pack(dir: &Path, package_id: &str, version_id: &str, payload: &[u8]) -> PathBuf {
    let tree = dir.join(format!("tree-{version_id}"));
    std::fs::create_dir_all(tree.join("opt/app/bin")).unwrap();
    std::fs::write(tree.join("opt/app/bin/app"), payload).unwrap();
    let out = dir.join(format!("{version_id}.appv"));
    let o = Command::new(env!("CARGO_BIN_EXE_avail"))
        .args(["package", "pack"])
        .arg(&tree)
        .arg("-o")
        .arg(&out)
        .args(["--name", "Editor", "--version", "1.0"])
        .args(["--package-id", package_id, "--version-id", version_id])
        .args(["--app", "app=/opt/app/bin/app"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    out
}

/// Bytes that do not compress (xorshift), so a package is as large as its payload.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `(status, body)` of one request, through a one-off runtime.
fn request(method: &str, url: &str, token: &str, body: Option<(&str, Vec<u8>)>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut rb = reqwest::Client::new()
            .request(method.parse().unwrap(), url)
            .bearer_auth(token);
        if let Some((content_type, bytes)) = body {
            rb = rb.header("Content-Type", content_type).body(bytes);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    })
}

fn upload(node: &AvailNode, file: &Path) -> (u16, Value) {
    request(
        "POST",
        &format!("{}/api/v1/packages", node.url),
        &node.token,
        Some(("application/octet-stream", std::fs::read(file).unwrap())),
    )
}

/// Files directly in `dir` whose names end with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(suffix))
                .collect()
        })
        .unwrap_or_default()
}

/// Every regular file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = format!("{rel}{}", e.file_name().to_string_lossy());
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path(), &format!("{name}/"), out),
                Ok(t) if t.is_file() => out.push(name),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

fn content_paths(node: &AvailNode) -> Vec<String> {
    let (status, list) = request(
        "GET",
        &format!("{}/api/v1/packages", node.url),
        &node.token,
        None,
    );
    assert_eq!(status, 200);
    let mut paths: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["content_path"].as_str().unwrap().to_owned())
        .collect();
    paths.sort();
    paths
}

const PKG: &str = "33333333-0000-4000-8000-000000000003";

#[test]
fn a_kill_during_an_upload_leaves_no_part_file_after_a_restart() {
    let mut node = start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let file = pack(
        tmp.path(),
        PKG,
        "33333333-0000-4000-8000-0000000000c1",
        &noise(2 << 20),
    );
    let bytes = std::fs::read(&file).unwrap();
    // Half the body, and the connection held open: the server is writing a `.part` file.
    let mut stream = TcpStream::connect(node.addr()).unwrap();
    write!(
        stream,
        "POST /api/v1/packages HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        node.addr(),
        node.token,
        bytes.len()
    )
    .unwrap();
    stream.write_all(&bytes[..bytes.len() / 2]).unwrap();
    stream.flush().unwrap();
    let incoming = node.data.join("content/.incoming");
    let deadline = Instant::now() + Duration::from_secs(30);
    while files_ending(&incoming, ".part").is_empty() {
        assert!(Instant::now() < deadline, "no .part file: {}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    node.kill();
    drop(stream);
    assert_eq!(files_ending(&incoming, ".part").len(), 1);

    node.restart().unwrap();
    assert_eq!(
        files_ending(&incoming, ".part"),
        Vec::<String>::new(),
        "{}",
        node.log()
    );
    // And the same upload, whole, works.
    assert_eq!(upload(&node, &file).0, 201);
    assert!(files_ending(&incoming, ".part").is_empty());
}

#[test]
fn a_kill_between_storing_and_recording_is_settled_at_the_next_start() {
    let mut node = start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let recorded = pack(
        tmp.path(),
        PKG,
        "33333333-0000-4000-8000-0000000000d1",
        b"recorded\n",
    );
    assert_eq!(upload(&node, &recorded).0, 201);
    node.kill();

    // What a kill after the rename and before the row leaves: a package file
    // under its own path without a row. And two files nothing accounts for: a
    // corrupt one, and a good package under another version's path.
    let content = node.data.join("content");
    let orphan_id = "33333333-0000-4000-8000-0000000000d2";
    let orphan = format!("packages/{PKG}/{orphan_id}.appv");
    let good = pack(tmp.path(), PKG, orphan_id, b"orphan\n");
    std::fs::copy(&good, content.join(&orphan)).unwrap();
    let corrupt = format!("packages/{PKG}/33333333-0000-4000-8000-0000000000d3.appv");
    let mut bytes = std::fs::read(&good).unwrap();
    let n = bytes.len();
    bytes.truncate(n / 2);
    std::fs::write(content.join(&corrupt), &bytes).unwrap();
    let misplaced = format!("packages/{PKG}/33333333-0000-4000-8000-0000000000d4.appv");
    std::fs::copy(&good, content.join(&misplaced)).unwrap();

    node.restart().unwrap();
    // Every file under packages/ has its row; the rest went to quarantine.
    let rows = content_paths(&node);
    let stored: Vec<String> = files_under(&content.join("packages"))
        .into_iter()
        .map(|f| format!("packages/{f}"))
        .collect();
    assert_eq!(stored, rows, "{}", node.log());
    assert!(rows.contains(&orphan), "{rows:?}");
    let quarantined = files_under(&content.join(".quarantine"));
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(
        quarantined.iter().any(|q| q.ends_with(&corrupt))
            && quarantined.iter().any(|q| q.ends_with(&misplaced)),
        "{quarantined:?}"
    );
    assert!(node.log().contains("quarantine"), "{}", node.log());
    // The content role serves the adopted version, and nothing quarantined.
    let get = |path: &str| {
        request(
            "GET",
            &format!("{}/{path}", node.content_url),
            &node.token,
            None,
        )
        .0
    };
    assert_eq!(get(&orphan), 200);
    assert_eq!(get(&corrupt), 404);
    assert_eq!(get(&format!(".quarantine/{}", quarantined[0])), 404);
}

/// Import from the content store refuses a path through a symbolic link, with
/// the same answer whether or not what it points to exists.
#[test]
fn import_from_the_store_does_not_follow_symbolic_links() {
    let node = start(&[]);
    let content = node.data.join("content");
    std::os::unix::fs::symlink("/etc", content.join("etc")).unwrap();
    let import = |path: &str| {
        let body = serde_json::to_vec(&serde_json::json!({ "path": path })).unwrap();
        let (status, body) = request(
            "POST",
            &format!("{}/api/v1/packages/import", node.url),
            &node.token,
            Some(("application/json", body)),
        );
        let message = body["message"]
            .as_str()
            .unwrap_or_default()
            .replace(path, "PATH");
        (status, message)
    };
    let exists = import("etc/passwd");
    assert_eq!(exists.0, 400, "{exists:?}");
    assert!(exists.1.contains("symbolic link"), "{exists:?}");
    assert_eq!(import("etc/no-such-file-here"), exists);
    assert_eq!(import("etc"), exists);
    // A real path still imports.
    let tmp = tempfile::tempdir().unwrap();
    let file = pack(
        tmp.path(),
        PKG,
        "33333333-0000-4000-8000-0000000000e1",
        b"from the store\n",
    );
    std::fs::create_dir_all(content.join("drop")).unwrap();
    std::fs::copy(&file, content.join("drop/editor.appv")).unwrap();
    assert_eq!(import("drop/editor.appv").0, 201);
}

/// A tmpfs of `size` at `at`, unmounted on drop; `None` (with a note) when this
/// process may not mount one (not root, or no CAP_SYS_ADMIN).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if text(&uid.stdout).trim() != "0" {
            eprintln!("note: not root, so no tmpfs: the full-disk test is skipped");
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        if !o.status.success() {
            eprintln!(
                "note: cannot mount a tmpfs ({}): the full-disk test is skipped",
                text(&o.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs(at.to_owned()))
    }

    /// Fill it: a file that takes every free byte.
    fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0xA5u8; 64 << 10];
        let mut small = vec![0xA5u8; 4096];
        loop {
            if f.write_all(&block).is_err() {
                break;
            }
        }
        // The last partial block: fill page by page.
        while f.write_all(&small).is_ok() {}
        small.truncate(1);
        while f.write_all(&small).is_ok() {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// ENOSPC under the content store and SQLITE_FULL in the Management DB answer
/// 507 with a message that names what is full, and leave nothing behind.
#[test]
fn a_full_disk_is_507_and_names_what_is_full() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(store_fs) = Tmpfs::mount(&tmp.path().join("content"), "2m") else {
        return;
    };
    let Some(db_fs) = Tmpfs::mount(&tmp.path().join("db"), "4m") else {
        return;
    };
    let root = store_fs.0.to_str().unwrap().to_owned();
    let db = format!("sqlite:{}", db_fs.0.join("management.db").display());
    let node = AvailNode::start(
        Path::new(env!("CARGO_BIN_EXE_avail")),
        Some(&db),
        &[("AVAIL_CONTENT_ROOT", &root)],
    )
    .unwrap();
    let packages = tempfile::tempdir().unwrap();

    // A package larger than the content store's file system.
    let big = pack(
        packages.path(),
        PKG,
        "33333333-0000-4000-8000-0000000000f1",
        &noise(3 << 20),
    );
    let (status, body) = upload(&node, &big);
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"], "insufficient_storage", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("content store") && message.contains(&root),
        "{message}"
    );
    assert!(
        files_under(&store_fs.0).is_empty(),
        "{:?}",
        files_under(&store_fs.0)
    );
    // Room again: a package that fits is imported.
    let small = pack(
        packages.path(),
        PKG,
        "33333333-0000-4000-8000-0000000000f2",
        b"small\n",
    );
    assert_eq!(upload(&node, &small).0, 201);

    // The Management DB's file system full: a change that needs room is 507 and names the file.
    let filler = db_fs.fill();
    let config = format!(
        "<DeploymentConfiguration>{}</DeploymentConfiguration>",
        "<Property Name=\"x\" Value=\"y\"/>".repeat(20_000)
    );
    let body = serde_json::to_vec(&serde_json::json!({ "config": config })).unwrap();
    let put = |body: Vec<u8>| {
        request(
            "PUT",
            &format!(
                "{}/api/v1/packages/33333333-0000-4000-8000-0000000000f2/deployment-config",
                node.url
            ),
            &node.token,
            Some(("application/json", body)),
        )
    };
    let (status, answer) = put(body.clone());
    assert_eq!(status, 507, "{answer}");
    assert_eq!(answer["error"], "insufficient_storage", "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("management.db"), "{message}");
    std::fs::remove_file(filler).unwrap();
    assert_eq!(put(body).0, 204, "the server carries on once there is room");
}
