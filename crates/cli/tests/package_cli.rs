//! `avail package …` end to end with the real binary: pack, inspect, verify,
//! extract (and the modes it applies), exit codes, signatures reported, and what
//! other tools (unzip, Python's zipfile + zlib) make of the packages Avail writes.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn avail(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_avail"))
        .args(args)
        .output()
        .expect("run avail")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A real AppX/MSIX package of the format crate's fixtures (see their README).
fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../format/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// A small application tree: a binary, a library with a symlink, an icon, an
/// incompressible file, an empty directory and modes worth keeping.
fn app_tree(root: &Path) {
    for dir in [
        "opt/demo/bin",
        "opt/demo/lib",
        "opt/demo/var/empty",
        "usr/share/applications",
        "usr/share/icons/hicolor",
    ] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    let text: Vec<u8> = (0..300_000u32)
        .flat_map(|i| format!("line {i} of the demo\n").into_bytes())
        .collect();
    fs::write(root.join("opt/demo/bin/demo"), &text).unwrap();
    fs::set_permissions(
        root.join("opt/demo/bin/demo"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(root.join("opt/demo/lib/libdemo.so.1"), &noise).unwrap();
    symlink("libdemo.so.1", root.join("opt/demo/lib/libdemo.so")).unwrap();
    fs::write(
        root.join("usr/share/applications/demo.desktop"),
        "[Desktop Entry]\nName=Demo\nExec=/opt/demo/bin/demo\n",
    )
    .unwrap();
    fs::write(
        root.join("usr/share/icons/hicolor/demo.png"),
        b"\x89PNG not really",
    )
    .unwrap();
    fs::write(root.join("opt/demo/with space & 100%.txt"), "odd name\n").unwrap();
    fs::set_permissions(
        root.join("opt/demo/var/empty"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
}

fn pack(dir: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "package",
        "pack",
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = avail(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn pack_inspect_verify_extract() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    app_tree(&src);
    let out = tmp.path().join("demo.appv");
    let pid = "1a2ad958-75d0-440b-9e6b-1d5e119713ee";
    pack(
        &src,
        &out,
        &[
            "--name",
            "Demo",
            "--version",
            "3.2",
            "--package-id",
            pid,
            "--app",
            "demo=/opt/demo/bin/demo:--verbose --x",
            "--fb1",
            "/opt/demo/bin",
        ],
    );

    let o = avail(&["package", "inspect", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["package_id"], pid);
    assert_eq!(v["version"], "3.2.0.0");
    assert_eq!(v["display_name"], "Demo");
    assert_eq!(v["applications"][0]["target"], "/opt/demo/bin/demo");
    assert_eq!(v["applications"][0]["arguments"], "--verbose --x");
    assert_eq!(v["primary_feature_block"][0], "Root\\opt\\demo\\bin\\demo");
    assert_eq!(
        v["publishing_feature_block"].as_array().unwrap().len(),
        2,
        "desktop entry and icon"
    );
    // demo (several blocks, deflated), libdemo (stored), 3 small files, 3 metadata parts.
    assert_eq!(v["files"], 8);
    assert!(
        v["stored_blocks"].as_u64().unwrap() >= 4 && v["deflated_blocks"].as_u64().unwrap() >= 5,
        "{v}"
    );

    let o = avail(&["package", "inspect", out.to_str().unwrap()]);
    assert!(text(&o.stdout).contains("PackageId:    1a2ad958-75d0-440b-9e6b-1d5e119713ee"));

    let o = avail(&["package", "verify", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).starts_with("OK: 8 files"),
        "{}",
        text(&o.stdout)
    );

    let dest = tmp.path().join("dest");
    let o = avail(&[
        "package",
        "extract",
        out.to_str().unwrap(),
        dest.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let diff = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&src)
        .arg(dest.join("Root"))
        .output()
        .unwrap();
    assert!(diff.status.success(), "{}", text(&diff.stdout));
    let mode = |p: &str| {
        fs::symlink_metadata(dest.join("Root").join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("opt/demo/bin/demo"), 0o755);
    assert_eq!(mode("opt/demo/var/empty"), 0o700);
    assert_eq!(
        fs::read_link(dest.join("Root/opt/demo/lib/libdemo.so")).unwrap(),
        Path::new("libdemo.so.1")
    );

    // A second extract into the now non-empty directory is refused and changes nothing.
    let o = avail(&[
        "package",
        "extract",
        out.to_str().unwrap(),
        dest.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("not empty"), "{}", text(&o.stderr));
}

#[test]
fn verify_exit_codes_name_the_failure() {
    let o = avail(&["package", "verify", &fixture("TestAppxPackage_x64.appx")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("11 files, 14 blocks (7 stored, 7 deflated)"));

    for (name, words) in [
        ("Empty.appx", "end-of-central-directory"),
        ("No_blockmap.appx", "no AppxBlockMap.xml"),
        (
            "Duplicate_file_in_blockmap.appx",
            "lists \"index.html\" twice",
        ),
        ("OPC_E_ZIP_CORRUPTED_ARCHIVE.appx", "corrupted zip"),
    ] {
        let o = avail(&["package", "verify", &fixture(name)]);
        assert_eq!(o.status.code(), Some(3), "{name}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(
            err.starts_with("error: ") && err.contains(words),
            "{name}: {err}"
        );
        assert!(o.stdout.is_empty());
    }

    let o = avail(&["package", "verify", "/nonexistent.appv"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("cannot open /nonexistent.appv"));
    let o = avail(&["package", "verify"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_corrupted_block_fails_verify_with_file_and_block() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    app_tree(&src);
    let out = tmp.path().join("demo.appv");
    pack(&src, &out, &[]);
    let mut bytes = fs::read(&out).unwrap();
    // Inside the first file's data (opt/demo/bin/demo comes first in package order).
    let at = bytes.windows(4).position(|w| w == b"PK\x03\x04").unwrap() + 30 + 2000;
    bytes[at] ^= 0xFF;
    fs::write(&out, &bytes).unwrap();
    let o = avail(&["package", "verify", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let err = text(&o.stderr);
    assert!(err.contains("Root\\opt\\demo\\bin\\demo: block 0"), "{err}");
}

#[test]
fn pack_refuses_bad_arguments_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    app_tree(&src);
    let out = tmp.path().join("x.appv");
    let o = avail(&[
        "package",
        "pack",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--app",
        "noequals",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = avail(&[
        "package",
        "pack",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--version",
        "1.2.3.4.5",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("version"), "{}", text(&o.stderr));
    let o = avail(&[
        "package",
        "pack",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--fb1",
        "/not/there",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("/not/there"));
    assert!(!out.exists(), "nothing written on failure");
    let o = avail(&[
        "package",
        "pack",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--app",
        "x=/usr/bin/python3",
    ]);
    assert!(o.status.success());
    assert!(
        text(&o.stderr).contains("warning: application x: /usr/bin/python3 is not in the package")
    );
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}

#[test]
fn other_tools_read_what_avail_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    app_tree(&src);
    for (file, extra) in [("plain.appv", &[][..]), ("zip64.appv", &["--zip64"][..])] {
        let out = tmp.path().join(file);
        pack(&src, &out, extra);
        let unzip = Command::new("unzip")
            .arg("-t")
            .arg(&out)
            .output()
            .expect("unzip is installed");
        assert!(unzip.status.success(), "{file}: {}", text(&unzip.stdout));
        assert!(text(&unzip.stdout).contains("No errors detected"));

        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent_decoder.py");
        let py = Command::new("python3")
            .arg(script)
            .arg(&out)
            .output()
            .expect("python3 is installed");
        assert!(
            py.status.success(),
            "{file}: {}{}",
            text(&py.stdout),
            text(&py.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
        let ours = avail(&["package", "verify", "--json", out.to_str().unwrap()]);
        let ours: serde_json::Value = serde_json::from_slice(&ours.stdout).unwrap();
        for key in ["files", "blocks", "stored_blocks", "deflated_blocks"] {
            assert_eq!(v[key], ours[key], "{file}: {key}");
        }
        assert!(
            v["deflated_blocks"].as_u64().unwrap() > 0 && v["stored_blocks"].as_u64().unwrap() > 0
        );
    }
}

#[test]
fn the_independent_decoder_catches_corruption() {
    // The reference decoder must itself be able to fail, or agreeing with it proves nothing.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    app_tree(&src);
    let bad = tmp.path().join("bad.appv");
    pack(&src, &bad, &[]);
    let mut bytes = fs::read(&bad).unwrap();
    let at = bytes.windows(4).position(|w| w == b"PK\x03\x04").unwrap() + 30 + 2000;
    bytes[at] ^= 0xFF;
    fs::write(&bad, &bytes).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent_decoder.py");
    let py = Command::new("python3")
        .arg(script)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!py.status.success());
}

#[test]
fn inspect_and_verify_report_a_signature_they_do_not_check() {
    let signed = fixture("TestAppxPackage_x64.appx");
    let o = avail(&["package", "inspect", &signed, "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["signature"], "present, not verified");
    let o = avail(&["package", "inspect", &signed]);
    assert!(
        text(&o.stdout).contains("Signature:    present, not verified"),
        "{}",
        text(&o.stdout)
    );
    let o = avail(&["package", "verify", &signed]);
    assert!(text(&o.stdout).contains("Signature: present, not verified"));
    let o = avail(&["package", "verify", "--json", &signed]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["signature"], "present, not verified");

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    app_tree(&src);
    let out = tmp.path().join("demo.appv");
    pack(&src, &out, &[]);
    let o = avail(&["package", "inspect", out.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["signature"], "none");
    let o = avail(&["package", "verify", out.to_str().unwrap()]);
    assert!(!text(&o.stdout).contains("Signature"));
}

/// Whether the tests run as root.
fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap()
}

/// `avail ARGS` as an unprivileged user: as it is when the tests do not run as
/// root, else as `nobody` (through util-linux's setpriv).
fn avail_unprivileged(args: &[&str]) -> Output {
    if !running_as_root() {
        return avail(args);
    }
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_avail"))
        .args(args)
        .output()
        .expect("setpriv (util-linux) is installed")
}

#[test]
fn preserve_modes_is_refused_unless_root() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.appv");
    let dest = tmp.path().join("dest");
    let o = avail_unprivileged(&[
        "package",
        "extract",
        out.to_str().unwrap(),
        dest.to_str().unwrap(),
        "--preserve-modes",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("--preserve-modes is only allowed as root"),
        "{}",
        text(&o.stderr)
    );
    assert!(!dest.exists());
}

#[test]
fn extract_clears_setuid_bits_and_keeps_directories_enterable() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    for dir in ["opt/x/bin", "opt/x/read-only/sub", "opt/x/no-search"] {
        fs::create_dir_all(src.join(dir)).unwrap();
    }
    fs::write(src.join("opt/x/bin/su"), "#!/bin/sh\n").unwrap();
    fs::write(src.join("opt/x/read-only/sub/f"), "f").unwrap();
    let mode = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    mode(&src.join("opt/x/bin/su"), 0o6755);
    mode(&src.join("opt/x/bin"), 0o2755);
    mode(&src.join("opt/x/read-only/sub"), 0o555);
    mode(&src.join("opt/x/read-only"), 0o555);
    // Readable (so its owner can pack it) but not searchable: nobody could enter it.
    mode(&src.join("opt/x/no-search"), 0o600);
    let out = tmp.path().join("x.appv");
    pack(&src, &out, &[]);
    let got = |root: &Path, p: &str| {
        fs::symlink_metadata(root.join("Root").join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };

    let dest = tmp.path().join("dest");
    let o = avail(&[
        "package",
        "extract",
        out.to_str().unwrap(),
        dest.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(got(&dest, "opt/x/bin/su"), 0o755);
    assert_eq!(got(&dest, "opt/x/bin"), 0o755);
    assert_eq!(got(&dest, "opt/x/no-search"), 0o700, "u+x added");
    assert_eq!(got(&dest, "opt/x/read-only"), 0o555);
    assert_eq!(
        fs::read(dest.join("Root/opt/x/read-only/sub/f")).unwrap(),
        b"f"
    );

    if running_as_root() {
        let exact = tmp.path().join("exact");
        let o = avail(&[
            "package",
            "extract",
            "--preserve-modes",
            out.to_str().unwrap(),
            exact.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert_eq!(got(&exact, "opt/x/bin/su"), 0o6755);
        assert_eq!(got(&exact, "opt/x/bin"), 0o2755);
        assert_eq!(got(&exact, "opt/x/no-search"), 0o600);
    }
    // Let the temporary directory be removed.
    for tree in [src, dest.join("Root")] {
        mode(&tree.join("opt/x/read-only/sub"), 0o755);
        mode(&tree.join("opt/x/read-only"), 0o755);
    }
}
