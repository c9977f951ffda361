//! Single-block random-read latency: [`Package::read_block`] (one `pread` of the
//! block's byte range, inflate of that block on its own, SHA-256 check) on random
//! `(file, block)` pairs, measured in the same run against two references on the
//! very same pairs: (a) a raw `pread` of the same byte range alone, the I/O floor,
//! and (b) what an ordinary zip reader must do to get block k — inflate the member
//! from its start up to block k with `flate2::read::DeflateDecoder`. It packs its
//! own package from a generated tree in a temporary directory, prints ns/op
//! (mean, p50, p99) for each method and a `SUMMARY` line with the ratios.
//!
//! Run with `cargo bench -p avail-format --bench read_block`. It is a plain
//! `harness = false` program (no criterion): the point is the ratios, which
//! criterion does not print, and a plain loop keeps the build light.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use avail_format::{BLOCK_SIZE, NoProgress, PackOptions, Package};
use flate2::read::DeflateDecoder;

/// Payload files in the generated tree.
const FILES: usize = 4;
/// Size of each payload file: 128 blocks of 64 KiB.
const FILE_SIZE: usize = 8 << 20;
/// Random `(file, block)` pairs, the same sample for every method.
const SAMPLE: usize = 256;
/// Measured passes over the sample, per method (after one warm-up pass).
const PASSES: usize = 3;
/// A fast method repeats the sample until a pass takes at least this long.
const MIN_PASS: Duration = Duration::from_millis(200);

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    let tmp = tempfile::tempdir()?;
    let tree = tmp.path().join("tree");
    let package_path = tmp.path().join("bench.appv");
    make_tree(&tree)?;
    avail_format::pack(&tree, &package_path, &PackOptions::default(), &NoProgress)?;
    let package = Package::open(File::open(&package_path)?)?;
    // A second handle for the references, so that no method shares state with another.
    let file = File::open(&package_path)?;

    let payload: Vec<usize> = package
        .files()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.map.name.starts_with("Root") && f.deflated && !f.map.blocks.is_empty())
        .map(|(i, _)| i)
        .collect();
    if payload.len() != FILES {
        return Err(format!(
            "expected {FILES} deflated payload files in the package, found {}",
            payload.len()
        )
        .into());
    }
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let pairs: Vec<(usize, usize)> = (0..SAMPLE)
        .map(|_| {
            let f = payload[rng.below(payload.len())];
            (f, rng.below(package.files()[f].map.blocks.len()))
        })
        .collect();

    // The references must return the very bytes read_block returns.
    for &(f, k) in &pairs {
        let verified = package.read_block(f, k)?;
        let inflated = zip_reader_block(&package, &file, f, k)?;
        if verified != inflated {
            return Err(format!("block {k} of file #{f}: the zip reader disagrees").into());
        }
        let r = package.block_range(f, k)?;
        if raw_pread(&file, r.start, r.end)?.len() as u64 != r.end - r.start {
            return Err("short pread".into());
        }
    }

    let blocks: usize = payload
        .iter()
        .map(|&f| package.files()[f].map.blocks.len())
        .sum();
    let packed: u64 = payload
        .iter()
        .map(|&f| package.files()[f].compressed_size)
        .sum();
    println!(
        "read_block: {FILES} deflated files x {} MiB ({blocks} blocks of 64 KiB, {:.2}x compression), \
         {SAMPLE} random (file, block) pairs, hot page cache",
        FILE_SIZE >> 20,
        (FILES * FILE_SIZE) as f64 / packed as f64,
    );

    let floor = measure(&pairs, |f, k| {
        let r = package.block_range(f, k)?;
        raw_pread(&file, r.start, r.end)
    })?;
    let avail = measure(&pairs, |f, k| Ok(package.read_block(f, k)?))?;
    let zip = measure(&pairs, |f, k| zip_reader_block(&package, &file, f, k))?;

    println!(
        "{:<52} {:>12} {:>12} {:>12} {:>14}",
        "method", "mean ns/op", "p50 ns/op", "p99 ns/op", "avail speedup"
    );
    for (name, s) in [
        (
            "(a) raw pread of the block's byte range (I/O floor)",
            &floor,
        ),
        ("Package::read_block (pread + inflate + SHA-256)", &avail),
        ("(b) zip reader: inflate member from start to block k", &zip),
    ] {
        println!(
            "{name:<52} {:>12.0} {:>12} {:>12} {:>13.3}x",
            s.mean,
            s.p50,
            s.p99,
            s.mean / avail.mean
        );
    }
    println!(
        "SUMMARY read_block_ns={:.0} pread_ns={:.0} zip_inflate_ns={:.0} \
         ratio_vs_pread={:.3} ratio_vs_zip_inflate={:.2} read_block_over_floor={:.1}",
        avail.mean,
        floor.mean,
        zip.mean,
        floor.mean / avail.mean,
        zip.mean / avail.mean,
        avail.mean / floor.mean,
    );
    Ok(())
}

/// Per-operation timings of one method.
struct Stats {
    mean: f64,
    p50: u128,
    p99: u128,
}

/// Time `op` on every pair of the sample: one warm-up pass, then [`PASSES`]
/// measured passes, each repeating the sample until it lasts [`MIN_PASS`].
fn measure(
    pairs: &[(usize, usize)],
    mut op: impl FnMut(usize, usize) -> Result<Vec<u8>, BoxError>,
) -> Result<Stats, BoxError> {
    let warm = Instant::now();
    for &(f, k) in pairs {
        black_box(op(f, k)?);
    }
    let one_pass = warm.elapsed();
    let repeats = (MIN_PASS.as_nanos() / one_pass.as_nanos().max(1)).max(1) as usize;
    let mut samples = Vec::with_capacity(PASSES * repeats * pairs.len());
    for _ in 0..PASSES * repeats {
        for &(f, k) in pairs {
            let t = Instant::now();
            black_box(op(f, k)?);
            samples.push(t.elapsed().as_nanos());
        }
    }
    let mean = samples.iter().sum::<u128>() as f64 / samples.len() as f64;
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Ok(Stats {
        mean,
        p50: at(0.50),
        p99: at(0.99),
    })
}

/// Reference (a): read the block's byte range into a fresh buffer, as read_block does.
fn raw_pread(file: &File, start: u64, end: u64) -> Result<Vec<u8>, BoxError> {
    let mut buf = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    Ok(buf)
}

/// Reference (b): what a zip reader without a block map must do to get block `k`:
/// stream the member's compressed data from its start and inflate everything up
/// to the end of block `k`, keeping only the last block (no per-block check is
/// possible; a zip only has a CRC-32 of the whole member).
fn zip_reader_block(
    package: &Package<File>,
    file: &File,
    f: usize,
    k: usize,
) -> Result<Vec<u8>, BoxError> {
    let pf = &package.files()[f];
    let member = PositionedReader {
        file,
        pos: pf.data_start(),
        end: pf.data_start() + pf.compressed_size,
    };
    let mut inflate = DeflateDecoder::new(member);
    let mut block = vec![0u8; BLOCK_SIZE];
    for _ in 0..k {
        inflate.read_exact(&mut block)?;
    }
    block.truncate(pf.map.block_len(k));
    inflate.read_exact(&mut block)?;
    Ok(block)
}

/// A `Read` over a byte range of a file, by `pread`, as a zip reader streams a member.
struct PositionedReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for PositionedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Write the tree to pack: [`FILES`] files of compressible, text-like data.
fn make_tree(root: &Path) -> io::Result<()> {
    let dir = root.join("opt/bench/share");
    fs::create_dir_all(&dir)?;
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let words: Vec<String> = (0..2000)
        .map(|_| {
            const SYLLABLES: [&str; 16] = [
                "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ex", "in", "al", "or", "ung",
                "est", "ph", "qu",
            ];
            (0..1 + rng.below(4))
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect()
        })
        .collect();
    for i in 0..FILES {
        let mut text = String::with_capacity(FILE_SIZE + 64);
        let mut line = 0u64;
        while text.len() < FILE_SIZE {
            line += 1;
            text.push_str(&format!("{line:08} {:>6}:", rng.below(100_000)));
            for _ in 0..4 + rng.below(10) {
                text.push(' ');
                // Zipf-ish: small indices (common words) far more often.
                let common = 1 + rng.below(words.len());
                let w = rng.below(common);
                text.push_str(&words[w]);
            }
            text.push('\n');
        }
        text.truncate(FILE_SIZE);
        fs::write(dir.join(format!("corpus-{i}.txt")), text)?;
    }
    Ok(())
}

/// A tiny deterministic PRNG (xorshift64), so that every run reads the same blocks.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-enough integer in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
