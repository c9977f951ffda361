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
use crate::zip::{self, DEFLATED, STORED, ZipEntry};
use crate::{BLOCK_SIZE, Limits, Progress, names};

/// Blocks read and checked together by [`Package::verify`]: one byte range each.
const VERIFY_RUN: usize = 64;
/// The highest ratio deflate can reach (258-byte matches in 2-bit codes, with slack).
const MAX_DEFLATE_RATIO: u64 = 1032;

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
        let mut zip_index: HashMap<&str, usize> = HashMap::with_capacity(cd.entries.len());
        for (i, e) in cd.entries.iter().enumerate() {
            if zip_index.insert(e.name.as_str(), i).is_some() {
                return Err(FormatError::DuplicateZipEntry(e.name.clone()));
            }
        }
        let map_entry = cd
            .entries
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(blockmap::PART))
            .ok_or(FormatError::MissingPart(blockmap::PART))?;
        let map_bytes = read_whole_entry(&source, map_entry, &limits)?;
        let map = BlockMap::parse(&map_bytes, limits.max_file_size)?;

        let mut by_name = HashMap::with_capacity(map.files.len());
        let mut files = Vec::with_capacity(map.files.len());
        let mut total = 0u64;
        for f in map.files {
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
            },
            stream_map: None,
            filesystem: None,
        };
        let manifest_index = package
            .find_ignore_case(manifest::PART)
            .ok_or(FormatError::MissingPart(manifest::PART))?;
        package.manifest = Manifest::parse(&package.read_file(manifest_index)?)?;
        if let Some(i) = package.find_ignore_case(streammap::PART) {
            package.stream_map = Some(StreamMap::parse(&package.read_file(i)?)?);
        }
        if let Some(i) = package.find_ignore_case(fsmeta::PART) {
            package.filesystem = Some(FilesystemMetadata::parse(&package.read_file(i)?)?);
        }
        Ok(package)
    }

    fn find_ignore_case(&self, name: &str) -> Option<usize> {
        self.files
            .iter()
            .position(|f| f.map.name.eq_ignore_ascii_case(name))
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

/// Read a whole zip entry that is not in the block map (the block map itself), bounded.
fn read_whole_entry<R: ReadAt>(source: &R, entry: &ZipEntry, limits: &Limits) -> Result<Vec<u8>> {
    let too_big = |size| FormatError::SizeLimit {
        file: entry.name.clone(),
        size,
        reason: format!(
            "larger than the limit of {} bytes for metadata",
            limits.max_metadata_size
        ),
    };
    if entry.uncompressed_size > limits.max_metadata_size {
        return Err(too_big(entry.uncompressed_size));
    }
    let lfh = zip::read_local_header(source, entry)?;
    let raw = zip::read_at(
        source,
        entry.local_header_offset + lfh.len,
        entry.compressed_size as usize,
        &entry.name,
    )?;
    let data = if entry.method == STORED {
        raw
    } else {
        let mut out = Vec::with_capacity(entry.uncompressed_size as usize);
        let mut d = flate2::Decompress::new(false);
        out.resize(entry.uncompressed_size as usize + 1, 0);
        // MSIX tools flush the block map's stream without finishing it, so the end
        // of the stream is not required: all input used and the right length are.
        d.decompress(&raw, &mut out, flate2::FlushDecompress::Sync)
            .map_err(|e| FormatError::xml(&entry.name, format!("does not inflate: {e}")))?;
        if d.total_in() != entry.compressed_size || d.total_out() != entry.uncompressed_size {
            return Err(FormatError::corrupt(format!(
                "{} inflates to {} bytes, the zip says {}",
                entry.name,
                d.total_out(),
                entry.uncompressed_size
            )));
        }
        out.truncate(entry.uncompressed_size as usize);
        out
    };
    let crc = crc32fast::hash(&data);
    if crc != entry.crc32 {
        return Err(FormatError::Crc {
            file: entry.name.clone(),
            expected: entry.crc32,
            actual: crc,
        });
    }
    Ok(data)
}
