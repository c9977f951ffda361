//! The real AppX/MSIX packages in `../shared/fixtures/appx/`: the good ones verify
//! with exactly the counts in the fixtures' README, every broken one is refused
//! with the error that names its defect.

use std::fs::File;
use std::path::PathBuf;

use avail_format::{FormatError, NoProgress, Package, VerifyReport};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/appx")
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
fn hello_world_verifies_with_the_published_counts() {
    let report = verify("HelloWorld.appx").unwrap();
    assert_eq!(report.files, 122);
    assert_eq!(report.blocks, 251);
    assert_eq!(report.stored_blocks, 31);
    assert_eq!(report.deflated_blocks, 220);
}

#[test]
fn centennial_coffee_verifies_with_the_published_counts() {
    let report = verify("CentennialCoffee.appx").unwrap();
    assert_eq!((report.files, report.blocks), (38, 62));
}

#[test]
fn test_appx_package_verifies_with_the_published_counts() {
    let report = verify("TestAppxPackage_x64.appx").unwrap();
    assert_eq!((report.files, report.blocks), (11, 14));
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
    let hello = open("HelloWorld.appx").unwrap();
    assert_eq!(
        hello.manifest().display_name.as_deref(),
        Some("People Graph")
    );
}

#[test]
fn any_block_is_read_alone_and_matches_the_whole_file() {
    let package = open("HelloWorld.appx").unwrap();
    let (index, file) = package
        .files()
        .iter()
        .enumerate()
        .find(|(_, f)| f.deflated && f.map.blocks.len() > 3)
        .expect("a multi-block deflated file");
    let whole = {
        let mut zip = zip_reader(&fixture("HelloWorld.appx"));
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

#[test]
fn block_map_file_missing_from_zip_is_refused() {
    match open("Extra_file_in_blockmap.msix") {
        Err(FormatError::FileMissingFromZip(name)) => assert_eq!(name, "App1.exe"),
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn zip_file_missing_from_block_map_is_refused() {
    match open("File_missing_from_blockmap.msix") {
        Err(FormatError::FileMissingFromBlockMap(name)) => assert_eq!(name, "App1.exe"),
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn bad_block_is_refused() {
    // The package's block map lost the entry of App1.dll's block 10, so block 10's
    // bytes would be checked against block 11's hash; the reader sees the missing
    // block before it reads any data.
    match open("Invalid_Bad_Block.msix") {
        Err(FormatError::BlockCount {
            file,
            expected,
            actual,
            ..
        }) => {
            assert_eq!((file.as_str(), expected, actual), ("App1.dll", 23, 22));
        }
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn wrong_uncompressed_size_is_refused() {
    match open("Size_wrong_uncompressed.msix") {
        Err(FormatError::SizeMismatch {
            file,
            zip,
            block_map,
        }) => {
            assert_eq!(
                (file.as_str(), zip, block_map),
                ("Assets\\LockScreenLogo.scale-200.png", 1430, 1530)
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
        "Extra_file_in_blockmap.msix",
        "File_missing_from_blockmap.msix",
        "Invalid_Bad_Block.msix",
        "Size_wrong_uncompressed.msix",
    ] {
        assert!(verify(name).is_err(), "{name} verified");
    }
}
