//! `AppxManifest.xml`: who the package is (PackageId, VersionId, name, version) and
//! which applications it offers.
//!
//! Avail reads AppX/MSIX manifests (`Application @Executable`) and App-V manifests
//! (`appv:Application/appv:Target`), and writes the App-V shape plus what a Linux
//! launch needs in its own namespace, which App-V readers ignore
//! (`IgnorableNamespaces`).
//!
//! The operating systems an App-V package targets are read from (and written
//! to) `Prerequisites/appv:TargetOSes/appv:TargetOS`, each as its trimmed text
//! (`WindowsClient_10.0_x64`; what the values mean is the publishing server's
//! business, `avail_model::publishing::TargetOs`). No `appv:TargetOS` (or no
//! `appv:TargetOSes`) means every operating system; empty ones name nothing
//! and are left out. At most [`MAX_TARGET_OSES`] of at most
//! [`MAX_TARGET_OS_LEN`] bytes each are read, and only that many are held
//! while reading: a manifest with more or longer ones is refused.

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
/// Most `appv:TargetOS` elements a manifest may have (real ones list each
/// Windows release and bitness the sequencer offers: a few dozen at most).
pub const MAX_TARGET_OSES: usize = 64;
/// Most bytes of one `appv:TargetOS` value, trimmed (`WindowsServer_6.3_x64`
/// is 21).
pub const MAX_TARGET_OS_LEN: usize = 128;

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
    /// `Prerequisites/appv:TargetOSes/appv:TargetOS` values in document order,
    /// trimmed, empty ones left out; empty for every operating system.
    pub target_oses: Vec<String>,
    /// `avail:EnvironmentVariables/avail:Variable` `Name` and `Value`, in
    /// document order: set for the package's applications when they run
    /// (`$NAME` and `${NAME}` in a value stand for the launching environment's
    /// variable), as App-V's virtual environment variables.
    pub environment: Vec<(String, String)>,
}

/// Most `avail:Variable` elements in a manifest.
pub const MAX_VARIABLES: usize = 256;
/// Longest variable name, in bytes.
pub const MAX_VARIABLE_NAME: usize = 256;
/// Longest variable value, in bytes.
pub const MAX_VARIABLE_VALUE: usize = 32 * 1024;

/// Whether `name` can name an environment variable: not empty, at most
/// [`MAX_VARIABLE_NAME`] bytes, no `=`, NUL or control characters.
pub fn valid_variable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_VARIABLE_NAME
        && !name.chars().any(|c| c == '=' || c.is_control())
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
        // Held while reading: one past the bound, to tell that it was passed.
        let mut target_oses_seen = 0usize;
        let mut variables_seen = 0usize;
        let root = xml::read_tree(&mut parser, |depth, parent, name| match depth {
            0 => true,
            1 => matches!(
                name,
                "Identity"
                    | "Properties"
                    | "Applications"
                    | "Prerequisites"
                    | "EnvironmentVariables"
            ),
            2 if parent == "Prerequisites" => name == "TargetOSes",
            2 if parent == "EnvironmentVariables" => {
                variables_seen += usize::from(name == "Variable");
                name == "Variable" && variables_seen <= MAX_VARIABLES + 1
            }
            2 => matches!(name, "DisplayName" | "Application"),
            3 if parent == "TargetOSes" => {
                target_oses_seen += usize::from(name == "TargetOS");
                name == "TargetOS" && target_oses_seen <= MAX_TARGET_OSES + 1
            }
            3 => matches!(name, "Target" | "Arguments"),
            _ => false,
        })?;
        let bad = |reason: &str| FormatError::xml(PART, reason);
        let target_oses = Self::target_oses(&root)?;
        let environment = Self::environment(&root)?;
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
            target_oses,
            environment,
        })
    }

    /// The `avail:Variable`s of a manifest read into `root`.
    fn environment(root: &xml::Element) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let variables = root
            .children_named("EnvironmentVariables")
            .flat_map(|e| e.children_named("Variable"));
        for (i, v) in variables.enumerate() {
            if i == MAX_VARIABLES {
                return Err(FormatError::XmlLimit {
                    part: PART.to_owned(),
                    what: "avail:Variable elements",
                    limit: MAX_VARIABLES as u64,
                });
            }
            let name = v.attr("Name").unwrap_or_default();
            if !valid_variable_name(name) {
                return Err(FormatError::xml(
                    PART,
                    format!("avail:Variable Name {name:?} is not a variable name"),
                ));
            }
            let value = v.attr("Value").unwrap_or_default();
            if value.len() > MAX_VARIABLE_VALUE || value.contains('\0') {
                return Err(FormatError::xml(
                    PART,
                    format!(
                        "avail:Variable {name}: the value is longer than {MAX_VARIABLE_VALUE} bytes or holds NUL"
                    ),
                ));
            }
            out.push((name.to_owned(), value.to_owned()));
        }
        Ok(out)
    }

    /// The `appv:TargetOS` values of a manifest read into `root`.
    fn target_oses(root: &xml::Element) -> Result<Vec<String>> {
        let limit = |what, limit: usize| FormatError::XmlLimit {
            part: PART.to_owned(),
            what,
            limit: limit as u64,
        };
        let mut out = Vec::new();
        let elements = root
            .children_named("Prerequisites")
            .flat_map(|p| p.children_named("TargetOSes"))
            .flat_map(|t| t.children_named("TargetOS"));
        for (i, element) in elements.enumerate() {
            if i == MAX_TARGET_OSES {
                return Err(limit("appv:TargetOS elements", MAX_TARGET_OSES));
            }
            let value = element.text.trim();
            if value.len() > MAX_TARGET_OS_LEN {
                return Err(limit("bytes in one appv:TargetOS", MAX_TARGET_OS_LEN));
            }
            if !value.is_empty() {
                out.push(value.to_owned());
            }
        }
        Ok(out)
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
        out.push_str("  </Properties>\n");
        // Only when there are some: a package for every operating system is
        // written as before.
        if !self.target_oses.is_empty() {
            out.push_str("  <Prerequisites>\n    <appv:TargetOSes>\n");
            for os in &self.target_oses {
                out.push_str(&format!("      <appv:TargetOS>{}</appv:TargetOS>\n", e(os)));
            }
            out.push_str("    </appv:TargetOSes>\n  </Prerequisites>\n");
        }
        out.push_str("  <appv:Applications>\n");
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
        out.push_str("  </appv:Applications>\n");
        if !self.environment.is_empty() {
            out.push_str("  <avail:EnvironmentVariables>\n");
            for (name, value) in &self.environment {
                out.push_str(&format!(
                    "    <avail:Variable Name=\"{}\" Value=\"{}\"/>\n",
                    e(name),
                    e(value)
                ));
            }
            out.push_str("  </avail:EnvironmentVariables>\n");
        }
        out.push_str("</Package>\n");
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
            target_oses: vec![],
            environment: vec![
                ("FOO_HOME".into(), "/opt/foo".into()),
                ("PATH".into(), "/opt/foo/bin:$PATH & \"more\"".into()),
            ],
        };
        assert_eq!(Manifest::parse(m.to_xml().as_bytes()).unwrap(), m);
        let bad = m.to_xml().replace("FOO_HOME", "A=B");
        assert!(Manifest::parse(bad.as_bytes()).is_err());
        assert!(!m.to_xml().contains("Prerequisites"));
        let targeted = Manifest {
            target_oses: vec!["WindowsClient_10.0_x64".into(), "WindowsServer_6.3".into()],
            ..m
        };
        let xml = targeted.to_xml();
        assert!(xml.contains(
            "<Prerequisites>\n    <appv:TargetOSes>\n      <appv:TargetOS>WindowsClient_10.0_x64</appv:TargetOS>\n"
        ));
        assert_eq!(Manifest::parse(xml.as_bytes()).unwrap(), targeted);
    }

    /// An App-V manifest with `body` as its `<Prerequisites>`'s content.
    fn with_prerequisites(body: &str) -> Vec<u8> {
        format!(
            r#"<Package xmlns="http://schemas.microsoft.com/appx/2010/manifest" xmlns:appv="http://schemas.microsoft.com/appv/2010/manifest">
              <Identity Name="Reserved" Publisher="CN=Reserved" Version="0.0.0.1"/>
              <Prerequisites><OSMinVersion>6.1</OSMinVersion><OSMaxVersionTested>6.1</OSMaxVersionTested>{body}</Prerequisites>
              <Applications><Application Id="a"><Target>x</Target></Application></Applications>
            </Package>"#
        )
        .into_bytes()
    }

    #[test]
    fn reads_target_oses() {
        let oses = |body: &str| Manifest::parse(&with_prerequisites(body)).map(|m| m.target_oses);
        // No children (the sequencer's "any operating system"), or none at all.
        for none in [
            r#"<appv:TargetOSes SequencingStationProcessorArchitecture="x64" />"#,
            "<appv:TargetOSes></appv:TargetOSes>",
            "",
        ] {
            assert_eq!(oses(none).unwrap(), Vec::<String>::new(), "{none}");
        }
        // Values trimmed, in order, bitness absent or not, unknown ones kept,
        // empty ones left out.
        assert_eq!(
            oses(
                r#"<appv:TargetOSes SequencingStationProcessorArchitecture="x64">
                     <appv:TargetOS>WindowsClient_6.1_x64</appv:TargetOS>
                     <appv:TargetOS> WindowsClient_10.0 </appv:TargetOS>
                     <appv:TargetOS/>
                     <appv:TargetOS>WindowsHolographic_10.0_arm64</appv:TargetOS>
                   </appv:TargetOSes>"#
            )
            .unwrap(),
            [
                "WindowsClient_6.1_x64",
                "WindowsClient_10.0",
                "WindowsHolographic_10.0_arm64"
            ]
        );
        // TargetOS elements elsewhere are not targets.
        let stray = Manifest::parse(
            br#"<Package><Identity Name="x"/><Applications><Application Id="a"><TargetOS>WindowsClient_6.1_x64</TargetOS></Application></Applications><TargetOSes><TargetOS>WindowsClient_6.1_x64</TargetOS></TargetOSes></Package>"#,
        )
        .unwrap();
        assert!(stray.target_oses.is_empty());
    }

    #[test]
    fn hostile_target_oses_are_refused_within_bounds() {
        let many = |n: usize| {
            let targets = "<appv:TargetOS>WindowsClient_10.0_x64</appv:TargetOS>".repeat(n);
            Manifest::parse(&with_prerequisites(&format!(
                "<appv:TargetOSes>{targets}</appv:TargetOSes>"
            )))
        };
        assert_eq!(
            many(MAX_TARGET_OSES).unwrap().target_oses.len(),
            MAX_TARGET_OSES
        );
        for n in [MAX_TARGET_OSES + 1, 100_000] {
            match many(n) {
                Err(FormatError::XmlLimit { what, limit, .. }) => {
                    assert_eq!((what, limit), ("appv:TargetOS elements", 64));
                }
                other => panic!("{n}: {other:?}"),
            }
        }
        let long = |n: usize| {
            Manifest::parse(&with_prerequisites(&format!(
                "<appv:TargetOSes><appv:TargetOS>{}</appv:TargetOS></appv:TargetOSes>",
                "W".repeat(n)
            )))
        };
        assert!(long(MAX_TARGET_OS_LEN).is_ok());
        match long(MAX_TARGET_OS_LEN + 1) {
            Err(FormatError::XmlLimit { what, limit, .. }) => {
                assert_eq!((what, limit), ("bytes in one appv:TargetOS", 128));
            }
            other => panic!("{other:?}"),
        }
        // Many TargetOSes lists are counted together.
        let lists =
            "<appv:TargetOSes><appv:TargetOS>WindowsClient_10.0</appv:TargetOS></appv:TargetOSes>"
                .repeat(MAX_TARGET_OSES + 1);
        assert!(matches!(
            Manifest::parse(&with_prerequisites(&lists)),
            Err(FormatError::XmlLimit { .. })
        ));
        // Odd characters are kept as they are (what they mean is not this
        // crate's business); a character XML forbids is an XML error.
        let odd = Manifest::parse(&with_prerequisites(
            "<appv:TargetOSes><appv:TargetOS>a&#1;b\u{7f}&#x202E;</appv:TargetOS></appv:TargetOSes>",
        ))
        .unwrap();
        assert_eq!(odd.target_oses, ["a\u{1}b\u{7f}\u{202e}"]);
        assert!(matches!(
            Manifest::parse(&with_prerequisites(
                "<appv:TargetOSes><appv:TargetOS>&#0;</appv:TargetOS></appv:TargetOSes>"
            )),
            Err(FormatError::InvalidXml { .. })
        ));
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
