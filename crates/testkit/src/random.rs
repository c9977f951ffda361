//! Reproducible random content without a crate: [`random_file`] writes the
//! bytes of an xorshift64 stream, the same for the same seed on every machine,
//! so tests and the HA harness can pack payloads that do not compress and
//! check them again by their hash.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};

/// xorshift64, seeded so that nearby seeds give unrelated streams.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Write `len` random bytes (from `seed`) to `path`, creating its directory.
pub fn random_file(path: &Path, len: u64, seed: u64) -> Result<()> {
    const CHUNK: u64 = 1 << 20;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; CHUNK as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK) as usize;
        rng.fill(&mut buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}
