//! The zip layer of the OPC container: the central directory (with zip64), local
//! file headers, and the bytes the writer emits for them.
//!
//! Written here rather than taken from the `zip` crate because the package format
//! is defined by byte positions: a block's offset is `local header offset +
//! LfhSize + Σ earlier block sizes`, the writer must control the local header's
//! exact length and the deflate stream's flush points, and the reader works on a
//! random-access source that may be an HTTP range fetcher. Only the two methods
//! packages use (stored, deflate) are accepted.

use std::collections::HashMap;

use crate::Limits;
use crate::error::{FormatError, Result};
use crate::names;
use crate::source::ReadAt;

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EXTRA: u16 = 0x0001;
const EOCD_LEN: usize = 22;
const LOCAL_LEN: usize = 30;
const CENTRAL_LEN: usize = 46;
/// Bytes read at once when reading local headers that lie close together:
/// room for several small entries' fixed headers and names, not much of the
/// data between them (a source behind HTTP fetches every window it is told).
const LOCAL_WINDOW: u64 = 1024;
/// The highest ratio deflate can reach (258-byte matches in 2-bit codes, with slack).
pub(crate) const MAX_DEFLATE_RATIO: u64 = 1032;

/// Zip compression method: stored.
pub const STORED: u16 = 0;
/// Zip compression method: deflate.
pub const DEFLATED: u16 = 8;

/// One entry of the central directory, with its name checked and decoded.
#[derive(Debug, Clone)]
pub struct ZipEntry {
    /// The name as stored in the zip.
    pub raw_name: Vec<u8>,
    /// The decoded package name (`\`-separated).
    pub name: String,
    /// General-purpose flags.
    pub flags: u16,
    /// Compression method ([`STORED`] or [`DEFLATED`]).
    pub method: u16,
    /// CRC-32 of the uncompressed data.
    pub crc32: u32,
    /// Compressed length.
    pub compressed_size: u64,
    /// Uncompressed length.
    pub uncompressed_size: u64,
    /// Offset of the local file header.
    pub local_header_offset: u64,
    /// Length of the local file header as that header itself gives it (30 + its
    /// own name and extra field lengths, which may differ from the central
    /// directory's); `None` when there is no local header signature there (which
    /// [`Package::verify`](crate::Package::verify) refuses).
    pub local_header_len: Option<u64>,
}

/// The central directory of a container.
#[derive(Debug)]
pub struct CentralDirectory {
    /// Entries in directory order.
    pub entries: Vec<ZipEntry>,
    /// Where the central directory starts; every entry's data lies before it.
    pub offset: u64,
}

/// A parsed local file header.
#[derive(Debug)]
pub struct LocalHeader {
    /// Its full length (30 + name + extra): the block map's `LfhSize`.
    pub len: u64,
    /// The name as stored.
    pub raw_name: Vec<u8>,
    /// Compression method.
    pub method: u16,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub(crate) fn read_at<R: ReadAt + ?Sized>(
    src: &R,
    offset: u64,
    len: usize,
    what: &str,
) -> Result<Vec<u8>> {
    let mut buf = vec![0; len];
    src.read_exact_at(&mut buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FormatError::corrupt(format!("{what} lies past the end of the file"))
        } else {
            FormatError::io(format!("reading {what}"), e)
        }
    })?;
    Ok(buf)
}

/// Read and check the central directory.
pub fn read_central_directory<R: ReadAt + ?Sized>(
    src: &R,
    limits: &Limits,
) -> Result<CentralDirectory> {
    let len = src
        .len()
        .map_err(|e| FormatError::io("size of the package", e))?;
    if len < EOCD_LEN as u64 {
        return Err(FormatError::NotZip);
    }
    let tail_len = len.min((EOCD_LEN + u16::MAX as usize) as u64) as usize;
    let tail_start = len - tail_len as u64;
    let tail = read_at(src, tail_start, tail_len, "the end of central directory")?;
    let eocd_pos = (0..=tail_len - EOCD_LEN)
        .rev()
        .find(|&i| {
            u32_at(&tail, i) == EOCD_SIG
                && i + EOCD_LEN + u16_at(&tail, i + 20) as usize <= tail_len
        })
        .ok_or(FormatError::NotZip)?;
    let eocd = &tail[eocd_pos..];
    let eocd_offset = tail_start + eocd_pos as u64;
    let (disk, cd_disk) = (u16_at(eocd, 4), u16_at(eocd, 6));
    let mut count = u64::from(u16_at(eocd, 10));
    let mut cd_size = u64::from(u32_at(eocd, 12));
    let mut cd_offset = u64::from(u32_at(eocd, 16));
    let mut cd_end_limit = eocd_offset;
    if (disk != 0 && disk != 0xFFFF) || (cd_disk != 0 && cd_disk != 0xFFFF) {
        return Err(FormatError::Unsupported {
            name: "the container".into(),
            what: "multi-disk (spanned) zip".into(),
        });
    }
    if u16_at(eocd, 8) != u16_at(eocd, 10) {
        return Err(FormatError::corrupt(
            "entry counts in the end record disagree",
        ));
    }
    if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        if eocd_offset < 20 {
            return Err(FormatError::corrupt("zip64 end record locator is missing"));
        }
        let loc = read_at(src, eocd_offset - 20, 20, "the zip64 locator")?;
        if u32_at(&loc, 0) != ZIP64_LOCATOR_SIG {
            return Err(FormatError::corrupt("zip64 end record locator is missing"));
        }
        let z64_offset = u64_at(&loc, 8);
        if z64_offset
            .checked_add(56)
            .is_none_or(|end| end > eocd_offset - 20)
        {
            return Err(FormatError::corrupt(
                "zip64 end record lies outside the file",
            ));
        }
        let z = read_at(src, z64_offset, 56, "the zip64 end record")?;
        if u32_at(&z, 0) != ZIP64_EOCD_SIG {
            return Err(FormatError::corrupt("zip64 end record has a bad signature"));
        }
        if u32_at(&z, 16) != 0 || u32_at(&z, 20) != 0 {
            return Err(FormatError::Unsupported {
                name: "the container".into(),
                what: "multi-disk (spanned) zip".into(),
            });
        }
        count = u64_at(&z, 32);
        if u64_at(&z, 24) != count {
            return Err(FormatError::corrupt("zip64 entry counts disagree"));
        }
        cd_size = u64_at(&z, 40);
        cd_offset = u64_at(&z, 48);
        cd_end_limit = z64_offset;
    }
    if count > limits.max_entries {
        return Err(FormatError::corrupt(format!(
            "{count} entries is more than the limit of {}",
            limits.max_entries
        )));
    }
    if cd_size > limits.max_metadata_size || cd_size < count.saturating_mul(CENTRAL_LEN as u64) {
        return Err(FormatError::corrupt(format!(
            "central directory size {cd_size} does not fit {count} entries"
        )));
    }
    if cd_offset
        .checked_add(cd_size)
        .is_none_or(|end| end > cd_end_limit)
    {
        return Err(FormatError::corrupt(
            "central directory lies outside the file",
        ));
    }
    let cd = read_at(src, cd_offset, cd_size as usize, "the central directory")?;
    let mut entries = Vec::with_capacity(count as usize);
    let mut guessed_lens = Vec::with_capacity(count as usize);
    let mut pos = 0usize;
    for index in 0..count {
        let bad =
            |what: &str| FormatError::corrupt(format!("central directory entry {index}: {what}"));
        let header = cd
            .get(pos..pos + CENTRAL_LEN)
            .ok_or_else(|| bad("truncated"))?;
        if u32_at(header, 0) != CENTRAL_SIG {
            return Err(bad("bad signature"));
        }
        let flags = u16_at(header, 8);
        let method = u16_at(header, 10);
        let crc32 = u32_at(header, 16);
        let mut compressed_size = u64::from(u32_at(header, 20));
        let mut uncompressed_size = u64::from(u32_at(header, 24));
        let name_len = u16_at(header, 28) as usize;
        let extra_len = u16_at(header, 30) as usize;
        let comment_len = u16_at(header, 32) as usize;
        let disk_start = u16_at(header, 34);
        let mut local_header_offset = u64::from(u32_at(header, 42));
        let var = cd
            .get(pos + CENTRAL_LEN..pos + CENTRAL_LEN + name_len + extra_len + comment_len)
            .ok_or_else(|| bad("name or extra field runs past the directory"))?;
        let raw_name = var[..name_len].to_vec();
        let extra = &var[name_len..name_len + extra_len];
        pos += CENTRAL_LEN + name_len + extra_len + comment_len;

        if uncompressed_size == 0xFFFF_FFFF
            || compressed_size == 0xFFFF_FFFF
            || local_header_offset == 0xFFFF_FFFF
        {
            let z = find_extra(extra, ZIP64_EXTRA)
                .ok_or_else(|| bad("zip64 sizes without a zip64 extra field"))?;
            let mut at = 0;
            let mut next = |field: &mut u64| -> Result<()> {
                if *field == 0xFFFF_FFFF {
                    *field = z
                        .get(at..at + 8)
                        .map(|b| u64_at(b, 0))
                        .ok_or_else(|| bad("zip64 extra field too short"))?;
                    at += 8;
                }
                Ok(())
            };
            next(&mut uncompressed_size)?;
            next(&mut compressed_size)?;
            next(&mut local_header_offset)?;
        }
        if disk_start != 0 && disk_start != 0xFFFF {
            return Err(bad("entry on another disk"));
        }
        let name = names::from_zip_name(&raw_name)?;
        if flags & 1 != 0 {
            return Err(FormatError::Unsupported {
                name,
                what: "encrypted entry".into(),
            });
        }
        if method != STORED && method != DEFLATED {
            return Err(FormatError::Unsupported {
                name,
                what: format!("compression method {method}"),
            });
        }
        if method == STORED && compressed_size != uncompressed_size {
            return Err(FormatError::corrupt(format!(
                "{name}: stored entry with different compressed and uncompressed sizes"
            )));
        }
        if local_header_offset
            .checked_add(LOCAL_LEN as u64)
            .and_then(|x| x.checked_add(compressed_size))
            .is_none_or(|end| end > cd_offset)
        {
            return Err(FormatError::corrupt(format!(
                "{name}: data lies outside the file"
            )));
        }
        // Deflate cannot inflate past this ratio: a larger claim is a zip bomb's.
        if method == DEFLATED
            && uncompressed_size > compressed_size.saturating_mul(MAX_DEFLATE_RATIO) + 258
        {
            return Err(FormatError::SizeLimit {
                file: name,
                size: uncompressed_size,
                reason: format!("impossible for {compressed_size} compressed bytes (zip bomb?)"),
            });
        }
        entries.push(ZipEntry {
            raw_name,
            name,
            flags,
            method,
            crc32,
            compressed_size,
            uncompressed_size,
            local_header_offset,
            local_header_len: None,
        });
        // The central directory's own name and extra lengths, until the local header is read.
        guessed_lens.push((LOCAL_LEN + name_len + extra_len) as u64);
    }
    if pos != cd.len() {
        return Err(FormatError::corrupt("central directory has trailing bytes"));
    }
    check_names(&entries)?;
    read_local_header_lens(src, &mut entries, cd_offset)?;
    // Entries must not overlap: overlapping entries are how some zip bombs multiply
    // data, and an entry hidden in another's extra field is one other readers see
    // and Avail would not. Each span starts with the local header's real length.
    let mut spans: Vec<(u64, u64, &str)> = Vec::with_capacity(entries.len());
    for (e, guess) in entries.iter().zip(guessed_lens) {
        let end = e
            .local_header_offset
            .checked_add(e.local_header_len.unwrap_or(guess))
            .and_then(|x| x.checked_add(e.compressed_size))
            .filter(|&end| end <= cd_offset)
            .ok_or_else(|| {
                FormatError::corrupt(format!("{}: data lies outside the file", e.name))
            })?;
        spans.push((e.local_header_offset, end, e.name.as_str()));
    }
    spans.sort_unstable();
    for pair in spans.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(FormatError::corrupt(format!(
                "entries {} and {} overlap",
                pair[0].2, pair[1].2
            )));
        }
    }
    Ok(CentralDirectory {
        entries,
        offset: cd_offset,
    })
}

/// Part names are unique without regard to case (OPC): two entries that differ
/// only in case are one part listed twice.
fn check_names(entries: &[ZipEntry]) -> Result<()> {
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        if let Some(first) = seen.insert(names::fold_case(&e.name), i) {
            let first = &entries[first].name;
            return Err(if *first == e.name {
                FormatError::DuplicateZipEntry(e.name.clone())
            } else {
                FormatError::DuplicateZipEntryCase {
                    first: first.clone(),
                    second: e.name.clone(),
                }
            });
        }
    }
    Ok(())
}

/// Read the fixed part of every entry's local header and record its real length.
/// Headers are read in file order, several per range read when they lie close
/// together (as a package's small files do), and every range is announced to
/// the source first ([`ReadAt::prefetch`]), so that a source behind HTTP range
/// requests does not pay one round trip per entry.
fn read_local_header_lens<R: ReadAt + ?Sized>(
    src: &R,
    entries: &mut [ZipEntry],
    cd_offset: u64,
) -> Result<()> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_unstable_by_key(|&i| entries[i].local_header_offset);
    // The windows the loop below reads, told to the source first.
    let mut windows: Vec<(u64, usize)> = Vec::new();
    for &i in &order {
        let at = entries[i].local_header_offset;
        let covered = windows.last().is_some_and(|&(start, len)| {
            at >= start && at - start + LOCAL_LEN as u64 <= len as u64
        });
        if !covered {
            windows.push((at, (cd_offset - at).min(LOCAL_WINDOW) as usize));
        }
    }
    src.prefetch(&windows);
    let mut window: Vec<u8> = Vec::new();
    let mut window_start = 0u64;
    for i in order {
        let at = entries[i].local_header_offset;
        let in_window =
            at >= window_start && at - window_start + LOCAL_LEN as u64 <= window.len() as u64;
        if !in_window {
            // The central directory check put every entry's header before it.
            let len = (cd_offset - at).min(LOCAL_WINDOW) as usize;
            window = read_at(src, at, len, "a local file header")?;
            window_start = at;
        }
        let head = &window[(at - window_start) as usize..][..LOCAL_LEN];
        entries[i].local_header_len = (u32_at(head, 0) == LOCAL_SIG)
            .then(|| (LOCAL_LEN + u16_at(head, 26) as usize + u16_at(head, 28) as usize) as u64);
    }
    Ok(())
}

fn find_extra(mut extra: &[u8], id: u16) -> Option<&[u8]> {
    while extra.len() >= 4 {
        let (tag, len) = (u16_at(extra, 0), u16_at(extra, 2) as usize);
        let body = extra.get(4..4 + len)?;
        if tag == id {
            return Some(body);
        }
        extra = &extra[4 + len..];
    }
    None
}

/// Read the local file header of an entry.
pub fn read_local_header<R: ReadAt + ?Sized>(src: &R, entry: &ZipEntry) -> Result<LocalHeader> {
    let head = read_at(
        src,
        entry.local_header_offset,
        LOCAL_LEN,
        "a local file header",
    )?;
    if u32_at(&head, 0) != LOCAL_SIG {
        return Err(FormatError::LocalHeader {
            file: entry.name.clone(),
            reason: "bad signature".into(),
        });
    }
    let name_len = u16_at(&head, 26) as usize;
    let extra_len = u16_at(&head, 28) as usize;
    let raw_name = read_at(
        src,
        entry.local_header_offset + LOCAL_LEN as u64,
        name_len,
        "a local file header",
    )?;
    Ok(LocalHeader {
        len: (LOCAL_LEN + name_len + extra_len) as u64,
        raw_name,
        method: u16_at(&head, 8),
    })
}

// ---- writing ----

/// DOS date 1980-01-01, time 00:00: fixed so that output is reproducible.
const DOS_DATE: u16 = (1 << 5) | 1;
/// "Made by" Unix, spec 4.5: external attributes carry Unix mode bits.
const MADE_BY: u16 = (3 << 8) | 45;

/// What the writer records about an entry for the central directory.
#[derive(Debug, Clone)]
pub struct WrittenEntry {
    /// Zip (OPC) name.
    pub zip_name: String,
    /// Method.
    pub method: u16,
    /// CRC-32.
    pub crc32: u32,
    /// Compressed length.
    pub compressed_size: u64,
    /// Uncompressed length.
    pub uncompressed_size: u64,
    /// Local header offset.
    pub offset: u64,
    /// Whether the local header carries a zip64 extra field.
    pub zip64: bool,
    /// Unix mode (type and permission bits).
    pub mode: u32,
}

/// Offsets inside a local header that are patched once a file's sizes are known.
pub const LFH_CRC_AT: u64 = 14;

/// The local file header for an entry. With `zip64`, sizes live in a zip64 extra field.
pub fn local_header(e: &WrittenEntry) -> Vec<u8> {
    let name = e.zip_name.as_bytes();
    let mut out = Vec::with_capacity(LOCAL_LEN + name.len() + 20);
    out.extend_from_slice(&LOCAL_SIG.to_le_bytes());
    out.extend_from_slice(&(if e.zip64 { 45u16 } else { 20 }).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // flags
    out.extend_from_slice(&e.method.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // time
    out.extend_from_slice(&DOS_DATE.to_le_bytes());
    out.extend_from_slice(&local_sizes(e));
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&(if e.zip64 { 20u16 } else { 0 }).to_le_bytes());
    out.extend_from_slice(name);
    if e.zip64 {
        out.extend_from_slice(&ZIP64_EXTRA.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(&e.uncompressed_size.to_le_bytes());
        out.extend_from_slice(&e.compressed_size.to_le_bytes());
    }
    out
}

/// The CRC and size fields of a local header (12 bytes at [`LFH_CRC_AT`]) and, for
/// zip64, the extra field's sizes (16 bytes after the name): for patching.
pub fn local_sizes(e: &WrittenEntry) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[0..4].copy_from_slice(&e.crc32.to_le_bytes());
    let (c, u) = if e.zip64 {
        (0xFFFF_FFFF, 0xFFFF_FFFF)
    } else {
        (e.compressed_size as u32, e.uncompressed_size as u32)
    };
    out[4..8].copy_from_slice(&c.to_le_bytes());
    out[8..12].copy_from_slice(&u.to_le_bytes());
    out
}

/// The central directory record for an entry.
pub fn central_header(e: &WrittenEntry) -> Vec<u8> {
    let name = e.zip_name.as_bytes();
    let zip64 = e.zip64 || e.offset >= 0xFFFF_FFFF;
    let mut out = Vec::with_capacity(CENTRAL_LEN + name.len() + 28);
    out.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
    out.extend_from_slice(&MADE_BY.to_le_bytes());
    out.extend_from_slice(&(if zip64 { 45u16 } else { 20 }).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&e.method.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&DOS_DATE.to_le_bytes());
    out.extend_from_slice(&e.crc32.to_le_bytes());
    let sentinel = |v: u64| if zip64 { 0xFFFF_FFFF } else { v as u32 };
    out.extend_from_slice(&sentinel(e.compressed_size).to_le_bytes());
    out.extend_from_slice(&sentinel(e.uncompressed_size).to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&(if zip64 { 28u16 } else { 0 }).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment
    out.extend_from_slice(&0u16.to_le_bytes()); // disk
    out.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
    out.extend_from_slice(&(e.mode << 16).to_le_bytes());
    out.extend_from_slice(&sentinel(e.offset).to_le_bytes());
    out.extend_from_slice(name);
    if zip64 {
        out.extend_from_slice(&ZIP64_EXTRA.to_le_bytes());
        out.extend_from_slice(&24u16.to_le_bytes());
        out.extend_from_slice(&e.uncompressed_size.to_le_bytes());
        out.extend_from_slice(&e.compressed_size.to_le_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
    }
    out
}

/// The end records (zip64 end record and locator when needed, then the classic one).
pub fn end_records(count: u64, cd_offset: u64, cd_size: u64, force_zip64: bool) -> Vec<u8> {
    let zip64 =
        force_zip64 || count >= 0xFFFF || cd_offset >= 0xFFFF_FFFF || cd_size >= 0xFFFF_FFFF;
    let mut out = Vec::with_capacity(98);
    if zip64 {
        let z64_offset = cd_offset + cd_size;
        out.extend_from_slice(&ZIP64_EOCD_SIG.to_le_bytes());
        out.extend_from_slice(&44u64.to_le_bytes());
        out.extend_from_slice(&MADE_BY.to_le_bytes());
        out.extend_from_slice(&45u16.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&cd_size.to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&ZIP64_LOCATOR_SIG.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&z64_offset.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
    }
    out.extend_from_slice(&EOCD_SIG.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    let c16 = if zip64 { 0xFFFF } else { count as u16 };
    out.extend_from_slice(&c16.to_le_bytes());
    out.extend_from_slice(&c16.to_le_bytes());
    let s32 = |v: u64| if zip64 { 0xFFFF_FFFFu32 } else { v as u32 };
    out.extend_from_slice(&s32(cd_size).to_le_bytes());
    out.extend_from_slice(&s32(cd_offset).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}
