//! The one error type of the package format.
//!
//! Every way a package can be refused is its own variant, so that callers (the
//! management service deciding on a 4xx, the client deciding whether to try
//! another mirror) can match on it, and so that the message names the part
//! and block a person has to look at.

use std::io;

/// Why a package could not be read, verified or written.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The source could not be read (or the output could not be written).
    #[error("I/O error{}: {source}", context_suffix(.context))]
    Io {
        /// What was being read or written, when known.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No zip end-of-central-directory record: the file is not a zip/OPC container.
    #[error(
        "not a package: no zip end-of-central-directory record (is this an .appv/.appx/.msix file?)"
    )]
    NotZip,
    /// The zip structure is damaged.
    #[error("corrupted zip container: {0}")]
    CorruptZip(String),
    /// A zip feature packages never use (encryption, multi-disk, other compression methods).
    #[error("unsupported zip feature in {name}: {what}")]
    Unsupported {
        /// The part name.
        name: String,
        /// What is unsupported.
        what: String,
    },
    /// A required footprint file is absent.
    #[error("the package has no {0}")]
    MissingPart(&'static str),
    /// An XML part is not well-formed or does not have the expected shape.
    #[error("invalid {part}: {reason}")]
    InvalidXml {
        /// The part name.
        part: String,
        /// What is wrong.
        reason: String,
    },
    /// A name that could escape the extraction directory or confuse a reader.
    #[error("hostile file name {name:?}: {reason}")]
    HostileName {
        /// The offending name, as found.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The zip holds two entries with the same (decoded) name.
    #[error("the zip lists {0:?} twice")]
    DuplicateZipEntry(String),
    /// The zip holds two entries whose names differ only in letter case: OPC part
    /// names are case-insensitive, so they name the same part.
    #[error(
        "the zip lists {first:?} and {second:?}, which differ only in letter case: \
         OPC part names are case-insensitive, so both name the same part"
    )]
    DuplicateZipEntryCase {
        /// The name listed first.
        first: String,
        /// The name listed later.
        second: String,
    },
    /// The block map lists a footprint part (the block map itself, `[Content_Types].xml`,
    /// the signature or the code-integrity catalogue), which it must not.
    #[error("the block map lists the footprint part {0:?}, which it must not")]
    FootprintInBlockMap(String),
    /// An XML part is beyond one of the parsing bounds of [`Limits`](crate::Limits).
    #[error("{part} is refused: it has more than {limit} {what}")]
    XmlLimit {
        /// The part name.
        part: String,
        /// What was counted, and the [`Limits`](crate::Limits) field that bounds it.
        what: &'static str,
        /// The bound.
        limit: u64,
    },
    /// The block map lists a file twice.
    #[error("the block map lists {0:?} twice")]
    DuplicateBlockMapFile(String),
    /// The block map names a file the zip does not hold.
    #[error("the block map lists {0:?}, but the zip holds no such file")]
    FileMissingFromZip(String),
    /// The zip holds a payload file the block map does not list.
    #[error("the zip holds {0:?}, but the block map does not list it")]
    FileMissingFromBlockMap(String),
    /// A declared size is beyond the configured bound, or impossible for its compressed size.
    #[error("{file}: declared size {size} bytes is not acceptable: {reason}")]
    SizeLimit {
        /// The file.
        file: String,
        /// The declared size.
        size: u64,
        /// Which bound it breaks.
        reason: String,
    },
    /// The zip's and the block map's sizes of a file disagree.
    #[error("{file}: size is {zip} bytes in the zip but {block_map} bytes in the block map")]
    SizeMismatch {
        /// The file.
        file: String,
        /// Uncompressed size in the zip central directory.
        zip: u64,
        /// Size in the block map.
        block_map: u64,
    },
    /// The number of blocks does not match the file size.
    #[error("{file}: {actual} blocks listed, but a {size}-byte file has {expected}")]
    BlockCount {
        /// The file.
        file: String,
        /// The file size.
        size: u64,
        /// Blocks a file of that size has.
        expected: u64,
        /// Blocks listed.
        actual: u64,
    },
    /// The compressed block sizes do not add up to the entry's compressed size.
    #[error("{file}: compressed blocks add up to {blocks} bytes, but the zip entry holds {zip}")]
    CompressedSizeMismatch {
        /// The file.
        file: String,
        /// Sum of block sizes.
        blocks: u64,
        /// Compressed size in the zip.
        zip: u64,
    },
    /// The local file header disagrees with the central directory or the block map.
    #[error("{file}: local file header does not match: {reason}")]
    LocalHeader {
        /// The file.
        file: String,
        /// What disagrees.
        reason: String,
    },
    /// A block does not inflate on its own or inflates to the wrong length.
    #[error("{file}: block {block} is corrupt: {reason}")]
    CorruptBlock {
        /// The file.
        file: String,
        /// Block index.
        block: u64,
        /// What went wrong.
        reason: String,
    },
    /// A block's SHA-256 differs from the block map.
    #[error("{file}: block {block} does not match its hash in the block map")]
    BlockHash {
        /// The file.
        file: String,
        /// Block index.
        block: u64,
    },
    /// The CRC-32 of a whole file differs from the zip's.
    #[error("{file}: CRC-32 is {actual:08x}, the zip says {expected:08x}")]
    Crc {
        /// The file.
        file: String,
        /// CRC in the zip.
        expected: u32,
        /// CRC of the data.
        actual: u32,
    },
    /// A file or block index that the package does not have.
    #[error("no {0} in this package")]
    NotFound(String),
    /// Something in the input tree cannot be represented in a package.
    #[error("cannot pack {path}: {reason}")]
    Unpackable {
        /// The path on disk.
        path: String,
        /// Why.
        reason: String,
    },
    /// An invalid argument to the writer or extractor.
    #[error("{0}")]
    Invalid(String),
}

fn context_suffix(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!(" ({context})")
    }
}

impl From<io::Error> for FormatError {
    fn from(source: io::Error) -> Self {
        FormatError::Io {
            context: String::new(),
            source,
        }
    }
}

impl FormatError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        FormatError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn xml(part: &str, reason: impl Into<String>) -> Self {
        FormatError::InvalidXml {
            part: part.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(reason: impl Into<String>) -> Self {
        FormatError::CorruptZip(reason.into())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;
