//! Hostile packages built byte by byte: XML parts past the parsing bounds of
//! `Limits` (elements, attributes, decoded size, token size, the block map's
//! inflate ratio), entries hidden in another entry's extra field, part names that
//! differ only in case, footprint parts listed in the block map. Each must be
//! refused with the error that names it, at open time, having read little.

use std::io::Write as _;

use avail_format::zip::{self, DEFLATED, STORED, WrittenEntry};
use avail_format::{FormatError, Limits, NoProgress, Package};
use base64::Engine as _;
use sha2::{Digest, Sha256};

const BLOCK_MAP_NS: &str = "http://schemas.microsoft.com/appx/2010/blockmap";
const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
const MANIFEST: &[u8] = br#"<Package xmlns="http://schemas.microsoft.com/appx/2010/manifest"><Identity Name="x" Publisher="CN=x" Version="1.0.0.0"/></Package>"#;

/// One zip entry as it will be written.
struct Member {
    /// The zip name, as stored.
    name: String,
    /// The entry's bytes (what it inflates to).
    data: Vec<u8>,
    /// Raw-deflate the data (else store it).
    deflate: bool,
    /// Extra field of the local header.
    extra: Vec<u8>,
    /// List it in the block map (a stored file of one block at most).
    listed: bool,
}

fn member(name: &str, data: &[u8]) -> Member {
    Member {
        name: name.into(),
        data: data.to_vec(),
        deflate: false,
        extra: Vec::new(),
        listed: true,
    }
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn local_header(
    name: &str,
    method: u16,
    crc: u32,
    packed: u64,
    size: u64,
    extra: &[u8],
) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    h.extend_from_slice(&20u16.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&method.to_le_bytes());
    h.extend_from_slice(&[0, 0, 0x21, 0]);
    h.extend_from_slice(&crc.to_le_bytes());
    h.extend_from_slice(&(packed as u32).to_le_bytes());
    h.extend_from_slice(&(size as u32).to_le_bytes());
    h.extend_from_slice(&(name.len() as u16).to_le_bytes());
    h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
    h.extend_from_slice(name.as_bytes());
    h.extend_from_slice(extra);
    h
}

/// The block map Avail would write for the listed members (stored, one block at most).
fn block_map_for(members: &[Member]) -> String {
    let mut out = format!("<BlockMap xmlns=\"{BLOCK_MAP_NS}\" HashMethod=\"{SHA256}\">");
    for m in members.iter().filter(|m| m.listed) {
        let lfh = 30 + m.name.len() + m.extra.len();
        out.push_str(&format!(
            "<File Name=\"{}\" Size=\"{}\" LfhSize=\"{lfh}\">",
            m.name.replace('/', "\\"),
            m.data.len()
        ));
        if !m.data.is_empty() {
            let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&m.data));
            out.push_str(&format!("<Block Hash=\"{hash}\"/>"));
        }
        out.push_str("</File>");
    }
    out.push_str("</BlockMap>");
    out
}

/// A container of `members` then a block map entry holding `block_map` (deflated
/// when `deflate_map`); `lie` may change the central directory's record of an entry.
fn assemble(
    members: &[Member],
    block_map: &[u8],
    deflate_map: bool,
    lie: impl Fn(&mut WrittenEntry),
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut written = Vec::new();
    let map = Member {
        name: "AppxBlockMap.xml".into(),
        data: block_map.to_vec(),
        deflate: deflate_map,
        extra: Vec::new(),
        listed: false,
    };
    for m in members.iter().chain([&map]) {
        let packed = if m.deflate {
            deflate(&m.data)
        } else {
            m.data.clone()
        };
        let mut e = WrittenEntry {
            zip_name: m.name.clone(),
            method: if m.deflate { DEFLATED } else { STORED },
            crc32: crc32fast::hash(&m.data),
            compressed_size: packed.len() as u64,
            uncompressed_size: m.data.len() as u64,
            offset: out.len() as u64,
            zip64: false,
            mode: 0o100644,
        };
        out.extend_from_slice(&local_header(
            &e.zip_name,
            e.method,
            e.crc32,
            e.compressed_size,
            e.uncompressed_size,
            &m.extra,
        ));
        out.extend_from_slice(&packed);
        lie(&mut e);
        written.push(e);
    }
    let cd_offset = out.len() as u64;
    for e in &written {
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

/// A well-formed package of `members` with the block map they need.
fn package(members: &[Member]) -> Vec<u8> {
    assemble(members, block_map_for(members).as_bytes(), true, |_| {})
}

fn open_err(bytes: Vec<u8>, limits: Limits) -> FormatError {
    match Package::open_with(bytes, limits) {
        Ok(_) => panic!("a hostile package was opened"),
        Err(e) => e,
    }
}

/// The part and the `Limits` field named by an `XmlLimit` error.
fn xml_limit(e: FormatError) -> (String, &'static str) {
    match e {
        FormatError::XmlLimit { part, what, .. } => (part, what),
        other => panic!("not an XML limit: {other:?}"),
    }
}

#[test]
fn the_builder_makes_packages_that_open_and_verify() {
    let bytes = package(&[
        member("AppxManifest.xml", MANIFEST),
        member("Root/a", b"hi"),
    ]);
    let package = Package::open(bytes).unwrap();
    package.verify(&NoProgress).unwrap();
    assert!(package.signature().is_none());
}

/// A block map of 64 MiB of empty elements, deflated to about 67 KB: the package
/// the issue names. Its elements are refused long before the end.
#[test]
fn a_67_kb_block_map_of_millions_of_elements_is_refused_early() {
    let mut doc = format!(
        "<BlockMap xmlns=\"{BLOCK_MAP_NS}\" HashMethod=\"{SHA256}\"><File Name=\"AppxManifest.xml\" Size=\"{}\" LfhSize=\"46\"><Block Hash=\"{}\"/></File>",
        MANIFEST.len(),
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(MANIFEST))
    )
    .into_bytes();
    while doc.len() < 64 << 20 {
        doc.extend_from_slice(&b"<x/>".repeat(4096));
    }
    doc.extend_from_slice(b"</BlockMap>");
    let bytes = assemble(&[member("AppxManifest.xml", MANIFEST)], &doc, true, |_| {});
    assert!(bytes.len() < 80_000, "{} bytes", bytes.len());
    // Even with the default element bound far above: the zip holds 2 entries and
    // one payload block, so its block map cannot have more than 1 + 2 + 1 elements.
    match open_err(bytes, Limits::default()) {
        FormatError::XmlLimit { part, what, limit } => {
            assert_eq!((part.as_str(), limit), ("AppxBlockMap.xml", 4));
            assert!(what.contains("max_xml_elements"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_element_with_too_many_attributes_is_refused() {
    // 50,000 attributes on the block map's root: refused at the 257th.
    let attrs: String = (0..50_000).map(|i| format!(" a{i}=\"\"")).collect();
    let doc =
        format!("<BlockMap xmlns=\"{BLOCK_MAP_NS}\" HashMethod=\"{SHA256}\"{attrs}></BlockMap>");
    let bytes = assemble(&[], doc.as_bytes(), true, |_| {});
    let (part, what) = xml_limit(open_err(bytes, Limits::default()));
    assert_eq!(part, "AppxBlockMap.xml");
    assert!(what.contains("max_xml_attributes"), "{what}");
}

#[test]
fn duplicate_attributes_among_hundreds_of_thousands_are_found() {
    // With the bounds raised this far, only a linear-time check finishes: quick-xml's
    // own pairwise check took 38 s for 100,000 attributes.
    let attrs: String = (0..200_000).map(|i| format!(" a{i}=\"\"")).collect();
    let doc = format!(
        "<BlockMap xmlns=\"{BLOCK_MAP_NS}\" HashMethod=\"{SHA256}\"{attrs} a123456=\"x\"></BlockMap>"
    );
    let bytes = assemble(&[], doc.as_bytes(), true, |_| {});
    let limits = Limits {
        max_xml_attributes: 1_000_000,
        max_xml_token: 64 << 20,
        ..Limits::default()
    };
    match open_err(bytes, limits) {
        FormatError::InvalidXml { part, reason } => {
            assert_eq!(part, "AppxBlockMap.xml");
            assert!(reason.contains("a123456 twice"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_block_map_that_claims_more_than_deflate_can_give_is_refused() {
    let members = [member("AppxManifest.xml", MANIFEST)];
    let bytes = assemble(&members, block_map_for(&members).as_bytes(), true, |e| {
        if e.zip_name == "AppxBlockMap.xml" {
            e.uncompressed_size = 200 << 20; // a few hundred bytes cannot inflate to 200 MiB
        }
    });
    match open_err(bytes, Limits::default()) {
        FormatError::SizeLimit { file, size, .. } => {
            assert_eq!((file.as_str(), size), ("AppxBlockMap.xml", 200 << 20))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_block_map_that_inflates_past_its_declared_size_is_refused() {
    let members = [member("AppxManifest.xml", MANIFEST)];
    let bytes = assemble(&members, block_map_for(&members).as_bytes(), true, |e| {
        if e.zip_name == "AppxBlockMap.xml" {
            e.uncompressed_size = 100;
        }
    });
    match open_err(bytes, Limits::default()) {
        FormatError::CorruptZip(reason) => {
            assert!(
                reason.contains("AppxBlockMap.xml inflates to more than"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// Each XML part, past each bound of `Limits`: the error names the part and the field.
#[test]
fn every_xml_part_is_bounded_while_it_is_read() {
    let tight = Limits {
        max_xml_elements: 40,
        max_xml_attributes: 8,
        max_xml_size: 8 << 10,
        max_xml_token: 1 << 10,
        ..Limits::default()
    };
    let stream_map = "<StreamMap xmlns=\"http://schemas.microsoft.com/appv/2010/streammap\"><FeatureBlock Id=\"PrimaryFeatureBlock\">";
    let fsmeta = format!(
        "<Metadata xmlns=\"http://schemas.microsoft.com/appv/2010/FilesystemMetadata\" xmlns:avail=\"{}\">",
        avail_format::manifest::AVAIL_NS
    );
    let parts: [(&str, String, &str, &str); 3] = [
        (
            "AppxManifest.xml",
            "<Package xmlns=\"http://schemas.microsoft.com/appx/2010/manifest\"><Identity Name=\"x\"/>"
                .into(),
            "<Extension/>",
            "</Package>",
        ),
        ("StreamMap.xml", stream_map.into(), "<File Name=\"a\"/>", "</FeatureBlock></StreamMap>"),
        (
            "FilesystemMetadata.xml",
            fsmeta,
            "<avail:Directory Name=\"Root\" Mode=\"755\"/>",
            "</Metadata>",
        ),
    ];
    for (part, head, repeated, tail) in &parts {
        let build = |body: String| {
            let doc = format!("{head}{body}{tail}");
            let mut members = vec![member(part, doc.as_bytes())];
            if *part != "AppxManifest.xml" {
                members.push(member("AppxManifest.xml", MANIFEST));
            }
            package(&members)
        };
        // Within every bound, the part is read.
        Package::open_with(build(repeated.repeat(10)), tight.clone())
            .unwrap_or_else(|e| panic!("{part}: {e}"));
        let cases = [
            (repeated.repeat(50), "max_xml_elements"),
            (
                format!(
                    "<E{}/>",
                    (0..9).map(|i| format!(" a{i}=\"\"")).collect::<String>()
                ),
                "max_xml_attributes",
            ),
            ("<!-- a comment of 31 bytes -->".repeat(300), "max_xml_size"),
            (format!("<!--{}-->", "x".repeat(2000)), "max_xml_token"),
        ];
        for (body, field) in cases {
            let (named, what) = xml_limit(open_err(build(body), tight.clone()));
            assert_eq!(named, *part);
            assert!(what.contains(field), "{part}: {what} is not {field}");
        }
    }
    // The block map itself, under the same bounds.
    let members = [member("AppxManifest.xml", MANIFEST)];
    let map = block_map_for(&members).replace(
        "</BlockMap>",
        &format!(
            "{}</BlockMap>",
            "<!-- 30 bytes of comment... -->".repeat(300)
        ),
    );
    let (part, what) = xml_limit(open_err(
        assemble(&members, map.as_bytes(), false, |_| {}),
        tight,
    ));
    assert_eq!(
        (part.as_str(), what.contains("max_xml_size")),
        ("AppxBlockMap.xml", true)
    );
}

#[test]
fn an_entry_hidden_in_another_entrys_extra_field_is_refused() {
    // Root/b's local header and data sit inside Root/a's local extra field: the
    // central directory's lengths (no extra field) made the two look apart.
    let hidden = local_header("Root/b", STORED, crc32fast::hash(b"hidden"), 6, 6, &[]);
    let mut extra = 0xCAFEu16.to_le_bytes().to_vec();
    extra.extend_from_slice(&((hidden.len() + 6) as u16).to_le_bytes());
    extra.extend_from_slice(&hidden);
    extra.extend_from_slice(b"hidden");
    let a = Member {
        extra,
        ..member("Root/a", b"x")
    };
    let b_offset = (30 + "Root/a".len() + 4) as u64;
    let mut members = vec![member("AppxManifest.xml", MANIFEST), a];
    let manifest_len = (30 + "AppxManifest.xml".len() + MANIFEST.len()) as u64;
    members.push(member("Root/b", b"hidden"));
    // Root/b is written for real too (so that its own entry is sound), but the
    // central directory points at the copy inside Root/a's extra field.
    let bytes = assemble(&members, block_map_for(&members).as_bytes(), true, |e| {
        if e.zip_name == "Root/b" {
            e.offset = manifest_len + b_offset;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hidden.appx");
    std::fs::write(&path, &bytes).unwrap();
    let unzip = std::process::Command::new("unzip")
        .arg("-t")
        .arg(&path)
        .output()
        .expect("unzip is installed");
    assert!(!unzip.status.success(), "unzip -t finds the overlap too");
    match open_err(bytes, Limits::default()) {
        FormatError::CorruptZip(reason) => {
            assert!(reason.contains("Root\\a and Root\\b overlap"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn names_that_differ_only_in_case_are_one_part_twice() {
    for (first, second) in [
        ("Root/Makefile", "Root/makefile"),
        ("Root/%C3%84rger", "Root/%C3%A4rger"), // Ärger, ärger
        ("Root/stra%C3%9Fe", "Root/STRASSE"),   // straße, STRASSE
        ("StreamMap.xml", "STREAMMAP.xml"),
    ] {
        let bytes = package(&[
            member("AppxManifest.xml", MANIFEST),
            member(first, b"1"),
            member(second, b"2"),
        ]);
        match open_err(bytes, Limits::default()) {
            e @ FormatError::DuplicateZipEntryCase { .. } => {
                assert!(e.to_string().contains("case-insensitive"), "{e}")
            }
            other => panic!("{first} {second}: {other:?}"),
        }
    }
}

#[test]
fn footprint_parts_appear_at_most_once_in_any_case() {
    let mut signature = member("AppxSignature.p7x", b"sig");
    signature.listed = false;
    let mut again = member("appxsignature.P7X", b"sig");
    again.listed = false;
    let bytes = package(&[member("AppxManifest.xml", MANIFEST), signature, again]);
    assert!(matches!(
        open_err(bytes, Limits::default()),
        FormatError::DuplicateZipEntryCase { .. }
    ));
    let mut map = member("appxBlockMap.xml", b"<x/>");
    map.listed = false;
    let bytes = package(&[member("AppxManifest.xml", MANIFEST), map]);
    assert!(matches!(
        open_err(bytes, Limits::default()),
        FormatError::DuplicateZipEntryCase { .. }
    ));
}

#[test]
fn footprint_parts_listed_in_the_block_map_are_refused() {
    for name in [
        "[Content_Types].xml",
        "AppxSignature.p7x",
        "appxsignature.P7X",
        "AppxMetadata/CodeIntegrity.cat",
    ] {
        let bytes = package(&[member("AppxManifest.xml", MANIFEST), member(name, b"x")]);
        match open_err(bytes, Limits::default()) {
            FormatError::FootprintInBlockMap(listed) => {
                assert_eq!(listed, name.replace('/', "\\"))
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}
