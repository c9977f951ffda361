//! `avail package …` end to end with the real binary: pack, inspect, verify,
//! extract (and the modes it applies), new versions of a package (`--update-of`),
//! exit codes and the JSON answers scripts read, signatures reported, and what
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
    // demo (several blocks, deflated), libdemo (stored), 3 small files; the 3
    // metadata parts (manifest, stream map, filesystem metadata) are not payload.
    assert_eq!(v["files"], 5);
    assert_eq!(v["metadata_parts"], 3);
    assert!(
        v["stored_blocks"].as_u64().unwrap() >= 4 && v["deflated_blocks"].as_u64().unwrap() >= 5,
        "{v}"
    );

    let o = avail(&["package", "inspect", out.to_str().unwrap()]);
    assert!(text(&o.stdout).contains("PackageId:    1a2ad958-75d0-440b-9e6b-1d5e119713ee"));
    assert!(
        text(&o.stdout).contains("Files:        5 (payload;"),
        "{}",
        text(&o.stdout)
    );

    let o = avail(&["package", "verify", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).starts_with("OK: 5 files and 3 metadata parts"),
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
    assert!(
        text(&o.stdout).contains("10 files and 1 metadata parts, 14 blocks (7 stored, 7 deflated)")
    );

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
    assert_eq!(o.status.code(), Some(2));
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
        for key in ["blocks", "stored_blocks", "deflated_blocks"] {
            assert_eq!(v[key], ours[key], "{file}: {key}");
        }
        // The decoder counts every part in the block map; avail says which are metadata.
        let parts = ours["files"].as_u64().unwrap() + ours["metadata_parts"].as_u64().unwrap();
        assert_eq!(v["files"].as_u64(), Some(parts), "{file}: parts");
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
    // 11 parts in the block map, of which AppxManifest.xml is metadata.
    assert_eq!((&v["files"], &v["metadata_parts"]), (&10.into(), &1.into()));
    // verify counts the same way.
    let o = avail(&["package", "verify", &signed, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((&v["files"], &v["metadata_parts"]), (&10.into(), &1.into()));
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

/// `avail package inspect FILE --json`, parsed.
fn inspect_json(file: &Path) -> serde_json::Value {
    let o = avail(&["package", "inspect", file.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn update_of_makes_a_new_version_of_the_same_package() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    app_tree(&src);
    let v1 = tmp.path().join("v1.appv");
    pack(
        &src,
        &v1,
        &[
            "--name",
            "Demo Editor",
            "--version",
            "1.2",
            "--publisher",
            "CN=Contoso",
            "--app",
            "demo=/opt/demo/bin/demo:--verbose",
            "--fb1",
            "/opt/demo/bin",
            "--fb1",
            "/opt/demo/lib",
        ],
    );
    fs::write(src.join("opt/demo/bin/demo"), "version 2\n").unwrap();
    fs::remove_file(src.join("opt/demo/lib/libdemo.so.1")).unwrap();
    let v2 = tmp.path().join("v2.appv");
    let o = avail(&[
        "package",
        "pack",
        src.to_str().unwrap(),
        "-o",
        v2.to_str().unwrap(),
        "--update-of",
        v1.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(
            "warning: /opt/demo/lib/libdemo.so.1 is in the old version's --fb1 feature block"
        ),
        "{}",
        text(&o.stderr)
    );

    let (old, new) = (inspect_json(&v1), inspect_json(&v2));
    for same in [
        "package_id",
        "name",
        "display_name",
        "publisher",
        "applications",
    ] {
        assert_eq!(old[same], new[same], "{same}");
    }
    assert_eq!(new["name"], "Demo-Editor");
    assert_ne!(old["version_id"], new["version_id"]);
    assert_eq!(old["version"], "1.2.0.0");
    assert_eq!(new["version"], "1.2.0.1");
    assert_eq!(new["applications"][0]["arguments"], "--verbose");
    assert_eq!(
        new["primary_feature_block"],
        serde_json::json!(["Root\\opt\\demo\\bin\\demo"]),
        "kept, less what the tree no longer has"
    );
    assert_eq!(
        new["publishing_feature_block"],
        old["publishing_feature_block"]
    );

    // Given applications and version replace the old ones; the text answer says what it continues.
    let v3 = tmp.path().join("v3.appv");
    let o = avail(&[
        "package",
        "pack",
        src.to_str().unwrap(),
        "-o",
        v3.to_str().unwrap(),
        "--update-of",
        v2.to_str().unwrap(),
        "--version",
        "2.0",
        "--app",
        "other=/opt/demo/bin/demo",
        "--fb0",
        "/opt/demo/bin",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("a new version of Demo Editor (version 1.2.0.1"),
        "{}",
        text(&o.stdout)
    );
    let v = inspect_json(&v3);
    assert_eq!(v["package_id"], old["package_id"]);
    assert_eq!(v["version"], "2.0.0.0");
    assert_eq!(v["applications"].as_array().unwrap().len(), 1);
    assert_eq!(v["applications"][0]["id"], "other");
    assert_eq!(
        v["primary_feature_block"],
        serde_json::json!([]),
        "given anew"
    );
    assert_eq!(
        v["publishing_feature_block"].as_array().unwrap().len(),
        3,
        "the binary, desktop entry and icon"
    );
}

#[test]
fn target_oses_are_written_shown_and_inherited() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    app_tree(&src);
    let v1 = tmp.path().join("v1.appv");
    let o = avail(&[
        "package",
        "pack",
        src.to_str().unwrap(),
        "-o",
        v1.to_str().unwrap(),
        "--target-os",
        "WindowsClient_10.0_x64",
        "--target-os",
        "WindowsServer_06.3",
        "--target-os",
        "WindowsClient_10.0_x64",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Checked as a publishing server reads them, written in their usual
    // spelling, each once.
    let targets = serde_json::json!(["WindowsClient_10.0_x64", "WindowsServer_6.3"]);
    let packed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(packed["target_oses"], targets);
    assert_eq!(inspect_json(&v1)["target_oses"], targets);
    let o = avail(&["package", "inspect", v1.to_str().unwrap()]);
    assert!(
        text(&o.stdout).contains("Target OSes:  WindowsClient_10.0_x64, WindowsServer_6.3"),
        "{}",
        text(&o.stdout)
    );
    // In App-V's place, as other tools read it.
    let manifest = Command::new("unzip")
        .arg("-p")
        .arg(&v1)
        .arg("AppxManifest.xml")
        .output()
        .expect("unzip must be installed");
    assert!(
        text(&manifest.stdout).contains(
            "<Prerequisites>\n    <appv:TargetOSes>\n      <appv:TargetOS>WindowsClient_10.0_x64</appv:TargetOS>"
        ),
        "{}",
        text(&manifest.stdout)
    );

    // --update-of keeps them unless given.
    let v2 = tmp.path().join("v2.appv");
    pack(&src, &v2, &["--update-of", v1.to_str().unwrap()]);
    assert_eq!(inspect_json(&v2)["target_oses"], targets);
    let v3 = tmp.path().join("v3.appv");
    pack(
        &src,
        &v3,
        &[
            "--update-of",
            v2.to_str().unwrap(),
            "--target-os",
            "WindowsClient_6.1",
        ],
    );
    assert_eq!(
        inspect_json(&v3)["target_oses"],
        serde_json::json!(["WindowsClient_6.1"])
    );

    // None: every operating system.
    let plain = tmp.path().join("plain.appv");
    pack(&src, &plain, &[]);
    assert_eq!(inspect_json(&plain)["target_oses"], serde_json::json!([]));
    let o = avail(&["package", "inspect", plain.to_str().unwrap()]);
    assert!(text(&o.stdout).contains("Target OSes:  every operating system"));

    // What ClientOS could not be is refused before anything is written.
    let bad = tmp.path().join("bad.appv");
    for os in ["Linux_6.1_x64", "WindowsClient_10.0_arm64", "WindowsClient"] {
        let o = avail(&[
            "package",
            "pack",
            src.to_str().unwrap(),
            "-o",
            bad.to_str().unwrap(),
            "--target-os",
            os,
        ]);
        assert_eq!(o.status.code(), Some(2), "{os}");
        assert!(
            text(&o.stderr).contains("is not Windows{Client|Server}_MAJOR.MINOR"),
            "{}",
            text(&o.stderr)
        );
        assert!(!bad.exists());
    }
}

#[test]
fn update_of_refuses_what_it_cannot_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    app_tree(&src);
    let v1 = tmp.path().join("v1.appv");
    pack(&src, &v1, &["--version", "1.0.0.65535"]);
    let out = tmp.path().join("out.appv");
    let pack_update = |old: &str, extra: &[&str]| {
        let mut args = vec![
            "package",
            "pack",
            src.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--update-of",
            old,
        ];
        args.extend_from_slice(extra);
        avail(&args)
    };

    // The identity comes from OLD: giving it as well is a malformed command line.
    for extra in [
        &["--name", "Other"][..],
        &["--package-id", "1a2ad958-75d0-440b-9e6b-1d5e119713ee"][..],
    ] {
        let o = pack_update(v1.to_str().unwrap(), extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("--update-of"),
            "{}",
            text(&o.stderr)
        );
    }
    // A version that cannot be bumped needs --version.
    let o = pack_update(v1.to_str().unwrap(), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("\"1.0.0.65535\"") && text(&o.stderr).contains("--version"),
        "{}",
        text(&o.stderr)
    );
    let o = pack_update(v1.to_str().unwrap(), &["--version", "1.1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(inspect_json(&out)["version"], "1.1.0.0");
    fs::remove_file(&out).unwrap();

    // An AppX package has no PackageId to continue.
    let o = pack_update(&fixture("TestAppxPackage_x64.appx"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("no appv:PackageId"),
        "{}",
        text(&o.stderr)
    );
    // OLD is verified first: a corrupt one is refused as `verify` refuses it.
    let mut bytes = fs::read(&v1).unwrap();
    let at = bytes.windows(4).position(|w| w == b"PK\x03\x04").unwrap() + 30 + 2000;
    bytes[at] ^= 0xFF;
    let bad = tmp.path().join("bad.appv");
    fs::write(&bad, &bytes).unwrap();
    let o = pack_update(bad.to_str().unwrap(), &["--version", "2"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("block 0"), "{}", text(&o.stderr));
    let o = pack_update("/nonexistent.appv", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(!out.exists(), "nothing written on failure");
}

#[test]
fn verify_json_answers_whether_the_package_is_valid() {
    let o = avail(&[
        "package",
        "verify",
        "--json",
        &fixture("TestAppxPackage_x64.appx"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["blocks"], 14);
    assert!(v.get("error").is_none(), "{v}");

    for (name, words) in [
        ("Empty.appx", "end-of-central-directory"),
        (
            "Duplicate_file_in_blockmap.appx",
            "lists \"index.html\" twice",
        ),
    ] {
        let o = avail(&["package", "verify", "--json", &fixture(name)]);
        assert_eq!(o.status.code(), Some(3), "{name}: {}", text(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["valid"], false, "{name}: {v}");
        assert!(v["error"].as_str().unwrap().contains(words), "{name}: {v}");
        assert!(v["file"].as_str().unwrap().ends_with(name), "{v}");
        assert!(o.stderr.is_empty(), "said once: {}", text(&o.stderr));
    }

    // A corrupted block: the first failure names file and block.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    app_tree(&src);
    let out = tmp.path().join("demo.appv");
    pack(&src, &out, &[]);
    let mut bytes = fs::read(&out).unwrap();
    let at = bytes.windows(4).position(|w| w == b"PK\x03\x04").unwrap() + 30 + 2000;
    bytes[at] ^= 0xFF;
    fs::write(&out, &bytes).unwrap();
    let o = avail(&["package", "verify", "--json", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("Root\\opt\\demo\\bin\\demo: block 0"),
        "{v}"
    );

    // A file that cannot be read says nothing of validity: exit 1, no JSON.
    let o = avail(&["package", "verify", "--json", "/nonexistent.appv"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(text(&o.stderr).contains("cannot open /nonexistent.appv"));
}

#[test]
fn malformed_arguments_exit_2_and_failing_work_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    app_tree(&src);
    let out = tmp.path().join("x.appv");
    let pack_with = |extra: &[&str]| {
        let mut args = vec![
            "package",
            "pack",
            src.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        avail(&args)
    };
    for (extra, words) in [
        (&["--package-id", "not-a-guid"][..], "--package-id"),
        (&["--version-id", "1234"][..], "--version-id"),
        (&["--level", "10"][..], "--level"),
        (&["--level", "fast"][..], "--level"),
        (&["--version", "1.x"][..], "--version"),
        (&["--version", "70000"][..], "at most 65535"),
        (&["--name", "!!!"][..], "no letters or digits"),
        (&["--fb1", "opt/demo/bin"][..], "absolute path"),
        (&["--app", "demo=bin/demo"][..], "absolute PATH"),
        (&["--no-such-flag"][..], "--no-such-flag"),
    ] {
        let o = pack_with(extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(words),
            "{extra:?}: {}",
            text(&o.stderr)
        );
    }
    assert!(!out.exists());
    // Well-formed values the work cannot use: exit 1.
    let o = pack_with(&["--fb1", "/opt/not/there"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let o = avail(&[
        "package",
        "pack",
        "/nonexistent-tree",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    for cmd in ["inspect", "verify"] {
        let o = avail(&["package", cmd, "/nonexistent.appv"]);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {}", text(&o.stderr));
        let o = avail(&["package", cmd]);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o.stderr));
    }
    let o = avail(&["package", "extract", "/nonexistent.appv"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

/// `--record-fb1` launches the application once over the packed package and
/// writes what it read as the primary feature block: by default the first
/// application (hello-avail reads its script and both data files), or the
/// command after `--` (here one data file alone). Needs root and FUSE, as CI
/// has.
#[test]
fn record_fb1_writes_what_a_launch_read() {
    assert!(
        fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .ok()
            == Some(0)
            && Path::new("/dev/fuse").exists(),
        "recording FB1 mounts the package: run as root with /dev/fuse (as CI does)"
    );
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello-avail/tree");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hello.appv");
    let primary = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "package",
            "pack",
            tree.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--name",
            "Hello Avail",
            "--app",
            "hello-avail=/opt/hello-avail/bin/hello-avail",
            "--record-fb1",
            "--json",
        ];
        args.extend_from_slice(extra);
        let o = avail(&args);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let packed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            packed["recorded_fb1"]["blocks"].as_u64().unwrap() > 0,
            "{packed}"
        );
        let o = avail(&["package", "inspect", "--json", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let inspected: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        inspected["primary_feature_block"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        primary(&[]),
        [
            "Root\\opt\\hello-avail\\bin\\hello-avail",
            "Root\\opt\\hello-avail\\data\\atlas.txt",
            "Root\\opt\\hello-avail\\data\\noise.bin",
        ]
    );
    assert_eq!(
        primary(&["--", "/bin/cat", "/opt/hello-avail/data/noise.bin"]),
        ["Root\\opt\\hello-avail\\data\\noise.bin"]
    );
    // The package verifies, and its payload is the tree's.
    let o = avail(&["package", "verify", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}
