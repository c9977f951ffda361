//! Block codec: one 64 KiB block in, one independently inflatable deflate run out, and back.
//!
//! A package's deflate stream is fully flushed after every 64 KiB of input, so no
//! block refers to bytes of another. Compressing each block with a freshly reset
//! compressor and ending it with a full flush gives exactly that stream, and lets
//! blocks be compressed (and inflated) in any order, on any thread. The stream
//! ends with an empty final block after the last one, as MSIX packaging does.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::BLOCK_SIZE;

/// The bytes that close a deflate stream after its last flushed block: an empty
/// final fixed-Huffman block. Not counted in any block's `Size`.
pub const STREAM_END: [u8; 2] = [0x03, 0x00];

/// A reusable raw-deflate compressor for blocks.
pub struct Deflater {
    compress: Compress,
}

impl Deflater {
    /// A compressor at zlib level `level` (0–9).
    pub fn new(level: u32) -> Self {
        Deflater {
            compress: Compress::new(Compression::new(level), false),
        }
    }

    /// Compress one block into `out` (cleared first), ending with a full flush.
    pub fn compress_block(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.compress.reset();
        out.clear();
        out.reserve(input.len() + input.len() / 16 + 64);
        loop {
            let consumed = self.compress.total_in() as usize;
            self.compress
                .compress_vec(&input[consumed..], out, FlushCompress::Full)
                .expect("deflate of an in-memory buffer cannot fail");
            if self.compress.total_in() as usize == input.len() && out.len() < out.capacity() {
                return;
            }
            out.reserve(out.capacity().max(1024));
        }
    }
}

/// Why a block did not inflate.
pub type InflateError = String;

/// A reusable raw-deflate decompressor for blocks.
pub struct Inflater {
    decompress: Decompress,
    buf: Vec<u8>,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            decompress: Decompress::new(false),
            buf: vec![0; BLOCK_SIZE + 1],
        }
    }
}

impl Inflater {
    /// Inflate one block on its own; it must use all of `input` and give exactly
    /// `expected` bytes. Returns the bytes and whether the deflate stream ended.
    pub fn inflate_block(
        &mut self,
        input: &[u8],
        expected: usize,
    ) -> Result<(&[u8], bool), InflateError> {
        self.decompress.reset(false);
        let out = &mut self.buf[..expected + 1];
        let status = self
            .decompress
            .decompress(input, out, FlushDecompress::Sync)
            .map_err(|e| format!("does not inflate on its own ({e})"))?;
        let (used, produced) = (
            self.decompress.total_in() as usize,
            self.decompress.total_out() as usize,
        );
        if produced > expected {
            return Err(format!("inflates to more than {expected} bytes"));
        }
        if produced < expected {
            return Err(format!("inflates to {produced} bytes, not {expected}"));
        }
        if used != input.len() {
            return Err(format!(
                "{} bytes left over after inflating",
                input.len() - used
            ));
        }
        Ok((&self.buf[..expected], status == Status::StreamEnd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_inflate_on_their_own_and_concatenate_into_one_stream() {
        let data: Vec<u8> = (0..3 * BLOCK_SIZE + 7)
            .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
            .collect();
        let mut deflater = Deflater::new(6);
        let mut inflater = Inflater::default();
        let mut stream = Vec::new();
        let mut out = Vec::new();
        for chunk in data.chunks(BLOCK_SIZE) {
            deflater.compress_block(chunk, &mut out);
            let (plain, ended) = inflater.inflate_block(&out, chunk.len()).unwrap();
            assert_eq!(plain, chunk);
            assert!(!ended);
            assert!(inflater.inflate_block(&out, chunk.len() - 1).is_err());
            stream.extend_from_slice(&out);
        }
        stream.extend_from_slice(&STREAM_END);
        let mut whole = Vec::new();
        flate2::read::DeflateDecoder::new(&stream[..])
            .read_to_end(&mut whole)
            .unwrap();
        assert_eq!(whole, data);
    }

    use std::io::Read as _;
}
