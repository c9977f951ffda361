//! `AppxManifest.xml`: who the package is (PackageId, VersionId, name, version) and
//! which applications it offers.
//!
//! Avail reads AppX/MSIX manifests (`Application @Executable`) and App-V manifests
//! (`appv:Application/appv:Target`), and writes the App-V shape plus what a Linux
//! launch needs in its own namespace, which App-V readers ignore
//! (`IgnorableNamespaces`).

use uuid::Uuid;

use crate::Limits;
use crate::error::{FormatError, Result};
use crate::xml::{self, Chunks, Parser, SliceChunks, XmlLimits};

/// The part name of the manifest.
pub const PART: &str = "AppxManifest.xml";
const APPX_NS: &str = "http://schemas.microsoft.com/appx/2010/manifest";
const APPV_NS: &str = "http://schemas.microsoft.com/appv/2010/manifest";
/// Avail's own manifest namespace (Linux launch details).
pub const AVAIL_NS: &str = "http://schemas.avail.dev/2026/manifest";

/// An application the package offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// Application id, unique within the package.
    pub id: String,
    /// What it runs: an absolute Linux path for Avail packages, the AppX
    /// `Executable` or App-V `Target` otherwise.
    pub target: Option<String>,
    /// Command-line arguments, as one string.
    pub arguments: Option<String>,
}

/// The manifest's identity and applications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `Identity @Name`.
    pub name: String,
    /// `Identity @Publisher`.
    pub publisher: String,
    /// `Identity @Version`, four dotted numbers.
    pub version: String,
    /// `appv:PackageId`, absent in plain AppX packages.
    pub package_id: Option<Uuid>,
    /// `appv:VersionId`, absent in plain AppX packages.
    pub version_id: Option<Uuid>,
    /// `Properties/DisplayName`.
    pub display_name: Option<String>,
    /// Applications in document order.
    pub applications: Vec<Application>,
}

impl Manifest {
    /// Parse a manifest, within the default [`Limits`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        Self::parse_with(bytes, &Limits::default())
    }

    /// Parse a manifest within `limits`.
    pub fn parse_with(bytes: &[u8], limits: &Limits) -> Result<Self> {
        Self::read(SliceChunks::new(bytes), XmlLimits::from(limits))
    }

    /// Read a manifest as it streams in. Only the elements read here are kept
    /// (a real manifest has thousands more: extensions, capabilities, …).
    pub(crate) fn read<C: Chunks>(chunks: C, limits: XmlLimits) -> Result<Self> {
        let mut parser = Parser::new(PART, chunks, limits, true);
        let root = xml::read_tree(&mut parser, |depth, name| match depth {
            0 => true,
            1 => matches!(name, "Identity" | "Properties" | "Applications"),
            2 => matches!(name, "DisplayName" | "Application"),
            3 => matches!(name, "Target" | "Arguments"),
            _ => false,
        })?;
        let bad = |reason: &str| FormatError::xml(PART, reason);
        if root.name != "Package" {
            return Err(bad("the root element is not <Package>"));
        }
        let identity = root.child("Identity").ok_or_else(|| bad("no <Identity>"))?;
        let attr = |name: &str| identity.attr(name).map(str::to_owned);
        let guid = |name: &str| -> Result<Option<Uuid>> {
            identity
                .attr(name)
                .map(|v| {
                    Uuid::parse_str(v)
                        .map_err(|_| bad(&format!("Identity {name}={v:?} is not a GUID")))
                })
                .transpose()
        };
        let applications = root
            .child("Applications")
            .map(|apps| {
                apps.children_named("Application")
                    .map(|a| {
                        let id = a
                            .attr("Id")
                            .ok_or_else(|| bad("<Application> without Id"))?;
                        let target = a
                            .child("Target")
                            .map(|t| t.text.trim().to_owned())
                            .or_else(|| a.attr("Executable").map(str::to_owned));
                        let arguments = a.child("Arguments").map(|t| t.text.clone());
                        Ok(Application {
                            id: id.to_owned(),
                            target,
                            arguments,
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(Manifest {
            name: attr("Name").ok_or_else(|| bad("Identity without Name"))?,
            publisher: attr("Publisher").unwrap_or_default(),
            version: attr("Version").unwrap_or_default(),
            package_id: guid("PackageId")?,
            version_id: guid("VersionId")?,
            display_name: root
                .child("Properties")
                .and_then(|p| p.child("DisplayName"))
                .map(|d| d.text.trim().to_owned()),
            applications,
        })
    }

    /// The document, as Avail writes it.
    pub fn to_xml(&self) -> String {
        let e = |s: &str| xml::escape(s).into_owned();
        let mut out = String::new();
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&format!(
            "<Package xmlns=\"{APPX_NS}\" xmlns:appv=\"{APPV_NS}\" xmlns:avail=\"{AVAIL_NS}\" IgnorableNamespaces=\"appv avail\">\n"
        ));
        out.push_str(&format!(
            "  <Identity Name=\"{}\" Publisher=\"{}\" Version=\"{}\"",
            e(&self.name),
            e(&self.publisher),
            e(&self.version)
        ));
        if let Some(id) = self.package_id {
            out.push_str(&format!(" appv:PackageId=\"{id}\""));
        }
        if let Some(id) = self.version_id {
            out.push_str(&format!(" appv:VersionId=\"{id}\""));
        }
        out.push_str(" />\n  <Properties>\n");
        let display = self.display_name.as_deref().unwrap_or(&self.name);
        out.push_str(&format!("    <DisplayName>{}</DisplayName>\n", e(display)));
        out.push_str(&format!(
            "    <PublisherDisplayName>{}</PublisherDisplayName>\n",
            e(&self.publisher)
        ));
        out.push_str("  </Properties>\n  <appv:Applications>\n");
        for app in &self.applications {
            out.push_str(&format!(
                "    <appv:Application Id=\"{}\" Origin=\"Application\" TargetInPackage=\"true\">\n",
                e(&app.id)
            ));
            if let Some(target) = &app.target {
                out.push_str(&format!("      <appv:Target>{}</appv:Target>\n", e(target)));
            }
            if let Some(args) = &app.arguments {
                out.push_str(&format!(
                    "      <avail:Arguments>{}</avail:Arguments>\n",
                    e(args)
                ));
            }
            out.push_str("    </appv:Application>\n");
        }
        out.push_str("  </appv:Applications>\n</Package>\n");
        out
    }
}

/// The identity name Avail writes for a display name: the name reduced to
/// `[A-Za-z0-9.-]` (anything else becomes `-`), at most 50 characters.
/// Refused when nothing but dashes is left.
pub fn identity_name(display_name: &str) -> Result<String> {
    let identity: String = display_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    if identity.trim_matches('-').is_empty() {
        return Err(FormatError::Invalid(format!(
            "package name {display_name:?} has no letters or digits"
        )));
    }
    Ok(identity)
}

/// Normalise a version of one to four dotted numbers (each ≤ 65535) to the four
/// parts AppX identities use: `2.1` → `2.1.0.0`.
pub fn normalize_version(v: &str) -> Result<String> {
    let parts: Vec<&str> = v.split('.').collect();
    let valid = (1..=4).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    if !valid {
        return Err(FormatError::Invalid(format!(
            "version {v:?} is not one to four dotted numbers, each at most 65535 (for example 1.2.0.0)"
        )));
    }
    let mut parts: Vec<String> = parts
        .iter()
        .map(|p| p.parse::<u16>().expect("checked").to_string())
        .collect();
    parts.resize(4, "0".into());
    Ok(parts.join("."))
}

/// The version of the next version of a package: the last of its four numbers
/// plus one (`1.2.0.0` → `1.2.0.1`, `2.1` → `2.1.0.1`), as an App-V sequencer
/// bumps an updated package. `None` when `v` is not one to four dotted numbers,
/// or its last number is already 65535: the caller must be given a version.
pub fn next_version(v: &str) -> Option<String> {
    let normal = normalize_version(v).ok()?;
    let (head, last) = normal.rsplit_once('.')?;
    let last = last.parse::<u16>().ok()?.checked_add(1)?;
    Some(format!("{head}.{last}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_avail_manifests() {
        let m = Manifest {
            name: "Foo".into(),
            publisher: "CN=Avail".into(),
            version: "1.2.0.0".into(),
            package_id: Some(Uuid::from_u128(1)),
            version_id: Some(Uuid::from_u128(2)),
            display_name: Some("Foo <Editor>".into()),
            applications: vec![Application {
                id: "foo".into(),
                target: Some("/opt/foo/bin/foo".into()),
                arguments: Some("--x \"y\"".into()),
            }],
        };
        assert_eq!(Manifest::parse(m.to_xml().as_bytes()).unwrap(), m);
    }

    #[test]
    fn reads_appv_and_appx_shapes() {
        let appv = br#"<Package xmlns="http://schemas.microsoft.com/appx/2010/manifest" xmlns:appv="http://schemas.microsoft.com/appv/2010/manifest">
          <Identity Name="Reserved" Publisher="CN=Reserved" Version="0.0.0.1" appv:PackageId="1a2ad958-75d0-440b-9e6b-1d5e119713ee" appv:VersionId="466ada43-2c70-4757-ae56-9dc9919cf7b2"/>
          <Properties><DisplayName>Office2010</DisplayName></Properties>
          <Applications xmlns="http://schemas.microsoft.com/appv/2010/manifest">
            <Application Id="[{ProgramFilesX86}]\Word.exe" Origin="Application"><Target>[{ProgramFilesX86}]\Word.exe</Target></Application>
          </Applications></Package>"#;
        let m = Manifest::parse(appv).unwrap();
        assert_eq!(m.display_name.as_deref(), Some("Office2010"));
        assert_eq!(
            m.version_id.unwrap().to_string(),
            "466ada43-2c70-4757-ae56-9dc9919cf7b2"
        );
        assert_eq!(
            m.applications[0].target.as_deref(),
            Some("[{ProgramFilesX86}]\\Word.exe")
        );
        assert!(Manifest::parse(b"<Package><Identity Name=\"x\" appv:PackageId=\"nope\" xmlns:appv=\"u\"/></Package>").is_err());
    }

    #[test]
    fn versions_normalise() {
        assert_eq!(normalize_version("2.1").unwrap(), "2.1.0.0");
        assert!(normalize_version("1.2.3.4.5").is_err());
        assert!(normalize_version("1.x").is_err());
        assert!(normalize_version("70000").is_err());
    }

    #[test]
    fn next_versions_bump_the_last_number() {
        assert_eq!(next_version("1.2.0.0").as_deref(), Some("1.2.0.1"));
        assert_eq!(next_version("2.1").as_deref(), Some("2.1.0.1"));
        assert_eq!(next_version("1.0.0.9").as_deref(), Some("1.0.0.10"));
        assert_eq!(next_version("1.0.0.65535"), None);
        assert_eq!(next_version("1.0-beta"), None);
        assert_eq!(next_version(""), None);
    }
}
