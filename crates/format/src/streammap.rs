//! `StreamMap.xml`: the feature blocks, what a client fetches before anything else.
//!
//! The publishing feature block (FB0) holds what publishing needs (desktop
//! entries, icons); the primary feature block (FB1) holds what a first launch
//! needs. Each lists whole files or runs of 64 KiB blocks.

use crate::error::{FormatError, Result};
use crate::xml::{self, Chunks, Node, Parser, SliceChunks, Tag, XmlLimits};
use crate::{Limits, names};

/// Hand each child element of the element just started to `each`, which must
/// read it to its end (or [`Parser::skip`] it); returns after the parent's end.
fn for_each_child<C: Chunks>(
    parser: &mut Parser<C>,
    mut each: impl FnMut(&mut Parser<C>, Tag) -> Result<()>,
) -> Result<()> {
    let depth = parser.depth();
    while parser.depth() >= depth {
        match parser.next()? {
            Some(Node::Start(tag)) => each(parser, tag)?,
            Some(_) => {}
            None => {
                return Err(FormatError::xml(
                    parser.part(),
                    "unexpected end of document",
                ));
            }
        }
    }
    Ok(())
}

/// The part name of the stream map.
pub const PART: &str = "StreamMap.xml";
const NAMESPACE: &str = "http://schemas.microsoft.com/appv/2010/streammap";

/// One file of a feature block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureFile {
    /// Package name.
    pub name: String,
    /// Runs of blocks (`Index`, `Count`); empty means the whole file.
    pub runs: Vec<(u64, u64)>,
}

/// The two feature blocks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamMap {
    /// `PublishingFeatureBlock` (FB0).
    pub publishing: Vec<FeatureFile>,
    /// `PrimaryFeatureBlock` (FB1).
    pub primary: Vec<FeatureFile>,
}

impl StreamMap {
    /// Parse a stream map, within the default [`Limits`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        Self::parse_with(bytes, &Limits::default())
    }

    /// Parse a stream map within `limits`.
    pub fn parse_with(bytes: &[u8], limits: &Limits) -> Result<Self> {
        Self::read(SliceChunks::new(bytes), XmlLimits::from(limits))
    }

    /// Read a stream map as it streams in.
    pub(crate) fn read<C: Chunks>(chunks: C, limits: XmlLimits) -> Result<Self> {
        let mut parser = Parser::new(PART, chunks, limits, false);
        match parser.next()? {
            Some(Node::Start(root)) if root.name == "StreamMap" => {}
            _ => {
                return Err(FormatError::xml(
                    PART,
                    "the root element is not <StreamMap>",
                ));
            }
        }
        let mut map = StreamMap::default();
        while let Some(node) = parser.next()? {
            let Node::Start(block) = node else { continue };
            if block.name != "FeatureBlock" {
                parser.skip()?;
                continue;
            }
            let mut files = Vec::new();
            for_each_child(&mut parser, |parser, f| {
                if f.name != "File" {
                    return parser.skip();
                }
                let name = f
                    .attr("Name")
                    .ok_or_else(|| FormatError::xml(PART, "<File> without Name"))?;
                names::check_package_name(name)?;
                let mut runs = Vec::new();
                for_each_child(parser, |parser, b| {
                    if b.name == "Blocks" {
                        runs.push((
                            xml::attr_u64(PART, &b, "Index")?,
                            xml::attr_u64(PART, &b, "Count")?,
                        ));
                    }
                    parser.skip()
                })?;
                files.push(FeatureFile {
                    name: name.to_owned(),
                    runs,
                });
                Ok(())
            })?;
            match block.attr("Id") {
                Some("PublishingFeatureBlock") => map.publishing = files,
                Some("PrimaryFeatureBlock") => map.primary = files,
                _ => {}
            }
        }
        Ok(map)
    }

    /// The document, as Avail writes it.
    pub fn to_xml(&self) -> String {
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<StreamMap xmlns=\"{NAMESPACE}\">\n"
        );
        for (id, files) in [
            ("PublishingFeatureBlock", &self.publishing),
            ("PrimaryFeatureBlock", &self.primary),
        ] {
            out.push_str(&format!("  <FeatureBlock Id=\"{id}\">\n"));
            for f in files {
                let name = xml::escape(&f.name);
                if f.runs.is_empty() {
                    out.push_str(&format!("    <File Name=\"{name}\" />\n"));
                } else {
                    out.push_str(&format!("    <File Name=\"{name}\">\n"));
                    for (index, count) in &f.runs {
                        out.push_str(&format!(
                            "      <Blocks Index=\"{index}\" Count=\"{count}\" />\n"
                        ));
                    }
                    out.push_str("    </File>\n");
                }
            }
            out.push_str("  </FeatureBlock>\n");
        }
        out.push_str("</StreamMap>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let map = StreamMap {
            publishing: vec![FeatureFile {
                name: "Root\\usr\\share\\applications\\a.desktop".into(),
                runs: vec![],
            }],
            primary: vec![FeatureFile {
                name: "Root\\opt\\a".into(),
                runs: vec![(0, 1), (79, 2)],
            }],
        };
        assert_eq!(StreamMap::parse(map.to_xml().as_bytes()).unwrap(), map);
    }
}
