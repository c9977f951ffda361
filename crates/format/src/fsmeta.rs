//! `FilesystemMetadata.xml`: what a zip cannot say about a Linux tree.
//!
//! Unix mode bits of every file and directory, symbolic links with their
//! targets, and empty directories, so that they survive pack → stream → mount.
//! App-V uses the same part for its own file-system facts; Avail's entries live
//! in Avail's namespace.

use crate::error::{FormatError, Result};
use crate::manifest::AVAIL_NS;
use crate::xml::{self, Chunks, Node, Parser, SliceChunks, XmlLimits};
use crate::{Limits, names};

/// The part name.
pub const PART: &str = "FilesystemMetadata.xml";
const NAMESPACE: &str = "http://schemas.microsoft.com/appv/2010/FilesystemMetadata";

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file (its bytes are a payload file of the same name).
    File,
    /// A symbolic link.
    Symlink {
        /// The link's target, as stored on disk.
        target: String,
    },
}

/// One path of the payload tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Package name (`Root\…`).
    pub name: String,
    /// Kind.
    pub kind: EntryKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Last modification, in seconds since the Unix epoch (`Modified`,
    /// optional: packages made before it was recorded have none).
    pub mtime: Option<i64>,
}

/// The parsed part.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilesystemMetadata {
    /// Entries, parents before children.
    pub entries: Vec<Entry>,
}

impl FilesystemMetadata {
    /// Parse the part, within the default [`Limits`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        Self::parse_with(bytes, &Limits::default())
    }

    /// Parse the part within `limits`.
    pub fn parse_with(bytes: &[u8], limits: &Limits) -> Result<Self> {
        Self::read(SliceChunks::new(bytes), XmlLimits::from(limits))
    }

    /// Read the part as it streams in.
    pub(crate) fn read<C: Chunks>(chunks: C, limits: XmlLimits) -> Result<Self> {
        let mut parser = Parser::new(PART, chunks, limits, false);
        match parser.next()? {
            Some(Node::Start(root)) if root.name == "Metadata" => {}
            _ => return Err(FormatError::xml(PART, "the root element is not <Metadata>")),
        }
        let mut entries = Vec::new();
        while let Some(node) = parser.next()? {
            let Node::Start(e) = node else { continue };
            // Children of entries, and App-V's own entries, are not Avail's business.
            parser.skip()?;
            if e.namespace.as_deref() != Some(AVAIL_NS) {
                continue;
            }
            let name = e
                .attr("Name")
                .ok_or_else(|| FormatError::xml(PART, "entry without Name"))?;
            names::check_package_name(name)?;
            let mode = e
                .attr("Mode")
                .and_then(|m| u32::from_str_radix(m, 8).ok())
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    FormatError::xml(PART, format!("{name}: missing or invalid octal Mode"))
                })?;
            let mtime = match e.attr("Modified") {
                None => None,
                Some(m) => Some(m.parse::<i64>().map_err(|_| {
                    FormatError::xml(
                        PART,
                        format!("{name}: Modified is not whole seconds: {m:?}"),
                    )
                })?),
            };
            let kind = match e.name.as_str() {
                "Directory" => EntryKind::Directory,
                "File" => EntryKind::File,
                "Symlink" => {
                    let target = e
                        .attr("Target")
                        .filter(|t| !t.is_empty() && !t.contains('\0'))
                        .ok_or_else(|| {
                            FormatError::xml(
                                PART,
                                format!("{name}: symlink without a valid Target"),
                            )
                        })?;
                    EntryKind::Symlink {
                        target: target.to_owned(),
                    }
                }
                other => return Err(FormatError::xml(PART, format!("unknown entry <{other}>"))),
            };
            entries.push(Entry {
                name: name.to_owned(),
                kind,
                mode,
                mtime,
            });
        }
        Ok(FilesystemMetadata { entries })
    }

    /// The document, as Avail writes it.
    pub fn to_xml(&self) -> String {
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Metadata xmlns=\"{NAMESPACE}\" xmlns:avail=\"{AVAIL_NS}\">\n"
        );
        for e in &self.entries {
            let name = xml::escape(&e.name);
            let modified = e
                .mtime
                .map(|m| format!(" Modified=\"{m}\""))
                .unwrap_or_default();
            match &e.kind {
                EntryKind::Directory => out.push_str(&format!(
                    "  <avail:Directory Name=\"{name}\" Mode=\"{:o}\"{modified}/>\n",
                    e.mode
                )),
                EntryKind::File => out.push_str(&format!(
                    "  <avail:File Name=\"{name}\" Mode=\"{:o}\"{modified}/>\n",
                    e.mode
                )),
                EntryKind::Symlink { target } => out.push_str(&format!(
                    "  <avail:Symlink Name=\"{name}\" Mode=\"{:o}\" Target=\"{}\"{modified}/>\n",
                    e.mode,
                    xml::escape(target)
                )),
            }
        }
        out.push_str("</Metadata>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let meta = FilesystemMetadata {
            entries: vec![
                Entry {
                    name: "Root\\opt".into(),
                    kind: EntryKind::Directory,
                    mode: 0o755,
                    mtime: Some(1_700_000_000),
                },
                Entry {
                    name: "Root\\opt\\x".into(),
                    kind: EntryKind::File,
                    mode: 0o4755,
                    mtime: None,
                },
                Entry {
                    name: "Root\\opt\\l".into(),
                    kind: EntryKind::Symlink {
                        target: "../x & y".into(),
                    },
                    mode: 0o777,
                    mtime: Some(-5),
                },
            ],
        };
        assert_eq!(
            FilesystemMetadata::parse(meta.to_xml().as_bytes()).unwrap(),
            meta
        );
        let bad = meta
            .to_xml()
            .replace("Modified=\"-5\"", "Modified=\"yesterday\"");
        assert!(FilesystemMetadata::parse(bad.as_bytes()).is_err());
    }
}
