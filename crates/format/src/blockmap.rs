//! `AppxBlockMap.xml`: every payload file, its size and the SHA-256 of each 64 KiB block.
//!
//! This is what makes a package trustworthy piece by piece: a client that has the
//! block map can check any block it fetched without reading anything else.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::error::{FormatError, Result};
use crate::xml::{self, Chunks, Node, Parser, SliceChunks, Tag, XmlLimits};
use crate::{BLOCK_SIZE, Limits, names};

/// The part name of the block map.
pub const PART: &str = "AppxBlockMap.xml";
/// The namespace Avail writes (App-V 5.x and AppX use the same).
pub const NAMESPACE: &str = "http://schemas.microsoft.com/appx/2010/blockmap";
/// The only hash method packages use.
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";

/// One 64 KiB block of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// SHA-256 of the uncompressed block.
    pub hash: [u8; 32],
    /// Compressed length, for deflated files; `None` for stored ones.
    pub compressed_size: Option<u32>,
}

/// One payload file in the block map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMapFile {
    /// Package name (`\`-separated).
    pub name: String,
    /// Uncompressed size.
    pub size: u64,
    /// Length of the file's local zip header.
    pub lfh_size: u64,
    /// Blocks in order.
    pub blocks: Vec<Block>,
}

impl BlockMapFile {
    /// Uncompressed length of block `k`.
    pub fn block_len(&self, k: usize) -> usize {
        let start = k as u64 * BLOCK_SIZE as u64;
        (self.size - start).min(BLOCK_SIZE as u64) as usize
    }
}

/// Number of 64 KiB blocks in a file of `size` bytes.
pub fn block_count(size: u64) -> u64 {
    size.div_ceil(BLOCK_SIZE as u64)
}

/// The parsed block map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockMap {
    /// Files in document order.
    pub files: Vec<BlockMapFile>,
}

impl BlockMap {
    /// Parse and check the block map document, with the default [`Limits`] but
    /// for the largest file size.
    pub fn parse(bytes: &[u8], max_file_size: u64) -> Result<Self> {
        let limits = Limits {
            max_file_size,
            ..Limits::default()
        };
        Self::parse_with(bytes, &limits)
    }

    /// Parse and check the block map document within `limits`.
    pub fn parse_with(bytes: &[u8], limits: &Limits) -> Result<Self> {
        Self::read(SliceChunks::new(bytes), limits, XmlLimits::from(limits))
    }

    /// Read the block map from `chunks` as it streams in: every bound is checked
    /// at the element that breaks it, before the rest is read.
    pub(crate) fn read<C: Chunks>(chunks: C, limits: &Limits, xml: XmlLimits) -> Result<Self> {
        let mut parser = Parser::new(PART, chunks, xml, false);
        let bad = |reason: String| FormatError::xml(PART, reason);
        let root = match parser.next()? {
            Some(Node::Start(tag)) => tag,
            _ => return Err(bad("no root element".into())),
        };
        if root.name != "BlockMap"
            || !root.namespace.as_deref().is_some_and(|ns| {
                ns.starts_with("http://schemas.microsoft.com/appx/") && ns.ends_with("/blockmap")
            })
        {
            return Err(bad("the root element is not an AppX <BlockMap>".into()));
        }
        match root.attr("HashMethod") {
            Some(SHA256) => {}
            other => return Err(bad(format!("unsupported HashMethod {other:?}"))),
        }
        let mut files = Vec::new();
        let mut total = 0u64;
        while let Some(node) = parser.next()? {
            let Node::Start(f) = node else {
                continue; // the root's end
            };
            if f.name != "File" {
                parser.skip()?;
                continue;
            }
            let file = read_file(&mut parser, &f, limits)?;
            total = total.saturating_add(file.size);
            if total > limits.max_total_size {
                return Err(FormatError::SizeLimit {
                    file: file.name,
                    size: total,
                    reason: format!(
                        "the package's files add up to more than {} bytes",
                        limits.max_total_size
                    ),
                });
            }
            files.push(file);
        }
        Ok(BlockMap { files })
    }

    /// The document, as Avail writes it.
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(128 + self.files.len() * 160);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n");
        out.push_str(&format!(
            "<BlockMap xmlns=\"{NAMESPACE}\" HashMethod=\"{SHA256}\">"
        ));
        for f in &self.files {
            out.push_str(&format!(
                "<File Name=\"{}\" Size=\"{}\" LfhSize=\"{}\"",
                xml::escape(&f.name),
                f.size,
                f.lfh_size
            ));
            if f.blocks.is_empty() {
                out.push_str("/>");
                continue;
            }
            out.push('>');
            for b in &f.blocks {
                out.push_str("<Block Hash=\"");
                out.push_str(&BASE64.encode(b.hash));
                match b.compressed_size {
                    Some(s) => out.push_str(&format!("\" Size=\"{s}\"/>")),
                    None => out.push_str("\"/>"),
                }
            }
            out.push_str("</File>");
        }
        out.push_str("</BlockMap>\n");
        out
    }
}

/// Read one `<File>` whose start tag is `f`, up to and including its end tag.
fn read_file<C: Chunks>(parser: &mut Parser<C>, f: &Tag, limits: &Limits) -> Result<BlockMapFile> {
    let bad = |reason: String| FormatError::xml(PART, reason);
    let name = f
        .attr("Name")
        .ok_or_else(|| bad("<File> without Name".into()))?
        .to_owned();
    names::check_package_name(&name)?;
    let size = xml::attr_u64(PART, f, "Size")?;
    if size > limits.max_file_size {
        return Err(FormatError::SizeLimit {
            file: name,
            size,
            reason: format!("larger than the limit of {} bytes", limits.max_file_size),
        });
    }
    let lfh_size = xml::attr_u64(PART, f, "LfhSize")?;
    let expected = block_count(size);
    // Blocks past the expected count are counted, not kept.
    let mut listed = 0u64;
    let mut blocks = Vec::with_capacity(expected.min(1024) as usize);
    let depth = parser.depth();
    while parser.depth() >= depth {
        let Some(node) = parser.next()? else {
            return Err(bad("unexpected end of document".into()));
        };
        let Node::Start(b) = node else {
            continue;
        };
        if b.name != "Block" || parser.depth() != depth + 1 {
            parser.skip()?;
            continue;
        }
        let k = listed;
        listed += 1;
        parser.skip()?;
        if listed > expected {
            continue;
        }
        let hash = b
            .attr("Hash")
            .and_then(|h| BASE64.decode(h).ok())
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(|| bad(format!("{name}: block {k} has no valid SHA-256 Hash")))?;
        let compressed_size = match b.attr("Size") {
            None => None,
            Some(_) => {
                let s = xml::attr_u64(PART, &b, "Size")?;
                // A 64 KiB block can grow a little when deflated, never by more than this.
                if s == 0 || s > (BLOCK_SIZE + BLOCK_SIZE / 8) as u64 {
                    return Err(FormatError::CorruptBlock {
                        file: name.clone(),
                        block: k,
                        reason: format!("impossible compressed size {s}"),
                    });
                }
                Some(s as u32)
            }
        };
        blocks.push(Block {
            hash,
            compressed_size,
        });
    }
    if listed != expected {
        return Err(FormatError::BlockCount {
            file: name,
            size,
            expected,
            actual: listed,
        });
    }
    Ok(BlockMapFile {
        name,
        size,
        lfh_size,
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_counts_blocks() {
        let map = BlockMap {
            files: vec![
                BlockMapFile {
                    name: "Root\\a & b".into(),
                    size: BLOCK_SIZE as u64 + 1,
                    lfh_size: 40,
                    blocks: vec![
                        Block {
                            hash: [1; 32],
                            compressed_size: Some(100),
                        },
                        Block {
                            hash: [2; 32],
                            compressed_size: Some(1),
                        },
                    ],
                },
                BlockMapFile {
                    name: "empty".into(),
                    size: 0,
                    lfh_size: 35,
                    blocks: vec![],
                },
            ],
        };
        let parsed = BlockMap::parse(map.to_xml().as_bytes(), u64::MAX).unwrap();
        assert_eq!(parsed, map);
        assert_eq!(parsed.files[0].block_len(1), 1);
    }

    #[test]
    fn refuses_wrong_block_counts_and_hashes() {
        let doc = |inner: &str| {
            format!("<BlockMap xmlns=\"{NAMESPACE}\" HashMethod=\"{SHA256}\">{inner}</BlockMap>")
        };
        let one = BASE64.encode([0u8; 32]);
        let too_few = doc(&format!(
            "<File Name=\"a\" Size=\"70000\" LfhSize=\"31\"><Block Hash=\"{one}\"/></File>"
        ));
        assert!(matches!(
            BlockMap::parse(too_few.as_bytes(), u64::MAX),
            Err(FormatError::BlockCount { .. })
        ));
        let short_hash =
            doc("<File Name=\"a\" Size=\"1\" LfhSize=\"31\"><Block Hash=\"AAAA\"/></File>");
        assert!(matches!(
            BlockMap::parse(short_hash.as_bytes(), u64::MAX),
            Err(FormatError::InvalidXml { .. })
        ));
        let bomb = doc(&format!(
            "<File Name=\"a\" Size=\"1\" LfhSize=\"31\"><Block Hash=\"{one}\"/></File>"
        ));
        assert!(matches!(
            BlockMap::parse(bomb.as_bytes(), 0),
            Err(FormatError::SizeLimit { .. })
        ));
        let hostile = doc("<File Name=\"..\\x\" Size=\"0\" LfhSize=\"31\"/>");
        assert!(matches!(
            BlockMap::parse(hostile.as_bytes(), u64::MAX),
            Err(FormatError::HostileName { .. })
        ));
    }
}
