//! The publishing catalog: everything a publishing node needs to authenticate a
//! client and answer "what does principal P receive", with no database.
//!
//! [`CatalogSnapshot`] is the data, read from the Management DB in one
//! consistent read and versioned by its change sequence; it is what is
//! serialised (a [`Catalog`] serialises as its snapshot and rebuilds its
//! indexes when deserialised). [`Catalog`] adds the indexes.
//!
//! Resolution is indexed, never a scan of the directory per request: when a
//! catalog is built (that is, whenever the change sequence moves), each group's
//! entitlements are collected (group → package versions and connection
//! groups), each user's and machine's groups are resolved through nested groups
//! (cycles included), and the union of those groups' entitlements is stored per
//! principal as one shared [`Entitlements`] value — principals with the same
//! entitlements share one `Arc`, so a renderer can memoise its document per
//! entitlement set. A request then costs one lookup per principal and, for a
//! user on a machine, one union of two sets ([`Catalog::receives`]).
//!
//! A user's [`Entitlements`] also say which user configuration (MS-VAPR
//! `UserConfiguration`) each received package carries for that user: among the
//! user's groups entitled to the package that carry one, the first group by
//! name wins, and when those groups carry two or more different documents the
//! choice is marked as a conflict ([`UserConfigChoice`]). The choice is part of
//! the entitlement set, so equal `Entitlements` still mean an equal publishing
//! document. A machine's entitlements choose none: machine (global) publishing
//! carries no user configuration.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{ConnectionGroup, Entitlement, NewPackageVersion, Principal};
use crate::ids::{ConnectionGroupId, PackageId, VersionId};

/// What the Management DB holds for publishing, as of one change sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogSnapshot {
    /// The change sequence the snapshot was read at.
    pub sequence: i64,
    /// Published package versions (at most one per package), oldest first.
    pub packages: Vec<PublishedPackage>,
    /// Published connection groups, by priority then name, members in order.
    pub connection_groups: Vec<ConnectionGroup>,
    /// Every group, sorted.
    pub groups: Vec<String>,
    /// Every user, sorted.
    pub users: Vec<String>,
    /// Every machine with the hash of its credential, sorted by name.
    pub machines: Vec<MachineCredential>,
    /// Every direct membership, sorted.
    pub memberships: Vec<Membership>,
}

/// A published package version with what its clients need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPackage {
    /// The version: ids, name, content path, applications.
    pub version: NewPackageVersion,
    /// Its deployment configuration, if any.
    pub deployment_config: Option<Configuration>,
    /// The groups entitled to it, each with its user configuration, sorted.
    pub entitlements: Vec<Entitlement>,
    /// The user configuration of each entitled group that has one, by group,
    /// with when it was last set and its revision. A catalog copy written
    /// before schema version 2 has none (and so renders no `UserConfiguration`
    /// until the next catalog).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_configs: BTreeMap<String, Configuration>,
}

/// A configuration document and when it last changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// The XML document.
    pub document: String,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
    /// Grows with each set of the configuration (MS-VAPR's `ConfigurationId`
    /// is this mod 65536); 0 in a catalog copy written before schema version 2.
    #[serde(default)]
    pub revision: i64,
}

/// A machine and the hash of its credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineCredential {
    /// The machine.
    pub name: String,
    /// The hash of its credential, as the management service stored it.
    pub credential_hash: String,
}

/// A direct membership: `member` is in `group`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Membership {
    /// The group.
    pub group: String,
    /// The user, machine or group in it.
    pub member: Principal,
}

/// What a principal receives: published package versions and published
/// connection groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entitlements {
    /// Published package versions.
    pub packages: BTreeSet<VersionId>,
    /// Published connection groups.
    pub connection_groups: BTreeSet<ConnectionGroupId>,
    /// For a user: the user configuration chosen for each received package
    /// that has one for the user's groups. Empty for a machine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_configs: BTreeMap<VersionId, UserConfigChoice>,
}

/// Which entitled group's user configuration a user receives for a package.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserConfigChoice {
    /// The group whose configuration wins: the first by name among the
    /// user's groups entitled to the package that carry one.
    pub group: String,
    /// Whether those groups carry two or more different configurations
    /// (MS-VAPR `UserConfiguration/@Conflict`).
    pub conflict: bool,
}

impl Entitlements {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty() && self.connection_groups.is_empty()
    }

    fn extend(&mut self, other: &Entitlements) {
        self.packages.extend(other.packages.iter().copied());
        self.connection_groups
            .extend(other.connection_groups.iter().copied());
        for (v, choice) in &other.user_configs {
            self.user_configs
                .entry(*v)
                .or_insert_with(|| choice.clone());
        }
    }
}

/// The catalog with its indexes. Built once per change sequence, then only read.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "CatalogSnapshot")]
pub struct Catalog {
    snapshot: CatalogSnapshot,
    packages: HashMap<VersionId, usize>,
    published: HashMap<PackageId, VersionId>,
    connection_groups: HashMap<ConnectionGroupId, usize>,
    machines: HashMap<String, String>,
    groups_of: HashMap<Principal, Vec<String>>,
    receives: HashMap<Principal, Arc<Entitlements>>,
    nothing: Arc<Entitlements>,
}

impl From<CatalogSnapshot> for Catalog {
    fn from(snapshot: CatalogSnapshot) -> Self {
        Catalog::new(snapshot)
    }
}

impl Serialize for Catalog {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.snapshot.serialize(serializer)
    }
}

impl PartialEq for Catalog {
    fn eq(&self, other: &Self) -> bool {
        self.snapshot == other.snapshot
    }
}

impl Catalog {
    /// Build the indexes and resolve every user's and machine's entitlements.
    pub fn new(snapshot: CatalogSnapshot) -> Catalog {
        let packages: HashMap<VersionId, usize> = snapshot
            .packages
            .iter()
            .enumerate()
            .map(|(i, p)| (p.version.version_id, i))
            .collect();
        let published = snapshot
            .packages
            .iter()
            .map(|p| (p.version.package_id, p.version.version_id))
            .collect();
        let connection_groups = snapshot
            .connection_groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.id, i))
            .collect();
        let machines = snapshot
            .machines
            .iter()
            .map(|m| (m.credential_hash.clone(), m.name.clone()))
            .collect();

        // group → what it is entitled to, directly.
        let mut per_group: HashMap<&str, Entitlements> = HashMap::new();
        for p in &snapshot.packages {
            for e in &p.entitlements {
                per_group
                    .entry(e.group.as_str())
                    .or_default()
                    .packages
                    .insert(p.version.version_id);
            }
        }
        for g in &snapshot.connection_groups {
            for name in &g.entitled_groups {
                per_group
                    .entry(name.as_str())
                    .or_default()
                    .connection_groups
                    .insert(g.id);
            }
        }
        // member → the groups it is directly in.
        let mut parents: HashMap<&Principal, Vec<&str>> = HashMap::new();
        for m in &snapshot.memberships {
            parents.entry(&m.member).or_default().push(&m.group);
        }

        let mut groups_of = HashMap::new();
        let mut receives = HashMap::new();
        let mut interned: HashMap<Entitlements, Arc<Entitlements>> = HashMap::new();
        let principals = snapshot
            .users
            .iter()
            .map(|u| Principal::User(u.clone()))
            .chain(
                snapshot
                    .machines
                    .iter()
                    .map(|m| Principal::Machine(m.name.clone())),
            );
        for principal in principals {
            let groups = resolve_groups(&parents, &principal);
            let mut set = Entitlements::default();
            for g in &groups {
                if let Some(e) = per_group.get(g.as_str()) {
                    set.extend(e);
                }
            }
            if matches!(principal, Principal::User(_)) {
                set.user_configs = choose_user_configs(&snapshot, &packages, &per_group, &groups);
            }
            let shared = interned
                .entry(set)
                .or_insert_with_key(|set| Arc::new(set.clone()))
                .clone();
            receives.insert(principal.clone(), shared);
            groups_of.insert(principal, groups);
        }

        Catalog {
            snapshot,
            packages,
            published,
            connection_groups,
            machines,
            groups_of,
            receives,
            nothing: Arc::new(Entitlements::default()),
        }
    }

    /// The change sequence the catalog was read at.
    pub fn sequence(&self) -> i64 {
        self.snapshot.sequence
    }

    /// The data the catalog was built from.
    pub fn snapshot(&self) -> &CatalogSnapshot {
        &self.snapshot
    }

    /// A published package version.
    pub fn package(&self, version_id: VersionId) -> Option<&PublishedPackage> {
        self.packages
            .get(&version_id)
            .map(|&i| &self.snapshot.packages[i])
    }

    /// The published version of a package.
    pub fn published_version(&self, package_id: PackageId) -> Option<VersionId> {
        self.published.get(&package_id).copied()
    }

    /// A published connection group.
    pub fn connection_group(&self, id: ConnectionGroupId) -> Option<&ConnectionGroup> {
        self.connection_groups
            .get(&id)
            .map(|&i| &self.snapshot.connection_groups[i])
    }

    /// The user configuration `group` carries for a published package version.
    pub fn user_config(&self, version_id: VersionId, group: &str) -> Option<&Configuration> {
        self.package(version_id)?.user_configs.get(group)
    }

    /// The machine a credential hash belongs to.
    pub fn machine_by_credential(&self, credential_hash: &str) -> Option<&str> {
        self.machines.get(credential_hash).map(String::as_str)
    }

    /// Whether the user or machine exists (groups: whether the group exists).
    pub fn contains(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Group(g) => self.snapshot.groups.binary_search(g).is_ok(),
            other => self.receives.contains_key(other),
        }
    }

    /// Every group a user or machine is in, directly or through nested groups,
    /// sorted; empty for an unknown principal.
    pub fn groups_of(&self, principal: &Principal) -> &[String] {
        self.groups_of.get(principal).map_or(&[], Vec::as_slice)
    }

    /// What one user or machine receives through its groups; nothing for an
    /// unknown principal or a group. Principals with equal entitlements share
    /// one `Arc`.
    pub fn entitlements_of(&self, principal: &Principal) -> Arc<Entitlements> {
        self.receives
            .get(principal)
            .unwrap_or(&self.nothing)
            .clone()
    }

    /// Whether a client that receives the package versions `packages` can
    /// assemble the connection group `id`: it is published and each of its
    /// required members' published version is among `packages` (and is the
    /// version the member names, if it names one).
    pub fn assemblable(&self, id: ConnectionGroupId, packages: &BTreeSet<VersionId>) -> bool {
        self.connection_group(id).is_some_and(|g| {
            g.members.iter().filter(|m| !m.optional).all(|m| {
                self.published_version(m.package_id).is_some_and(|v| {
                    packages.contains(&v) && m.version_id.is_none_or(|want| want == v)
                })
            })
        })
    }

    /// What a client receives: its machine's entitlements (App-V's global
    /// publishing) and, with a user, the user's as well. An unknown user or
    /// machine adds nothing. A connection group is received only when every
    /// required member package is received too, so a client never gets a group
    /// it cannot assemble.
    pub fn receives(&self, machine: Option<&str>, user: Option<&str>) -> Arc<Entitlements> {
        let machine = machine.map(|m| self.entitlements_of(&Principal::Machine(m.into())));
        let user = user.map(|u| self.entitlements_of(&Principal::User(u.into())));
        let union = match (machine, user) {
            (None, None) => return self.nothing.clone(),
            (Some(one), None) | (None, Some(one)) => one,
            (Some(m), Some(u)) if Arc::ptr_eq(&m, &u) || u.is_empty() => m,
            (Some(m), Some(u)) if m.is_empty() => u,
            (Some(m), Some(u)) => {
                let mut both = (*m).clone();
                both.extend(&u);
                Arc::new(both)
            }
        };
        let assemblable = |id: &ConnectionGroupId| self.assemblable(*id, &union.packages);
        if union.connection_groups.iter().all(assemblable) {
            union
        } else {
            Arc::new(Entitlements {
                packages: union.packages.clone(),
                connection_groups: union
                    .connection_groups
                    .iter()
                    .copied()
                    .filter(assemblable)
                    .collect(),
                user_configs: union.user_configs.clone(),
            })
        }
    }
}

/// The user configuration each package carries for a user in `groups` (sorted):
/// the first group by name entitled to the package with one wins; two or more
/// different documents among those groups are a conflict.
fn choose_user_configs(
    snapshot: &CatalogSnapshot,
    packages: &HashMap<VersionId, usize>,
    per_group: &HashMap<&str, Entitlements>,
    groups: &[String],
) -> BTreeMap<VersionId, UserConfigChoice> {
    let mut chosen: BTreeMap<VersionId, (UserConfigChoice, &str)> = BTreeMap::new();
    for g in groups {
        let Some(e) = per_group.get(g.as_str()) else {
            continue;
        };
        for v in &e.packages {
            let Some(config) = packages
                .get(v)
                .and_then(|&i| snapshot.packages[i].user_configs.get(g))
            else {
                continue;
            };
            match chosen.get_mut(v) {
                None => {
                    let choice = UserConfigChoice {
                        group: g.clone(),
                        conflict: false,
                    };
                    chosen.insert(*v, (choice, config.document.as_str()));
                }
                Some((choice, document)) => {
                    if *document != config.document {
                        choice.conflict = true;
                    }
                }
            }
        }
    }
    chosen.into_iter().map(|(v, (c, _))| (v, c)).collect()
}

/// The groups `principal` is in, directly or through nested groups, sorted.
/// A cycle of groups ends where it starts.
fn resolve_groups(parents: &HashMap<&Principal, Vec<&str>>, principal: &Principal) -> Vec<String> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut queue: VecDeque<&str> = parents
        .get(principal)
        .into_iter()
        .flatten()
        .copied()
        .collect();
    while let Some(group) = queue.pop_front() {
        if seen.insert(group) {
            let as_member = Principal::Group(group.to_owned());
            queue.extend(parents.get(&as_member).into_iter().flatten().copied());
        }
    }
    let mut groups: Vec<String> = seen.into_iter().map(str::to_owned).collect();
    groups.sort();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ConnectionGroupMember;
    use uuid::Uuid;

    fn package(n: u128, groups: &[&str]) -> PublishedPackage {
        PublishedPackage {
            version: NewPackageVersion {
                package_id: PackageId(Uuid::from_u128(n)),
                version_id: VersionId(Uuid::from_u128(0x100 + n)),
                name: format!("P{n}"),
                version: "1.0.0.0".into(),
                content_path: format!("packages/{n}/{n}.appv"),
                size: 1,
                sha256: "0".repeat(64),
                block_map_sha256: None,
                target_oses: vec![],
                applications: vec![],
            },
            deployment_config: None,
            entitlements: groups
                .iter()
                .map(|g| Entitlement {
                    group: (*g).into(),
                    user_config: None,
                })
                .collect(),
            user_configs: BTreeMap::new(),
        }
    }

    fn member(group: &str, member: Principal) -> Membership {
        Membership {
            group: group.into(),
            member,
        }
    }

    fn v(n: u128) -> VersionId {
        VersionId(Uuid::from_u128(0x100 + n))
    }

    fn sample() -> Catalog {
        let cg = ConnectionGroup {
            id: ConnectionGroupId(Uuid::from_u128(0xC6)),
            version_id: Uuid::from_u128(0xC7),
            name: "Suite".into(),
            priority: 1,
            members: vec![
                ConnectionGroupMember {
                    package_id: PackageId(Uuid::from_u128(1)),
                    version_id: None,
                    optional: false,
                },
                ConnectionGroupMember {
                    package_id: PackageId(Uuid::from_u128(2)),
                    version_id: Some(v(2)),
                    optional: false,
                },
            ],
            entitled_groups: vec!["staff".into()],
            published: true,
            updated_at: Utc::now(),
        };
        Catalog::new(CatalogSnapshot {
            sequence: 7,
            packages: vec![
                package(1, &["staff"]),
                package(2, &["devs"]),
                package(3, &["lab"]),
            ],
            connection_groups: vec![cg],
            groups: vec![
                "a".into(),
                "b".into(),
                "devs".into(),
                "lab".into(),
                "staff".into(),
            ],
            users: vec!["alice".into(), "bob".into(), "carol".into()],
            machines: vec![MachineCredential {
                name: "pc1".into(),
                credential_hash: "h1".into(),
            }],
            memberships: vec![
                // devs ⊂ staff: alice (devs) gets staff's packages too.
                member("staff", Principal::Group("devs".into())),
                member("devs", Principal::User("alice".into())),
                member("staff", Principal::User("bob".into())),
                member("lab", Principal::Machine("pc1".into())),
                // a ⊂ b ⊂ a ⊂ … and b ⊂ staff: a cycle; carol in a.
                member("a", Principal::Group("b".into())),
                member("b", Principal::Group("a".into())),
                member("staff", Principal::Group("b".into())),
                member("a", Principal::User("carol".into())),
            ],
        })
    }

    #[test]
    fn nested_groups_are_resolved() {
        let c = sample();
        let alice = Principal::User("alice".into());
        assert_eq!(c.groups_of(&alice), ["devs", "staff"]);
        let got = c.entitlements_of(&alice);
        assert_eq!(got.packages, BTreeSet::from([v(1), v(2)]));
        assert_eq!(got.connection_groups.len(), 1);
    }

    #[test]
    fn a_cycle_of_groups_ends() {
        let c = sample();
        let carol = Principal::User("carol".into());
        assert_eq!(c.groups_of(&carol), ["a", "b", "staff"]);
        assert_eq!(c.entitlements_of(&carol).packages, BTreeSet::from([v(1)]));
    }

    #[test]
    fn a_user_on_a_machine_receives_both() {
        let c = sample();
        let machine = c.receives(Some("pc1"), None);
        assert_eq!(machine.packages, BTreeSet::from([v(3)]));
        let both = c.receives(Some("pc1"), Some("alice"));
        assert_eq!(both.packages, BTreeSet::from([v(1), v(2), v(3)]));
        assert_eq!(both.connection_groups.len(), 1);
    }

    #[test]
    fn an_unknown_user_receives_nothing_of_their_own() {
        let c = sample();
        assert!(c.receives(None, Some("mallory")).is_empty());
        assert_eq!(
            *c.receives(Some("pc1"), Some("mallory")),
            *c.receives(Some("pc1"), None)
        );
        assert!(c.groups_of(&Principal::User("mallory".into())).is_empty());
        assert!(!c.contains(&Principal::User("mallory".into())));
    }

    #[test]
    fn a_connection_group_needs_its_required_members() {
        let c = sample();
        // bob is in staff only: entitled to the group and package 1, not package 2.
        let bob = c.receives(None, Some("bob"));
        assert_eq!(bob.packages, BTreeSet::from([v(1)]));
        assert!(bob.connection_groups.is_empty());
    }

    #[test]
    fn equal_entitlements_are_shared_and_machines_authenticate() {
        let c = sample();
        assert!(Arc::ptr_eq(
            &c.entitlements_of(&Principal::User("carol".into())),
            &c.entitlements_of(&Principal::User("bob".into())),
        ));
        assert_eq!(c.machine_by_credential("h1"), Some("pc1"));
        assert_eq!(c.machine_by_credential("h2"), None);
    }

    #[test]
    fn a_catalog_copy_from_before_revisions_still_parses() {
        let mut snapshot = sample().snapshot().clone();
        snapshot.packages[0].deployment_config = Some(Configuration {
            document: "<DeploymentConfiguration/>".into(),
            updated_at: Utc::now(),
            revision: 3,
        });
        let mut json = serde_json::to_value(&snapshot).unwrap();
        let old = json["packages"][0]["deployment_config"]
            .as_object_mut()
            .unwrap();
        assert!(old.remove("revision").is_some());
        assert!(json["packages"][0].get("user_configs").is_none());
        let back: Catalog = serde_json::from_value(json).unwrap();
        let config = back.snapshot().packages[0].deployment_config.as_ref();
        assert_eq!(config.map(|c| c.revision), Some(0));
        assert!(back.snapshot().packages[0].user_configs.is_empty());
    }

    #[test]
    fn a_catalog_serialises_as_its_snapshot() {
        let c = sample();
        let json = serde_json::to_string(&c).unwrap();
        let back: Catalog = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.sequence(), 7);
        assert_eq!(
            back.entitlements_of(&Principal::User("alice".into())),
            c.entitlements_of(&Principal::User("alice".into()))
        );
    }
}
