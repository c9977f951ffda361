//! The real AppX/MSIX packages in `tests/fixtures/` (from Microsoft's MSIX SDK; see
//! its README): the good ones verify with exactly the counts in the README, every
//! broken one is refused with the error that names its defect, and the defects
//! of the SDK's larger broken packages are made in a good one and refused alike.

use std::fs::File;
use std::path::PathBuf;

use avail_format::zip::{self, WrittenEntry};
use avail_format::{FormatError, Limits, NoProgress, Package, VerifyReport};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn open(name: &str) -> Result<Package<File>, FormatError> {
    let path = fixture(name);
    Package::open(File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn verify(name: &str) -> Result<VerifyReport, FormatError> {
    open(name)?.verify(&NoProgress)
}

#[test]
fn test_appx_package_verifies_with_the_published_counts() {
    let report = verify("TestAppxPackage_x64.appx").unwrap();
    assert_eq!((report.files, report.blocks), (11, 14));
    assert_eq!((report.stored_blocks, report.deflated_blocks), (7, 7));
}

#[test]
fn centennial_coffee_verifies_with_the_published_counts() {
    let report = verify("CentennialCoffee.appx").unwrap();
    assert_eq!((report.files, report.blocks), (38, 62));
}

#[test]
fn payload_files_named_like_footprint_parts_are_payload() {
    // VFS\…\AppxBlockMap.xml and VFS\…\appxblockmap.xml are ordinary files.
    let package = open("CentennialCoffee.appx").unwrap();
    let nested: Vec<&str> = package
        .files()
        .iter()
        .map(|f| f.map.name.as_str())
        .filter(|n| n.to_ascii_lowercase().ends_with("\\appxblockmap.xml"))
        .collect();
    assert_eq!(nested.len(), 3, "{nested:?}");
}

#[test]
fn manifests_of_real_packages_are_read() {
    let package = open("CentennialCoffee.appx").unwrap();
    let m = package.manifest();
    assert_eq!(m.version, "1.1.0.0");
    assert!(
        m.applications
            .iter()
            .any(|a| a.id == "CCoffee" && a.target.as_deref() == Some("ccoffee.exe"))
    );
    let test = open("TestAppxPackage_x64.appx").unwrap();
    assert_eq!(
        test.manifest().display_name.as_deref(),
        Some("ms-resource:appName")
    );
}

#[test]
fn a_signature_is_found_and_not_trusted() {
    // Both real packages are signed; packages Avail packs are not (tests/roundtrip.rs).
    for name in ["TestAppxPackage_x64.appx", "CentennialCoffee.appx"] {
        let package = open(name).unwrap();
        let signature = package.signature().expect("AppxSignature.p7x");
        assert_eq!(signature.name, "AppxSignature.p7x");
        assert!(signature.uncompressed_size > 0);
    }
}

#[test]
fn any_block_is_read_alone_and_matches_the_whole_file() {
    let package = open("TestAppxPackage_x64.appx").unwrap();
    let (index, file) = package
        .files()
        .iter()
        .enumerate()
        .find(|(_, f)| f.deflated && f.map.blocks.len() > 3)
        .expect("a multi-block deflated file");
    let whole = {
        let mut zip = zip_reader(&fixture("TestAppxPackage_x64.appx"));
        zip.remove(&file.map.name.replace('\\', "/"))
            .expect("member")
    };
    for k in (0..file.map.blocks.len()).rev() {
        let block = package.read_block(index, k).unwrap();
        let start = k * avail_format::BLOCK_SIZE;
        assert_eq!(block, &whole[start..start + block.len()], "block {k}");
    }
    assert!(matches!(
        package.read_block(index, file.map.blocks.len()),
        Err(FormatError::NotFound(_))
    ));
}

/// Members of a zip, inflated by `unzip`, as an independent reference.
fn zip_reader(path: &std::path::Path) -> std::collections::HashMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("unzip")
        .arg("-qq")
        .arg(path)
        .arg("-d")
        .arg(dir.path())
        .status()
        .expect("unzip is installed (the README's test command installs it)");
    assert!(status.success());
    walkdir::WalkDir::new(dir.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e
                .path()
                .strip_prefix(dir.path())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let name = percent_encoding::percent_decode_str(&rel)
                .decode_utf8()
                .unwrap()
                .into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

#[test]
fn empty_file_is_not_a_package() {
    assert!(matches!(open("Empty.appx"), Err(FormatError::NotZip)));
}

#[test]
fn corrupted_central_directory_is_refused() {
    assert!(matches!(
        open("OPC_E_ZIP_CORRUPTED_ARCHIVE.appx"),
        Err(FormatError::CorruptZip(_))
    ));
}

#[test]
fn missing_block_map_is_refused() {
    assert!(matches!(
        open("No_blockmap.appx"),
        Err(FormatError::MissingPart("AppxBlockMap.xml"))
    ));
}

#[test]
fn duplicate_block_map_file_is_refused() {
    match open("Duplicate_file_in_blockmap.appx") {
        Err(FormatError::DuplicateBlockMapFile(name)) => assert_eq!(name, "index.html"),
        other => panic!("{:?}", other.err()),
    }
}

/// `TestAppxPackage_x64.appx` with its block map's text changed by `edit` and the
/// zip entries named in `drop` left out: every other entry is copied as it is
/// (local header, data, data descriptor), at its new offset.
fn altered(edit: impl FnOnce(String) -> String, drop: &[&str]) -> Vec<u8> {
    let bytes = std::fs::read(fixture("TestAppxPackage_x64.appx")).unwrap();
    let cd = zip::read_central_directory(bytes.as_slice(), &Limits::default()).unwrap();
    let mut starts: Vec<u64> = cd.entries.iter().map(|e| e.local_header_offset).collect();
    starts.push(cd.offset);
    starts.sort_unstable();
    let new_map = edit(read_block_map()).into_bytes();
    let mut out = Vec::new();
    let mut written = Vec::new();
    for e in &cd.entries {
        if drop.contains(&e.name.as_str()) {
            continue;
        }
        let mut w = WrittenEntry {
            zip_name: String::from_utf8(e.raw_name.clone()).unwrap(),
            method: e.method,
            crc32: e.crc32,
            compressed_size: e.compressed_size,
            uncompressed_size: e.uncompressed_size,
            offset: out.len() as u64,
            zip64: false,
            mode: 0o100644,
        };
        if e.name == "AppxBlockMap.xml" {
            w.method = zip::STORED;
            w.crc32 = crc32fast::hash(&new_map);
            w.compressed_size = new_map.len() as u64;
            w.uncompressed_size = new_map.len() as u64;
            out.extend_from_slice(&zip::local_header(&w));
            out.extend_from_slice(&new_map);
        } else {
            let start = e.local_header_offset;
            let end = starts[starts.iter().position(|&s| s == start).unwrap() + 1];
            out.extend_from_slice(&bytes[start as usize..end as usize]);
        }
        written.push(w);
    }
    let cd_offset = out.len() as u64;
    for w in &written {
        out.extend_from_slice(&zip::central_header(w));
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

/// The block map's text, inflated by `unzip`.
fn read_block_map() -> String {
    let mut members = zip_reader(&fixture("TestAppxPackage_x64.appx"));
    String::from_utf8(members.remove("AppxBlockMap.xml").unwrap()).unwrap()
}

#[test]
fn the_altering_helper_changes_nothing_by_itself() {
    let bytes = altered(|map| map, &[]);
    let report = Package::open(bytes).unwrap().verify(&NoProgress).unwrap();
    assert_eq!((report.files, report.blocks), (11, 14));
}

#[test]
fn block_map_file_missing_from_zip_is_refused() {
    // The SDK's Extra_file_in_blockmap.msix: the zip lost a file the block map lists.
    let err = Package::open(altered(|map| map, &["TestAppxPackage.winmd"])).err();
    match err {
        Some(FormatError::FileMissingFromZip(ref name)) => {
            assert_eq!(name, "TestAppxPackage.winmd")
        }
        other => panic!("{other:?}"),
    }
    assert!(err.unwrap().to_string().contains("TestAppxPackage.winmd"));
}

#[test]
fn zip_file_missing_from_block_map_is_refused() {
    // The SDK's File_missing_from_blockmap.msix.
    let bytes = altered(
        |map| {
            let start = map.find("<File Name=\"resources.pri\"").unwrap();
            let end = start + map[start..].find("</File>").unwrap() + "</File>".len();
            format!("{}{}", &map[..start], &map[end..])
        },
        &[],
    );
    match Package::open(bytes) {
        Err(e @ FormatError::FileMissingFromBlockMap(_)) => {
            assert!(e.to_string().contains("block map does not list it"), "{e}");
            assert!(matches!(e, FormatError::FileMissingFromBlockMap(n) if n == "resources.pri"));
        }
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn a_missing_block_is_refused() {
    // The SDK's Invalid_Bad_Block.msix: the block map lost the entry of one block,
    // so the next block's bytes would be checked against the wrong hash; the reader
    // sees the missing block before it reads any data.
    let bytes = altered(
        |map| {
            let file = map.find("<File Name=\"TestAppxPackage.exe\"").unwrap();
            let block = file + map[file..].find("<Block ").unwrap();
            let end = block + map[block..].find("/>").unwrap() + 2;
            format!("{}{}", &map[..block], &map[end..])
        },
        &[],
    );
    match Package::open(bytes) {
        Err(FormatError::BlockCount {
            file,
            expected,
            actual,
            ..
        }) => assert_eq!(
            (file.as_str(), expected, actual),
            ("TestAppxPackage.exe", 4, 3)
        ),
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn wrong_uncompressed_size_is_refused() {
    // The SDK's Size_wrong_uncompressed.msix.
    let bytes = altered(
        |map| {
            map.replacen(
                "Name=\"Assets\\LockScreenLogo.scale-200.png\" Size=\"1430\"",
                "Name=\"Assets\\LockScreenLogo.scale-200.png\" Size=\"1530\"",
                1,
            )
        },
        &[],
    );
    match Package::open(bytes) {
        Err(e @ FormatError::SizeMismatch { .. }) => {
            assert!(
                e.to_string().contains("1430 bytes in the zip but 1530"),
                "{e}"
            );
            assert!(
                matches!(e, FormatError::SizeMismatch { file, .. } if file == "Assets\\LockScreenLogo.scale-200.png")
            );
        }
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn every_broken_fixture_is_refused_by_verify_too() {
    for name in [
        "Empty.appx",
        "OPC_E_ZIP_CORRUPTED_ARCHIVE.appx",
        "No_blockmap.appx",
        "Duplicate_file_in_blockmap.appx",
    ] {
        assert!(verify(name).is_err(), "{name} verified");
    }
}
