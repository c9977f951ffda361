//! The MS-VAPR publishing document (the GetPackage response, MS-VAPR §3.1): what
//! a client receives, rendered from the [`Catalog`] and the client's
//! [`Entitlements`], and the request's `ClientVersion` and `ClientOS`
//! parameters (§2.2.3).
//!
//! §3.1.5 returns a package when its minimum client version is zero or at most
//! the client's, and when the operating systems it names (if any) include the
//! client's. Avail's package versions record neither a minimum client version
//! nor target operating systems, so by that rule every package matches every
//! client: the parameters are parsed and checked ([`ClientQuery::parse`]; a
//! malformed one is an error the publishing role answers with 400, a newer
//! operating system than any known is accepted) but select nothing. The
//! document therefore depends on the entitlement set alone, so a role can cache
//! one rendered document per [`Entitlements`] value.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

/// The bitness a `ClientOS` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bitness {
    /// `x86`.
    X86,
    /// `x64`.
    X64,
}

/// `ClientOS`: `Windows{Client|Server}_{major}.{minor}_{x86|x64}`. Any version
/// is accepted, also one newer than every operating system known today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        let bad = || {
            QueryError(format!(
                "ClientOS {s:?} is not Windows{{Client|Server}}_MAJOR.MINOR_{{x86|x64}}"
            ))
        };
        let rest = s.strip_prefix("Windows").ok_or_else(bad)?;
        let (server, rest) = if let Some(rest) = rest.strip_prefix("Client_") {
            (false, rest)
        } else if let Some(rest) = rest.strip_prefix("Server_") {
            (true, rest)
        } else {
            return Err(bad());
        };
        let (version, bitness) = rest.split_once('_').ok_or_else(bad)?;
        let bitness = match bitness {
            "x86" => Bitness::X86,
            "x64" => Bitness::X64,
            _ => return Err(bad()),
        };
        let (major, minor) = version.split_once('.').ok_or_else(bad)?;
        let number = |n: &str| -> Result<u32, QueryError> {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            n.parse().map_err(|_| bad())
        };
        Ok(ClientOs {
            server,
            major: number(major)?,
            minor: number(minor)?,
            bitness,
        })
    }
}

/// The GetPackage request's parameters; each may be absent (a browser's plain
/// `GET /`), none may be malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// The publishing document for a client that receives `receives`.
pub fn render(catalog: &Catalog, receives: &Entitlements, content_base_url: &str) -> String {
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

/// The answer for a client that receives `receives`, with each package's URL
/// under `content_base_url` and then under each of `mirrors`.
pub fn answer(
    catalog: &Catalog,
    receives: &Entitlements,
    content_base_url: &str,
    mirrors: &[String],
) -> PublishingAnswer {
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
        let alice = render(&c, &c.receives(None, Some("alice")), BASE);
        let bob = render(&c, &c.receives(None, Some("bob")), BASE);
        let pc1 = render(&c, &c.receives(Some("pc1"), None), BASE);
        let both = render(&c, &c.receives(Some("pc1"), Some("alice")), BASE);
        let nobody = render(&c, &c.receives(None, Some("mallory")), BASE);
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
        let alice = render(&c, &c.receives(None, Some("alice")), BASE);
        let bob = render(&c, &c.receives(None, Some("bob")), BASE);
        let pc1 = render(&c, &c.receives(Some("pc1"), None), BASE);
        let both = render(&c, &c.receives(Some("pc1"), Some("bob")), BASE);
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
        let a = answer(&c, &c.receives(None, Some("alice")), BASE, &[]);
        let json = serde_json::to_value(&a).unwrap();
        let packages = json["packages"].as_array().unwrap();
        assert_eq!(packages[0]["block_map_sha256"], "ab".repeat(32));
        // Absent (imported before schema version 2): left out.
        assert!(packages[1].get("block_map_sha256").is_none());
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
