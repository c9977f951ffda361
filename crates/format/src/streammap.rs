//! `StreamMap.xml`: the feature blocks, what a client fetches before anything else.
//!
//! The publishing feature block (FB0) holds what publishing needs (desktop
//! entries, icons); the primary feature block (FB1) holds what a first launch
//! needs. Each lists whole files or runs of 64 KiB blocks.

use crate::error::{FormatError, Result};
use crate::{names, xml};

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
    /// Parse a stream map.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let root = xml::parse(PART, bytes)?;
        if root.name != "StreamMap" {
            return Err(FormatError::xml(
                PART,
                "the root element is not <StreamMap>",
            ));
        }
        let mut map = StreamMap::default();
        for block in root.children_named("FeatureBlock") {
            let files = block
                .children_named("File")
                .map(|f| {
                    let name = f
                        .attr("Name")
                        .ok_or_else(|| FormatError::xml(PART, "<File> without Name"))?;
                    names::check_package_name(name)?;
                    let runs = f
                        .children_named("Blocks")
                        .map(|b| {
                            Ok((
                                xml::attr_u64(PART, b, "Index")?,
                                xml::attr_u64(PART, b, "Count")?,
                            ))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Ok(FeatureFile {
                        name: name.to_owned(),
                        runs,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
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
