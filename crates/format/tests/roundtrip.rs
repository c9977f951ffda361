//! Packing and reading back: the proptest round trip (random trees → pack → read
//! every block, extract → identical tree), determinism, zip64, and the refusal of
//! corrupted and hostile packages built on purpose.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use avail_format::blockmap::{Block, BlockMap, BlockMapFile};
use avail_format::manifest::Application;
use avail_format::zip::{self, STORED, WrittenEntry};
use avail_format::{
    BLOCK_SIZE, ExtractOptions, FormatError, Limits, NoProgress, PackOptions, Package, extract,
    extract_with, pack,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

/// What a path in a tree is, for comparing trees.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Link(PathBuf),
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let md = e.path().symlink_metadata().unwrap();
            let mode = md.permissions().mode() & 0o7777;
            let node = if md.is_dir() {
                Node::Dir(mode)
            } else if md.file_type().is_symlink() {
                Node::Link(fs::read_link(e.path()).unwrap())
            } else {
                Node::File(mode, fs::read(e.path()).unwrap())
            };
            (e.path().strip_prefix(root).unwrap().to_owned(), node)
        })
        .collect()
}

fn fill(seed: u64, len: usize, compressible: bool) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            if compressible {
                b"the quick brown fox jumps over the lazy dog\n"[(i + seed as usize) % 44]
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

fn options(seed: u128) -> PackOptions {
    PackOptions {
        name: "Round Trip".into(),
        package_id: Some(uuid::Uuid::from_u128(seed)),
        version_id: Some(uuid::Uuid::from_u128(seed + 1)),
        ..PackOptions::default()
    }
}

/// Check every block of every payload file against the source tree.
fn check_blocks(package: &Package<fs::File>, src: &Path) {
    for (i, f) in package.files().iter().enumerate() {
        let Some(rel) = f.map.name.strip_prefix("Root\\") else {
            continue;
        };
        let expected = fs::read(src.join(rel.replace('\\', "/"))).unwrap();
        assert_eq!(expected.len() as u64, f.map.size);
        for k in 0..f.map.blocks.len() {
            let start = k * BLOCK_SIZE;
            let block = package.read_block(i, k).unwrap();
            assert_eq!(
                block,
                &expected[start..(start + BLOCK_SIZE).min(expected.len())],
                "{} block {k}",
                f.map.name
            );
        }
    }
}

#[derive(Debug, Clone)]
enum Spec {
    File {
        len: usize,
        seed: u64,
        compressible: bool,
        mode: u32,
    },
    Link(String),
    Dir(u32),
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{1,2}",
        "[a-z0-9_-]{1,10}",
        Just("with space".to_owned()),
        Just("100%".to_owned()),
        Just("lib[1].so".to_owned()),
        Just("ünïcödé".to_owned()),
        Just("a&b;c=d".to_owned()),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let len = prop_oneof![
        0..16usize,
        (BLOCK_SIZE - 3)..(BLOCK_SIZE + 3),
        0..(3 * BLOCK_SIZE + 100)
    ];
    prop_oneof![
        6 => (len, any::<u64>(), any::<bool>(), prop::sample::select(vec![0o644, 0o755, 0o600, 0o4755]))
            .prop_map(|(len, seed, compressible, mode)| Spec::File { len, seed, compressible, mode }),
        1 => "[a-z./]{1,12}".prop_map(Spec::Link),
        1 => prop::sample::select(vec![0o755, 0o700, 0o750]).prop_map(Spec::Dir),
    ]
}

/// Build a tree from generated paths; paths that collide with an earlier one are skipped.
fn build(root: &Path, items: &[(Vec<String>, Spec)]) {
    let mut dir_modes = Vec::new();
    for (segments, spec) in items {
        let path: PathBuf = segments.iter().collect();
        let full = root.join(&path);
        if full.symlink_metadata().is_ok() {
            continue;
        }
        let parent = full.parent().unwrap();
        if fs::create_dir_all(parent).is_err() {
            continue; // a parent is a file or a link
        }
        match spec {
            Spec::File {
                len,
                seed,
                compressible,
                mode,
            } => {
                fs::write(&full, fill(*seed, *len, *compressible)).unwrap();
                fs::set_permissions(&full, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Spec::Link(target) => symlink(target, &full).unwrap(),
            Spec::Dir(mode) => {
                fs::create_dir(&full).unwrap();
                dir_modes.push((full, *mode));
            }
        }
    }
    for (path, mode) in dir_modes {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_trees_round_trip(items in prop::collection::vec((prop::collection::vec(segment(), 1..4), spec()), 0..12)) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        build(&src, &items);
        let out = tmp.path().join("p.appv");
        pack(&src, &out, &options(7), &NoProgress).unwrap();
        let package = Package::open(fs::File::open(&out).unwrap()).unwrap();
        check_blocks(&package, &src);
        package.verify(&NoProgress).unwrap();
        // Modes exactly as packed (setuid included): the round trip is exact.
        let dest = tmp.path().join("dest");
        let exact = ExtractOptions { preserve_modes: true };
        extract_with(&package, &dest, &exact, &NoProgress).unwrap();
        prop_assert_eq!(snapshot(&src), snapshot(&dest.join("Root")));
    }
}

fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("opt/app/bin")).unwrap();
    fs::create_dir_all(root.join("opt/app/empty")).unwrap();
    fs::create_dir_all(root.join("usr/share/applications")).unwrap();
    fs::write(
        root.join("opt/app/bin/app"),
        fill(1, 3 * BLOCK_SIZE + 5, true),
    )
    .unwrap();
    fs::set_permissions(
        root.join("opt/app/bin/app"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::write(
        root.join("opt/app/random.dat"),
        fill(2, 2 * BLOCK_SIZE, false),
    )
    .unwrap();
    fs::write(
        root.join("usr/share/applications/app.desktop"),
        "[Desktop Entry]\nName=App\n",
    )
    .unwrap();
    symlink("bin/app", root.join("opt/app/app")).unwrap();
}

#[test]
fn same_tree_and_ids_give_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let (a, b) = (tmp.path().join("a.appv"), tmp.path().join("b.appv"));
    pack(&src, &a, &options(1), &NoProgress).unwrap();
    pack(&src, &b, &options(1), &NoProgress).unwrap();
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    let c = tmp.path().join("c.appv");
    pack(&src, &c, &options(2), &NoProgress).unwrap();
    assert_ne!(fs::read(&a).unwrap(), fs::read(&c).unwrap());
}

#[test]
fn manifest_stream_map_and_metadata_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let out = tmp.path().join("p.appv");
    let opts = PackOptions {
        version: "2.1".into(),
        applications: vec![Application {
            id: "app".into(),
            target: Some("/opt/app/bin/app".into()),
            arguments: Some("--fast".into()),
        }],
        primary: vec!["/opt/app/bin".into()],
        ..options(3)
    };
    let summary = pack(&src, &out, &opts, &NoProgress).unwrap();
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    let package = Package::open(fs::File::open(&out).unwrap()).unwrap();
    let m = package.manifest();
    assert_eq!(m.version, "2.1.0.0");
    assert_eq!(m.package_id, Some(uuid::Uuid::from_u128(3)));
    assert_eq!(m.display_name.as_deref(), Some("Round Trip"));
    assert_eq!(m.applications, opts.applications);
    let streams = package.stream_map().unwrap();
    let names = |files: &[avail_format::streammap::FeatureFile]| {
        files.iter().map(|f| f.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&streams.primary), ["Root\\opt\\app\\bin\\app"]);
    assert_eq!(
        names(&streams.publishing),
        ["Root\\usr\\share\\applications\\app.desktop"]
    );
    let random = package.file_index("Root\\opt\\app\\random.dat").unwrap();
    assert!(
        !package.files()[random].deflated,
        "incompressible data is stored"
    );
    let app = package.file_index("Root\\opt\\app\\bin\\app").unwrap();
    assert!(package.files()[app].deflated);

    // Recorded runs join the primary feature block, in package order; a
    // file already there whole stays whole; an unknown name is refused.
    let recorded = PackOptions {
        primary_runs: vec![
            avail_format::streammap::FeatureFile {
                name: "Root\\opt\\app\\random.dat".into(),
                runs: vec![(0, 2), (5, 1)],
            },
            avail_format::streammap::FeatureFile {
                name: "Root\\opt\\app\\bin\\app".into(),
                runs: vec![(0, 1)],
            },
        ],
        ..opts.clone()
    };
    pack(&src, &out, &recorded, &NoProgress).unwrap();
    let package = Package::open(fs::File::open(&out).unwrap()).unwrap();
    let primary = &package.stream_map().unwrap().primary;
    let got: Vec<(&str, &[(u64, u64)])> = primary
        .iter()
        .map(|f| (f.name.as_str(), f.runs.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            ("Root\\opt\\app\\bin\\app", &[][..]),
            ("Root\\opt\\app\\random.dat", &[(0, 2), (5, 1)][..]),
        ]
    );
    let unknown = PackOptions {
        primary_runs: vec![avail_format::streammap::FeatureFile {
            name: "Root\\nope".into(),
            runs: vec![(0, 1)],
        }],
        ..opts.clone()
    };
    assert!(pack(&src, &out, &unknown, &NoProgress).is_err());
    let m = Package::open(fs::File::open(&out).unwrap())
        .unwrap()
        .manifest()
        .clone();

    assert_eq!(m.name, "Round-Trip", "derived from the display name");
    let kept = PackOptions {
        identity_name: Some("Contoso.RoundTrip_x".into()),
        ..options(3)
    };
    pack(&src, &out, &kept, &NoProgress).unwrap();
    let package = Package::open(fs::File::open(&out).unwrap()).unwrap();
    assert_eq!(
        package.manifest().name,
        "Contoso.RoundTrip_x",
        "kept as given"
    );
    assert_eq!(
        package.manifest().display_name.as_deref(),
        Some("Round Trip")
    );

    let missing = PackOptions {
        primary: vec!["/opt/nope".into()],
        ..options(3)
    };
    assert!(matches!(
        pack(&src, &out, &missing, &NoProgress),
        Err(FormatError::Invalid(_))
    ));
}

#[test]
fn target_oses_are_written_and_read_back_within_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let out = tmp.path().join("p.appv");
    let targets = vec![
        "WindowsClient_10.0_x64".to_owned(),
        "WindowsServer_6.3".into(),
    ];
    pack(
        &src,
        &out,
        &PackOptions {
            target_oses: targets.clone(),
            ..options(6)
        },
        &NoProgress,
    )
    .unwrap();
    let package = Package::open(fs::File::open(&out).unwrap()).unwrap();
    assert_eq!(package.manifest().target_oses, targets);
    package.verify(&NoProgress).unwrap();

    let too_many: Vec<String> = (0..=avail_format::manifest::MAX_TARGET_OSES)
        .map(|i| format!("WindowsClient_{i}.0"))
        .collect();
    for bad in [
        too_many,
        vec![String::new()],
        vec![" WindowsClient_10.0".into()],
        vec!["Windows\u{1}".into()],
        vec!["W".repeat(avail_format::manifest::MAX_TARGET_OS_LEN + 1)],
        vec!["WindowsClient_10.0".into(), "WindowsClient_10.0".into()],
    ] {
        let options = PackOptions {
            target_oses: bad.clone(),
            ..options(6)
        };
        assert!(
            matches!(
                pack(&src, &out, &options, &NoProgress),
                Err(FormatError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn forced_zip64_packages_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let out = tmp.path().join("p.appv");
    pack(
        &src,
        &out,
        &PackOptions {
            force_zip64: true,
            ..options(4)
        },
        &NoProgress,
    )
    .unwrap();
    let package = Package::open(fs::File::open(&out).unwrap()).unwrap();
    check_blocks(&package, &src);
    assert_eq!(package.verify(&NoProgress).unwrap().files, 6);
}

/// Flip one byte of a package and return the error verify gives.
fn corrupt_at(offset: impl Fn(&Package<fs::File>) -> u64) -> (FormatError, String) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let out = tmp.path().join("p.appv");
    pack(&src, &out, &options(5), &NoProgress).unwrap();
    let at = offset(&Package::open(fs::File::open(&out).unwrap()).unwrap());
    let mut bytes = fs::read(&out).unwrap();
    bytes[at as usize] ^= 0x55;
    fs::write(&out, &bytes).unwrap();
    let package = Package::open(fs::File::open(&out).unwrap()).unwrap();
    let err = package.verify(&NoProgress).unwrap_err();
    // Extraction of the same package leaves nothing behind.
    let dest = tmp.path().join("dest");
    assert!(extract(&package, &dest, &NoProgress).is_err());
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        2,
        "only src and the package are left"
    );
    let msg = err.to_string();
    (err, msg)
}

#[test]
fn a_corrupted_deflated_block_is_named() {
    let (err, msg) = corrupt_at(|p| {
        let i = p.file_index("Root\\opt\\app\\bin\\app").unwrap();
        let r = p.block_range(i, 2).unwrap();
        (r.start + r.end) / 2
    });
    assert!(
        matches!(
            err,
            FormatError::BlockHash { block: 2, .. } | FormatError::CorruptBlock { block: 2, .. }
        ),
        "{err:?}"
    );
    assert!(
        msg.contains("Root\\opt\\app\\bin\\app") && msg.contains("block 2"),
        "{msg}"
    );
}

#[test]
fn a_corrupted_stored_block_is_named() {
    let (err, msg) = corrupt_at(|p| {
        p.block_range(p.file_index("Root\\opt\\app\\random.dat").unwrap(), 1)
            .unwrap()
            .start
            + 9
    });
    assert!(
        matches!(err, FormatError::BlockHash { block: 1, .. }),
        "{err:?}"
    );
    assert!(msg.contains("random.dat"), "{msg}");
}

#[test]
fn a_wrong_local_header_is_named() {
    let (err, _) = corrupt_at(|p| p.files()[0].local_header_offset + 1);
    assert!(matches!(err, FormatError::LocalHeader { .. }), "{err:?}");
}

/// A tree whose modes extraction must not apply as they are: setuid, setgid and
/// sticky files, a setgid directory, a sticky one, directories without `u+x` or `u+w`.
fn special_modes_tree(root: &Path) -> Vec<(&'static str, u32)> {
    let modes = [
        ("opt/app/bin/suid", 0o4755),
        ("opt/app/bin/sgid", 0o2711),
        ("opt/app/sticky-file", 0o1644),
        ("opt/app/shared", 0o2775),
        ("opt/app/tmp", 0o1777),
        ("opt/app/no-exec", 0o600),
        ("opt/app/read-only", 0o555),
        ("opt/app/closed", 0o000),
    ];
    for dir in [
        "opt/app/bin",
        "opt/app/shared",
        "opt/app/tmp",
        "opt/app/no-exec",
    ] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::create_dir_all(root.join("opt/app/read-only/inside")).unwrap();
    fs::write(root.join("opt/app/read-only/inside/file"), "x").unwrap();
    fs::create_dir_all(root.join("opt/app/closed")).unwrap();
    for file in [
        "opt/app/bin/suid",
        "opt/app/bin/sgid",
        "opt/app/sticky-file",
    ] {
        fs::write(root.join(file), "#!/bin/sh\n").unwrap();
    }
    // Modes go on last: a closed or read-only directory could not be filled after.
    for (path, mode) in modes.iter().rev() {
        fs::set_permissions(root.join(path), fs::Permissions::from_mode(*mode)).unwrap();
    }
    modes.to_vec()
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Whether this process runs as root (which can read and pack a `000` directory).
fn root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap()
}

#[test]
fn extract_clears_special_bits_and_keeps_directories_enterable() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut modes = special_modes_tree(&src);
    if !root() {
        // Not even its owner can list a `000` directory: it cannot be packed.
        fs::set_permissions(
            src.join("opt/app/closed"),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        fs::remove_dir(src.join("opt/app/closed")).unwrap();
        modes.retain(|(p, _)| *p != "opt/app/closed");
    }
    let out = tmp.path().join("p.appv");
    pack(&src, &out, &options(8), &NoProgress).unwrap();
    let package = Package::open(fs::File::open(&out).unwrap()).unwrap();
    let dest = tmp.path().join("dest");
    extract(&package, &dest, &NoProgress).unwrap();
    let expected = |path: &str| match path {
        "opt/app/bin/suid" => 0o755,
        "opt/app/bin/sgid" => 0o711,
        "opt/app/sticky-file" => 0o644,
        "opt/app/shared" => 0o775,
        "opt/app/tmp" => 0o1777,
        "opt/app/no-exec" => 0o700,
        "opt/app/read-only" => 0o555,
        "opt/app/closed" => 0o500,
        other => panic!("{other}"),
    };
    for (path, _) in &modes {
        assert_eq!(
            mode_of(&dest.join("Root").join(path)),
            expected(path),
            "{path}"
        );
    }
    // Everything it made can be read and removed by whoever extracted it.
    assert_eq!(
        fs::read(dest.join("Root/opt/app/read-only/inside/file")).unwrap(),
        b"x"
    );

    let exact = tmp.path().join("exact");
    let preserve = ExtractOptions {
        preserve_modes: true,
    };
    extract_with(&package, &exact, &preserve, &NoProgress).unwrap();
    for (path, mode) in &modes {
        assert_eq!(mode_of(&exact.join("Root").join(path)), *mode, "{path}");
    }
    // Let the temporary directory be removed.
    for tree in [src, dest.join("Root"), exact.join("Root")] {
        for (path, _) in &modes {
            fs::set_permissions(tree.join(path), fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

#[test]
fn pack_refuses_names_that_differ_only_in_case() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("opt/app")).unwrap();
    fs::write(src.join("opt/app/Makefile"), "a").unwrap();
    fs::write(src.join("opt/app/makefile"), "b").unwrap();
    let out = tmp.path().join("p.appv");
    match pack(&src, &out, &options(9), &NoProgress) {
        Err(e @ FormatError::Unpackable { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("Makefile") && msg.contains("makefile") && msg.contains("case"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!out.exists());
}

#[test]
fn packed_packages_have_no_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let out = tmp.path().join("p.appv");
    pack(&src, &out, &options(10), &NoProgress).unwrap();
    let package = Package::open(fs::File::open(&out).unwrap()).unwrap();
    assert!(package.signature().is_none());
}

#[test]
fn extract_refuses_a_non_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let out = tmp.path().join("p.appv");
    pack(&src, &out, &options(6), &NoProgress).unwrap();
    let package = Package::open(fs::File::open(&out).unwrap()).unwrap();
    assert!(matches!(
        extract(&package, &src, &NoProgress),
        Err(FormatError::Invalid(_))
    ));
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    extract(&package, &empty, &NoProgress).unwrap();
    assert_eq!(snapshot(&src), snapshot(&empty.join("Root")));
}

/// A container built by hand: stored entries with the given names and data, and
/// a block map made from them that `edit` may change.
fn craft(entries: &[(&str, &[u8])], edit: impl FnOnce(&mut BlockMap)) -> Vec<u8> {
    craft_with(entries, edit, |_| {})
}

/// [`craft`], with a hook that may change what the central directory says of an entry.
fn craft_with(
    entries: &[(&str, &[u8])],
    edit: impl FnOnce(&mut BlockMap),
    lie: impl Fn(&mut WrittenEntry),
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut written = Vec::new();
    let mut map = BlockMap::default();
    let mut push = |out: &mut Vec<u8>, zip_name: &str, data: &[u8]| -> u64 {
        let e = WrittenEntry {
            zip_name: zip_name.into(),
            method: STORED,
            crc32: crc32fast::hash(data),
            compressed_size: data.len() as u64,
            uncompressed_size: data.len() as u64,
            offset: out.len() as u64,
            zip64: false,
            mode: 0o100644,
        };
        let header = zip::local_header(&e);
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        written.push(e);
        header.len() as u64
    };
    for (name, data) in entries {
        let lfh_size = push(&mut out, name, data);
        map.files.push(BlockMapFile {
            name: name.replace('/', "\\"),
            size: data.len() as u64,
            lfh_size,
            blocks: data
                .chunks(BLOCK_SIZE)
                .map(|c| Block {
                    hash: Sha256::digest(c).into(),
                    compressed_size: None,
                })
                .collect(),
        });
    }
    edit(&mut map);
    push(&mut out, "AppxBlockMap.xml", map.to_xml().as_bytes());
    let cd_offset = out.len() as u64;
    for e in &mut written {
        lie(e);
        out.extend_from_slice(&zip::central_header(e));
    }
    let cd_size = out.len() as u64 - cd_offset;
    out.extend_from_slice(&zip::end_records(
        written.len() as u64,
        cd_offset,
        cd_size,
        false,
    ));
    out
}

const MANIFEST: &[u8] = br#"<Package xmlns="http://schemas.microsoft.com/appx/2010/manifest"><Identity Name="x" Publisher="CN=x" Version="1.0.0.0"/></Package>"#;

#[test]
fn a_hand_made_container_opens() {
    let bytes = craft(
        &[("AppxManifest.xml", MANIFEST), ("Root/a", b"hello")],
        |_| {},
    );
    let package = Package::open(bytes).unwrap();
    assert_eq!(package.read_block(1, 0).unwrap(), b"hello");
    package.verify(&NoProgress).unwrap();
}

#[test]
fn hostile_names_are_refused() {
    for name in [
        "../evil",
        "Root/../../evil",
        "/etc/passwd",
        "C:/Windows/evil",
        "Root\\..\\evil",
        "Root/%2e%2e/evil",
        "Root/a\0b",
    ] {
        let bytes = craft(&[("AppxManifest.xml", MANIFEST), (name, b"x")], |_| {});
        match Package::open(bytes) {
            Err(FormatError::HostileName { .. }) => {}
            other => panic!("{name:?}: {:?}", other.err()),
        }
    }
}

#[test]
fn duplicate_zip_entries_are_refused_even_when_spelled_differently() {
    let bytes = craft(
        &[
            ("AppxManifest.xml", MANIFEST),
            ("Root/aA", b"1"),
            ("Root/a%41", b"2"),
        ],
        |m| {
            m.files.pop();
        },
    );
    assert!(
        matches!(Package::open(bytes), Err(FormatError::DuplicateZipEntry(n)) if n == "Root\\aA")
    );
}

#[test]
fn declared_sizes_are_bounded() {
    let bytes = craft(
        &[("AppxManifest.xml", MANIFEST), ("Root/a", &[7u8; 10])],
        |_| {},
    );
    let limits = Limits {
        max_file_size: 5,
        ..Limits::default()
    };
    assert!(matches!(
        Package::open_with(bytes.clone(), limits),
        Err(FormatError::SizeLimit { .. })
    ));
    let limits = Limits {
        max_total_size: 12,
        ..Limits::default()
    };
    assert!(matches!(
        Package::open_with(bytes, limits),
        Err(FormatError::SizeLimit { .. })
    ));
}

#[test]
fn a_deflate_bomb_is_refused_before_any_inflating() {
    // 16 KiB of deflated data that claims to hold 1 GiB: more than deflate can express.
    let big = 1u64 << 30;
    let blocks = (big / BLOCK_SIZE as u64) as usize;
    let data = vec![0u8; blocks + 2];
    let bytes = craft_with(
        &[("AppxManifest.xml", MANIFEST), ("Root/bomb", &data)],
        |m| {
            let f = &mut m.files[1];
            f.size = big;
            f.blocks = vec![
                Block {
                    hash: [0; 32],
                    compressed_size: Some(1)
                };
                blocks
            ];
        },
        |e| {
            if e.zip_name == "Root/bomb" {
                e.method = zip::DEFLATED;
                e.uncompressed_size = big;
            }
        },
    );
    match Package::open(bytes) {
        Err(FormatError::SizeLimit { file, size, .. }) => {
            assert_eq!((file.as_str(), size), ("Root\\bomb", big))
        }
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn symlinks_cannot_lead_extraction_outside_the_target() {
    let outside = tempfile::tempdir().unwrap();
    let meta = format!(
        r#"<Metadata xmlns="http://schemas.microsoft.com/appv/2010/FilesystemMetadata" xmlns:avail="{ns}">
        <avail:Directory Name="Root" Mode="755"/>
        <avail:Symlink Name="Root\a" Mode="777" Target="{out}"/>
        <avail:Symlink Name="Root\a\b" Mode="777" Target="/etc/passwd"/></Metadata>"#,
        ns = avail_format::manifest::AVAIL_NS,
        out = outside.path().display()
    );
    let bytes = craft(
        &[
            ("AppxManifest.xml", MANIFEST),
            ("FilesystemMetadata.xml", meta.as_bytes()),
        ],
        |_| {},
    );
    let package = Package::open(bytes).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    assert!(matches!(
        extract(&package, &dest, &NoProgress),
        Err(FormatError::HostileName { .. })
    ));
    assert!(!dest.exists());
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "no temporary directory left"
    );
}
