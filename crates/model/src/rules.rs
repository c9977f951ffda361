//! The domain rules, written once: both database backends and the HTTP layer
//! call these, so that SQLite and PostgreSQL cannot disagree and the SQL keeps
//! only what must be atomic. Each function is pure; the caller turns a refusal
//! (a message for a person) into its own error.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};

use crate::domain::{ClientReport, ConnectionGroupMember, PackageInformation};
use crate::ids::{PackageId, VersionId};

/// Characters no name may contain, and that `avail admin` escapes when it prints
/// text from a server: control characters, and the Unicode characters that are
/// invisible or reorder what follows them — bidirectional embeddings, overrides
/// and isolates (U+202A–U+202E, U+2066–U+2069), marks (U+200E, U+200F,
/// U+061C), zero-width characters (U+200B–U+200D, U+2060–U+2064, U+FEFF) and the
/// line and paragraph separators (U+2028, U+2029). A name with one of them could
/// display in a terminal as a different name.
pub fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Names and labels may not hide what they are: no control characters, no
/// invisible or reordering Unicode ([`is_deceptive`]), so that no name can make a
/// terminal or a log show something else.
pub fn check_chars(what: &str, value: &str) -> Result<(), String> {
    match value.chars().find(|c| is_deceptive(*c)) {
        Some(c) => Err(format!(
            "{what} {value:?} contains U+{:04X}, a control or invisible character that would make it display as something else",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

/// A label (of a token): at most 256 bytes, nothing deceptive.
pub fn check_label(what: &str, value: &str) -> Result<(), String> {
    if value.len() > 256 {
        return Err(format!("{what} is longer than 256 bytes"));
    }
    check_chars(what, value)
}

/// A name of something the API creates (`kind` says what: "user", "group"…):
/// 1–256 bytes, not blank, nothing deceptive, no `/` (names are path segments
/// of the API).
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let what = format!("{kind} name");
    if name.trim().is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    check_label(&what, name)?;
    if name.contains('/') {
        return Err(format!("{what} {name:?} must not contain '/'"));
    }
    Ok(())
}

/// A version named for a package must be one of that package's versions (a
/// connection group member, the version an upgrade starts from).
pub fn check_version_of(
    version_id: VersionId,
    version_package: PackageId,
    package_id: PackageId,
) -> Result<(), String> {
    if version_package == package_id {
        Ok(())
    } else {
        Err(format!(
            "version {version_id} is not a version of package {package_id}"
        ))
    }
}

/// Where a member goes when it is set: its current position if it is a member
/// already, else the end.
pub fn member_position(members: &[ConnectionGroupMember], package_id: PackageId) -> usize {
    members
        .iter()
        .position(|m| m.package_id == package_id)
        .unwrap_or(members.len())
}

/// The member order after moving `package_id` to `position` (0 = highest
/// precedence; past the end means the end), or `None` when it is not a member.
pub fn move_member(
    members: &[ConnectionGroupMember],
    package_id: PackageId,
    position: usize,
) -> Option<Vec<PackageId>> {
    let mut order: Vec<PackageId> = members.iter().map(|m| m.package_id).collect();
    let from = order.iter().position(|p| *p == package_id)?;
    let moved = order.remove(from);
    order.insert(position.min(order.len()), moved);
    Some(order)
}

/// Whether a client's report received at `new` replaces what is stored from a
/// report received at `stored`: the newest report wins, whatever order reports
/// arrive in (a client that resends its queue sends old reports late); of two
/// at the same instant, the later one processed.
pub fn supersedes(new: DateTime<Utc>, stored: Option<DateTime<Utc>>) -> bool {
    stored.is_none_or(|stored| stored <= new)
}

/// Of a batch of reports, the ones that decide each client's state: the newest
/// report per client for its ClientInformation, and the newest report that has
/// a package list for its PackageInformation (App-V clients send the list only
/// when it changed). Keyed by host name, in host-name order, so that a backend
/// that locks clients' rows in this order cannot deadlock with another batch.
#[derive(Debug, Default)]
pub struct LatestPerClient<'a> {
    /// The newest report of each client.
    pub information: BTreeMap<&'a str, &'a ClientReport>,
    /// The newest report with a package list of each client that sent one.
    pub package_lists: BTreeMap<&'a str, &'a ClientReport>,
}

/// Pick [`LatestPerClient`] out of `reports`, by [`supersedes`].
pub fn latest_per_client<'a>(
    reports: impl IntoIterator<Item = &'a ClientReport>,
) -> LatestPerClient<'a> {
    let mut latest = LatestPerClient::default();
    for r in reports {
        let host = r.client.host_name.as_str();
        if supersedes(
            r.received_at,
            latest.information.get(host).map(|l| l.received_at),
        ) {
            latest.information.insert(host, r);
        }
        if !r.packages.is_empty()
            && supersedes(
                r.received_at,
                latest.package_lists.get(host).map(|l| l.received_at),
            )
        {
            latest.package_lists.insert(host, r);
        }
    }
    latest
}

/// A package list without repeats: the first entry for each (package, version) counts.
pub fn distinct_packages(list: &[PackageInformation]) -> impl Iterator<Item = &PackageInformation> {
    let mut seen = HashSet::new();
    list.iter()
        .filter(move |p| seen.insert((p.package_id, p.version_id)))
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn member(n: u128) -> ConnectionGroupMember {
        ConnectionGroupMember {
            package_id: PackageId(Uuid::from_u128(n)),
            version_id: None,
            optional: false,
        }
    }

    #[test]
    fn moving_a_member_clamps_to_the_end() {
        let members = [member(1), member(2), member(3)];
        let id = |n| PackageId(Uuid::from_u128(n));
        let ids = |v: &[u128]| v.iter().map(|n| id(*n)).collect::<Vec<_>>();
        assert_eq!(move_member(&members, id(3), 0), Some(ids(&[3, 1, 2])));
        assert_eq!(move_member(&members, id(1), 99), Some(ids(&[2, 3, 1])));
        assert_eq!(move_member(&members, id(9), 0), None);
        assert_eq!(member_position(&members, id(2)), 1);
        assert_eq!(member_position(&members, id(9)), 3);
    }

    #[test]
    fn the_newest_report_of_each_client_wins_in_any_order() {
        use chrono::TimeZone;
        let report = |n: u32, host: &str, with_packages: bool| ClientReport {
            id: Uuid::from_u128(n.into()),
            received_at: Utc.with_ymd_and_hms(2026, 3, n, 12, 0, 0).unwrap(),
            source_host: "10.0.0.1".into(),
            body: String::new(),
            client: crate::domain::ClientInformation {
                host_name: host.into(),
                client_version: String::new(),
                processor_arch: String::new(),
                os_version: String::new(),
                os_service_pack: 0,
                os_type: String::new(),
            },
            packages: if with_packages {
                vec![PackageInformation {
                    package_id: Uuid::from_u128(1),
                    version_id: Uuid::from_u128(2),
                    name: "p".into(),
                    version: None,
                    source: None,
                    percent_cached: None,
                }]
            } else {
                Vec::new()
            },
            usage: Vec::new(),
        };
        let batch = [
            report(3, "pc1", true),
            report(5, "pc1", false),
            report(1, "pc1", true),
            report(2, "pc2", true),
        ];
        let latest = latest_per_client(&batch);
        let n = |m: &BTreeMap<&str, &ClientReport>, h| m[h].id.as_u128();
        assert_eq!(n(&latest.information, "pc1"), 5);
        assert_eq!(n(&latest.package_lists, "pc1"), 3);
        assert_eq!(n(&latest.information, "pc2"), 2);
        assert!(supersedes(batch[0].received_at, Some(batch[2].received_at)));
        assert!(!supersedes(
            batch[2].received_at,
            Some(batch[0].received_at)
        ));
    }

    #[test]
    fn names_that_display_as_something_else_are_refused() {
        assert!(check_name("user", "alice").is_ok());
        assert!(check_name("user", " ").is_err());
        assert!(check_name("user", "a/b").is_err());
        assert!(check_name("user", "ali\u{202e}ce").is_err());
        assert!(check_label("label", &"x".repeat(257)).is_err());
    }
}
