//! What every fuzz target checks of a package the reader opened: nothing may
//! panic, and what the reader hands out must agree with itself.
//!
//! - every block range lies inside the container, blocks of a file are adjacent;
//! - a block `read_block` returns has exactly `map.block_len(k)` bytes, and
//!   `decode_block` over the raw bytes of `block_range` returns the same bytes
//!   (checked for each file's first and last block);
//! - whenever `verify` returns Ok, every `read_block` returns Ok too, the blocks
//!   of each file add up to `map.size` bytes whose CRC-32 is the zip's `crc32`,
//!   `read_file` returns the same bytes, and the report counts what is there.

use avail_format::{Limits, NoProgress, Package, VerifyReport};

/// Largest file whose blocks are kept to compare with `read_file`.
const KEEP_LIMIT: u64 = 16 << 20;

/// Check everything a client does with `package`, opened from `data` within
/// `limits`. Returns the verification's result and each file's content when it
/// verified (for files up to 16 MiB that `read_file` reads whole).
pub fn check_package(
    data: &[u8],
    package: &Package<Vec<u8>>,
    limits: &Limits,
) -> (bool, Vec<Option<Vec<u8>>>) {
    // The metadata parsed at open time.
    std::hint::black_box(format!(
        "{:?} {:?} {:?}",
        package.manifest(),
        package.stream_map(),
        package.filesystem_metadata()
    ));
    std::hint::black_box(package.zip_entries().len());

    let verified = package.verify(&NoProgress);
    let files = package.files();
    let mut kept = Vec::with_capacity(files.len());

    for (i, f) in files.iter().enumerate() {
        assert_eq!(
            package.file_index(&f.map.name),
            Some(i),
            "file_index of {:?}",
            f.map.name
        );
        let n = f.map.blocks.len();
        // Kept only for files small enough to compare with `read_file` (a
        // deflated file may inflate to a thousand times its size).
        let keep = f.map.size <= KEEP_LIMIT.min(limits.max_metadata_size);
        let mut content = Vec::new();
        let mut len = 0u64;
        let mut crc = crc32fast::Hasher::new();
        let mut all_ok = true;
        let mut previous_end = None;
        for k in 0..n {
            let range = package
                .block_range(i, k)
                .unwrap_or_else(|e| panic!("block_range({i}, {k}) of an existing block: {e}"));
            assert!(
                range.start <= range.end && range.end <= data.len() as u64,
                "block {k} of {:?}: range {range:?} outside a container of {} bytes",
                f.map.name,
                data.len()
            );
            if let Some(end) = previous_end {
                assert_eq!(
                    range.start,
                    end,
                    "block {k} of {:?} does not follow block {}",
                    f.map.name,
                    k - 1
                );
            }
            previous_end = Some(range.end);

            match package.read_block(i, k) {
                Ok(block) => {
                    assert_eq!(
                        block.len(),
                        f.map.block_len(k),
                        "block {k} of {:?} has the wrong length",
                        f.map.name
                    );
                    // What a client does: fetch block_range itself, then decode_block.
                    // (First and last block only: it is the same decoding again.)
                    if k == 0 || k + 1 == n {
                        let raw = &data[range.start as usize..range.end as usize];
                        let decoded = package.decode_block(i, k, raw).unwrap_or_else(|e| {
                            panic!("read_block({i}, {k}) was Ok but decode_block failed: {e}")
                        });
                        assert!(
                            decoded == block,
                            "decode_block and read_block differ for block {k} of {:?}",
                            f.map.name
                        );
                    }
                    if all_ok {
                        len += block.len() as u64;
                        crc.update(&block);
                        if keep {
                            content.extend_from_slice(&block);
                        }
                    }
                }
                Err(e) => {
                    all_ok = false;
                    if verified.is_ok() {
                        panic!(
                            "verify() was Ok but read_block({i}, {k}) of {:?} failed: {e}",
                            f.map.name
                        );
                    }
                }
            }
        }
        // Past the last block, and past the last file: errors, not panics.
        assert!(package.block_range(i, n).is_err());
        assert!(package.read_block(i, n).is_err());

        if all_ok {
            assert_eq!(
                len, f.map.size,
                "the blocks of {:?} do not add up to its size",
                f.map.name
            );
        }
        if verified.is_ok() {
            assert_eq!(
                crc.finalize(),
                f.crc32,
                "verify() was Ok but the blocks of {:?} do not match its CRC-32",
                f.map.name
            );
            if keep {
                match package.read_file(i) {
                    Ok(whole) => {
                        assert!(whole == content, "read_file({i}) differs from its blocks")
                    }
                    Err(e) => panic!(
                        "verify() was Ok but read_file({i}) of {:?} failed: {e}",
                        f.map.name
                    ),
                }
            }
        }
        kept.push((verified.is_ok() && keep).then_some(content));
    }
    assert!(package.block_range(files.len(), 0).is_err());
    assert!(package.read_block(files.len(), 0).is_err());

    if let Ok(report) = &verified {
        check_report(package, report);
    }
    (verified.is_ok(), kept)
}

/// The report's counts must be what the package holds.
fn check_report(package: &Package<Vec<u8>>, report: &VerifyReport) {
    let files = package.files();
    let blocks: u64 = files.iter().map(|f| f.map.blocks.len() as u64).sum();
    assert_eq!(report.files, files.len() as u64);
    assert_eq!(report.blocks, blocks);
    assert_eq!(report.stored_blocks + report.deflated_blocks, blocks);
    assert_eq!(report.bytes, files.iter().map(|f| f.map.size).sum::<u64>());
}
