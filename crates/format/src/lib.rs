//! The `.appv` package format: read any block at random and verified, verify a
//! whole package, and write packages from a directory tree.
//!
//! An `.appv` file is an OPC (zip) container, the same as AppX/MSIX: the payload,
//! `AppxBlockMap.xml` with the SHA-256 of every 64 KiB block, `AppxManifest.xml`,
//! `StreamMap.xml` and `FilesystemMetadata.xml`. Every deflated file is fully
//! flushed after each 64 KiB of input, so each block inflates on its own and
//! "block k of file X" is one byte range of the container — which is what lets
//! the client stream a package from any HTTP server that honours `Range`.
//!
//! This crate does no async and no networking: the reader takes any
//! [`ReadAt`] source, and the client puts its HTTP range fetcher behind it.
//!
//! ```no_run
//! use avail_format::{Package, NoProgress};
//! let package = Package::open(std::fs::File::open("app.appv")?)?;
//! let first_block = package.read_block(0, 0)?; // one range read, hash-checked
//! let report = package.verify(&NoProgress)?;
//! # Ok::<(), avail_format::FormatError>(())
//! ```

pub mod blockmap;
mod codec;
mod error;
mod extract;
pub mod fsmeta;
pub mod manifest;
pub mod names;
mod reader;
mod source;
pub mod streammap;
mod writer;
mod xml;
pub mod zip;

pub use error::{FormatError, Result};
pub use extract::{ExtractOptions, extract, extract_with};
pub use reader::{Package, PackageFile, Sink, VerifyReport};
pub use source::ReadAt;
pub use writer::{PackOptions, PackSummary, pack};

/// The block size of the format: every file is hashed (and flushed) per 64 KiB.
pub const BLOCK_SIZE: usize = 64 * 1024;

/// Bounds a reader puts on what a package declares, so that a hostile package
/// (a zip bomb, a central directory of a billion entries) is refused up front.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most zip entries.
    pub max_entries: u64,
    /// Largest single file, uncompressed.
    pub max_file_size: u64,
    /// Largest sum of all files, uncompressed.
    pub max_total_size: u64,
    /// Largest central directory, block map, or metadata part read into memory.
    pub max_metadata_size: u64,
    /// Most elements in one XML part (the block map has one per file and one per
    /// 64 KiB block). The block map is further bounded by what the zip can hold:
    /// one `<File>` per entry and one `<Block>` per 64 KiB the entries inflate to.
    pub max_xml_elements: u64,
    /// Most attributes (namespace declarations included) on one XML element.
    pub max_xml_attributes: u64,
    /// Most bytes of one XML part, decoded (UTF-16 parts count as their UTF-8).
    pub max_xml_size: u64,
    /// Most bytes in one tag, text run, comment or other piece of XML markup:
    /// what the XML reader holds in memory at once.
    pub max_xml_token: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1_000_000,
            max_file_size: 64 << 30,
            max_total_size: 1 << 40,
            max_metadata_size: 256 << 20,
            // A block map of 4 million elements lists ~250 GiB of payload, and is
            // ~280 MB: past `max_metadata_size` already.
            max_xml_elements: 4_000_000,
            // Real manifests have at most a few dozen (namespace declarations on
            // `<Package>`); the block map at most 3.
            max_xml_attributes: 256,
            max_xml_size: 256 << 20,
            // Real tokens are start tags of a few hundred bytes (a path at most 64 KiB).
            max_xml_token: 1 << 20,
        }
    }
}

/// Receives progress of long work (pack, verify, extract), in uncompressed bytes.
pub trait Progress: Sync {
    /// The total amount of work, announced once at the start.
    fn start(&self, total: u64);
    /// Some work was done.
    fn advance(&self, done: u64);
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
}
