//! The changes between two publishing catalogs, so that a publishing node
//! following a management server receives what changed since the catalog it
//! holds instead of the whole catalog after every change.
//!
//! [`CatalogDelta::between`] compares two [`CatalogSnapshot`]s collection by
//! collection (packages keyed by `VersionId`, connection groups by id,
//! machines by name; groups, users and memberships are their own keys): the
//! items added or changed are sent whole, the items removed by key.
//! [`CatalogDelta::apply`] rebuilds the newer snapshot from the older one and
//! refuses a base at another sequence; its result equals the newer snapshot
//! exactly, order included: a collection with a sort rule (see the fields of
//! [`CatalogSnapshot`]) is sorted by it, packages keep their order with new ones
//! last, and where that would not give the newer snapshot's order (packages
//! are ordered by when they were imported, which they do not carry) the delta
//! carries the order of the keys as well.
//!
//! [`CatalogUpdate`] is what the management API's catalog sync
//! (`GET /api/v1/catalog?since=N&delta=true`) answers with. Its JSON shape:
//!
//! ```json
//! {"kind": "snapshot", "sequence": 42, "packages": [...], "connection_groups": [...],
//!  "groups": [...], "users": [...], "machines": [...], "memberships": [...]}
//!
//! {"kind": "delta", "from": 41, "to": 42,
//!  "packages":          {"changed": [PublishedPackage...], "removed": ["<VersionId>"...], "order": ["<VersionId>"...]},
//!  "connection_groups": {"changed": [ConnectionGroup...],  "removed": ["<ConnectionGroupId>"...]},
//!  "groups":            {"changed": ["name"...],           "removed": ["name"...]},
//!  "users":             {"changed": ["name"...],           "removed": ["name"...]},
//!  "machines":          {"changed": [MachineCredential...], "removed": ["name"...]},
//!  "memberships":       {"changed": [Membership...],       "removed": [Membership...]}}
//! ```
//!
//! A snapshot is the [`CatalogSnapshot`] with `"kind": "snapshot"` beside its
//! fields. In a delta, a collection without changes is left out, and so are an
//! empty `changed` or `removed` and an `order` that is not needed.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogSnapshot, MachineCredential, Membership, PublishedPackage};
use crate::domain::ConnectionGroup;
use crate::ids::{ConnectionGroupId, VersionId};

/// What a catalog sync answers with: the whole catalog, or the changes since
/// the sequence the caller holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CatalogUpdate {
    /// The whole catalog.
    Snapshot(CatalogSnapshot),
    /// The changes from the caller's sequence to a newer one.
    Delta(Box<CatalogDelta>),
}

impl CatalogUpdate {
    /// The sequence of the catalog it brings the caller to.
    pub fn sequence(&self) -> i64 {
        match self {
            CatalogUpdate::Snapshot(s) => s.sequence,
            CatalogUpdate::Delta(d) => d.to,
        }
    }
}

/// The changes from the catalog at sequence `from` to the one at `to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogDelta {
    /// The sequence of the catalog it applies to.
    pub from: i64,
    /// The sequence of the catalog it makes.
    pub to: i64,
    /// Published package versions, by `VersionId`.
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub packages: Changes<VersionId, PublishedPackage>,
    /// Published connection groups, by id.
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub connection_groups: Changes<ConnectionGroupId, ConnectionGroup>,
    /// Groups.
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub groups: Changes<String, String>,
    /// Users.
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub users: Changes<String, String>,
    /// Machines with their credential hashes, by name.
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub machines: Changes<String, MachineCredential>,
    /// Direct memberships.
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub memberships: Changes<Membership, Membership>,
}

/// The changes to one collection of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes<K, T> {
    /// Items added or changed, whole, in the newer catalog's order.
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<T>,
    /// Keys of the items removed.
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<K>,
    /// Every key in the newer catalog's order, when the collection's own rule
    /// does not give it.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<K>>,
}

fn none<K>() -> Option<Vec<K>> {
    None
}

impl<K, T> Default for Changes<K, T> {
    fn default() -> Self {
        Changes {
            changed: Vec::new(),
            removed: Vec::new(),
            order: None,
        }
    }
}

impl<K, T> Changes<K, T> {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty() && self.order.is_none()
    }
}

/// Why a delta cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaError {
    /// The base is not the catalog the delta was made from.
    WrongBase {
        /// The sequence the delta applies to.
        from: i64,
        /// The sequence of the base.
        base: i64,
    },
    /// The delta does not fit the base: it removes something the base does
    /// not hold, names an item twice, or orders other items than it holds.
    Mismatch(&'static str),
}

impl fmt::Display for DeltaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeltaError::WrongBase { from, base } => write!(
                f,
                "the delta applies to the catalog at sequence {from}, not {base}"
            ),
            DeltaError::Mismatch(collection) => {
                write!(f, "the delta's {collection} do not fit the catalog held")
            }
        }
    }
}

impl std::error::Error for DeltaError {}

/// An item of a catalog collection and the key that identifies it.
trait Keyed: Clone + PartialEq {
    type Key: Clone + Ord;
    fn key(&self) -> Self::Key;
}

impl Keyed for PublishedPackage {
    type Key = VersionId;
    fn key(&self) -> VersionId {
        self.version.version_id
    }
}

impl Keyed for ConnectionGroup {
    type Key = ConnectionGroupId;
    fn key(&self) -> ConnectionGroupId {
        self.id
    }
}

impl Keyed for String {
    type Key = String;
    fn key(&self) -> String {
        self.clone()
    }
}

impl Keyed for MachineCredential {
    type Key = String;
    fn key(&self) -> String {
        self.name.clone()
    }
}

impl Keyed for Membership {
    type Key = Membership;
    fn key(&self) -> Membership {
        self.clone()
    }
}

/// How a collection is ordered: sorted by a rule, or as it comes (packages).
type Rule<T> = Option<fn(&T, &T) -> Ordering>;

fn by_priority_then_name(a: &ConnectionGroup, b: &ConnectionGroup) -> Ordering {
    (a.priority, &a.name).cmp(&(b.priority, &b.name))
}

fn by_name(a: &MachineCredential, b: &MachineCredential) -> Ordering {
    a.name.cmp(&b.name)
}

impl CatalogDelta {
    /// The changes that turn `old` into `new`. Keys are unique within each
    /// collection of a snapshot read from the Management DB; should they not
    /// be, [`apply`](Self::apply) refuses the delta rather than build another
    /// catalog.
    pub fn between(old: &CatalogSnapshot, new: &CatalogSnapshot) -> CatalogDelta {
        CatalogDelta {
            from: old.sequence,
            to: new.sequence,
            packages: changes(&old.packages, &new.packages, None),
            connection_groups: changes(
                &old.connection_groups,
                &new.connection_groups,
                Some(by_priority_then_name),
            ),
            groups: changes(&old.groups, &new.groups, Some(Ord::cmp)),
            users: changes(&old.users, &new.users, Some(Ord::cmp)),
            machines: changes(&old.machines, &new.machines, Some(by_name)),
            memberships: changes(&old.memberships, &new.memberships, Some(Ord::cmp)),
        }
    }

    /// The catalog at `to`, made from `base`, which must be the catalog at
    /// `from`.
    pub fn apply(&self, base: &CatalogSnapshot) -> Result<CatalogSnapshot, DeltaError> {
        if base.sequence != self.from {
            return Err(DeltaError::WrongBase {
                from: self.from,
                base: base.sequence,
            });
        }
        Ok(CatalogSnapshot {
            sequence: self.to,
            packages: apply(&base.packages, &self.packages, None)
                .ok_or(DeltaError::Mismatch("packages"))?,
            connection_groups: apply(
                &base.connection_groups,
                &self.connection_groups,
                Some(by_priority_then_name),
            )
            .ok_or(DeltaError::Mismatch("connection groups"))?,
            groups: apply(&base.groups, &self.groups, Some(Ord::cmp))
                .ok_or(DeltaError::Mismatch("groups"))?,
            users: apply(&base.users, &self.users, Some(Ord::cmp))
                .ok_or(DeltaError::Mismatch("users"))?,
            machines: apply(&base.machines, &self.machines, Some(by_name))
                .ok_or(DeltaError::Mismatch("machines"))?,
            memberships: apply(&base.memberships, &self.memberships, Some(Ord::cmp))
                .ok_or(DeltaError::Mismatch("memberships"))?,
        })
    }
}

/// The changes from `old` to `new` of one collection ordered by `rule`.
fn changes<T: Keyed>(old: &[T], new: &[T], rule: Rule<T>) -> Changes<T::Key, T> {
    let before: BTreeMap<T::Key, &T> = old.iter().map(|t| (t.key(), t)).collect();
    let after: BTreeSet<T::Key> = new.iter().map(Keyed::key).collect();
    let mut changes = Changes {
        changed: new
            .iter()
            .filter(|t| before.get(&t.key()) != Some(t))
            .cloned()
            .collect(),
        removed: old
            .iter()
            .map(Keyed::key)
            .filter(|k| !after.contains(k))
            .collect(),
        order: None,
    };
    if apply(old, &changes, rule).as_deref() != Some(new) {
        changes.order = Some(new.iter().map(Keyed::key).collect());
    }
    changes
}

/// `base` with `changes` applied: removed items dropped, changed ones
/// replaced where they were, added ones last, then ordered by the delta's
/// `order` or else by `rule`. `None` when the changes do not fit `base`.
fn apply<T: Keyed>(base: &[T], changes: &Changes<T::Key, T>, rule: Rule<T>) -> Option<Vec<T>> {
    let removed: BTreeSet<&T::Key> = changes.removed.iter().collect();
    let mut changed: BTreeMap<T::Key, &T> = changes.changed.iter().map(|t| (t.key(), t)).collect();
    if removed.len() != changes.removed.len()
        || changed.len() != changes.changed.len()
        || changed.keys().any(|k| removed.contains(k))
    {
        return None;
    }
    let mut out = Vec::with_capacity(base.len() + changed.len());
    let mut dropped = 0;
    for item in base {
        let key = item.key();
        if removed.contains(&key) {
            dropped += 1;
        } else {
            out.push(changed.remove(&key).unwrap_or(item).clone());
        }
    }
    if dropped != removed.len() {
        return None;
    }
    out.extend(
        changes
            .changed
            .iter()
            .filter(|t| changed.contains_key(&t.key()))
            .cloned(),
    );
    match (&changes.order, rule) {
        (Some(order), _) => {
            let mut by_key: BTreeMap<T::Key, T> = out.into_iter().map(|t| (t.key(), t)).collect();
            let ordered: Option<Vec<T>> = order.iter().map(|k| by_key.remove(k)).collect();
            return ordered.filter(|_| by_key.is_empty());
        }
        (None, Some(rule)) => out.sort_by(rule),
        (None, None) => {}
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConnectionGroupMember, Principal};
    use crate::ids::PackageId;
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    /// A small deterministic generator (xorshift), so that a failure repeats.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    const NAMES: &[&str] = &["a", "b", "c", "devs", "lab", "staff", "x", "Z", "é"];

    fn name(rng: &mut Rng) -> String {
        NAMES[rng.below(NAMES.len() as u64) as usize].to_owned()
    }

    /// Built from JSON, so that fields added with a default need no change here.
    fn package(rng: &mut Rng, n: u128) -> PublishedPackage {
        let mut groups: Vec<String> = (0..rng.below(3)).map(|_| name(rng)).collect();
        groups.sort();
        groups.dedup();
        let entitlements: Vec<serde_json::Value> = groups
            .iter()
            .map(|g| serde_json::json!({"group": g, "user_config": null}))
            .collect();
        let deployment = rng
            .chance(30)
            .then(|| serde_json::json!({"document": "<DeploymentConfiguration/>", "updated_at": "2026-01-01T00:00:00Z"}));
        serde_json::from_value(serde_json::json!({
            "version": {
                "package_id": Uuid::from_u128(n),
                "version_id": Uuid::from_u128(0x100 + n),
                "name": format!("P{n}"),
                "version": format!("1.0.{}.0", rng.below(3)),
                "content_path": format!("packages/{n}.appv"),
                "size": rng.below(10),
                "sha256": "0".repeat(64),
                "applications": [],
            },
            "deployment_config": deployment,
            "entitlements": entitlements,
        }))
        .unwrap()
    }

    fn connection_group(rng: &mut Rng, n: u128) -> ConnectionGroup {
        ConnectionGroup {
            id: ConnectionGroupId(Uuid::from_u128(0xC00 + n)),
            version_id: Uuid::from_u128(rng.below(4).into()),
            name: format!("G{}", rng.below(4)),
            priority: rng.below(3) as i32,
            members: (0..rng.below(3))
                .map(|i| ConnectionGroupMember {
                    package_id: PackageId(Uuid::from_u128(i.into())),
                    version_id: None,
                    optional: rng.chance(50),
                })
                .collect(),
            entitled_groups: vec![name(rng)],
            published: true,
            updated_at: Utc.timestamp_opt(rng.below(3) as i64, 0).unwrap(),
        }
    }

    fn principal(rng: &mut Rng) -> Principal {
        match rng.below(3) {
            0 => Principal::User(name(rng)),
            1 => Principal::Machine(name(rng)),
            _ => Principal::Group(name(rng)),
        }
    }

    /// A random snapshot that follows the ordering rules of `CatalogSnapshot`
    /// (packages in a random "import" order).
    fn snapshot(rng: &mut Rng, sequence: i64) -> CatalogSnapshot {
        let mut packages: Vec<PublishedPackage> = Vec::new();
        for n in 0..8u128 {
            if rng.chance(50) {
                packages.push(package(rng, n));
            }
        }
        for i in (1..packages.len()).rev() {
            packages.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut connection_groups: Vec<ConnectionGroup> = Vec::new();
        for n in 0..5u128 {
            if rng.chance(50) {
                connection_groups.push(connection_group(rng, n));
            }
        }
        connection_groups.sort_by(by_priority_then_name);
        let set = |rng: &mut Rng| {
            let mut v: Vec<String> = NAMES
                .iter()
                .filter(|_| rng.chance(50))
                .map(|s| (*s).to_owned())
                .collect();
            v.sort();
            v
        };
        let groups = set(rng);
        let users = set(rng);
        let mut machines: Vec<MachineCredential> = set(rng)
            .into_iter()
            .map(|name| MachineCredential {
                name,
                credential_hash: format!("h{}", rng.below(3)),
            })
            .collect();
        machines.sort_by(by_name);
        let mut memberships: Vec<Membership> = (0..rng.below(8))
            .map(|_| Membership {
                group: name(rng),
                member: principal(rng),
            })
            .collect();
        memberships.sort();
        memberships.dedup();
        CatalogSnapshot {
            sequence,
            packages,
            connection_groups,
            groups,
            users,
            machines,
            memberships,
        }
    }

    /// `old` changed a little: some items kept, some changed, some new.
    fn evolve(rng: &mut Rng, old: &CatalogSnapshot) -> CatalogSnapshot {
        let sequence = old.sequence + 1 + rng.below(3) as i64;
        let mut new = snapshot(rng, sequence);
        let keep = |rng: &mut Rng| rng.chance(60);
        // Keep most old packages in their relative order, new ones after.
        let mut packages: Vec<PublishedPackage> =
            old.packages.iter().filter(|_| keep(rng)).cloned().collect();
        for p in new.packages {
            if !packages.iter().any(|q| q.key() == p.key()) {
                packages.push(p);
            }
        }
        new.packages = packages;
        if rng.chance(20) {
            new.packages.reverse();
        }
        for g in &old.connection_groups {
            if keep(rng) && !new.connection_groups.iter().any(|h| h.id == g.id) {
                new.connection_groups.push(g.clone());
            }
        }
        new.connection_groups.sort_by(by_priority_then_name);
        new
    }

    fn check(old: &CatalogSnapshot, new: &CatalogSnapshot) -> CatalogDelta {
        let delta = CatalogDelta::between(old, new);
        assert_eq!(delta.apply(old).as_ref(), Ok(new), "{delta:#?}");
        // Through JSON, as the wire carries it.
        let update = CatalogUpdate::Delta(Box::new(delta.clone()));
        let json = serde_json::to_string(&update).unwrap();
        let back: CatalogUpdate = serde_json::from_str(&json).unwrap();
        assert_eq!(back, update, "{json}");
        delta
    }

    #[test]
    fn applying_the_changes_gives_the_newer_catalog_exactly() {
        for seed in 1..=2_000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let sequence = rng.below(100) as i64;
            let old = snapshot(&mut rng, sequence);
            let new = if rng.chance(10) {
                snapshot(&mut rng, old.sequence + 1)
            } else {
                evolve(&mut rng, &old)
            };
            check(&old, &new);
            check(&new, &old);
            let same = CatalogSnapshot {
                sequence: old.sequence + 1,
                ..old.clone()
            };
            let nothing = check(&old, &same);
            assert_eq!(
                nothing,
                CatalogDelta {
                    from: old.sequence,
                    to: old.sequence + 1,
                    ..CatalogDelta::default()
                }
            );
        }
    }

    #[test]
    fn a_delta_carries_only_what_changed() {
        let mut rng = Rng(7);
        let old = snapshot(&mut rng, 1);
        let mut new = old.clone();
        new.sequence = 2;
        new.users.push("zz-new".into());
        new.users.retain(|u| u != "a");
        new.users.sort();
        let delta = check(&old, &new);
        assert_eq!(delta.users.changed, ["zz-new"]);
        assert_eq!(
            delta.users.removed,
            old.users
                .iter()
                .filter(|u| *u == "a")
                .cloned()
                .collect::<Vec<_>>()
        );
        assert!(delta.users.order.is_none());
        assert!(delta.packages.is_empty() && delta.memberships.is_empty());
        let json = serde_json::to_value(CatalogUpdate::Delta(Box::new(delta))).unwrap();
        assert_eq!(json["kind"], "delta");
        assert_eq!(json["from"], 1);
        assert_eq!(json["to"], 2);
        assert!(json.get("packages").is_none(), "{json}");
        assert!(json["users"].get("order").is_none(), "{json}");
    }

    #[test]
    fn packages_out_of_import_order_carry_their_order() {
        let mut rng = Rng(11);
        let mut old = snapshot(&mut rng, 1);
        while old.packages.len() < 2 {
            old = snapshot(&mut rng, 1);
        }
        let mut new = old.clone();
        new.sequence = 2;
        new.packages.reverse();
        let delta = check(&old, &new);
        assert!(delta.packages.changed.is_empty());
        assert_eq!(
            delta.packages.order,
            Some(new.packages.iter().map(Keyed::key).collect())
        );
    }

    #[test]
    fn a_delta_is_refused_by_another_base() {
        let mut rng = Rng(3);
        let old = snapshot(&mut rng, 5);
        let new = evolve(&mut rng, &old);
        let delta = CatalogDelta::between(&old, &new);
        let other = CatalogSnapshot {
            sequence: 4,
            ..old.clone()
        };
        assert_eq!(
            delta.apply(&other),
            Err(DeltaError::WrongBase { from: 5, base: 4 })
        );
        // Same sequence, other content: removing what is not held is refused.
        let removes = CatalogDelta {
            from: 5,
            to: 6,
            users: Changes {
                removed: vec!["nobody".into()],
                ..Changes::default()
            },
            ..CatalogDelta::default()
        };
        assert_eq!(removes.apply(&old), Err(DeltaError::Mismatch("users")));
    }

    #[test]
    fn a_snapshot_answer_is_the_snapshot_with_its_kind() {
        let mut rng = Rng(5);
        let snapshot = snapshot(&mut rng, 9);
        let update = CatalogUpdate::Snapshot(snapshot.clone());
        let json = serde_json::to_value(&update).unwrap();
        assert_eq!(json["kind"], "snapshot");
        assert_eq!(json["sequence"], 9);
        let plain: CatalogSnapshot = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(plain, snapshot);
        assert_eq!(
            serde_json::from_value::<CatalogUpdate>(json).unwrap(),
            update
        );
        assert_eq!(update.sequence(), 9);
    }
}
