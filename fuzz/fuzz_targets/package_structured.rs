//! Structure-aware fuzzing of the package reader: the input is not the package's
//! bytes but a description of a package (`arbitrary`): payload files (sizes up to
//! three blocks, deflated per block at any level or stored), the manifest, stream
//! map and file-system metadata, the footprint parts, zip64 or not, parsing
//! limits — and damage: to the block map's model (files dropped, doubled,
//! renamed, resized; blocks dropped, added, re-hashed), to the zip (entries
//! dropped, doubled, twins differing in case, central directory lies, local extra
//! fields), to any XML part's text (UTF-16, byte-order marks, thousands of
//! elements or attributes, duplicate attributes, long comments, deep nesting,
//! entities, DOCTYPEs, truncation) and to the final bytes. The package is built
//! in memory with the zip layer right, so inputs reach the XML parsing, its
//! limits and the block checks, which raw-byte fuzzing rarely gets past.
//!
//! Checks: everything of `common::check_package`; and a package built without
//! damage, with valid distinct names and the default limits, must open, verify,
//! and give back every file's bytes.

#![no_main]

mod common;

use arbitrary::Arbitrary;
use avail_format::blockmap::{Block, BlockMap, BlockMapFile};
use avail_format::fsmeta::{Entry, EntryKind, FilesystemMetadata};
use avail_format::manifest::{Application, Manifest};
use avail_format::streammap::{FeatureFile, StreamMap};
use avail_format::zip::{self, DEFLATED, STORED, WrittenEntry};
use avail_format::{BLOCK_SIZE, Limits, Package, names};
use flate2::{Compress, Compression, FlushCompress};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

/// Zip names the fuzzer picks from: good ones, twins in case, hostile ones, footprint parts.
const NAMES: &[&str] = &[
    "Root/opt/app/bin/app",
    "Root/opt/app/lib/libx.so",
    "Root/usr/share/applications/app.desktop",
    "Root/a",
    "Root/A",
    "Root/%C3%84rger",
    "Root/%C3%A4rger",
    "Root/with%20space",
    "Root/x/y/z",
    "VFS/AppxBlockMap.xml",
    "Root/..",
    "Root//x",
    "../x",
    "/abs",
    "Root/a%2Fb",
    "AppxSignature.p7x",
    "[Content_Types].xml",
    "appxmetadata/codeintegrity.cat",
    "AppxBlockMap.xml",
    "AppxManifest.xml",
];

#[derive(Arbitrary, Debug, Clone)]
enum NameSpec {
    Known(u8),
    Other(String),
}

impl NameSpec {
    fn zip_name(&self) -> String {
        match self {
            NameSpec::Known(i) => NAMES[*i as usize % NAMES.len()].to_owned(),
            NameSpec::Other(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum SizeSpec {
    Tiny(u8),
    Small(u16),
    /// One or two whole blocks and a little more.
    Blocks(bool, u16),
}

impl SizeSpec {
    fn len(&self) -> usize {
        match self {
            SizeSpec::Tiny(n) => *n as usize,
            SizeSpec::Small(n) => *n as usize % 8192,
            SizeSpec::Blocks(two, n) => BLOCK_SIZE * (1 + *two as usize) + *n as usize % 300,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct FileSpec {
    name: NameSpec,
    size: SizeSpec,
    seed: u8,
    compressible: bool,
    /// Deflate level 0–9; 10 and above store the file.
    level: u8,
}

#[derive(Arbitrary, Debug)]
struct ManifestSpec {
    name: String,
    publisher: String,
    version: (u16, u16, u16, u16),
    ids: Option<(u128, u128)>,
    display_name: Option<String>,
    applications: Vec<(String, Option<String>, Option<String>)>,
    environment: Vec<(String, String)>,
}

#[derive(Arbitrary, Debug)]
struct FeatureSpec {
    file: u8,
    runs: Vec<(u16, u16)>,
}

#[derive(Arbitrary, Debug)]
struct FsSpec {
    name: NameSpec,
    kind: u8,
    mode: u16,
    mtime: Option<i64>,
    target: String,
}

#[derive(Arbitrary, Debug)]
struct LimitsSpec {
    elements: u16,
    attributes: u8,
    size: u32,
    token: u16,
    metadata: u32,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    BlockMap,
    Manifest,
    StreamMap,
    Fsmeta,
}

#[derive(Arbitrary, Debug)]
enum Place {
    /// Just after the root element's name: where attributes go.
    AfterRootName,
    /// Just before the root element's end tag: where elements go.
    BeforeRootEnd,
    /// Anywhere (a fraction of the length).
    At(u16),
}

#[derive(Arbitrary, Debug)]
enum Fragment {
    Elements(u16),
    Attributes(u16),
    DuplicateAttribute,
    Comment(u16),
    Nesting(u8),
    Entity(u8),
    CData(String),
    Doctype,
    ProcessingInstruction,
    Text(String),
}

impl Fragment {
    fn text(&self) -> String {
        match self {
            Fragment::Elements(n) => "<x/>".repeat(*n as usize % 5000),
            Fragment::Attributes(n) => (0..*n as usize % 3000)
                .map(|i| format!(" a{i}=\"\""))
                .collect(),
            Fragment::DuplicateAttribute => " d=\"1\" d=\"2\"".into(),
            Fragment::Comment(n) => format!("<!--{}-->", "c".repeat(*n as usize * 4)),
            Fragment::Nesting(d) => {
                let d = *d as usize % 100;
                "<n>".repeat(d) + &"</n>".repeat(d)
            }
            Fragment::Entity(k) => {
                ["&amp;", "&#65;", "&#x10FFFF;", "&bogus;", "&#0;", "&lt;"][*k as usize % 6].into()
            }
            Fragment::CData(s) => format!("<![CDATA[{s}]]>"),
            Fragment::Doctype => "<!DOCTYPE x [<!ENTITY e \"e\">]>".into(),
            Fragment::ProcessingInstruction => "<?pi data?>".into(),
            Fragment::Text(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum XmlDamage {
    Utf16(bool),
    Utf8Bom,
    Insert(Place, Fragment),
    Truncate(u16),
    Replace(String),
}

#[derive(Arbitrary, Debug)]
enum Damage {
    DropMapFile(u8),
    DuplicateMapFile(u8),
    MapSize(u8, u64),
    MapLfhSize(u8, u16),
    DropBlock(u8, u8),
    AddBlock(u8),
    FlipHash(u8, u8, u8),
    BlockSize(u8, u8, u32),
    RenameMapFile(u8, NameSpec),
    ListFootprint(u8),
    DropEntry(u8),
    DuplicateEntry(u8),
    CaseTwin(u8),
    CdCompressed(u8, u64),
    CdUncompressed(u8, u64),
    CdCrc(u8, u32),
    CdOffset(u8, u64),
    CdMethod(u8, u16),
    LocalExtra(u8, Vec<u8>, bool),
    Xml(Part, XmlDamage),
    FlipByte(u16, u8),
    Truncate(u16),
}

#[derive(Arbitrary, Debug)]
struct Spec {
    files: Vec<FileSpec>,
    manifest: ManifestSpec,
    stream_map: Option<(Vec<FeatureSpec>, Vec<FeatureSpec>)>,
    fsmeta: Option<Vec<FsSpec>>,
    block_map_deflated: bool,
    content_types: bool,
    signature: Option<Vec<u8>>,
    zip64: bool,
    limits: Option<LimitsSpec>,
    damage: Vec<Damage>,
}

/// A payload file of the package being built.
struct Payload {
    zip_name: String,
    data: Vec<u8>,
    /// Deflate level, or `None` to store.
    level: Option<u32>,
}

fn fill(seed: u8, len: usize, compressible: bool) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
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

fn utf16(text: &[u8], little: bool) -> Vec<u8> {
    let s = String::from_utf8_lossy(text);
    let mut out = if little {
        vec![0xFF, 0xFE]
    } else {
        vec![0xFE, 0xFF]
    };
    for unit in s.encode_utf16() {
        out.extend_from_slice(&if little {
            unit.to_le_bytes()
        } else {
            unit.to_be_bytes()
        });
    }
    out
}

fn damage_xml(doc: Vec<u8>, damage: &XmlDamage) -> Vec<u8> {
    let insert_at = |doc: &[u8], place: &Place| -> usize {
        let find = |needle: &[u8], last: bool| {
            let mut hits = doc
                .windows(needle.len())
                .enumerate()
                .filter(|(_, w)| *w == needle);
            if last { hits.last() } else { hits.next() }.map(|(i, _)| i)
        };
        match place {
            // The root is the first element not a declaration.
            Place::AfterRootName => doc
                .iter()
                .enumerate()
                .filter(|(i, b)| {
                    **b == b'<' && doc.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic())
                })
                .map(|(i, _)| {
                    i + 1
                        + doc[i + 1..]
                            .iter()
                            .take_while(|c| !c.is_ascii_whitespace() && **c != b'>' && **c != b'/')
                            .count()
                })
                .next()
                .unwrap_or(0),
            Place::BeforeRootEnd => find(b"</", true).unwrap_or(doc.len()),
            Place::At(f) => (*f as usize * doc.len()) / 65536,
        }
    };
    match damage {
        XmlDamage::Utf16(little) => utf16(&doc, *little),
        XmlDamage::Utf8Bom => [&b"\xEF\xBB\xBF"[..], &doc].concat(),
        XmlDamage::Insert(place, fragment) => {
            let at = insert_at(&doc, place).min(doc.len());
            [&doc[..at], fragment.text().as_bytes(), &doc[at..]].concat()
        }
        XmlDamage::Truncate(f) => doc[..(*f as usize * doc.len()) / 65536].to_vec(),
        XmlDamage::Replace(s) => s.clone().into_bytes(),
    }
}

/// Raw-deflate `data` in 64 KiB blocks, each ending in a full flush, then end the stream.
fn deflate_blocks(data: &[u8], level: u32) -> (Vec<u8>, Vec<u32>) {
    let mut c = Compress::new(Compression::new(level), false);
    let mut out = Vec::new();
    let mut sizes = Vec::new();
    for chunk in data.chunks(BLOCK_SIZE) {
        c.reset();
        let mut block = Vec::with_capacity(chunk.len() + chunk.len() / 16 + 64);
        loop {
            let done = c.total_in() as usize;
            c.compress_vec(&chunk[done..], &mut block, FlushCompress::Full)
                .expect("in-memory deflate");
            if c.total_in() as usize == chunk.len() && block.len() < block.capacity() {
                break;
            }
            block.reserve(block.capacity().max(1024));
        }
        sizes.push(block.len() as u32);
        out.extend_from_slice(&block);
    }
    out.extend_from_slice(&[0x03, 0x00]);
    (out, sizes)
}

fn pick<T>(items: &mut [T], i: u8) -> Option<&mut T> {
    let n = items.len();
    if n == 0 {
        None
    } else {
        items.get_mut(i as usize % n)
    }
}

/// One zip entry being written: what the central directory will say, and the bytes.
struct ZipItem {
    entry: WrittenEntry,
    local_extra: Vec<u8>,
    data: Vec<u8>,
}

fn build(spec: &Spec) -> (Vec<u8>, Vec<(String, Vec<u8>)>, bool) {
    let xml_damage = |part: Part, doc: Vec<u8>| {
        spec.damage.iter().fold(doc, |doc, d| match d {
            Damage::Xml(p, x) if *p == part => damage_xml(doc, x),
            _ => doc,
        })
    };
    let clean_text = |s: &str| !s.chars().any(|c| c.is_control());
    let mut clean = spec.damage.is_empty() && spec.limits.is_none();

    // Payload files and their package names.
    let mut payload: Vec<Payload> = Vec::new();
    let mut folded = std::collections::HashSet::new();
    for f in spec.files.iter().take(6) {
        let zip_name = f.name.zip_name();
        match names::from_zip_name(zip_name.as_bytes()) {
            Ok(name)
                if !names::is_footprint(&name)
                    && ![
                        "AppxManifest.xml",
                        "StreamMap.xml",
                        "FilesystemMetadata.xml",
                    ]
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(&name))
                    && folded.insert(names::fold_case(&name)) => {}
            _ => clean = false,
        }
        payload.push(Payload {
            zip_name,
            data: fill(f.seed, f.size.len(), f.compressible),
            level: (f.level < 10).then_some(u32::from(f.level)),
        });
    }
    let package_names: Vec<String> = payload
        .iter()
        .map(|p| names::from_zip_name(p.zip_name.as_bytes()).unwrap_or_else(|_| p.zip_name.clone()))
        .collect();

    // The metadata parts, as payload files.
    let m = &spec.manifest;
    let manifest = Manifest {
        name: m.name.clone(),
        publisher: m.publisher.clone(),
        version: format!(
            "{}.{}.{}.{}",
            m.version.0, m.version.1, m.version.2, m.version.3
        ),
        package_id: m.ids.map(|(a, _)| uuid_from(a)),
        version_id: m.ids.map(|(_, b)| uuid_from(b)),
        display_name: m.display_name.clone(),
        applications: m
            .applications
            .iter()
            .take(4)
            .map(|(id, target, arguments)| Application {
                id: id.clone(),
                target: target.clone(),
                arguments: arguments.clone(),
            })
            .collect(),
        target_oses: Vec::new(),
        environment: m.environment.iter().take(4).cloned().collect(),
    };
    for (name, value) in m.environment.iter().take(4) {
        if !avail_format::manifest::valid_variable_name(name)
            || !clean_text(name)
            || !clean_text(value)
            || value.len() > avail_format::manifest::MAX_VARIABLE_VALUE
        {
            clean = false;
        }
    }
    let texts = [&m.name, &m.publisher]
        .into_iter()
        .chain(m.display_name.iter())
        .chain(
            m.applications
                .iter()
                .take(4)
                .flat_map(|(a, b, c)| [Some(a), b.as_ref(), c.as_ref()].into_iter().flatten()),
        );
    for t in texts {
        // Control characters are not XML text.
        if !clean_text(t) {
            clean = false;
        }
    }
    let mut parts: Vec<(String, Vec<u8>)> = vec![(
        "AppxManifest.xml".into(),
        xml_damage(Part::Manifest, manifest.to_xml().into_bytes()),
    )];
    if let Some((publishing, primary)) = &spec.stream_map {
        let features = |specs: &Vec<FeatureSpec>| -> Vec<FeatureFile> {
            specs
                .iter()
                .take(8)
                .filter_map(|f| {
                    let name = package_names.get(f.file as usize % package_names.len().max(1))?;
                    Some(FeatureFile {
                        name: name.clone(),
                        runs: f
                            .runs
                            .iter()
                            .take(4)
                            .map(|&(i, c)| (i.into(), c.into()))
                            .collect(),
                    })
                })
                .collect()
        };
        let map = StreamMap {
            publishing: features(publishing),
            primary: features(primary),
        };
        parts.push((
            "StreamMap.xml".into(),
            xml_damage(Part::StreamMap, map.to_xml().into_bytes()),
        ));
    }
    if let Some(entries) = &spec.fsmeta {
        let entries: Vec<Entry> = entries
            .iter()
            .take(16)
            .map(|e| {
                let zip_name = e.name.zip_name();
                let name = match names::from_zip_name(zip_name.as_bytes()) {
                    Ok(n) => n,
                    Err(_) => {
                        clean = false;
                        zip_name
                    }
                };
                let kind = match e.kind % 3 {
                    0 => EntryKind::Directory,
                    1 => EntryKind::File,
                    _ => {
                        if e.target.is_empty() || !clean_text(&e.target) {
                            clean = false;
                        }
                        EntryKind::Symlink {
                            target: e.target.clone(),
                        }
                    }
                };
                Entry {
                    name,
                    kind,
                    mode: u32::from(e.mode) % 0o10000,
                    mtime: e.mtime,
                }
            })
            .collect();
        let meta = FilesystemMetadata { entries };
        parts.push((
            "FilesystemMetadata.xml".into(),
            xml_damage(Part::Fsmeta, meta.to_xml().into_bytes()),
        ));
    }
    for (name, data) in parts {
        payload.push(Payload {
            zip_name: name,
            data,
            level: Some(6),
        });
    }

    // Zip items and the block map's model.
    let mut items: Vec<ZipItem> = Vec::new();
    let mut map = BlockMap::default();
    for p in &payload {
        let (data, method, sizes) = match p.level {
            Some(level) => {
                let (d, s) = deflate_blocks(&p.data, level);
                (d, DEFLATED, Some(s))
            }
            None => (p.data.clone(), STORED, None),
        };
        let entry = WrittenEntry {
            zip_name: p.zip_name.clone(),
            method,
            crc32: crc32fast::hash(&p.data),
            compressed_size: data.len() as u64,
            uncompressed_size: p.data.len() as u64,
            offset: 0,
            zip64: spec.zip64,
            mode: 0o100644,
        };
        let lfh_size = zip::local_header(&entry).len() as u64;
        map.files.push(BlockMapFile {
            name: names::from_zip_name(p.zip_name.as_bytes())
                .unwrap_or_else(|_| p.zip_name.replace('/', "\\")),
            size: p.data.len() as u64,
            lfh_size,
            blocks: p
                .data
                .chunks(BLOCK_SIZE)
                .enumerate()
                .map(|(k, c)| Block {
                    hash: Sha256::digest(c).into(),
                    compressed_size: sizes.as_ref().map(|s| s[k]),
                })
                .collect(),
        });
        items.push(ZipItem {
            entry,
            local_extra: Vec::new(),
            data,
        });
    }
    let expected: Vec<(String, Vec<u8>)> = map
        .files
        .iter()
        .zip(&payload)
        .map(|(f, p)| (f.name.clone(), p.data.clone()))
        .collect();

    // Extra fields in payload files' local headers, with or without the block
    // map's LfhSize following them.
    for d in &spec.damage {
        if let Damage::LocalExtra(i, extra, follow) = d {
            if items.is_empty() {
                continue;
            }
            let k = *i as usize % items.len();
            let extra = &extra[..extra.len().min(1024)];
            items[k].local_extra.extend_from_slice(extra);
            if *follow {
                map.files[k].lfh_size += extra.len() as u64;
            }
        }
    }

    // Damage to the model and the zip.
    for d in &spec.damage {
        match d {
            Damage::DropMapFile(i) => {
                if !map.files.is_empty() {
                    let n = map.files.len();
                    map.files.remove(*i as usize % n);
                }
            }
            Damage::DuplicateMapFile(i) => {
                if let Some(f) = pick(&mut map.files, *i).cloned() {
                    map.files.push(f);
                }
            }
            Damage::MapSize(i, s) => pick(&mut map.files, *i)
                .into_iter()
                .for_each(|f| f.size = *s % (1 << 40)),
            Damage::MapLfhSize(i, s) => pick(&mut map.files, *i)
                .into_iter()
                .for_each(|f| f.lfh_size = (*s).into()),
            Damage::DropBlock(i, k) => {
                if let Some(f) = pick(&mut map.files, *i).filter(|f| !f.blocks.is_empty()) {
                    let n = f.blocks.len();
                    f.blocks.remove(*k as usize % n);
                }
            }
            Damage::AddBlock(i) => {
                if let Some(f) = pick(&mut map.files, *i) {
                    let b = f.blocks.last().cloned().unwrap_or(Block {
                        hash: [0; 32],
                        compressed_size: Some(2),
                    });
                    f.blocks.push(b);
                }
            }
            Damage::FlipHash(i, k, x) => {
                if let Some(b) = pick(&mut map.files, *i).and_then(|f| pick(&mut f.blocks, *k)) {
                    b.hash[(*x % 32) as usize] ^= 1 | *x;
                }
            }
            Damage::BlockSize(i, k, s) => {
                if let Some(b) = pick(&mut map.files, *i).and_then(|f| pick(&mut f.blocks, *k)) {
                    b.compressed_size = Some(*s % 80_000);
                }
            }
            Damage::RenameMapFile(i, n) => {
                if let Some(f) = pick(&mut map.files, *i) {
                    f.name = n.zip_name().replace('/', "\\");
                }
            }
            Damage::ListFootprint(k) => map.files.push(BlockMapFile {
                name: names::FOOTPRINT[*k as usize % names::FOOTPRINT.len()].into(),
                size: 0,
                lfh_size: 30,
                blocks: Vec::new(),
            }),
            _ => {}
        }
    }

    // The footprint parts.
    let map_xml = xml_damage(Part::BlockMap, map.to_xml().into_bytes());
    let mut footprint = vec![(
        "AppxBlockMap.xml".to_owned(),
        map_xml,
        spec.block_map_deflated,
    )];
    if spec.content_types {
        footprint.push((
            "[Content_Types].xml".into(),
            b"<?xml version=\"1.0\"?><Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\"/>".to_vec(),
            true,
        ));
    }
    if let Some(sig) = &spec.signature {
        footprint.push(("AppxSignature.p7x".into(), sig.clone(), false));
    }
    for (name, data, deflate) in footprint {
        let packed = if deflate {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::new(6));
            std::io::Write::write_all(&mut e, &data).expect("in memory");
            e.finish().expect("in memory")
        } else {
            data.clone()
        };
        items.push(ZipItem {
            entry: WrittenEntry {
                zip_name: name,
                method: if deflate { DEFLATED } else { STORED },
                crc32: crc32fast::hash(&data),
                compressed_size: packed.len() as u64,
                uncompressed_size: data.len() as u64,
                offset: 0,
                zip64: spec.zip64,
                mode: 0o100644,
            },
            local_extra: Vec::new(),
            data: packed,
        });
    }
    let mut lies: Vec<(usize, &Damage)> = Vec::new();
    for d in &spec.damage {
        let n = items.len();
        match d {
            Damage::DropEntry(i) if n > 0 => {
                items.remove(*i as usize % n);
            }
            Damage::DuplicateEntry(i) if n > 0 => {
                let item = &items[*i as usize % n];
                let copy = ZipItem {
                    entry: item.entry.clone(),
                    local_extra: item.local_extra.clone(),
                    data: item.data.clone(),
                };
                items.push(copy);
            }
            Damage::CaseTwin(i) if n > 0 => {
                let item = &items[*i as usize % n];
                let mut copy = ZipItem {
                    entry: item.entry.clone(),
                    local_extra: Vec::new(),
                    data: item.data.clone(),
                };
                copy.entry.zip_name = copy.entry.zip_name.to_uppercase();
                items.push(copy);
            }
            Damage::CdCompressed(i, _)
            | Damage::CdUncompressed(i, _)
            | Damage::CdCrc(i, _)
            | Damage::CdOffset(i, _)
            | Damage::CdMethod(i, _)
                if n > 0 =>
            {
                lies.push((*i as usize % n, d));
            }
            _ => {}
        }
    }

    // The bytes.
    let mut out = Vec::new();
    for item in &mut items {
        item.entry.offset = out.len() as u64;
        let mut header = zip::local_header(&item.entry);
        if !item.local_extra.is_empty() {
            let len =
                u16::from_le_bytes([header[28], header[29]]) as usize + item.local_extra.len();
            header[28..30].copy_from_slice(&(len.min(0xFFFF) as u16).to_le_bytes());
            header.extend_from_slice(&item.local_extra);
        }
        out.extend_from_slice(&header);
        out.extend_from_slice(&item.data);
    }
    let cd_offset = out.len() as u64;
    for (i, item) in items.iter().enumerate() {
        let mut e = item.entry.clone();
        for (_, lie) in lies.iter().filter(|(j, _)| *j == i) {
            match lie {
                Damage::CdCompressed(_, v) => e.compressed_size = *v,
                Damage::CdUncompressed(_, v) => e.uncompressed_size = *v,
                Damage::CdCrc(_, v) => e.crc32 = *v,
                Damage::CdOffset(_, v) => e.offset = *v % (out.len() as u64 + 64),
                Damage::CdMethod(_, v) => e.method = *v % 10,
                _ => {}
            }
        }
        out.extend_from_slice(&zip::central_header(&e));
    }
    let cd_size = out.len() as u64 - cd_offset;
    out.extend_from_slice(&zip::end_records(
        items.len() as u64,
        cd_offset,
        cd_size,
        spec.zip64,
    ));
    for d in &spec.damage {
        match d {
            Damage::FlipByte(at, x) if !out.is_empty() => {
                let n = out.len();
                out[*at as usize % n] ^= 1 | *x;
            }
            Damage::Truncate(f) => out.truncate((*f as usize * out.len()) / 65536),
            _ => {}
        }
    }
    (out, expected, clean)
}

fn uuid_from(v: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(v)
}

fn limits_of(spec: &Option<LimitsSpec>) -> Limits {
    match spec {
        None => Limits::default(),
        Some(l) => Limits {
            max_xml_elements: u64::from(l.elements),
            max_xml_attributes: u64::from(l.attributes),
            max_xml_size: u64::from(l.size % (4 << 20)),
            max_xml_token: u64::from(l.token),
            max_metadata_size: u64::from(l.metadata % (8 << 20)),
            ..Limits::default()
        },
    }
}

fuzz_target!(|spec: Spec| {
    let (bytes, expected, clean) = build(&spec);
    let limits = limits_of(&spec.limits);
    let package = match Package::open_with(bytes.clone(), limits.clone()) {
        Ok(p) => p,
        Err(e) => {
            assert!(!clean, "a package built without damage was refused: {e}");
            return;
        }
    };
    let (verified, kept) = common::check_package(&bytes, &package, &limits);
    if clean {
        assert!(verified, "a package built without damage did not verify");
        for (name, data) in &expected {
            let i = package
                .file_index(name)
                .unwrap_or_else(|| panic!("{name:?} is missing"));
            assert!(
                kept[i].as_deref() == Some(data.as_slice()),
                "{name:?} does not read back as written"
            );
        }
    }
});
