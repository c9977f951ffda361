//! Reading a package: open (structure checks), single blocks, whole files, full verification.
//!
//! [`Package::open`] reads only the end of the container, its central directory,
//! the block map and the small metadata parts, and refuses anything structurally
//! wrong before a single payload byte is handed out. After that, a block costs
//! one byte range ([`Package::block_range`]) and is checked against its hash
//! before it is returned ([`Package::read_block`]).

use std::collections::HashMap;
use std::ops::Range;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::blockmap::{self, BlockMap, BlockMapFile};
use crate::codec::{Inflater, STREAM_END};
use crate::error::{FormatError, Result};
use crate::fsmeta::{self, FilesystemMetadata};
use crate::manifest::{self, Manifest};
use crate::source::ReadAt;
use crate::streammap::{self, StreamMap};
use crate::xml::{Chunks, XmlLimits};
use crate::zip::{self, DEFLATED, MAX_DEFLATE_RATIO, STORED, ZipEntry};
use crate::{BLOCK_SIZE, Limits, Progress, names};

/// Blocks read and checked together by [`Package::verify`]: one byte range each.
const VERIFY_RUN: usize = 64;

/// A payload file: its block-map entry joined with its zip entry.
#[derive(Debug, Clone)]
pub struct PackageFile {
    /// The block map's view: name, size, block hashes.
    pub map: BlockMapFile,
    /// Whether the file is deflated (else stored).
    pub deflated: bool,
    /// CRC-32 from the zip.
    pub crc32: u32,
    /// Offset of the file's local header.
    pub local_header_offset: u64,
    /// Compressed length in the zip (including the stream's end marker).
    pub compressed_size: u64,
    /// Index of the zip entry.
    entry: usize,
    /// Prefix sums of compressed block sizes (len = blocks + 1), for deflated files.
    offsets: Vec<u64>,
}

impl PackageFile {
    /// Where the file's data starts in the container.
    pub fn data_start(&self) -> u64 {
        self.local_header_offset + self.map.lfh_size
    }

    /// Byte range of blocks `first..end` inside the container.
    pub fn blocks_range(&self, first: usize, end: usize) -> Range<u64> {
        let start = self.data_start();
        if self.deflated {
            start + self.offsets[first]..start + self.offsets[end]
        } else {
            let b = BLOCK_SIZE as u64;
            start + first as u64 * b..start + (end as u64 * b).min(self.map.size)
        }
    }
}

/// Receives verified runs of blocks: `(file index, offset in the file, bytes)`.
pub type Sink<'a> = dyn Fn(usize, u64, &[u8]) -> Result<()> + Sync + 'a;

/// What a full verification saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Payload files (block-map entries).
    pub files: u64,
    /// Blocks checked.
    pub blocks: u64,
    /// Blocks of stored files.
    pub stored_blocks: u64,
    /// Blocks of deflated files.
    pub deflated_blocks: u64,
    /// Uncompressed payload bytes.
    pub bytes: u64,
}

/// An opened package.
pub struct Package<R> {
    source: R,
    limits: Limits,
    entries: Vec<ZipEntry>,
    files: Vec<PackageFile>,
    by_name: HashMap<String, usize>,
    manifest: Manifest,
    stream_map: Option<StreamMap>,
    filesystem: Option<FilesystemMetadata>,
}

impl<R: ReadAt> Package<R> {
    /// Open a package with the default [`Limits`].
    pub fn open(source: R) -> Result<Self> {
        Self::open_with(source, Limits::default())
    }

    /// Open a package: read and check its structure, block map and manifest.
    pub fn open_with(source: R, limits: Limits) -> Result<Self> {
        let cd = zip::read_central_directory(&source, &limits)?;
        let zip_index: HashMap<&str, usize> = cd
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.as_str(), i))
            .collect();
        let map_entry = cd
            .entries
            .iter()
            .find(|e| names::same_part(&e.name, blockmap::PART))
            .ok_or(FormatError::MissingPart(blockmap::PART))?;
        // The block map cannot list more than the zip holds: one <File> per entry,
        // one <Block> per 64 KiB the entries inflate to (bounded by deflate's ratio).
        let most_elements = cd
            .entries
            .iter()
            .filter(|e| !names::is_footprint(&e.name))
            .fold(1 + cd.entries.len() as u64, |n, e| {
                n.saturating_add(blockmap::block_count(e.uncompressed_size))
            });
        let map_limits = XmlLimits {
            elements: limits.max_xml_elements.min(most_elements),
            ..XmlLimits::from(&limits)
        };
        let map = BlockMap::read(
            EntryChunks::new(&source, map_entry, &limits)?,
            &limits,
            map_limits,
        )?;

        let mut by_name = HashMap::with_capacity(map.files.len());
        let mut files = Vec::with_capacity(map.files.len());
        let mut total = 0u64;
        for f in map.files {
            if names::is_footprint(&f.name) {
                return Err(FormatError::FootprintInBlockMap(f.name));
            }
            if by_name.contains_key(&f.name) {
                return Err(FormatError::DuplicateBlockMapFile(f.name));
            }
            let entry = *zip_index
                .get(f.name.as_str())
                .ok_or_else(|| FormatError::FileMissingFromZip(f.name.clone()))?;
            total = total.saturating_add(f.size);
            if total > limits.max_total_size {
                return Err(FormatError::SizeLimit {
                    file: f.name,
                    size: total,
                    reason: format!(
                        "the package's files add up to more than {} bytes",
                        limits.max_total_size
                    ),
                });
            }
            let file = join(f, entry, &cd.entries[entry], cd.offset)?;
            by_name.insert(file.map.name.clone(), files.len());
            files.push(file);
        }
        if let Some(extra) = cd
            .entries
            .iter()
            .find(|e| !names::is_footprint(&e.name) && !by_name.contains_key(&e.name))
        {
            return Err(FormatError::FileMissingFromBlockMap(extra.name.clone()));
        }

        let mut package = Package {
            source,
            limits,
            entries: cd.entries,
            files,
            by_name,
            manifest: Manifest {
                name: String::new(),
                publisher: String::new(),
                version: String::new(),
                package_id: None,
                version_id: None,
                display_name: None,
                applications: Vec::new(),
                target_oses: Vec::new(),
                environment: Vec::new(),
            },
            stream_map: None,
            filesystem: None,
        };
        let xml_limits = XmlLimits::from(&package.limits);
        let manifest_index = package
            .find_ignore_case(manifest::PART)
            .ok_or(FormatError::MissingPart(manifest::PART))?;
        package.manifest = Manifest::read(package.chunks(manifest_index)?, xml_limits)?;
        if let Some(i) = package.find_ignore_case(streammap::PART) {
            package.stream_map = Some(StreamMap::read(package.chunks(i)?, xml_limits)?);
        }
        if let Some(i) = package.find_ignore_case(fsmeta::PART) {
            package.filesystem = Some(FilesystemMetadata::read(package.chunks(i)?, xml_limits)?);
        }
        Ok(package)
    }

    /// A payload file's blocks, one at a time and each checked, for the XML reader.
    fn chunks(&self, file: usize) -> Result<FileChunks<'_, R>> {
        let f = self.file(file)?;
        if f.map.size > self.limits.max_metadata_size {
            return Err(FormatError::SizeLimit {
                file: f.map.name.clone(),
                size: f.map.size,
                reason: "too large to read into memory".into(),
            });
        }
        Ok(FileChunks {
            package: self,
            file,
            next: 0,
            block: Vec::new(),
        })
    }

    /// The signature part (`AppxSignature.p7x`), when the package has one. Avail
    /// does not check signatures: a package with one is no more trusted than one
    /// without, and tools should say so.
    pub fn signature(&self) -> Option<&ZipEntry> {
        self.entries
            .iter()
            .find(|e| names::same_part(&e.name, names::FOOTPRINT[2]))
    }

    fn find_ignore_case(&self, name: &str) -> Option<usize> {
        self.files
            .iter()
            .position(|f| names::same_part(&f.map.name, name))
    }

    /// The payload files, in block-map order.
    pub fn files(&self) -> &[PackageFile] {
        &self.files
    }

    /// Index of a payload file by package name.
    pub fn file_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The zip entries, footprint files included, in central-directory order.
    pub fn zip_entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// The SHA-256 (lowercase hex) of the uncompressed `AppxBlockMap.xml` part,
    /// read again from the source (size and CRC-32 checked as when opening).
    pub fn block_map_sha256(&self) -> Result<String> {
        let entry = self
            .entries
            .iter()
            .find(|e| names::same_part(&e.name, blockmap::PART))
            .ok_or(FormatError::MissingPart(blockmap::PART))?;
        let mut chunks = EntryChunks::new(&self.source, entry, &self.limits)?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = chunks.next_chunk()? {
            hasher.update(chunk);
        }
        Ok(hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The stream map, when the package has one.
    pub fn stream_map(&self) -> Option<&StreamMap> {
        self.stream_map.as_ref()
    }

    /// The Linux file-system metadata, when the package has it (Avail packages do).
    pub fn filesystem_metadata(&self) -> Option<&FilesystemMetadata> {
        self.filesystem.as_ref()
    }

    /// The source the package is read from.
    pub fn source(&self) -> &R {
        &self.source
    }

    fn file(&self, file: usize) -> Result<&PackageFile> {
        self.files
            .get(file)
            .ok_or_else(|| FormatError::NotFound(format!("file #{file}")))
    }

    /// The byte range of one block in the container: what a client asks a content server for.
    pub fn block_range(&self, file: usize, block: usize) -> Result<Range<u64>> {
        let f = self.file(file)?;
        if block >= f.map.blocks.len() {
            return Err(FormatError::NotFound(format!(
                "block {block} of {}",
                f.map.name
            )));
        }
        Ok(f.blocks_range(block, block + 1))
    }

    /// Check raw bytes fetched for a block (from [`Package::block_range`]) and return its content.
    pub fn decode_block(&self, file: usize, block: usize, raw: &[u8]) -> Result<Vec<u8>> {
        let f = self.file(file)?;
        // One inflater per thread: a streaming client decodes every block it reads,
        // and a fresh inflater costs its state and a 64 KiB buffer each time.
        thread_local! {
            static INFLATER: std::cell::RefCell<Inflater> = std::cell::RefCell::new(Inflater::default());
        }
        INFLATER.with_borrow_mut(|inflater| {
            decode(f, block, raw, inflater).map(|(data, _)| data.to_vec())
        })
    }

    /// Read one block with a single range read, inflate it on its own and check its hash.
    pub fn read_block(&self, file: usize, block: usize) -> Result<Vec<u8>> {
        let range = self.block_range(file, block)?;
        let raw = zip::read_at(
            &self.source,
            range.start,
            (range.end - range.start) as usize,
            "a block",
        )?;
        self.decode_block(file, block, &raw)
    }

    /// Read a whole (small) file, every block checked.
    pub fn read_file(&self, file: usize) -> Result<Vec<u8>> {
        let f = self.file(file)?;
        if f.map.size > self.limits.max_metadata_size {
            return Err(FormatError::SizeLimit {
                file: f.map.name.clone(),
                size: f.map.size,
                reason: "too large to read into memory".into(),
            });
        }
        let mut out = Vec::with_capacity(f.map.size as usize);
        let mut inflater = Inflater::default();
        self.for_each_block(f, 0, f.map.blocks.len(), &mut inflater, |_, data| {
            out.extend_from_slice(data);
        })?;
        Ok(out)
    }

    /// Read blocks `first..end` of a file with one range read, checking each, and
    /// hand each to `each`. Returns whether the deflate stream ended in them.
    pub(crate) fn for_each_block(
        &self,
        f: &PackageFile,
        first: usize,
        end: usize,
        inflater: &mut Inflater,
        mut each: impl FnMut(usize, &[u8]),
    ) -> Result<bool> {
        let range = f.blocks_range(first, end);
        let raw = zip::read_at(
            &self.source,
            range.start,
            (range.end - range.start) as usize,
            "blocks",
        )?;
        let mut ended = false;
        for k in first..end {
            let r = f.blocks_range(k, k + 1);
            let slice = &raw[(r.start - range.start) as usize..(r.end - range.start) as usize];
            let (data, end_of_stream) = decode(f, k, slice, inflater)?;
            if end_of_stream && k + 1 != f.map.blocks.len() {
                return Err(FormatError::CorruptBlock {
                    file: f.map.name.clone(),
                    block: k as u64,
                    reason: "the deflate stream ends before the last block".into(),
                });
            }
            ended = end_of_stream;
            each(k, data);
        }
        Ok(ended)
    }

    /// Verify the whole package: every block's hash and size, every file's CRC-32,
    /// every local header. Stops at, and returns, the first failure in package order.
    pub fn verify(&self, progress: &dyn Progress) -> Result<VerifyReport> {
        self.verify_into(progress, None)
    }

    /// [`Package::verify`], handing every checked run of blocks to `sink` as
    /// `(file index, offset in the file, bytes)`. A file's CRC-32 is checked only
    /// after all its runs were handed out, so a sink must not trust its output
    /// until this returns `Ok`.
    pub fn verify_into(
        &self,
        progress: &dyn Progress,
        sink: Option<&Sink<'_>>,
    ) -> Result<VerifyReport> {
        progress.start(self.files.iter().map(|f| f.map.size).sum());
        let units: Vec<(usize, usize, usize)> = self
            .files
            .iter()
            .enumerate()
            .flat_map(|(i, f)| {
                let n = f.map.blocks.len();
                let runs = n.div_ceil(VERIFY_RUN).max(1);
                (0..runs).map(move |r| (i, r * VERIFY_RUN, ((r + 1) * VERIFY_RUN).min(n)))
            })
            .collect();
        let window = rayon::current_num_threads() * 8;
        let mut crcs: Vec<crc32fast::Hasher> = vec![crc32fast::Hasher::new(); self.files.len()];
        for chunk in units.chunks(window) {
            let results: Vec<Result<Vec<(u32, u64)>>> = chunk
                .par_iter()
                .map_init(Inflater::default, |inflater, &(i, first, end)| {
                    self.verify_unit(i, first, end, inflater, progress, sink)
                })
                .collect();
            for (&(i, _, _), result) in chunk.iter().zip(results) {
                for (crc, len) in result? {
                    crcs[i].combine(&crc32fast::Hasher::new_with_initial_len(crc, len));
                }
            }
        }
        let mut report = VerifyReport::default();
        for (f, crc) in self.files.iter().zip(crcs) {
            let actual = crc.finalize();
            if actual != f.crc32 {
                return Err(FormatError::Crc {
                    file: f.map.name.clone(),
                    expected: f.crc32,
                    actual,
                });
            }
            report.files += 1;
            let n = f.map.blocks.len() as u64;
            report.blocks += n;
            if f.deflated {
                report.deflated_blocks += n;
            } else {
                report.stored_blocks += n;
            }
            report.bytes += f.map.size;
        }
        Ok(report)
    }

    fn verify_unit(
        &self,
        i: usize,
        first: usize,
        end: usize,
        inflater: &mut Inflater,
        progress: &dyn Progress,
        sink: Option<&Sink<'_>>,
    ) -> Result<Vec<(u32, u64)>> {
        let f = &self.files[i];
        if first == 0 {
            self.check_local_header(f)?;
        }
        let mut crcs = Vec::with_capacity(end - first);
        let mut out = Vec::new();
        let ended = self.for_each_block(f, first, end, inflater, |_, data| {
            crcs.push((crc32fast::hash(data), data.len() as u64));
            progress.advance(data.len() as u64);
            if sink.is_some() {
                out.extend_from_slice(data);
            }
        })?;
        if let Some(sink) = sink {
            sink(i, first as u64 * BLOCK_SIZE as u64, &out)?;
        }
        if f.deflated && end == f.map.blocks.len() {
            self.check_stream_end(f, ended, inflater)?;
        }
        Ok(crcs)
    }

    fn check_local_header(&self, f: &PackageFile) -> Result<()> {
        let entry = &self.entries[f.entry];
        let lfh = zip::read_local_header(&self.source, entry)?;
        let mismatch = |reason: String| FormatError::LocalHeader {
            file: f.map.name.clone(),
            reason,
        };
        if lfh.len != f.map.lfh_size {
            return Err(mismatch(format!(
                "it is {} bytes long, the block map says LfhSize={}",
                lfh.len, f.map.lfh_size
            )));
        }
        if lfh.raw_name != entry.raw_name {
            return Err(mismatch(
                "its name differs from the central directory".into(),
            ));
        }
        if lfh.method != entry.method {
            return Err(mismatch(
                "its compression method differs from the central directory".into(),
            ));
        }
        Ok(())
    }

    /// After the last block, the rest of the entry must be an empty, final deflate block.
    fn check_stream_end(
        &self,
        f: &PackageFile,
        ended: bool,
        inflater: &mut Inflater,
    ) -> Result<()> {
        let data_end = f.data_start() + f.compressed_size;
        let tail_start = f.blocks_range(0, f.map.blocks.len()).end;
        let tail = zip::read_at(
            &self.source,
            tail_start,
            (data_end - tail_start) as usize,
            "the end of a deflate stream",
        )?;
        let block = f.map.blocks.len().saturating_sub(1) as u64;
        let corrupt = |reason: &str| FormatError::CorruptBlock {
            file: f.map.name.clone(),
            block,
            reason: reason.into(),
        };
        match (ended, tail.is_empty()) {
            (true, true) => Ok(()),
            (true, false) => Err(corrupt("bytes after the end of the deflate stream")),
            (false, _) if tail.as_slice() == STREAM_END => Ok(()),
            (false, _) => match inflater.inflate_block(&tail, 0) {
                Ok((_, true)) => Ok(()),
                _ => Err(corrupt(
                    "the deflate stream does not end after the last block",
                )),
            },
        }
    }
}

/// Join a block-map file with its zip entry and check that they agree.
fn join(map: BlockMapFile, index: usize, entry: &ZipEntry, cd_offset: u64) -> Result<PackageFile> {
    let name = map.name.clone();
    if entry.uncompressed_size != map.size {
        return Err(FormatError::SizeMismatch {
            file: name,
            zip: entry.uncompressed_size,
            block_map: map.size,
        });
    }
    let deflated = entry.method == DEFLATED;
    let sized = map
        .blocks
        .iter()
        .filter(|b| b.compressed_size.is_some())
        .count();
    let mut offsets = Vec::new();
    if deflated {
        if sized != map.blocks.len() {
            return Err(FormatError::xml(
                blockmap::PART,
                format!("{name} is deflated but not every block has a Size"),
            ));
        }
        offsets.reserve(map.blocks.len() + 1);
        offsets.push(0u64);
        let mut sum = 0u64;
        for b in &map.blocks {
            sum += u64::from(b.compressed_size.expect("checked"));
            offsets.push(sum);
        }
        // The blocks, then at most a few bytes closing the stream.
        if sum > entry.compressed_size || entry.compressed_size - sum > 16 {
            return Err(FormatError::CompressedSizeMismatch {
                file: name,
                blocks: sum,
                zip: entry.compressed_size,
            });
        }
        if map.size > entry.compressed_size.saturating_mul(MAX_DEFLATE_RATIO) + 258 {
            return Err(FormatError::SizeLimit {
                file: name,
                size: map.size,
                reason: format!(
                    "impossible for {} compressed bytes (zip bomb?)",
                    entry.compressed_size
                ),
            });
        }
    } else {
        debug_assert_eq!(entry.method, STORED);
        // Some AppX tools give stored blocks a Size; it can only be the block's length.
        if let Some(k) = map.blocks.iter().enumerate().position(|(k, b)| {
            b.compressed_size
                .is_some_and(|s| s as usize != map.block_len(k))
        }) {
            return Err(FormatError::CorruptBlock {
                file: name,
                block: k as u64,
                reason: "a stored block whose Size differs from its length".into(),
            });
        }
    }
    if let Some(len) = entry.local_header_len.filter(|&len| len != map.lfh_size) {
        return Err(FormatError::LocalHeader {
            file: name,
            reason: format!(
                "it is {len} bytes long, the block map says LfhSize={}",
                map.lfh_size
            ),
        });
    }
    if entry
        .local_header_offset
        .checked_add(map.lfh_size)
        .and_then(|s| s.checked_add(entry.compressed_size))
        .is_none_or(|end| end > cd_offset)
    {
        return Err(FormatError::LocalHeader {
            file: name,
            reason: format!(
                "LfhSize={} puts the data past the central directory",
                map.lfh_size
            ),
        });
    }
    Ok(PackageFile {
        map,
        deflated,
        crc32: entry.crc32,
        local_header_offset: entry.local_header_offset,
        compressed_size: entry.compressed_size,
        entry: index,
        offsets,
    })
}

/// Inflate (or take) one block's raw bytes and check its hash.
fn decode<'a>(
    f: &PackageFile,
    k: usize,
    raw: &'a [u8],
    inflater: &'a mut Inflater,
) -> Result<(&'a [u8], bool)> {
    let expected = f.map.block_len(k);
    let corrupt = |reason: String| FormatError::CorruptBlock {
        file: f.map.name.clone(),
        block: k as u64,
        reason,
    };
    let (data, ended) = if f.deflated {
        inflater.inflate_block(raw, expected).map_err(corrupt)?
    } else if raw.len() == expected {
        (raw, false)
    } else {
        return Err(corrupt(format!(
            "{} bytes where {expected} were expected",
            raw.len()
        )));
    };
    if Sha256::digest(data).as_slice() != f.map.blocks[k].hash {
        return Err(FormatError::BlockHash {
            file: f.map.name.clone(),
            block: k as u64,
        });
    }
    Ok((data, ended))
}

/// The blocks of a payload file, each read with one range read and checked
/// against its hash before it is handed on.
struct FileChunks<'a, R> {
    package: &'a Package<R>,
    file: usize,
    next: usize,
    block: Vec<u8>,
}

impl<R: ReadAt> Chunks for FileChunks<'_, R> {
    fn next_chunk(&mut self) -> Result<Option<&[u8]>> {
        if self.next == self.package.files[self.file].map.blocks.len() {
            return Ok(None);
        }
        self.block = self.package.read_block(self.file, self.next)?;
        self.next += 1;
        Ok(Some(&self.block))
    }
}

/// A zip entry that is not in the block map (the block map itself), inflated a
/// piece at a time: it may not inflate past the size the zip gives, and its
/// size and CRC-32 are checked at its end.
struct EntryChunks<'a, R: ?Sized> {
    source: &'a R,
    entry: &'a ZipEntry,
    /// Next compressed byte to read, and the end of the entry's data.
    next: u64,
    end: u64,
    input: Vec<u8>,
    used: usize,
    out: Vec<u8>,
    /// `None` for a stored entry.
    inflater: Option<flate2::Decompress>,
    produced: u64,
    crc: crc32fast::Hasher,
    done: bool,
}

/// Compressed bytes read at once.
const ENTRY_CHUNK: u64 = 64 * 1024;

impl<'a, R: ReadAt + ?Sized> EntryChunks<'a, R> {
    fn new(source: &'a R, entry: &'a ZipEntry, limits: &Limits) -> Result<Self> {
        if entry.uncompressed_size > limits.max_metadata_size {
            return Err(FormatError::SizeLimit {
                file: entry.name.clone(),
                size: entry.uncompressed_size,
                reason: format!(
                    "larger than the limit of {} bytes for metadata",
                    limits.max_metadata_size
                ),
            });
        }
        let lfh = zip::read_local_header(source, entry)?;
        let next = entry.local_header_offset + lfh.len;
        Ok(EntryChunks {
            source,
            entry,
            next,
            end: next + entry.compressed_size,
            input: Vec::new(),
            used: 0,
            out: Vec::new(),
            inflater: (entry.method != STORED).then(|| flate2::Decompress::new(false)),
            produced: 0,
            crc: crc32fast::Hasher::new(),
            done: false,
        })
    }

    /// After the last byte: all input used, the zip's size and CRC-32.
    fn finish(&mut self) -> Result<Option<&[u8]>> {
        self.done = true;
        let consumed = self.next == self.end && self.used == self.input.len();
        if !consumed || self.produced != self.entry.uncompressed_size {
            return Err(FormatError::corrupt(format!(
                "{} inflates to {} bytes{}, the zip says {}",
                self.entry.name,
                self.produced,
                if consumed {
                    ""
                } else {
                    " before its data ends"
                },
                self.entry.uncompressed_size
            )));
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        if crc != self.entry.crc32 {
            return Err(FormatError::Crc {
                file: self.entry.name.clone(),
                expected: self.entry.crc32,
                actual: crc,
            });
        }
        Ok(None)
    }
}

impl<R: ReadAt + ?Sized> Chunks for EntryChunks<'_, R> {
    fn next_chunk(&mut self) -> Result<Option<&[u8]>> {
        if self.done {
            return Ok(None);
        }
        loop {
            if self.used == self.input.len() && self.next < self.end {
                let len = (self.end - self.next).min(ENTRY_CHUNK) as usize;
                self.input = zip::read_at(self.source, self.next, len, &self.entry.name)?;
                self.next += len as u64;
                self.used = 0;
            }
            let input = &self.input[self.used..];
            let Some(inflater) = &mut self.inflater else {
                if input.is_empty() {
                    return self.finish();
                }
                let start = self.used;
                self.used = self.input.len();
                self.produced += input.len() as u64;
                self.crc.update(input);
                return Ok(Some(&self.input[start..]));
            };
            self.out.resize(ENTRY_CHUNK as usize, 0);
            let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
            // MSIX tools flush the block map's stream without finishing it, so the
            // end of the stream is not required: all input used and the right length are.
            let status = inflater
                .decompress(input, &mut self.out, flate2::FlushDecompress::Sync)
                .map_err(|e| {
                    FormatError::xml(&self.entry.name, format!("does not inflate: {e}"))
                })?;
            let used = (inflater.total_in() - before_in) as usize;
            let made = (inflater.total_out() - before_out) as usize;
            self.used += used;
            self.produced += made as u64;
            if self.produced > self.entry.uncompressed_size {
                return Err(FormatError::corrupt(format!(
                    "{} inflates to more than the {} bytes the zip says",
                    self.entry.name, self.entry.uncompressed_size
                )));
            }
            if made > 0 {
                self.crc.update(&self.out[..made]);
                return Ok(Some(&self.out[..made]));
            }
            let exhausted = self.used == self.input.len() && self.next == self.end;
            if status == flate2::Status::StreamEnd || exhausted || used == 0 {
                return self.finish();
            }
        }
    }
}
