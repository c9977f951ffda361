//! The numbered SQL install scripts, embedded from `sql/`, and the schema version check.
//!
//! The files a DBA runs by hand with `psql` are the very files `avail db install`
//! runs; each records its own version in `schema_version`, so either way of
//! installing leaves the same database.

use std::collections::BTreeSet;

use crate::{Result, StoreError};
use avail_model::{PrincipalKind, SchemaStatus};

/// One install script.
pub(crate) struct Script {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Which of the two databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    /// The Management DB.
    Management,
    /// The Reporting DB.
    Reporting,
}

impl std::fmt::Display for DatabaseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DatabaseKind::Management => "Management DB",
            DatabaseKind::Reporting => "Reporting DB",
        })
    }
}

macro_rules! scripts {
    ($dir:literal: $($version:literal $name:literal),* $(,)?) => {
        &[$(Script {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../../sql/", $dir, "/", $name, ".sql")),
        }),*]
    };
}

const PG_MANAGEMENT: &[Script] =
    scripts!("postgres/management": 1 "001_initial", 2 "002_configuration_revisions");
const PG_REPORTING: &[Script] =
    scripts!("postgres/reporting": 1 "001_initial", 2 "002_usage_without_key");
const SQLITE_MANAGEMENT: &[Script] =
    scripts!("sqlite/management": 1 "001_initial", 2 "002_configuration_revisions");
const SQLITE_REPORTING: &[Script] =
    scripts!("sqlite/reporting": 1 "001_initial", 2 "002_usage_without_key");

pub(crate) fn postgres(kind: DatabaseKind) -> &'static [Script] {
    match kind {
        DatabaseKind::Management => PG_MANAGEMENT,
        DatabaseKind::Reporting => PG_REPORTING,
    }
}

pub(crate) fn sqlite(kind: DatabaseKind) -> &'static [Script] {
    match kind {
        DatabaseKind::Management => SQLITE_MANAGEMENT,
        DatabaseKind::Reporting => SQLITE_REPORTING,
    }
}

/// The status of a database whose installed version is `installed`.
pub(crate) fn status(scripts: &[Script], installed: i32) -> SchemaStatus {
    SchemaStatus {
        installed,
        known: scripts.last().map_or(0, |s| s.version),
    }
}

/// Refuse a database this Avail cannot use, with a message saying what to do.
pub(crate) fn require_current(kind: DatabaseKind, status: &SchemaStatus) -> Result<()> {
    if status.installed == 0 {
        Err(StoreError::Schema(format!(
            "the {kind} has no Avail schema; install it with `avail db install` or the scripts in sql/ (see sql/README.md)"
        )))
    } else if status.installed > status.known {
        Err(StoreError::Schema(format!(
            "the {kind} has schema version {}, newer than the {} this Avail knows; upgrade Avail",
            status.installed, status.known
        )))
    } else if status.installed < status.known {
        Err(StoreError::Schema(format!(
            "the {kind} has schema version {}, older than {}; run `avail db install` to upgrade it",
            status.installed, status.known
        )))
    } else {
        Ok(())
    }
}

/// Where a principal lives: (its table, its group-membership table, that table's member column).
pub(crate) fn principal_table(kind: PrincipalKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        PrincipalKind::User => ("users", "group_users", "user_name"),
        PrincipalKind::Machine => ("machines", "group_machines", "machine_name"),
        PrincipalKind::Group => ("groups", "group_groups", "member_name"),
    }
}

/// Group names as a set: sorted, without duplicates.
pub(crate) fn group_set(groups: &[String]) -> Vec<String> {
    groups
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `NotFound` naming every group of `missing` (sorted), e.g. "group staff not found".
pub(crate) fn missing_groups(missing: &[String]) -> StoreError {
    StoreError::NotFound(match missing {
        [one] => format!("group {one}"),
        many => format!("groups {}", many.join(", ")),
    })
}

/// `Ok(())` when a principal that exists already is a direct member of exactly
/// `wanted` (both sorted sets); else a conflict that names the difference.
pub(crate) fn same_groups(
    what: &str,
    name: &str,
    current: &[String],
    wanted: &[String],
) -> Result<()> {
    let not_in: Vec<&str> = wanted
        .iter()
        .filter(|g| !current.contains(g))
        .map(String::as_str)
        .collect();
    let also_in: Vec<&str> = current
        .iter()
        .filter(|g| !wanted.contains(g))
        .map(String::as_str)
        .collect();
    if not_in.is_empty() && also_in.is_empty() {
        return Ok(());
    }
    let mut difference = Vec::new();
    if !not_in.is_empty() {
        difference.push(format!("it is not in {}", not_in.join(", ")));
    }
    if !also_in.is_empty() {
        difference.push(format!("it is also in {}", also_in.join(", ")));
    }
    Err(StoreError::Conflict(format!(
        "{what} {name} already exists with other groups: {}",
        difference.join("; ")
    )))
}
