//! Reading an MS-VAPR SetReport body (§3.2.5.1.1.1, schema §6.2) into a
//! [`Report`].
//!
//! Windows clients send the body as UTF-16 without a processing instruction;
//! [`decode`] accepts UTF-16 (little- or big-endian, with a byte order mark or
//! without one, told apart by the zero byte of the leading `<`) and UTF-8 (with
//! or without a BOM), and gives the text every report id is derived from.
//! [`parse`] then reads it as a stream of quick-xml events under bounds
//! (elements, attributes per element, depth and the length of one value; the
//! body's size is bounded by the role before any of this), refuses a DOCTYPE,
//! and checks what §6.2 requires: `CLIENT_DATA` holding `PKG_LIST` then
//! `APP_RECORDS`, each required attribute present, and each typed one well
//! formed (GUIDs, `xs:dateTime`, `xs:unsignedByte`, `xs:decimal`, four-part
//! versions, `LaunchStatus`). `ConnectionGroupVersion` and `Shutdown` are
//! optional, as §3.2 has them. Two leniencies: an empty `PKG_LIST` or
//! `APP_RECORDS` is accepted (a client with no launches since its last report
//! has nothing to list), and attributes the schema does not name are ignored.
//! Every error names the element (and attribute) at fault.

use avail_model::domain::{ApplicationUsage, ClientInformation, PackageInformation};
use chrono::{DateTime, NaiveDateTime, Utc};
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use uuid::Uuid;

/// Most elements in one report.
const MAX_ELEMENTS: usize = 100_000;
/// Most attributes on one element.
const MAX_ATTRIBUTES: usize = 32;
/// Most characters in one attribute value.
const MAX_VALUE: usize = 4096;

/// What a SetReport body says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    /// `CLIENT_DATA`.
    pub client: ClientInformation,
    /// `PKG_LIST`.
    pub packages: Vec<PackageInformation>,
    /// `APP_RECORDS`.
    pub usage: Vec<ApplicationUsage>,
}

/// Why a body is not a SetReport; the text names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ReportError(String);

fn err(message: impl Into<String>) -> ReportError {
    ReportError(message.into())
}

/// The body's text: UTF-16 (LE or BE, with or without a BOM) or UTF-8.
pub(crate) fn decode(body: &[u8]) -> Result<String, ReportError> {
    let utf16 = |bytes: &[u8], big_endian: bool| {
        if !bytes.len().is_multiple_of(2) {
            return Err(err("the UTF-16 body has an odd number of bytes"));
        }
        let units = bytes.chunks_exact(2).map(|p| {
            if big_endian {
                u16::from_be_bytes([p[0], p[1]])
            } else {
                u16::from_le_bytes([p[0], p[1]])
            }
        });
        // Sized up front (exact for ASCII, what reports mostly are): collecting
        // `Result`s would grow the string from nothing, copying it each time.
        let mut text = String::with_capacity(bytes.len() / 2);
        for c in char::decode_utf16(units) {
            text.push(c.map_err(|_| err("the UTF-16 body holds an unpaired surrogate"))?);
        }
        Ok(text)
    };
    match body {
        [0xFF, 0xFE, rest @ ..] => utf16(rest, false),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, true),
        [0xEF, 0xBB, 0xBF, rest @ ..] => utf8(rest),
        [a, 0, ..] if *a != 0 => utf16(body, false),
        [0, b, ..] if *b != 0 => utf16(body, true),
        _ => utf8(body),
    }
}

fn utf8(bytes: &[u8]) -> Result<String, ReportError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| err("the body is neither UTF-16 nor UTF-8"))
}

/// Where the reader is in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Before `CLIENT_DATA`.
    Prolog,
    /// In `CLIENT_DATA`, before `PKG_LIST`.
    Client,
    /// In `PKG_LIST`.
    PackageList,
    /// In `PKG_DATA`.
    Package,
    /// In `CLIENT_DATA`, after `PKG_LIST`.
    AfterPackages,
    /// In `APP_RECORDS`.
    Records,
    /// In `APP_RECORD`.
    Record,
    /// In `CLIENT_DATA`, after `APP_RECORDS`.
    AfterRecords,
    /// After `CLIENT_DATA`.
    Done,
}

impl Place {
    fn element(self) -> &'static str {
        match self {
            Place::Prolog | Place::Done => "the document",
            Place::Client | Place::AfterPackages | Place::AfterRecords => "CLIENT_DATA",
            Place::PackageList => "PKG_LIST",
            Place::Package => "PKG_DATA",
            Place::Records => "APP_RECORDS",
            Place::Record => "APP_RECORD",
        }
    }
}

/// Read `text` as a SetReport body (see the module documentation).
pub(crate) fn parse(text: &str) -> Result<Report, ReportError> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut place = Place::Prolog;
    let mut elements = 0usize;
    let mut client = None;
    let mut packages = Vec::new();
    let mut usage = Vec::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| err(format!("malformed XML in {}: {e}", place.element())))?;
        let (start, empty) = match event {
            Event::Start(s) => (s, false),
            Event::Empty(s) => (s, true),
            Event::End(_) => {
                place = match place {
                    Place::Client => return Err(missing("CLIENT_DATA", "PKG_LIST")),
                    Place::PackageList => Place::AfterPackages,
                    Place::Package => Place::PackageList,
                    Place::AfterPackages => return Err(missing("CLIENT_DATA", "APP_RECORDS")),
                    Place::Records => Place::AfterRecords,
                    Place::Record => Place::Records,
                    Place::AfterRecords => Place::Done,
                    // quick-xml refuses an unmatched end tag before this.
                    Place::Prolog | Place::Done => {
                        return Err(err("an end tag outside CLIENT_DATA"));
                    }
                };
                continue;
            }
            Event::Text(t) => {
                if t.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Err(err(format!("text is not allowed in {}", place.element())));
            }
            Event::CData(_) | Event::GeneralRef(_) => {
                return Err(err(format!("text is not allowed in {}", place.element())));
            }
            Event::DocType(_) => return Err(err("a DOCTYPE is not allowed")),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => continue,
            Event::Eof => break,
        };
        elements += 1;
        if elements > MAX_ELEMENTS {
            return Err(err(format!("more than {MAX_ELEMENTS} elements")));
        }
        let name = std::str::from_utf8(start.name().as_ref())
            .unwrap_or("?")
            .to_owned();
        let attributes = Attributes::read(&start, &name)?;
        let (next, inner) = match (place, name.as_str()) {
            (Place::Prolog, "CLIENT_DATA") => {
                client = Some(client_information(&attributes)?);
                (Place::Client, Place::Client)
            }
            (Place::Client, "PKG_LIST") => (Place::AfterPackages, Place::PackageList),
            (Place::PackageList, "PKG_DATA") => {
                packages.push(package_information(&attributes)?);
                (Place::PackageList, Place::Package)
            }
            (Place::AfterPackages, "APP_RECORDS") => (Place::AfterRecords, Place::Records),
            (Place::Records, "APP_RECORD") => {
                usage.push(application_usage(&attributes)?);
                (Place::Records, Place::Record)
            }
            (Place::Client, _) => return Err(missing("CLIENT_DATA", "PKG_LIST")),
            (Place::AfterPackages, _) => return Err(missing("CLIENT_DATA", "APP_RECORDS")),
            (Place::Prolog, _) => {
                return Err(err(format!(
                    "the root element must be CLIENT_DATA, not {name}"
                )));
            }
            (Place::Done, _) => {
                return Err(err(format!("element {name} follows CLIENT_DATA")));
            }
            _ => {
                return Err(err(format!(
                    "element {name} is not allowed in {}",
                    place.element()
                )));
            }
        };
        place = if empty { next } else { inner };
        // An empty CLIENT_DATA lacks PKG_LIST.
        if empty && name == "CLIENT_DATA" {
            return Err(missing("CLIENT_DATA", "PKG_LIST"));
        }
    }
    match (place, client) {
        (Place::Done, Some(client)) => Ok(Report {
            client,
            packages,
            usage,
        }),
        (Place::Prolog, _) => Err(missing("the document", "CLIENT_DATA")),
        _ => Err(err(format!("the body ends inside {}", place.element()))),
    }
}

fn missing(parent: &str, child: &str) -> ReportError {
    err(format!("{parent} lacks the required element {child}"))
}

/// One element's attributes, unescaped.
struct Attributes<'a> {
    element: &'a str,
    values: Vec<(String, String)>,
}

impl<'a> Attributes<'a> {
    fn read(start: &BytesStart<'_>, element: &'a str) -> Result<Self, ReportError> {
        let mut values: Vec<(String, String)> = Vec::new();
        for attribute in start.attributes() {
            let attribute =
                attribute.map_err(|e| err(format!("malformed attribute in {element}: {e}")))?;
            if values.len() == MAX_ATTRIBUTES {
                return Err(err(format!(
                    "{element} has more than {MAX_ATTRIBUTES} attributes"
                )));
            }
            let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
            let value = attribute
                .unescape_value()
                .map_err(|e| err(format!("malformed value of {element}.{key}: {e}")))?;
            if value.chars().count() > MAX_VALUE {
                return Err(err(format!(
                    "{element}.{key} is longer than {MAX_VALUE} characters"
                )));
            }
            values.push((key, value.into_owned()));
        }
        Ok(Attributes { element, values })
    }

    fn optional(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, ReportError> {
        self.optional(name).ok_or_else(|| {
            err(format!(
                "{} lacks the required attribute {name}",
                self.element
            ))
        })
    }

    fn invalid(&self, name: &str, value: &str, what: &str) -> ReportError {
        err(format!(
            "{}.{name} must be {what}, not {value:?}",
            self.element
        ))
    }

    /// A required string that is not empty.
    fn text(&self, name: &str) -> Result<String, ReportError> {
        let value = self.required(name)?;
        if value.trim().is_empty() {
            return Err(self.invalid(name, value, "a non-empty string"));
        }
        Ok(value.to_owned())
    }

    fn guid(&self, name: &str, value: &str) -> Result<Uuid, ReportError> {
        Uuid::parse_str(value.trim()).map_err(|_| self.invalid(name, value, "a GUID"))
    }

    fn unsigned_byte(&self, name: &str, value: &str) -> Result<i32, ReportError> {
        value
            .trim()
            .parse::<u8>()
            .map(i32::from)
            .map_err(|_| self.invalid(name, value, "an unsigned byte (0-255)"))
    }

    fn date_time(&self, name: &str, value: &str) -> Result<DateTime<Utc>, ReportError> {
        let value_trimmed = value.trim();
        DateTime::parse_from_rfc3339(value_trimmed)
            .map(|d| d.with_timezone(&Utc))
            .or_else(|_| {
                // xs:dateTime without a zone; MS-VAPR's times are UTC.
                NaiveDateTime::parse_from_str(value_trimmed, "%Y-%m-%dT%H:%M:%S%.f")
                    .map(|d| d.and_utc())
            })
            .map_err(|_| self.invalid(name, value, "an xs:dateTime"))
    }

    /// Four dotted numbers, each at most `max`.
    fn version(&self, name: &str, value: &str, max: u32) -> Result<String, ReportError> {
        let parts: Vec<&str> = value.split('.').collect();
        let ok = parts.len() == 4
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.bytes().all(|b| b.is_ascii_digit())
                    && p.parse::<u32>().is_ok_and(|n| n <= max)
            });
        if !ok {
            return Err(self.invalid(name, value, &format!("four dotted numbers of 0-{max}")));
        }
        Ok(value.to_owned())
    }
}

fn client_information(a: &Attributes<'_>) -> Result<ClientInformation, ReportError> {
    let host_name = a.text("Host")?;
    let client_version = a.version("Ver", a.required("Ver")?, u32::from(u16::MAX))?;
    let processor_arch = a.required("ProcessorArch")?;
    if !matches!(processor_arch, "x86" | "x64") {
        return Err(a.invalid("ProcessorArch", processor_arch, "x86 or x64"));
    }
    let os_version = a.required("OSVer")?;
    let decimal = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ok = match os_version.split_once('.') {
        Some((major, minor)) => decimal(major) && decimal(minor),
        None => decimal(os_version),
    };
    if !ok {
        return Err(a.invalid("OSVer", os_version, "a decimal (major.minor)"));
    }
    let os_service_pack = a.unsigned_byte("OSServicePack", a.required("OSServicePack")?)?;
    let os_type = a.required("OSType")?;
    if !matches!(os_type, "Client" | "Server") {
        return Err(a.invalid("OSType", os_type, "Client or Server"));
    }
    Ok(ClientInformation {
        host_name,
        client_version,
        processor_arch: processor_arch.to_owned(),
        os_version: os_version.to_owned(),
        os_service_pack,
        os_type: os_type.to_owned(),
    })
}

fn package_information(a: &Attributes<'_>) -> Result<PackageInformation, ReportError> {
    Ok(PackageInformation {
        package_id: a.guid("Guid", a.required("Guid")?)?,
        version_id: a.guid("VerGuid", a.required("VerGuid")?)?,
        name: a.text("Name")?,
        version: a
            .optional("Ver")
            .map(|v| a.version("Ver", v, u32::MAX))
            .transpose()?,
        source: a.optional("Source").map(str::to_owned),
        percent_cached: a
            .optional("PctCached")
            .map(|v| a.unsigned_byte("PctCached", v))
            .transpose()?,
    })
}

fn application_usage(a: &Attributes<'_>) -> Result<ApplicationUsage, ReportError> {
    let launch_status = a.required("LaunchStatus")?;
    let status_part = |s: &str| {
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        !digits.is_empty() && digits.len() <= 10 && digits.bytes().all(|b| b.is_ascii_hexdigit())
    };
    if !launch_status
        .split_once('-')
        .is_some_and(|(x, y)| status_part(x) && status_part(y))
    {
        return Err(a.invalid("LaunchStatus", launch_status, "two numbers joined by '-'"));
    }
    Ok(ApplicationUsage {
        application: a.text("Name")?,
        application_version: a.version("Ver", a.required("Ver")?, u32::MAX)?,
        server: a.required("Server")?.to_owned(),
        user: a.text("User")?,
        package_version_id: a.guid("PackageVersion", a.required("PackageVersion")?)?,
        connection_group_version_id: a
            .optional("ConnectionGroupVersion")
            .map(|v| a.guid("ConnectionGroupVersion", v))
            .transpose()?,
        launched_at: a.date_time("Launched", a.required("Launched")?)?,
        launch_status: launch_status.to_owned(),
        shutdown_at: a
            .optional("Shutdown")
            .map(|v| a.date_time("Shutdown", v))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constructed MS-VAPR example (see the fixture's README).
    const EXAMPLE: &str = include_str!("../../tests/fixtures/reporting/SetReport.xml");

    fn utf16(text: &str, bom: bool, big_endian: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let units = bom.then_some(0xFEFF).into_iter().chain(text.encode_utf16());
        for unit in units {
            if big_endian {
                out.extend(unit.to_be_bytes());
            } else {
                out.extend(unit.to_le_bytes());
            }
        }
        out
    }

    fn body(client: &str, packages: &str, records: &str) -> String {
        format!(
            r#"<CLIENT_DATA Host="pc1" Ver="5.1.104.0" ProcessorArch="x64" OSVer="6.1" OSServicePack="1" OSType="Client" {client}><PKG_LIST>{packages}</PKG_LIST><APP_RECORDS>{records}</APP_RECORDS></CLIENT_DATA>"#
        )
    }

    const PACKAGE: &str = r#"<PKG_DATA Guid="{28115343-06e2-44dc-a327-3a0b9b868bda}" VerGuid="{5d03c08f-51dc-4026-8cf9-15ebe3d65a72}" Name="P"/>"#;

    fn record(extra: &str) -> String {
        format!(
            r#"<APP_RECORD Name="A" Ver="1.0.0.0" Server="s" User="CORP\bob" PackageVersion="5d03c08f-51dc-4026-8cf9-15ebe3d65a72" Launched="2016-03-01T08:01:02Z" LaunchStatus="0-0" {extra}/>"#
        )
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_example_reads_whole() {
        let report = parse(&decode(EXAMPLE.as_bytes()).unwrap()).unwrap();
        assert_eq!(report.client.host_name, "pc0042.corp.example.com");
        assert_eq!(report.client.os_service_pack, 1);
        assert_eq!(report.packages.len(), 1);
        let package = &report.packages[0];
        assert_eq!(
            package.package_id,
            Uuid::parse_str("28115343-06e2-44dc-a327-3a0b9b868bda").unwrap()
        );
        assert_eq!(package.percent_cached, Some(37));
        assert_eq!(package.source.as_deref(), Some(r"\\server\share\file.appv"));
        let launch = &report.usage[0];
        assert_eq!(launch.user, r"CORP\alice");
        assert_eq!(launch.launched_at.to_rfc3339(), "2016-03-01T08:01:02+00:00");
        assert!(launch.shutdown_at.is_some());
        assert_eq!(launch.connection_group_version_id, None);
    }

    #[test]
    fn utf16_with_and_without_a_bom_and_utf8_decode_alike() {
        for bytes in [
            utf16(EXAMPLE, false, false),
            utf16(EXAMPLE, true, false),
            utf16(EXAMPLE, false, true),
            utf16(EXAMPLE, true, true),
            [&[0xEF, 0xBB, 0xBF][..], EXAMPLE.as_bytes()].concat(),
            EXAMPLE.as_bytes().to_vec(),
        ] {
            assert_eq!(decode(&bytes).unwrap(), EXAMPLE);
        }
        // The example starts with a comment; a body starting at the root element too.
        let bare = body("", PACKAGE, &record(""));
        assert_eq!(decode(&utf16(&bare, false, false)).unwrap(), bare);
    }

    #[test]
    fn broken_encodings_are_refused() {
        assert!(decode(&[0xFF, 0xFE, b'<']).is_err());
        assert!(decode(&[0xFF, 0xFE, 0x00, 0xD8, b'<', 0]).is_err());
        assert!(decode(&[b'<', 0xC3, 0x28]).is_err());
    }

    #[test]
    fn optional_attributes_may_be_left_out_or_given() {
        let report = parse(&body("", PACKAGE, &record(""))).unwrap();
        let package = &report.packages[0];
        assert_eq!(
            (package.version.as_deref(), package.percent_cached),
            (None, None)
        );
        assert_eq!(report.usage[0].shutdown_at, None);
        let report = parse(&body(
            "",
            PACKAGE,
            &record(
                r#"ConnectionGroupVersion="11111111-2222-3333-4444-555555555555" Shutdown="2016-03-01T09:00:00""#,
            ),
        ))
        .unwrap();
        let launch = &report.usage[0];
        assert!(launch.connection_group_version_id.is_some());
        assert_eq!(
            launch.shutdown_at.unwrap().to_rfc3339(),
            "2016-03-01T09:00:00+00:00"
        );
    }

    #[test]
    fn empty_lists_are_accepted() {
        let report = parse(&body("", "", "")).unwrap();
        assert!(report.packages.is_empty() && report.usage.is_empty());
        let report =
            parse(r#"<CLIENT_DATA Host="h" Ver="1.2.3.4" ProcessorArch="x86" OSVer="10" OSServicePack="0" OSType="Server"><PKG_LIST/><APP_RECORDS/></CLIENT_DATA>"#)
                .unwrap();
        assert_eq!(report.client.os_type, "Server");
    }

    #[test]
    fn missing_elements_and_attributes_are_named() {
        let text = r#"<CLIENT_DATA Host="h" Ver="1.2.3.4" ProcessorArch="x86" OSVer="10" OSServicePack="0" OSType="Server"><PKG_LIST/></CLIENT_DATA>"#;
        assert_eq!(
            error(text),
            "CLIENT_DATA lacks the required element APP_RECORDS"
        );
        let text = r#"<CLIENT_DATA Host="h" Ver="1.2.3.4" ProcessorArch="x86" OSVer="10" OSServicePack="0" OSType="Server"><APP_RECORDS/></CLIENT_DATA>"#;
        assert_eq!(
            error(text),
            "CLIENT_DATA lacks the required element PKG_LIST"
        );
        assert_eq!(
            error("<!-- nothing -->"),
            "the document lacks the required element CLIENT_DATA"
        );
        let no_user = record("").replace(r#"User="CORP\bob""#, "");
        assert_eq!(
            error(&body("", PACKAGE, &no_user)),
            "APP_RECORD lacks the required attribute User"
        );
        let no_guid = PACKAGE.replace("Guid=\"{28115343-06e2-44dc-a327-3a0b9b868bda}\"", "");
        assert_eq!(
            error(&body("", &no_guid, "")),
            "PKG_DATA lacks the required attribute Guid"
        );
    }

    #[test]
    fn types_are_checked() {
        let cases = [
            (
                record("").replace("2016-03-01T08:01:02Z", "yesterday"),
                "APP_RECORD.Launched",
            ),
            (
                record("").replace("5d03c08f-51dc", "zzz"),
                "APP_RECORD.PackageVersion",
            ),
            (record("").replace("0-0", "ok"), "APP_RECORD.LaunchStatus"),
            (record("").replace("1.0.0.0", "1.0"), "APP_RECORD.Ver"),
        ];
        for (record, named) in cases {
            let message = error(&body("", PACKAGE, &record));
            assert!(message.starts_with(named), "{message}");
        }
        let message = error(&body(
            "",
            &PACKAGE.replace("/>", r#" PctCached="300"/>"#),
            "",
        ));
        assert!(message.starts_with("PKG_DATA.PctCached"), "{message}");
        let message = error(&body("", PACKAGE, "").replace("6.1", "six"));
        assert!(message.starts_with("CLIENT_DATA.OSVer"), "{message}");
        let message = error(&body("", PACKAGE, "").replace("5.1.104.0", "5.1.104.70000"));
        assert!(message.starts_with("CLIENT_DATA.Ver"), "{message}");
    }

    #[test]
    fn malformed_or_hostile_documents_are_refused() {
        let good = body("", PACKAGE, &record(""));
        assert!(error(&good[..good.len() - 5]).contains("CLIENT_DATA"));
        assert!(error(&good.replace("</APP_RECORDS>", "</APP_RECORDZ>")).contains("malformed XML"));
        let doctype = format!("<!DOCTYPE CLIENT_DATA [<!ENTITY x \"y\">]>{good}");
        assert_eq!(error(&doctype), "a DOCTYPE is not allowed");
        assert_eq!(
            error(&good.replace("<PKG_LIST>", "<PKG_LIST><X/>")),
            "element X is not allowed in PKG_LIST"
        );
        assert_eq!(
            error(&good.replace("<PKG_LIST>", "<PKG_LIST>text")),
            "text is not allowed in PKG_LIST"
        );
        assert!(error(&format!("{good}{good}")).contains("follows CLIENT_DATA"));
        assert!(error("<PKG_LIST/>").contains("root element must be CLIENT_DATA"));
        assert!(error("</CLIENT_DATA>").contains("malformed XML"));
        assert!(error(&format!("{good}</CLIENT_DATA>")).contains("malformed XML"));
    }

    #[test]
    fn bounds_hold() {
        let many = PACKAGE.repeat(MAX_ELEMENTS);
        assert_eq!(
            error(&body("", &many, "")),
            format!("more than {MAX_ELEMENTS} elements")
        );
        let attributes: String = (0..MAX_ATTRIBUTES).map(|i| format!(" a{i}=\"\"")).collect();
        assert!(error(&body(&attributes, "", "")).contains("more than 32 attributes"));
        let long = "x".repeat(MAX_VALUE + 1);
        let message = error(&body(
            "",
            &PACKAGE.replace("Name=\"P\"", &format!("Name=\"{long}\"")),
            "",
        ));
        assert_eq!(
            message,
            format!("PKG_DATA.Name is longer than {MAX_VALUE} characters")
        );
    }
}
