//! Writing a package from a directory tree.
//!
//! The tree becomes the payload under `Root\` (mirroring absolute Linux paths),
//! with `FilesystemMetadata.xml` for modes, symlinks and empty directories,
//! `StreamMap.xml` for the feature blocks, `AppxManifest.xml`, the block map and
//! `[Content_Types].xml`. Blocks are compressed in parallel, in windows, and
//! written in package order, so memory stays bounded and the output depends only
//! on the tree and the options: the same tree and ids give the same bytes.
//! The package is written to a temporary file beside the output and renamed into
//! place only when complete.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::blockmap::{self, Block, BlockMap, BlockMapFile};
use crate::codec::{Deflater, STREAM_END};
use crate::error::{FormatError, Result};
use crate::fsmeta::{self, Entry, EntryKind, FilesystemMetadata};
use crate::manifest::{self, Application, Manifest};
use crate::streammap::{self, FeatureFile, StreamMap};
use crate::zip::{self, DEFLATED, STORED, WrittenEntry};
use crate::{BLOCK_SIZE, Progress, names};

/// Blocks compressed as one unit of work.
const UNIT_BLOCKS: usize = 64;
/// Uncompressed bytes in flight at once.
const WINDOW_BYTES: u64 = 32 << 20;
/// Files at least this large get zip64 headers (leaving room for deflate's worst case).
const ZIP64_THRESHOLD: u64 = 0xF000_0000;
const S_IFREG: u32 = 0o100_000;

/// What to put in the manifest and stream map, and how to compress.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Display name; also the identity name, reduced to the characters AppX allows,
    /// unless `identity_name` is given.
    pub name: String,
    /// Identity name to write as it is: a new version of a package keeps the old
    /// version's (see [`Manifest::name`]). Derived from `name` when `None`.
    pub identity_name: Option<String>,
    /// Version, one to four dotted numbers.
    pub version: String,
    /// Identity publisher.
    pub publisher: String,
    /// PackageId; a fresh one when `None`.
    pub package_id: Option<Uuid>,
    /// VersionId; a fresh one when `None`.
    pub version_id: Option<Uuid>,
    /// Applications (targets are absolute Linux paths).
    pub applications: Vec<Application>,
    /// Environment variables for the applications (name, value; see
    /// [`Manifest::environment`]).
    pub environment: Vec<(String, String)>,
    /// The operating systems the package targets, written as
    /// `Prerequisites/appv:TargetOSes/appv:TargetOS` (empty: every one, and
    /// nothing is written). Each is non-empty, at most
    /// [`manifest::MAX_TARGET_OS_LEN`] bytes without surrounding blanks or
    /// control characters, given once, at most [`manifest::MAX_TARGET_OSES`]
    /// of them; what the values mean is not checked here (`avail package pack`
    /// checks them as a publishing server reads them).
    pub target_oses: Vec<String>,
    /// Absolute paths (files or directories) for the publishing feature block, in
    /// addition to desktop entries and icons, which are always there.
    pub publishing: Vec<String>,
    /// Absolute paths (files or directories) for the primary feature block (FB1).
    pub primary: Vec<String>,
    /// Block runs for the primary feature block, by package name (`Root\…`),
    /// as a recorded launch read them (`avail package pack --record-fb1`); a
    /// file `primary` names whole stays whole, a name not in the package is
    /// an error.
    pub primary_runs: Vec<FeatureFile>,
    /// zlib compression level, 0–9.
    pub level: u32,
    /// Write zip64 headers for every file, even small ones (for interoperability tests).
    pub force_zip64: bool,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            name: "package".into(),
            identity_name: None,
            version: "1.0.0.0".into(),
            publisher: "CN=Avail".into(),
            package_id: None,
            version_id: None,
            applications: Vec::new(),
            environment: Vec::new(),
            target_oses: Vec::new(),
            publishing: Vec::new(),
            primary: Vec::new(),
            primary_runs: Vec::new(),
            level: 6,
            force_zip64: false,
        }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct PackSummary {
    /// The manifest written into the package.
    pub manifest: Manifest,
    /// Payload files in the block map (metadata parts included).
    pub files: u64,
    /// Blocks in the block map.
    pub blocks: u64,
    /// Uncompressed payload bytes.
    pub bytes: u64,
    /// Size of the package file.
    pub package_size: u64,
    /// Things worth telling the person who packed it.
    pub warnings: Vec<String>,
}

/// Where a payload file's bytes come from.
enum Content {
    Disk(PathBuf),
    Memory(Vec<u8>),
}

struct Input {
    name: String,
    size: u64,
    mode: u32,
    content: Content,
}

/// Pack `dir` into the package file `output`.
pub fn pack(
    dir: &Path,
    output: &Path,
    options: &PackOptions,
    progress: &dyn Progress,
) -> Result<PackSummary> {
    let (mut inputs, meta) = scan(dir)?;
    let mut warnings = Vec::new();
    let manifest = build_manifest(options, &meta, &mut warnings)?;
    let stream_map = build_stream_map(options, &meta)?;
    for (part, xml) in [
        (fsmeta::PART, meta.to_xml()),
        (streammap::PART, stream_map.to_xml()),
        (manifest::PART, manifest.to_xml()),
    ] {
        let bytes = xml.into_bytes();
        inputs.push(Input {
            name: part.into(),
            size: bytes.len() as u64,
            mode: 0o644,
            content: Content::Memory(bytes),
        });
    }
    let bytes: u64 = inputs.iter().map(|i| i.size).sum();
    progress.start(bytes);

    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".avail-pack-")
        .tempfile_in(parent)
        .map_err(|e| {
            FormatError::io(
                format!("creating a temporary file in {}", parent.display()),
                e,
            )
        })?;
    let mut writer = ZipWriter {
        out: BufWriter::with_capacity(1 << 20, tmp.as_file().try_clone()?),
        pos: 0,
        entries: Vec::new(),
        force_zip64: options.force_zip64,
    };
    let map = write_payload(&mut writer, &inputs, options.level.min(9), progress)?;
    let blocks = map.files.iter().map(|f| f.blocks.len() as u64).sum();
    let files = map.files.len() as u64;
    writer.write_whole(blockmap::PART, map.to_xml().as_bytes())?;
    writer.write_whole("[Content_Types].xml", content_types(&inputs).as_bytes())?;
    let package_size = writer.finish()?;
    tmp.as_file().sync_all()?;
    tmp.persist(output).map_err(|e| {
        FormatError::io(
            format!("moving the package to {}", output.display()),
            e.error,
        )
    })?;
    Ok(PackSummary {
        manifest,
        files,
        blocks,
        bytes,
        package_size,
        warnings,
    })
}

/// Walk the tree: payload files, and the metadata for every path.
fn scan(dir: &Path) -> Result<(Vec<Input>, FilesystemMetadata)> {
    let root_meta = std::fs::metadata(dir)
        .map_err(|e| FormatError::io(format!("reading {}", dir.display()), e))?;
    if !root_meta.is_dir() {
        return Err(FormatError::Invalid(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let mut inputs = Vec::new();
    // Part names are case-insensitive (OPC): two files whose names differ only in
    // case would be one part listed twice, which readers refuse.
    let mut folded: HashMap<String, PathBuf> = HashMap::new();
    let mut meta = FilesystemMetadata::default();
    meta.entries.push(Entry {
        name: "Root".into(),
        kind: EntryKind::Directory,
        mode: root_meta.mode() & 0o7777,
        mtime: Some(root_meta.mtime()),
    });
    let walk = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .min_depth(1)
        .sort_by(|a, b| a.file_name().cmp(b.file_name()));
    for item in walk {
        let item = item.map_err(|e| {
            let path = e
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            FormatError::io(format!("walking {path}"), e.into())
        })?;
        let rel = item
            .path()
            .strip_prefix(dir)
            .expect("walkdir stays under its root");
        let name = names::payload_name(rel)?;
        let md = item
            .metadata()
            .map_err(|e| FormatError::io(format!("reading {}", item.path().display()), e.into()))?;
        let mode = md.mode() & 0o7777;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Directory
        } else if ft.is_file() {
            if let Some(other) = folded.insert(names::fold_case(&name), rel.to_owned()) {
                return Err(FormatError::Unpackable {
                    path: item.path().display().to_string(),
                    reason: format!(
                        "its name differs from {} only in letter case, and package part \
                         names are case-insensitive (OPC); rename one of them",
                        dir.join(other).display()
                    ),
                });
            }
            inputs.push(Input {
                name: name.clone(),
                size: md.len(),
                mode,
                content: Content::Disk(item.path().to_owned()),
            });
            EntryKind::File
        } else if ft.is_symlink() {
            let target = std::fs::read_link(item.path())?;
            let target = target
                .to_str()
                .filter(|t| !t.chars().any(char::is_control))
                .ok_or_else(|| FormatError::Unpackable {
                    path: item.path().display().to_string(),
                    reason: "the symlink's target is not printable UTF-8".into(),
                })?;
            EntryKind::Symlink {
                target: target.to_owned(),
            }
        } else {
            return Err(FormatError::Unpackable {
                path: item.path().display().to_string(),
                reason: "only regular files, directories and symlinks can be packed (not devices, sockets or FIFOs)".into(),
            });
        };
        meta.entries.push(Entry {
            name,
            kind,
            mode,
            mtime: Some(md.mtime()),
        });
    }
    Ok((inputs, meta))
}

fn build_manifest(
    options: &PackOptions,
    meta: &FilesystemMetadata,
    warnings: &mut Vec<String>,
) -> Result<Manifest> {
    let identity = match &options.identity_name {
        Some(given) if given.trim().is_empty() => {
            return Err(FormatError::Invalid("the identity name is empty".into()));
        }
        Some(given) => given.clone(),
        None => manifest::identity_name(&options.name)?,
    };
    let mut seen = BTreeSet::new();
    for app in &options.applications {
        if app.id.is_empty() || !seen.insert(app.id.as_str()) {
            return Err(FormatError::Invalid(format!(
                "application id {:?} is empty or given twice",
                app.id
            )));
        }
        let target = app.target.as_deref().unwrap_or_default();
        if !target.starts_with('/') {
            return Err(FormatError::Invalid(format!(
                "application {}: target {target:?} must be an absolute path, like /opt/app/bin/app",
                app.id
            )));
        }
        let in_package = names::from_linux_path(target).ok().is_some_and(|n| {
            meta.entries
                .iter()
                .any(|e| e.name == n && e.kind != EntryKind::Directory)
        });
        if !in_package {
            warnings.push(format!(
                "application {}: {target} is not in the package; it must exist on the client",
                app.id
            ));
        }
    }
    if options.target_oses.len() > manifest::MAX_TARGET_OSES {
        return Err(FormatError::Invalid(format!(
            "{} target operating systems: at most {} can be written",
            options.target_oses.len(),
            manifest::MAX_TARGET_OSES
        )));
    }
    let mut seen_os = BTreeSet::new();
    for os in &options.target_oses {
        let fine = !os.is_empty()
            && os.len() <= manifest::MAX_TARGET_OS_LEN
            && os.trim() == os
            && !os.chars().any(char::is_control);
        if !fine || !seen_os.insert(os.as_str()) {
            return Err(FormatError::Invalid(format!(
                "target operating system {os:?} is empty, longer than {} bytes, has blanks \
                 around it or control characters in it, or is given twice",
                manifest::MAX_TARGET_OS_LEN
            )));
        }
    }
    Ok(Manifest {
        name: identity,
        publisher: options.publisher.clone(),
        version: manifest::normalize_version(&options.version)?,
        package_id: Some(options.package_id.unwrap_or_else(Uuid::new_v4)),
        version_id: Some(options.version_id.unwrap_or_else(Uuid::new_v4)),
        display_name: Some(options.name.clone()),
        applications: options.applications.clone(),
        target_oses: options.target_oses.clone(),
        environment: options.environment.clone(),
    })
}

fn build_stream_map(options: &PackOptions, meta: &FilesystemMetadata) -> Result<StreamMap> {
    let files: Vec<&str> = meta
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| e.name.as_str())
        .collect();
    let select = |paths: &[String], flag: &str| -> Result<BTreeSet<&str>> {
        let mut chosen = BTreeSet::new();
        for path in paths {
            let name = names::from_linux_path(path).map_err(|_| {
                FormatError::Invalid(format!("{flag} {path}: not a valid absolute path"))
            })?;
            if !meta.entries.iter().any(|e| e.name == name) {
                return Err(FormatError::Invalid(format!(
                    "{flag} {path}: no such file or directory in the package"
                )));
            }
            let under = format!("{name}\\");
            chosen.extend(
                files
                    .iter()
                    .filter(|f| **f == name || f.starts_with(&under)),
            );
        }
        Ok(chosen)
    };
    let mut publishing = select(&options.publishing, "--fb0")?;
    publishing.extend(files.iter().filter(|f| {
        f.ends_with(".desktop")
            || f.contains("\\share\\icons\\")
            || f.contains("\\share\\pixmaps\\")
    }));
    let primary = select(&options.primary, "--fb1")?;
    // Keep package order, so the stream map reads like the block map.
    let in_order = |set: &BTreeSet<&str>| {
        files
            .iter()
            .filter(|f| set.contains(*f))
            .map(|f| FeatureFile {
                name: (*f).to_owned(),
                runs: Vec::new(),
            })
            .collect()
    };
    let mut primary_map: Vec<FeatureFile> = in_order(&primary);
    for recorded in &options.primary_runs {
        if !files.contains(&recorded.name.as_str()) {
            return Err(FormatError::Invalid(format!(
                "recorded feature block: {} is not a file of the package",
                recorded.name
            )));
        }
        if primary.contains(recorded.name.as_str()) {
            continue;
        }
        primary_map.push(recorded.clone());
    }
    // Package order again, for the runs added.
    primary_map.sort_by_key(|f| files.iter().position(|n| *n == f.name));
    Ok(StreamMap {
        publishing: in_order(&publishing),
        primary: primary_map,
    })
}

/// One unit of compression work: up to [`UNIT_BLOCKS`] blocks of one file.
struct Unit {
    input: usize,
    first: usize,
    end: usize,
}

/// One compressed block.
struct BlockOut {
    hash: [u8; 32],
    crc: u32,
    raw: Vec<u8>,
    deflated: Vec<u8>,
}

fn compress_unit(
    inputs: &[Input],
    unit: &Unit,
    level: u32,
    deflater: &mut Deflater,
) -> Result<Vec<BlockOut>> {
    let input = &inputs[unit.input];
    let start = unit.first as u64 * BLOCK_SIZE as u64;
    let len = ((unit.end as u64 * BLOCK_SIZE as u64).min(input.size) - start) as usize;
    let data = match &input.content {
        Content::Memory(bytes) => bytes[start as usize..start as usize + len].to_vec(),
        Content::Disk(path) => {
            let file = File::open(path)
                .map_err(|e| FormatError::io(format!("opening {}", path.display()), e))?;
            let mut buf = vec![0; len];
            file.read_exact_at(&mut buf, start).map_err(|e| {
                FormatError::io(
                    format!("reading {} (did it change while packing?)", path.display()),
                    e,
                )
            })?;
            buf
        }
    };
    Ok(data
        .chunks(BLOCK_SIZE)
        .map(|chunk| {
            let mut deflated = Vec::new();
            if level > 0 {
                deflater.compress_block(chunk, &mut deflated);
            }
            BlockOut {
                hash: Sha256::digest(chunk).into(),
                crc: crc32fast::hash(chunk),
                raw: chunk.to_vec(),
                deflated,
            }
        })
        .collect())
}

/// Compress and write every payload file; returns the block map.
fn write_payload(
    w: &mut ZipWriter,
    inputs: &[Input],
    level: u32,
    progress: &dyn Progress,
) -> Result<BlockMap> {
    let mut units = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let n = blockmap::block_count(input.size) as usize;
        let mut first = 0;
        loop {
            let end = (first + UNIT_BLOCKS).min(n);
            units.push(Unit {
                input: i,
                first,
                end,
            });
            if end >= n {
                break;
            }
            first = end;
        }
    }
    let mut map = BlockMap::default();
    let mut current: Option<OpenFile> = None;
    let mut start = 0;
    while start < units.len() {
        let mut end = start;
        let mut bytes = 0u64;
        while end < units.len() && (end == start || bytes < WINDOW_BYTES) {
            bytes += ((units[end].end - units[end].first) * BLOCK_SIZE) as u64;
            end += 1;
        }
        let window = &units[start..end];
        let outputs: Vec<Result<Vec<BlockOut>>> = window
            .par_iter()
            .map_init(
                || Deflater::new(level),
                |d, unit| compress_unit(inputs, unit, level, d),
            )
            .collect();
        for (unit, out) in window.iter().zip(outputs) {
            let blocks = out?;
            let input = &inputs[unit.input];
            let last = unit.end == blockmap::block_count(input.size) as usize;
            let mut file = match current.take() {
                Some(f) => f,
                None => w.begin(input, &blocks, level, last)?,
            };
            for b in &blocks {
                let data = if file.entry.method == DEFLATED {
                    &b.deflated
                } else {
                    &b.raw
                };
                w.write(data)?;
                file.crc.combine(&crc32fast::Hasher::new_with_initial_len(
                    b.crc,
                    b.raw.len() as u64,
                ));
                file.compressed += data.len() as u64;
                file.blocks.push(Block {
                    hash: b.hash,
                    compressed_size: (file.entry.method == DEFLATED).then_some(data.len() as u32),
                });
                progress.advance(b.raw.len() as u64);
            }
            if last {
                map.files.push(w.end(file, input)?);
            } else {
                current = Some(file);
            }
        }
        start = end;
    }
    Ok(map)
}

/// A file whose data is being written.
struct OpenFile {
    entry: WrittenEntry,
    lfh_len: u64,
    header_final: bool,
    crc: crc32fast::Hasher,
    compressed: u64,
    blocks: Vec<Block>,
}

struct ZipWriter {
    out: BufWriter<File>,
    pos: u64,
    entries: Vec<WrittenEntry>,
    force_zip64: bool,
}

impl ZipWriter {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.out.write_all(data)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Start a file. When its first unit is also its last, the local header gets
    /// its final CRC and sizes at once; otherwise they are patched in at the end.
    fn begin(
        &mut self,
        input: &Input,
        first: &[BlockOut],
        level: u32,
        whole: bool,
    ) -> Result<OpenFile> {
        let raw: usize = first.iter().map(|b| b.raw.len()).sum();
        let packed: usize = first.iter().map(|b| b.deflated.len()).sum();
        // Deflate unless it saves less than 2% (already-compressed data is stored).
        let method = if level > 0 && raw > 0 && packed < raw - raw / 50 {
            DEFLATED
        } else {
            STORED
        };
        let mut entry = WrittenEntry {
            zip_name: names::to_zip_name(&input.name),
            method,
            crc32: 0,
            compressed_size: 0,
            uncompressed_size: input.size,
            offset: self.pos,
            zip64: self.force_zip64 || input.size >= ZIP64_THRESHOLD,
            mode: S_IFREG | input.mode,
        };
        if whole {
            let mut crc = crc32fast::Hasher::new();
            for b in first {
                crc.combine(&crc32fast::Hasher::new_with_initial_len(
                    b.crc,
                    b.raw.len() as u64,
                ));
            }
            entry.crc32 = crc.finalize();
            entry.compressed_size = if method == DEFLATED {
                (packed + STREAM_END.len()) as u64
            } else {
                raw as u64
            };
        }
        let header = zip::local_header(&entry);
        self.write(&header)?;
        Ok(OpenFile {
            entry,
            lfh_len: header.len() as u64,
            header_final: whole,
            crc: crc32fast::Hasher::new(),
            compressed: 0,
            blocks: Vec::new(),
        })
    }

    fn end(&mut self, mut file: OpenFile, input: &Input) -> Result<BlockMapFile> {
        if file.entry.method == DEFLATED {
            self.write(&STREAM_END)?;
            file.compressed += STREAM_END.len() as u64;
        }
        let crc = file.crc.finalize();
        if file.header_final {
            debug_assert_eq!(
                (file.entry.crc32, file.entry.compressed_size),
                (crc, file.compressed)
            );
        } else {
            file.entry.crc32 = crc;
            file.entry.compressed_size = file.compressed;
            self.out
                .seek(SeekFrom::Start(file.entry.offset + zip::LFH_CRC_AT))?;
            self.out.write_all(&zip::local_sizes(&file.entry))?;
            if file.entry.zip64 {
                let sizes_at = file.entry.offset + 30 + file.entry.zip_name.len() as u64 + 4;
                self.out.seek(SeekFrom::Start(sizes_at))?;
                self.out
                    .write_all(&file.entry.uncompressed_size.to_le_bytes())?;
                self.out
                    .write_all(&file.entry.compressed_size.to_le_bytes())?;
            }
            self.out.seek(SeekFrom::Start(self.pos))?;
        }
        self.entries.push(file.entry);
        Ok(BlockMapFile {
            name: input.name.clone(),
            size: input.size,
            lfh_size: file.lfh_len,
            blocks: file.blocks,
        })
    }

    /// A footprint part: one ordinary deflate stream, not in the block map. Its
    /// zip name is literal (`[Content_Types].xml` is not percent-encoded).
    fn write_whole(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(data)?;
        let deflated = enc.finish()?;
        let entry = WrittenEntry {
            zip_name: name.to_owned(),
            method: DEFLATED,
            crc32: crc32fast::hash(data),
            compressed_size: deflated.len() as u64,
            uncompressed_size: data.len() as u64,
            offset: self.pos,
            zip64: self.force_zip64,
            mode: S_IFREG | 0o644,
        };
        self.write(&zip::local_header(&entry))?;
        self.write(&deflated)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Write the central directory and end records; returns the file's length.
    fn finish(mut self) -> Result<u64> {
        let cd_offset = self.pos;
        let records: Vec<Vec<u8>> = self.entries.iter().map(zip::central_header).collect();
        for r in &records {
            self.write(r)?;
        }
        let end = zip::end_records(
            self.entries.len() as u64,
            cd_offset,
            self.pos - cd_offset,
            self.force_zip64,
        );
        self.write(&end)?;
        self.out.flush()?;
        Ok(self.pos)
    }
}

/// `[Content_Types].xml`: a default per extension, overrides for the rest.
fn content_types(inputs: &[Input]) -> String {
    let mut defaults = BTreeSet::new();
    let mut overrides = Vec::new();
    for input in inputs {
        let zip_name = names::to_zip_name(&input.name);
        let last = zip_name.rsplit('/').next().unwrap_or_default();
        match last.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() => {
                defaults.insert(ext.to_ascii_lowercase());
            }
            _ => overrides.push((zip_name, "application/octet-stream")),
        }
    }
    overrides.push((
        manifest::PART.into(),
        "application/vnd.ms-appx.manifest+xml",
    ));
    overrides.push((
        blockmap::PART.into(),
        "application/vnd.ms-appx.blockmap+xml",
    ));
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">",
    );
    for ext in &defaults {
        let ty = match ext.as_str() {
            "xml" => "text/xml",
            "txt" => "text/plain",
            "png" => "image/png",
            "svg" => "image/svg+xml",
            "desktop" => "application/x-desktop",
            _ => "application/octet-stream",
        };
        out.push_str(&format!(
            "<Default Extension=\"{}\" ContentType=\"{ty}\"/>",
            crate::xml::escape(ext)
        ));
    }
    for (part, ty) in overrides {
        out.push_str(&format!(
            "<Override PartName=\"/{}\" ContentType=\"{ty}\"/>",
            crate::xml::escape(&part)
        ));
    }
    out.push_str("</Types>\n");
    out
}
