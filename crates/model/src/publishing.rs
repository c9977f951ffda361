//! The MS-VAPR publishing document (the GetPackage response, MS-VAPR §3.1): what
//! a client receives, rendered from the [`Catalog`] and the client's
//! [`Entitlements`], and the request's `ClientVersion` and `ClientOS`
//! parameters (§2.2.3).
//!
//! §3.1.5 returns a package when its minimum client version is zero or at most
//! the client's, and when the operating systems it names (if any) include the
//! client's. Both parameters are parsed and checked ([`ClientQuery::parse`]; a
//! malformed one is an error the publishing role answers with 400, a newer
//! operating system than any known is accepted).
//!
//! - `ClientVersion` selects nothing: App-V 5 manifests carry no minimum client
//!   version, so every package's is 0, which matches every client.
//! - `ClientOS` is compared with the operating systems each package version
//!   targets, recorded at import from its manifest
//!   (`Prerequisites/appv:TargetOSes/appv:TargetOS`,
//!   [`NewPackageVersion::target_oses`](crate::NewPackageVersion::target_oses)):
//!   a package that names none runs everywhere; otherwise one of them must have
//!   the client's kind (client or server) and version, and its bitness unless
//!   it names none (`WindowsClient_10.0` is either) ([`TargetOs::matches`]). A
//!   target that does not parse matches no client. A client that sends no
//!   `ClientOS` gets every package, as before (a browser's plain `GET /`).
//! - A connection group a required member of which is left out that way is
//!   left out too, as [`Catalog::receives`] leaves out groups a client cannot
//!   assemble ([`compatible`]).
//!
//! The document therefore depends on the entitlement set and the `ClientOS`
//! alone, and the same as on the set [`compatible`] leaves: a role can cache
//! one rendered document per such set.
//!
//! The document: `<Publishing Protocol="1.0">` (what App-V 5.1 servers send),
//! `Packages` with one `Package` per received version (a package's published
//! one), each with its `DeploymentConfiguration` if it has one and, for a user,
//! its `UserConfiguration` if one of the user's groups entitled to it carries
//! one (after `DeploymentConfiguration`, as the schema orders them); `NoGroup`
//! naming the packages outside every received connection group; `Groups` with
//! each received connection group and its members in precedence order. Empty
//! lists are left out, as §3.1.5.1.1.2 says.
//!
//! `ConfigurationId` (an `unsignedShort` that MUST increase each time the
//! configuration is updated) is the configuration's revision in the Management
//! DB mod 65536: each set of a configuration gives it a higher revision in the
//! same transaction, so the number increases with every update until it wraps
//! from 65535 to 0 after 65536 updates of one package version's configurations
//! (revisions of a version's deployment and user configurations share one
//! counter). A client that compares for inequality fetches again; the exact
//! `Timestamp` beside it changes too.
//!
//! When a user's groups entitled to a package carry two or more different user
//! configurations, the first group by name wins and `Conflict="true"`
//! ([`crate::catalog::UserConfigChoice`]); the chosen group is part of the
//! user's [`Entitlements`], so the document is still one per entitlement set.
//! A machine (no `Avail-User`) receives no `UserConfiguration`.
//!
//! [`answer`] is the same answer for Avail clients as a serde value
//! ([`PublishingAnswer`]): every content URL of each package (the base URL,
//! then each mirror), the SHA-256 of each package's block map
//! (`AppxBlockMap.xml`; absent for versions imported before schema version 2)
//! and the catalog's change sequence.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Entitlements};
use crate::domain::ConnectionGroupMember;
use crate::ids::{ConnectionGroupId, PackageId, VersionId};

/// A malformed `ClientVersion` or `ClientOS` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError(pub String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

/// `ClientVersion`: four 16-bit numbers, as one 64-bit value (MS-DTYP's
/// DWORD64 version: the leftmost number in the high 16 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientVersion(pub u64);

impl FromStr for ClientVersion {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self, QueryError> {
        let bad = || {
            QueryError(format!(
                "ClientVersion {s:?} is not four numbers 0-65535 separated by dots"
            ))
        };
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != 4 {
            return Err(bad());
        }
        let mut value = 0u64;
        for part in parts {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let n: u16 = part.parse().map_err(|_| bad())?;
            value = (value << 16) | u64::from(n);
        }
        Ok(ClientVersion(value))
    }
}

/// The bitness a `ClientOS` or a package's `TargetOS` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bitness {
    /// `x86`.
    X86,
    /// `x64`.
    X64,
}

impl Bitness {
    fn as_str(self) -> &'static str {
        match self {
            Bitness::X86 => "x86",
            Bitness::X64 => "x64",
        }
    }
}

/// `Windows{Client|Server}_{major}.{minor}` and, after `_`, the bitness if
/// there is one: the shape `ClientOS` and `TargetOS` share. `None` when `s`
/// does not have it.
fn parse_os(s: &str) -> Option<(bool, u32, u32, Option<Bitness>)> {
    let rest = s.strip_prefix("Windows")?;
    let (server, rest) = if let Some(rest) = rest.strip_prefix("Client_") {
        (false, rest)
    } else {
        (true, rest.strip_prefix("Server_")?)
    };
    let (version, bitness) = match rest.split_once('_') {
        Some((version, "x86")) => (version, Some(Bitness::X86)),
        Some((version, "x64")) => (version, Some(Bitness::X64)),
        Some(_) => return None,
        None => (rest, None),
    };
    let (major, minor) = version.split_once('.')?;
    let number = |n: &str| -> Option<u32> {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse().ok()
    };
    Some((server, number(major)?, number(minor)?, bitness))
}

/// `ClientOS`: `Windows{Client|Server}_{major}.{minor}_{x86|x64}`. Any version
/// is accepted, also one newer than every operating system known today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientOs {
    /// `Server` rather than `Client`.
    pub server: bool,
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Bitness.
    pub bitness: Bitness,
}

impl FromStr for ClientOs {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self, QueryError> {
        match parse_os(s) {
            Some((server, major, minor, Some(bitness))) => Ok(ClientOs {
                server,
                major,
                minor,
                bitness,
            }),
            _ => Err(QueryError(format!(
                "ClientOS {s:?} is not Windows{{Client|Server}}_MAJOR.MINOR_{{x86|x64}}"
            ))),
        }
    }
}

impl fmt::Display for ClientOs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        TargetOs::from(*self).fmt(f)
    }
}

/// An operating system a package targets (AppxManifest.xml's
/// `Prerequisites/appv:TargetOSes/appv:TargetOS`): `ClientOS`'s shape, the
/// bitness optional (`WindowsClient_10.0` is either).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TargetOs {
    /// `Server` rather than `Client`.
    pub server: bool,
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Bitness; `None` for either.
    pub bitness: Option<Bitness>,
}

impl TargetOs {
    /// Whether a client running `os` is one this target names (MS-VAPR
    /// §3.1.5): the same kind (client or server), the same major and minor
    /// version, and the same bitness unless the target names none.
    pub fn matches(&self, os: &ClientOs) -> bool {
        self.server == os.server
            && self.major == os.major
            && self.minor == os.minor
            && self.bitness.is_none_or(|b| b == os.bitness)
    }
}

impl From<ClientOs> for TargetOs {
    fn from(os: ClientOs) -> Self {
        TargetOs {
            server: os.server,
            major: os.major,
            minor: os.minor,
            bitness: Some(os.bitness),
        }
    }
}

impl FromStr for TargetOs {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self, QueryError> {
        let (server, major, minor, bitness) = parse_os(s).ok_or_else(|| {
            QueryError(format!(
                "target operating system {s:?} is not Windows{{Client|Server}}_MAJOR.MINOR with \
                 an optional _x86 or _x64 (as in WindowsClient_10.0_x64)"
            ))
        })?;
        Ok(TargetOs {
            server,
            major,
            minor,
            bitness,
        })
    }
}

impl fmt::Display for TargetOs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.server { "Server" } else { "Client" };
        write!(f, "Windows{kind}_{}.{}", self.major, self.minor)?;
        match self.bitness {
            Some(b) => write!(f, "_{}", b.as_str()),
            None => Ok(()),
        }
    }
}

/// Whether a package whose manifest names `target_oses` is returned to a
/// client running `os` (MS-VAPR §3.1.5): yes when it names none (every
/// operating system), or when the client sent no `ClientOS` (nothing to
/// compare with: a browser's plain `GET /` sees everything), or when one of
/// them [matches](TargetOs::matches). A value that does not parse as a
/// [`TargetOs`] (an operating system this server does not know, say) matches
/// no client; it is kept in the Management DB as written and does not stop
/// the package's import.
pub fn runs_on(target_oses: &[String], os: Option<&ClientOs>) -> bool {
    let Some(os) = os else { return true };
    target_oses.is_empty()
        || target_oses
            .iter()
            .any(|t| t.parse::<TargetOs>().is_ok_and(|t| t.matches(os)))
}

/// The GetPackage request's parameters; each may be absent (a browser's plain
/// `GET /`), none may be malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ClientQuery {
    /// `ClientVersion`.
    pub version: Option<ClientVersion>,
    /// `ClientOS`.
    pub os: Option<ClientOs>,
}

impl ClientQuery {
    /// Parse the parameters as the query string carries them.
    pub fn parse(version: Option<&str>, os: Option<&str>) -> Result<ClientQuery, QueryError> {
        Ok(ClientQuery {
            version: version.map(str::parse).transpose()?,
            os: os.map(str::parse).transpose()?,
        })
    }
}

/// What of `receives` a client asking with `client` is given (MS-VAPR
/// §3.1.5): the packages that [run on](runs_on) its operating system, and the
/// connection groups it can still assemble from those (the rule of
/// [`Catalog::receives`]: every required member's published version is among
/// them). Borrowed when nothing is left out, as for a client that sends no
/// `ClientOS` or a catalog whose packages name no operating system. Applying
/// it to its own result changes nothing.
///
/// `ClientVersion` selects nothing: App-V 5 manifests carry no minimum client
/// version, so every package's is 0, which §3.1.5 matches with every client.
pub fn compatible<'a>(
    catalog: &Catalog,
    receives: &'a Entitlements,
    client: &ClientQuery,
) -> Cow<'a, Entitlements> {
    let Some(os) = client.os.as_ref() else {
        return Cow::Borrowed(receives);
    };
    let runs = |v: &VersionId| {
        catalog
            .package(*v)
            .is_some_and(|p| runs_on(&p.version.target_oses, Some(os)))
    };
    if receives.packages.iter().all(runs) {
        return Cow::Borrowed(receives);
    }
    let packages: BTreeSet<VersionId> = receives.packages.iter().copied().filter(runs).collect();
    Cow::Owned(Entitlements {
        connection_groups: receives
            .connection_groups
            .iter()
            .copied()
            .filter(|&g| catalog.assemblable(g, &packages))
            .collect(),
        user_configs: receives
            .user_configs
            .iter()
            .filter(|(v, _)| packages.contains(v))
            .map(|(v, choice)| (*v, choice.clone()))
            .collect(),
        packages,
    })
}

/// Where a package version's file is: `content_base_url` (the content role or a
/// mirror of it) joined with `packages/<PackageId>/<VersionId>.appv`.
pub fn package_url(content_base_url: &str, package_id: PackageId, version_id: VersionId) -> String {
    format!(
        "{}/packages/{package_id}/{version_id}.appv",
        content_base_url.trim_end_matches('/')
    )
}

/// The server-relative path a version's deployment configuration is served at.
pub fn deployment_config_path(version_id: VersionId) -> String {
    format!("deployment-config/{version_id}.xml")
}

/// The server-relative path `group`'s user configuration for a version is
/// served at (the group percent-encoded, so any name is one path segment).
pub fn user_config_path(version_id: VersionId, group: &str) -> String {
    let mut path = format!("user-config/{version_id}/");
    for b in group.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            path.push(char::from(b));
        } else {
            let _ = write!(path, "%{b:02X}");
        }
    }
    path.push_str(".xml");
    path
}

/// A revision as MS-VAPR's 16-bit `ConfigurationId`: it wraps to 0 after 65535.
pub fn configuration_id(revision: i64) -> u16 {
    revision.rem_euclid(65_536) as u16
}

/// The publishing document for a client that receives `receives` and asks
/// with `client`: what of `receives` is [`compatible`] with it.
pub fn render(
    catalog: &Catalog,
    receives: &Entitlements,
    client: &ClientQuery,
    content_base_url: &str,
) -> String {
    let receives = compatible(catalog, receives, client);
    let mut xml =
        String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Publishing Protocol=\"1.0\">");
    let packages: Vec<_> = receives
        .packages
        .iter()
        .filter_map(|&v| catalog.package(v))
        .collect();
    let groups: Vec<_> = catalog
        .snapshot()
        .connection_groups
        .iter()
        .filter(|g| receives.connection_groups.contains(&g.id))
        .collect();
    if !packages.is_empty() {
        xml.push_str("<Packages>");
        for p in &packages {
            let v = &p.version;
            let _ = write!(
                xml,
                "<Package PackageId=\"{}\" VersionId=\"{}\" PackageUrl=\"{}\"",
                v.package_id,
                v.version_id,
                escape(&package_url(content_base_url, v.package_id, v.version_id))
            );
            let user_config = receives.user_configs.get(&v.version_id).and_then(|choice| {
                p.user_configs
                    .get(&choice.group)
                    .map(|config| (choice, config))
            });
            if p.deployment_config.is_none() && user_config.is_none() {
                xml.push_str("/>");
                continue;
            }
            xml.push('>');
            if let Some(config) = &p.deployment_config {
                let _ = write!(
                    xml,
                    "<DeploymentConfiguration ConfigurationId=\"{}\" Path=\"{}\" Timestamp=\"{}\"/>",
                    configuration_id(config.revision),
                    deployment_config_path(v.version_id),
                    config
                        .updated_at
                        .to_rfc3339_opts(SecondsFormat::Millis, true)
                );
            }
            if let Some((choice, config)) = user_config {
                let _ = write!(
                    xml,
                    "<UserConfiguration ConfigurationId=\"{}\" Conflict=\"{}\" Path=\"{}\" Timestamp=\"{}\"/>",
                    configuration_id(config.revision),
                    choice.conflict,
                    escape(&user_config_path(v.version_id, &choice.group)),
                    config
                        .updated_at
                        .to_rfc3339_opts(SecondsFormat::Millis, true)
                );
            }
            xml.push_str("</Package>");
        }
        xml.push_str("</Packages>");
    }
    let grouped = |package_id| {
        groups
            .iter()
            .any(|g| g.members.iter().any(|m| m.package_id == package_id))
    };
    let alone: Vec<_> = packages
        .iter()
        .filter(|p| !grouped(p.version.package_id))
        .collect();
    if !alone.is_empty() {
        xml.push_str("<NoGroup>");
        for p in alone {
            let _ = write!(xml, "<Package PackageId=\"{}\"/>", p.version.package_id);
        }
        xml.push_str("</NoGroup>");
    }
    if !groups.is_empty() {
        xml.push_str("<Groups>");
        for g in groups {
            let _ = write!(
                xml,
                "<Group GroupId=\"{}\" VersionId=\"{}\" Name=\"{}\" Priority=\"{}\">",
                g.id,
                g.version_id,
                escape(&g.name),
                g.priority.clamp(0, 255)
            );
            for m in &g.members {
                // Any version: the package's published one stands for it.
                let version = m
                    .version_id
                    .or_else(|| catalog.published_version(m.package_id))
                    .map_or_else(|| "*".to_owned(), |v| v.to_string());
                let _ = write!(
                    xml,
                    "<Package PackageId=\"{}\" VersionId=\"{version}\" VersionOptional=\"{}\" PackageOptional=\"{}\"/>",
                    m.package_id,
                    m.version_id.is_none(),
                    m.optional
                );
            }
            xml.push_str("</Group>");
        }
        xml.push_str("</Groups>");
    }
    xml.push_str("</Publishing>\n");
    xml
}

/// What a client receives, for Avail clients (`Accept: application/json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishingAnswer {
    /// The catalog's change sequence.
    pub sequence: i64,
    /// Each received package with its published version.
    pub packages: Vec<AnswerPackage>,
    /// Each received connection group.
    pub connection_groups: Vec<AnswerConnectionGroup>,
}

/// A package version in a [`PublishingAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerPackage {
    /// The package.
    pub package_id: PackageId,
    /// Its published version.
    pub version_id: VersionId,
    /// The package's name.
    pub name: String,
    /// The version's version number.
    pub version: String,
    /// Where the file is: the content base URL first, then each mirror.
    pub urls: Vec<String>,
    /// SHA-256 of the package's uncompressed `AppxBlockMap.xml`, hex; absent
    /// for versions imported before schema version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_map_sha256: Option<String>,
}

/// A connection group in a [`PublishingAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerConnectionGroup {
    /// The group.
    pub id: ConnectionGroupId,
    /// Changes with every change to the group.
    pub version_id: uuid::Uuid,
    /// Display name.
    pub name: String,
    /// Priority among groups (lower wins).
    pub priority: i32,
    /// Members in precedence order (first wins).
    pub members: Vec<ConnectionGroupMember>,
}

/// The answer for a client that receives `receives` and asks with `client`
/// (what of `receives` is [`compatible`] with it), with each package's URL
/// under `content_base_url` and then under each of `mirrors`.
pub fn answer(
    catalog: &Catalog,
    receives: &Entitlements,
    client: &ClientQuery,
    content_base_url: &str,
    mirrors: &[String],
) -> PublishingAnswer {
    let receives = compatible(catalog, receives, client);
    let packages = receives
        .packages
        .iter()
        .filter_map(|&v| catalog.package(v))
        .map(|p| {
            let v = &p.version;
            AnswerPackage {
                package_id: v.package_id,
                version_id: v.version_id,
                name: v.name.clone(),
                version: v.version.clone(),
                urls: std::iter::once(content_base_url)
                    .chain(mirrors.iter().map(String::as_str))
                    .map(|base| package_url(base, v.package_id, v.version_id))
                    .collect(),
                block_map_sha256: v.block_map_sha256.clone(),
            }
        })
        .collect();
    let connection_groups = catalog
        .snapshot()
        .connection_groups
        .iter()
        .filter(|g| receives.connection_groups.contains(&g.id))
        .map(|g| AnswerConnectionGroup {
            id: g.id,
            version_id: g.version_id,
            name: g.name.clone(),
            priority: g.priority,
            members: g.members.clone(),
        })
        .collect();
    PublishingAnswer {
        sequence: catalog.sequence(),
        packages,
        connection_groups,
    }
}

/// `text` as an XML attribute value.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            // Not allowed in XML 1.0 at all; names never hold them (rules).
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::catalog::{
        CatalogSnapshot, Configuration, MachineCredential, Membership, PublishedPackage,
    };
    use crate::domain::{ConnectionGroup, ConnectionGroupMember, Entitlement, Principal};
    use crate::{ConnectionGroupId, NewPackageVersion, PackageId, VersionId};

    const BASE: &str = "http://content.example:8083/";

    /// A client that sends no `ClientOS`: nothing is left out for it.
    const ANY: ClientQuery = ClientQuery {
        version: None,
        os: None,
    };

    fn pid(n: u128) -> PackageId {
        PackageId(Uuid::from_u128(n))
    }

    fn vid(n: u128) -> VersionId {
        VersionId(Uuid::from_u128(0x100 + n))
    }

    fn package(n: u128, name: &str, group: &str) -> PublishedPackage {
        PublishedPackage {
            version: NewPackageVersion {
                package_id: pid(n),
                version_id: vid(n),
                name: name.into(),
                version: "1.0.0.0".into(),
                content_path: format!("packages/{}/{}.appv", pid(n), vid(n)),
                size: 1,
                sha256: "0".repeat(64),
                block_map_sha256: None,
                target_oses: vec![],
                applications: vec![],
            },
            deployment_config: None,
            entitlements: vec![Entitlement {
                group: group.into(),
                user_config: None,
            }],
            user_configs: Default::default(),
        }
    }

    fn member(group: &str, member: Principal) -> Membership {
        Membership {
            group: group.into(),
            member,
        }
    }

    /// Editor and Notes to staff, Viewer to devs (devs ⊂ staff), Tools (with a
    /// deployment configuration) to ops, Lab to the machines of lab; the
    /// connection group "R&D <Suite>" (Editor, then Viewer, optional) to devs.
    fn catalog() -> Catalog {
        let mut tools = package(3, "Tools", "ops");
        tools.deployment_config = Some(Configuration {
            document: "<DeploymentConfiguration/>".into(),
            updated_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            // Past 65535: the ConfigurationId wraps.
            revision: 65_536 + 7,
        });
        Catalog::new(CatalogSnapshot {
            sequence: 42,
            packages: vec![
                package(1, "Editor", "staff"),
                package(2, "Viewer", "devs"),
                tools,
                package(4, "Lab", "lab"),
                package(5, "Notes", "staff"),
            ],
            connection_groups: vec![ConnectionGroup {
                id: ConnectionGroupId(Uuid::from_u128(0xC6)),
                version_id: Uuid::from_u128(0xC7),
                name: "R&D <Suite>".into(),
                priority: 300,
                members: vec![
                    ConnectionGroupMember {
                        package_id: pid(1),
                        version_id: Some(vid(1)),
                        optional: false,
                    },
                    ConnectionGroupMember {
                        package_id: pid(2),
                        version_id: None,
                        optional: true,
                    },
                ],
                entitled_groups: vec!["devs".into()],
                published: true,
                updated_at: Utc::now(),
            }],
            groups: vec!["devs".into(), "lab".into(), "ops".into(), "staff".into()],
            users: vec!["alice".into(), "bob".into()],
            machines: vec![MachineCredential {
                name: "pc1".into(),
                credential_hash: "h".into(),
            }],
            memberships: vec![
                member("devs", Principal::User("alice".into())),
                member("lab", Principal::Machine("pc1".into())),
                member("ops", Principal::User("bob".into())),
                member("staff", Principal::Group("devs".into())),
            ],
        })
    }

    /// Validate `xml` with `xmllint --schema` against the repository's MS-VAPR schema.
    fn assert_valid(xml: &str) {
        let xsd = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/publishing/MS-VAPR-publishing.xsd"
        );
        let mut child = Command::new("xmllint")
            .args(["--schema", xsd, "--noout", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("xmllint (Debian package libxml2-utils) must be installed");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(xml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "not valid against MS-VAPR §6.1:\n{xml}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Each element path with its sorted attribute names, and the root's
    /// children in order.
    fn structure(xml: &str) -> (BTreeSet<String>, Vec<String>) {
        use quick_xml::events::Event;
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut path: Vec<String> = Vec::new();
        let mut shapes = BTreeSet::new();
        let mut top = Vec::new();
        loop {
            let (e, empty) = match reader.read_event().unwrap() {
                Event::Start(e) => (e, false),
                Event::Empty(e) => (e, true),
                Event::End(_) => {
                    path.pop();
                    continue;
                }
                Event::Eof => break,
                _ => continue,
            };
            let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
            if path.len() == 1 {
                top.push(name.clone());
            }
            path.push(name);
            let mut attrs: Vec<String> = e
                .attributes()
                .map(|a| String::from_utf8(a.unwrap().key.as_ref().to_vec()).unwrap())
                .collect();
            attrs.sort();
            shapes.insert(format!("{}@{}", path.join("/"), attrs.join(",")));
            if empty {
                path.pop();
            }
        }
        (shapes, top)
    }

    /// The shapes App-V's own documents have (MS-VAPR §3.1.5.1.1.2 and the
    /// documents App-V 5.1 servers send).
    const APPV_SHAPES: &[&str] = &[
        "Publishing@Protocol",
        "Publishing/Packages@",
        "Publishing/Packages/Package@PackageId,PackageUrl,VersionId",
        "Publishing/Packages/Package/DeploymentConfiguration@ConfigurationId,Path,Timestamp",
        "Publishing/Packages/Package/UserConfiguration@ConfigurationId,Conflict,Path,Timestamp",
        "Publishing/NoGroup@",
        "Publishing/NoGroup/Package@PackageId",
        "Publishing/Groups@",
        "Publishing/Groups/Group@GroupId,Name,Priority,VersionId",
        "Publishing/Groups/Group/Package@PackageId,PackageOptional,VersionId,VersionOptional",
    ];

    fn assert_appv_shaped(xml: &str) -> Vec<String> {
        let (shapes, top) = structure(xml);
        for shape in &shapes {
            assert!(
                APPV_SHAPES.contains(&shape.as_str()),
                "unknown shape {shape} in\n{xml}"
            );
        }
        top
    }

    #[test]
    fn two_users_in_nested_groups_and_a_machine_get_their_own_valid_documents() {
        let c = catalog();
        let alice = render(&c, &c.receives(None, Some("alice")), &ANY, BASE);
        let bob = render(&c, &c.receives(None, Some("bob")), &ANY, BASE);
        let pc1 = render(&c, &c.receives(Some("pc1"), None), &ANY, BASE);
        let both = render(&c, &c.receives(Some("pc1"), Some("alice")), &ANY, BASE);
        let nobody = render(&c, &c.receives(None, Some("mallory")), &ANY, BASE);
        for doc in [&alice, &bob, &pc1, &both, &nobody] {
            assert_valid(doc);
        }
        assert!(alice != bob && bob != pc1 && alice != pc1);

        // alice: devs ⊂ staff: Editor, Viewer, Notes; the connection group;
        // only Notes outside it.
        assert_eq!(
            assert_appv_shaped(&alice),
            ["Packages", "NoGroup", "Groups"]
        );
        for n in [1, 2, 5] {
            assert!(alice.contains(&format!(
                "<Package PackageId=\"{}\" VersionId=\"{}\" PackageUrl=\"http://content.example:8083/packages/{}/{}.appv\"/>",
                pid(n),
                vid(n),
                pid(n),
                vid(n)
            )));
        }
        assert!(alice.contains(&format!(
            "<NoGroup><Package PackageId=\"{}\"/></NoGroup>",
            pid(5)
        )));
        assert!(alice.contains("Name=\"R&amp;D &lt;Suite&gt;\" Priority=\"255\""));
        assert!(alice.contains(&format!(
            "<Package PackageId=\"{}\" VersionId=\"{}\" VersionOptional=\"false\" PackageOptional=\"false\"/><Package PackageId=\"{}\" VersionId=\"{}\" VersionOptional=\"true\" PackageOptional=\"true\"/>",
            pid(1),
            vid(1),
            pid(2),
            vid(2)
        )));
        assert!(!alice.contains(&pid(3).to_string()) && !alice.contains(&pid(4).to_string()));

        // bob: Tools with its deployment configuration, no connection group.
        assert_eq!(assert_appv_shaped(&bob), ["Packages", "NoGroup"]);
        assert!(bob.contains(&format!(
            "<DeploymentConfiguration ConfigurationId=\"7\" Path=\"deployment-config/{}.xml\" Timestamp=\"2026-01-02T03:04:05.000Z\"/>",
            vid(3)
        )));

        // The machine: Lab only; with alice on it, both.
        assert_eq!(assert_appv_shaped(&pc1), ["Packages", "NoGroup"]);
        assert!(pc1.contains(&vid(4).to_string()) && !pc1.contains(&vid(1).to_string()));
        for n in [1, 2, 4, 5] {
            assert!(both.contains(&vid(n).to_string()));
        }

        // An unknown user: an empty document, not an error.
        assert_eq!(
            nobody,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Publishing Protocol=\"1.0\"></Publishing>\n"
        );
    }

    fn user_config(document: &str, revision: i64) -> Configuration {
        Configuration {
            document: document.into(),
            updated_at: Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap(),
            revision,
        }
    }

    /// The sample catalog with user configurations: Editor granted to staff
    /// and to devs, each with its own; Tools (which has a deployment
    /// configuration) to ops with one, and to "Ops & Lab/2" (bob is in it too)
    /// with the same document.
    fn catalog_with_user_configs() -> Catalog {
        let mut snapshot = catalog().snapshot().clone();
        let editor = &mut snapshot.packages[0];
        editor.entitlements.push(Entitlement {
            group: "devs".into(),
            user_config: Some("<UserConfiguration/>".into()),
        });
        editor.entitlements[0].user_config = Some("<UserConfiguration Staff=\"1\"/>".into());
        editor
            .user_configs
            .insert("devs".into(), user_config("<UserConfiguration/>", 3));
        editor.user_configs.insert(
            "staff".into(),
            user_config("<UserConfiguration Staff=\"1\"/>", 65_535),
        );
        let tools = &mut snapshot.packages[2];
        for group in ["Ops & Lab/2", "ops"] {
            tools.entitlements.push(Entitlement {
                group: group.into(),
                user_config: Some("<UserConfiguration/>".into()),
            });
            tools
                .user_configs
                .insert(group.into(), user_config("<UserConfiguration/>", 9));
        }
        tools.entitlements.remove(0);
        tools.entitlements.sort_by(|a, b| a.group.cmp(&b.group));
        snapshot.groups.insert(0, "Ops & Lab/2".into());
        snapshot
            .memberships
            .insert(0, member("Ops & Lab/2", Principal::User("bob".into())));
        Catalog::new(snapshot)
    }

    #[test]
    fn user_configurations_follow_deployment_configurations_and_validate() {
        let c = catalog_with_user_configs();
        let alice = render(&c, &c.receives(None, Some("alice")), &ANY, BASE);
        let bob = render(&c, &c.receives(None, Some("bob")), &ANY, BASE);
        let pc1 = render(&c, &c.receives(Some("pc1"), None), &ANY, BASE);
        let both = render(&c, &c.receives(Some("pc1"), Some("bob")), &ANY, BASE);
        for doc in [&alice, &bob, &pc1, &both] {
            assert_valid(doc);
            assert_appv_shaped(doc);
        }

        // alice is in devs and staff, which carry different documents for
        // Editor: devs (first by name) wins, with a conflict.
        assert!(alice.contains(&format!(
            "PackageUrl=\"http://content.example:8083/packages/{}/{}.appv\"><UserConfiguration ConfigurationId=\"3\" Conflict=\"true\" Path=\"user-config/{}/devs.xml\" Timestamp=\"2026-03-04T05:06:07.000Z\"/></Package>",
            pid(1),
            vid(1),
            vid(1)
        )));
        let choice = &c.receives(None, Some("alice")).user_configs[&vid(1)];
        assert_eq!((choice.group.as_str(), choice.conflict), ("devs", true));

        // bob: Tools through two groups with the same document: no conflict,
        // "Ops & Lab/2" wins (percent-encoded in the path, escaped in XML);
        // the UserConfiguration comes after the DeploymentConfiguration.
        assert!(bob.contains(&format!(
            "Timestamp=\"2026-01-02T03:04:05.000Z\"/><UserConfiguration ConfigurationId=\"9\" Conflict=\"false\" Path=\"user-config/{}/Ops%20%26%20Lab%2F2.xml\" Timestamp=\"2026-03-04T05:06:07.000Z\"/></Package>",
            vid(3)
        )));

        // A machine receives no UserConfiguration; a user on it does.
        assert!(!pc1.contains("UserConfiguration"));
        assert!(both.contains("<UserConfiguration ") && both.contains(&vid(4).to_string()));

        // The choice is part of the entitlement set: without it, the set differs.
        assert_ne!(
            *c.receives(None, Some("alice")),
            Entitlements {
                user_configs: Default::default(),
                ..(*c.receives(None, Some("alice"))).clone()
            }
        );
        assert_eq!(configuration_id(65_535), 65_535);
        assert_eq!(configuration_id(65_536), 0);
    }

    #[test]
    fn the_answer_carries_the_block_map_digest() {
        let mut snapshot = catalog().snapshot().clone();
        snapshot.packages[0].version.block_map_sha256 = Some("ab".repeat(32));
        let c = Catalog::new(snapshot);
        let a = answer(&c, &c.receives(None, Some("alice")), &ANY, BASE, &[]);
        let json = serde_json::to_value(&a).unwrap();
        let packages = json["packages"].as_array().unwrap();
        assert_eq!(packages[0]["block_map_sha256"], "ab".repeat(32));
        // Absent (imported before schema version 2): left out.
        assert!(packages[1].get("block_map_sha256").is_none());
    }

    fn client(os: &str) -> ClientQuery {
        ClientQuery::parse(Some("5.1.0.0"), Some(os)).unwrap()
    }

    /// Editor targets no operating system, Viewer `WindowsClient_10.0` (either
    /// bitness), Notes `WindowsClient_10.0_x64`.
    fn catalog_with_target_oses() -> Catalog {
        let mut snapshot = catalog().snapshot().clone();
        snapshot.packages[1].version.target_oses = vec!["WindowsClient_10.0".into()];
        snapshot.packages[4].version.target_oses = vec!["WindowsClient_10.0_x64".into()];
        Catalog::new(snapshot)
    }

    #[test]
    fn packages_are_returned_only_to_the_operating_systems_they_target() {
        let c = catalog_with_target_oses();
        let alice = c.receives(None, Some("alice"));
        let has = |doc: &str, n| doc.contains(&format!("VersionId=\"{}\" PackageUrl", vid(n)));
        // (ClientOS, Editor, Viewer, Notes)
        for (os, editor, viewer, notes) in [
            ("WindowsClient_10.0_x64", true, true, true),
            ("WindowsClient_10.0_x86", true, true, false),
            ("WindowsServer_10.0_x64", true, false, false),
            ("WindowsClient_6.1_x86", true, false, false),
            ("WindowsClient_6.1_x64", true, false, false),
        ] {
            let doc = render(&c, &alice, &client(os), BASE);
            assert_valid(&doc);
            assert_appv_shaped(&doc);
            assert_eq!(
                (has(&doc, 1), has(&doc, 2), has(&doc, 5)),
                (editor, viewer, notes),
                "{os}:\n{doc}"
            );
            // Viewer is an optional member: the group stays without it.
            assert!(doc.contains("<Groups>"), "{os}");
            let json = answer(&c, &alice, &client(os), BASE, &[]);
            let ids: Vec<_> = json.packages.iter().map(|p| p.version_id).collect();
            let want: Vec<_> = [(1, editor), (2, viewer), (5, notes)]
                .into_iter()
                .filter(|(_, there)| *there)
                .map(|(n, _)| vid(n))
                .collect();
            assert_eq!(ids, want, "{os}");
            assert_eq!(json.connection_groups.len(), 1, "{os}");
        }
        // No ClientOS (a browser; ClientVersion alone selects nothing): everything.
        for query in [ANY, ClientQuery::parse(Some("5.0.0.0"), None).unwrap()] {
            let doc = render(&c, &alice, &query, BASE);
            assert_eq!(doc, render(&catalog(), &alice, &ANY, BASE));
            assert!(has(&doc, 1) && has(&doc, 2) && has(&doc, 5));
            assert!(matches!(compatible(&c, &alice, &query), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn a_connection_group_whose_required_member_is_left_out_is_left_out() {
        let mut snapshot = catalog_with_target_oses().snapshot().clone();
        // Editor, the group's required member: a server OS, and one this
        // server does not know (which matches nothing and breaks nothing).
        snapshot.packages[0].version.target_oses =
            vec!["WindowsServer_6.3_x64".into(), "Windows_Future_2030".into()];
        let c = Catalog::new(snapshot);
        let alice = c.receives(None, Some("alice"));
        assert!(!alice.connection_groups.is_empty());

        let doc = render(&c, &alice, &client("WindowsClient_10.0_x64"), BASE);
        assert_valid(&doc);
        assert_eq!(assert_appv_shaped(&doc), ["Packages", "NoGroup"]);
        assert!(!doc.contains(&vid(1).to_string()) && !doc.contains("R&amp;D"));
        // Viewer is outside every group it is given with now.
        assert!(doc.contains(&format!(
            "<NoGroup><Package PackageId=\"{}\"/><Package PackageId=\"{}\"/></NoGroup>",
            pid(2),
            pid(5)
        )));
        let json = answer(&c, &alice, &client("WindowsClient_10.0_x64"), BASE, &[]);
        assert!(json.connection_groups.is_empty());
        assert_eq!(json.packages.len(), 2);

        // On the server OS it names, Editor and its group are back.
        let server = client("WindowsServer_6.3_x64");
        let doc = render(&c, &alice, &server, BASE);
        assert_valid(&doc);
        let has = |n| doc.contains(&format!("VersionId=\"{}\" PackageUrl", vid(n)));
        assert!(has(1) && !has(2) && !has(5) && doc.contains("<Groups>"));

        // Filtering what was filtered leaves it as it is.
        let once = compatible(&c, &alice, &client("WindowsClient_10.0_x64")).into_owned();
        let twice = compatible(&c, &once, &client("WindowsClient_10.0_x64"));
        assert!(matches!(twice, Cow::Borrowed(_)));
        assert_eq!(*twice, once);
    }

    #[test]
    fn target_oses_are_client_os_with_an_optional_bitness() {
        let any = "WindowsClient_10.0".parse::<TargetOs>().unwrap();
        assert_eq!(
            any,
            TargetOs {
                server: false,
                major: 10,
                minor: 0,
                bitness: None
            }
        );
        let x64: ClientOs = "WindowsClient_10.0_x64".parse().unwrap();
        let x86: ClientOs = "WindowsClient_10.0_x86".parse().unwrap();
        assert!(any.matches(&x64) && any.matches(&x86));
        let only: TargetOs = "WindowsClient_10.0_x64".parse().unwrap();
        assert!(only.matches(&x64) && !only.matches(&x86));
        assert!(!only.matches(&"WindowsServer_10.0_x64".parse().unwrap()));
        assert!(!only.matches(&"WindowsClient_6.1_x64".parse().unwrap()));
        for shown in [
            "WindowsClient_10.0",
            "WindowsServer_6.3_x86",
            "WindowsClient_6.1_x64",
        ] {
            assert_eq!(shown.parse::<TargetOs>().unwrap().to_string(), shown);
        }
        assert_eq!(x64.to_string(), "WindowsClient_10.0_x64");
        for bad in [
            "WindowsClient_10.0_arm64",
            "WindowsClient_10",
            "WindowsClient_10.0_",
            "Windows_Future_2030",
            "",
        ] {
            assert!(bad.parse::<TargetOs>().is_err(), "{bad}");
        }
        // A package: no targets is every OS; unknown ones match nothing; no
        // ClientOS is every package.
        assert!(runs_on(&[], Some(&x86)));
        assert!(!runs_on(&["Windows_Future_2030".into()], Some(&x64)));
        assert!(runs_on(&["Windows_Future_2030".into()], None));
        assert!(runs_on(
            &["nonsense".into(), "WindowsClient_10.0_x86".into()],
            Some(&x86)
        ));
    }

    #[test]
    fn client_version_is_four_16_bit_numbers() {
        assert_eq!(
            "5.1.0.1".parse::<ClientVersion>(),
            Ok(ClientVersion((5 << 48) | (1 << 32) | 1))
        );
        assert!("65535.65535.65535.65535".parse::<ClientVersion>().is_ok());
        for bad in [
            "5.1.0",
            "5.1.0.0.0",
            "65536.0.0.0",
            "a.b.c.d",
            "5..0.0",
            "+5.1.0.0",
            "",
        ] {
            assert!(bad.parse::<ClientVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn client_os_is_windows_client_or_server_and_newer_ones_are_accepted() {
        assert_eq!(
            "WindowsClient_6.1_x64".parse::<ClientOs>(),
            Ok(ClientOs {
                server: false,
                major: 6,
                minor: 1,
                bitness: Bitness::X64
            })
        );
        assert!("WindowsServer_6.3_x86".parse::<ClientOs>().unwrap().server);
        assert_eq!(
            "WindowsClient_99.7_x64".parse::<ClientOs>().unwrap().major,
            99
        );
        for bad in [
            "WindowsClient_6.1",
            "WindowsClient_6_x64",
            "WindowsPhone_6.1_x64",
            "WindowsClient_6.1_arm64",
            "Linux_6.1_x64",
            "WindowsClient_-6.1_x64",
            "",
        ] {
            assert!(bad.parse::<ClientOs>().is_err(), "{bad}");
        }
    }

    #[test]
    fn absent_parameters_are_fine_and_malformed_ones_are_not() {
        assert_eq!(ClientQuery::parse(None, None), Ok(ClientQuery::default()));
        let q = ClientQuery::parse(Some("5.1.0.0"), Some("WindowsClient_10.0_x64")).unwrap();
        assert!(q.version.is_some() && q.os.is_some());
        assert!(ClientQuery::parse(Some("5.1"), None).is_err());
        assert!(ClientQuery::parse(None, Some("Windows")).is_err());
    }
}
