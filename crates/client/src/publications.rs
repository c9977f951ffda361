//! What the publishing servers have published to this machine and its users:
//! per server, the last answer for the machine and for each user who was
//! refreshed ([`Snapshot`]s), and their union ([`Publications::packages`],
//! [`Publications::visible_to`], [`Publications::connection_groups`]).
//!
//! The state is pure: [`Publications::apply`] takes a refresh's [`Outcome`]
//! and the time. A changed answer is authoritative for its server and
//! audience: it replaces that audience's snapshot, so what the server no longer
//! lists is gone (from that server and audience; another that still lists it
//! keeps it). An unchanged one only records when it was confirmed. A failed
//! refresh is simply not applied, so what a server published stays while it
//! cannot be reached, as an App-V client keeps its packages when the
//! publishing server is down; only [`Publications::forget_server`] (the server
//! was removed from the configuration) and [`Publications::forget_user`] take
//! publications away without an answer.
//!
//! The only I/O is [`Publications::load`] and [`Publications::save`]: JSON in
//! one file, replaced atomically (a temporary file in the same directory,
//! synced, renamed over it, the directory synced), readable by its owner only
//! (it names the packages each user is published).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::Path;

use avail_model::publishing::{AnswerConnectionGroup, PublishingAnswer};
use avail_model::{PackageId, VersionId};
use serde::{Deserialize, Serialize};

use crate::refresh::Outcome;

/// How many answers in a row from an older catalog it takes to replace a
/// newer one (see [`Publications::apply`]).
pub const OLDER_ANSWERS_ACCEPTED: u32 = 3;

/// Whom a publishing answer is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Audience {
    /// The machine itself (no `Avail-User`).
    Machine,
    /// A user on the machine (`Avail-User: NAME`).
    User(String),
}

impl Audience {
    /// The user to send as `Avail-User`, if any.
    pub fn user(&self) -> Option<&str> {
        match self {
            Audience::Machine => None,
            Audience::User(u) => Some(u),
        }
    }
}

/// The last answer a server gave one audience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The answer.
    pub answer: PublishingAnswer,
    /// Its `ETag`, sent as `If-None-Match` on the next refresh.
    pub etag: Option<String>,
    /// When the server last gave or confirmed it (seconds since the epoch).
    pub refreshed_at_unix: u64,
    /// Answers in a row with an older catalog sequence than this one's, which
    /// were not applied (see [`Publications::apply`]).
    #[serde(default)]
    pub older_answers: u32,
}

/// One server's snapshots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ServerPublications {
    machine: Option<Snapshot>,
    users: BTreeMap<String, Snapshot>,
}

impl ServerPublications {
    fn get(&self, who: &Audience) -> Option<&Snapshot> {
        match who {
            Audience::Machine => self.machine.as_ref(),
            Audience::User(u) => self.users.get(u),
        }
    }

    fn get_mut(&mut self, who: &Audience) -> Option<&mut Snapshot> {
        match who {
            Audience::Machine => self.machine.as_mut(),
            Audience::User(u) => self.users.get_mut(u),
        }
    }

    /// Each snapshot with its audience: the machine's, then the users' by
    /// name.
    fn snapshots(&self) -> impl Iterator<Item = (Option<&str>, &Snapshot)> {
        self.machine
            .iter()
            .map(|s| (None, s))
            .chain(self.users.iter().map(|(u, s)| (Some(u.as_str()), s)))
    }

    fn is_empty(&self) -> bool {
        self.machine.is_none() && self.users.is_empty()
    }
}

/// A package version published by one or more servers to the machine or to
/// users on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedVersion {
    /// The package.
    pub package_id: PackageId,
    /// The version.
    pub version_id: VersionId,
    /// The package's name (as the first server that lists it says).
    pub name: String,
    /// The version number (as the first server that lists it says).
    pub version: String,
    /// Every content URL any server gave for it, without repeats, in order:
    /// the first server's first.
    pub urls: Vec<String>,
    /// SHA-256 of its block map, hex, from the first server that gave one.
    pub block_map_sha256: Option<String>,
    /// The servers that publish it.
    pub servers: BTreeSet<String>,
    /// Whether it is published to the machine (every user sees it).
    pub machine: bool,
    /// The users it is published to.
    pub users: BTreeSet<String>,
}

/// What every publishing server has published to this machine and its users.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Publications {
    /// Server name → its snapshots.
    servers: BTreeMap<String, ServerPublications>,
}

impl Publications {
    /// The ETag of `server`'s last answer for `who`, to send as
    /// `If-None-Match`.
    pub fn etag(&self, server: &str, who: &Audience) -> Option<&str> {
        self.snapshot(server, who)?.etag.as_deref()
    }

    /// `server`'s last answer for `who`.
    pub fn snapshot(&self, server: &str, who: &Audience) -> Option<&Snapshot> {
        self.servers.get(server)?.get(who)
    }

    /// When `server` last gave or confirmed an answer to anyone (seconds since
    /// the epoch); `None` when it never has.
    pub fn last_refresh(&self, server: &str) -> Option<u64> {
        self.servers
            .get(server)?
            .snapshots()
            .map(|(_, s)| s.refreshed_at_unix)
            .max()
    }

    /// Every user some server has answered for (whom a refresh of every
    /// audience asks about again).
    pub fn users(&self) -> BTreeSet<String> {
        self.servers
            .values()
            .flat_map(|p| p.users.keys().cloned())
            .collect()
    }

    /// Records a successful refresh of `server` for `who` at `now_unix`: a
    /// changed answer replaces that audience's snapshot (what it no longer
    /// lists is gone); an unchanged one only moves its time (and does nothing
    /// when there is no snapshot to confirm).
    ///
    /// A changed answer from an older catalog than the snapshot's (a lower
    /// sequence: a publishing node behind the others, reached after a
    /// failover) is not applied, so that a lagging node never unpublishes
    /// what a newer catalog lists; only after [`OLDER_ANSWERS_ACCEPTED`] such
    /// answers in a row (the catalog was rebuilt with lower sequence numbers)
    /// is it taken. Returns whether the answer was applied.
    pub fn apply(&mut self, server: &str, who: &Audience, outcome: Outcome, now_unix: u64) -> bool {
        match outcome {
            Outcome::Changed { answer, etag, .. } => {
                let current = self.servers.get_mut(server).and_then(|p| p.get_mut(who));
                if let Some(current) = current
                    && answer.sequence < current.answer.sequence
                    && current.older_answers + 1 < OLDER_ANSWERS_ACCEPTED
                {
                    current.older_answers += 1;
                    return false;
                }
                let snapshot = Snapshot {
                    answer,
                    etag,
                    refreshed_at_unix: now_unix,
                    older_answers: 0,
                };
                let entry = self.servers.entry(server.to_string()).or_default();
                match who {
                    Audience::Machine => entry.machine = Some(snapshot),
                    Audience::User(u) => {
                        entry.users.insert(u.clone(), snapshot);
                    }
                }
            }
            Outcome::Unchanged { .. } => {
                if let Some(s) = self.servers.get_mut(server).and_then(|p| p.get_mut(who)) {
                    s.refreshed_at_unix = now_unix;
                    s.older_answers = 0;
                }
            }
        }
        true
    }

    /// Forgets everything `server` published (it is no longer configured).
    pub fn forget_server(&mut self, server: &str) {
        self.servers.remove(server);
    }

    /// Forgets what every server published to `user`.
    pub fn forget_user(&mut self, user: &str) {
        for p in self.servers.values_mut() {
            p.users.remove(user);
        }
        self.servers.retain(|_, p| !p.is_empty());
    }

    /// Every package version published to the machine or to any user by any
    /// server, one entry per `VersionId`, in the order first listed (servers
    /// by name, the machine's answer before the users' by name).
    pub fn packages(&self) -> Vec<PublishedVersion> {
        let mut out: Vec<PublishedVersion> = Vec::new();
        let mut index: HashMap<VersionId, usize> = HashMap::new();
        for (server, p) in &self.servers {
            for (user, snapshot) in p.snapshots() {
                for package in &snapshot.answer.packages {
                    let i = *index.entry(package.version_id).or_insert_with(|| {
                        out.push(PublishedVersion {
                            package_id: package.package_id,
                            version_id: package.version_id,
                            name: package.name.clone(),
                            version: package.version.clone(),
                            urls: Vec::new(),
                            block_map_sha256: None,
                            servers: BTreeSet::new(),
                            machine: false,
                            users: BTreeSet::new(),
                        });
                        out.len() - 1
                    });
                    let entry = &mut out[i];
                    for url in &package.urls {
                        if !entry.urls.contains(url) {
                            entry.urls.push(url.clone());
                        }
                    }
                    if entry.block_map_sha256.is_none() {
                        entry.block_map_sha256.clone_from(&package.block_map_sha256);
                    }
                    entry.servers.insert(server.clone());
                    match user {
                        None => entry.machine = true,
                        Some(u) => {
                            entry.users.insert(u.to_string());
                        }
                    }
                }
            }
        }
        out
    }

    /// What `user` sees: with `None` (root), every package version; with a
    /// user, those published to the machine or to that user.
    pub fn visible_to(&self, user: Option<&str>) -> Vec<PublishedVersion> {
        let mut all = self.packages();
        if let Some(user) = user {
            all.retain(|p| p.machine || p.users.contains(user));
        }
        all
    }

    /// Every connection group published by any server, one per id (the
    /// first listed, in the order of [`Publications::packages`]): to anyone
    /// (`user` `None`), or to the machine or `user`.
    pub fn connection_groups(&self, user: Option<&str>) -> Vec<AnswerConnectionGroup> {
        let mut seen = HashSet::new();
        self.servers
            .values()
            .flat_map(ServerPublications::snapshots)
            .filter(|(audience, _)| user.is_none() || audience.is_none() || *audience == user)
            .flat_map(|(_, s)| &s.answer.connection_groups)
            .filter(|g| seen.insert(g.id))
            .cloned()
            .collect()
    }

    /// The publications saved at `path`; none when there is no file. A file
    /// that is not publications is an error ([`io::ErrorKind::InvalidData`]).
    pub fn load(path: &Path) -> io::Result<Self> {
        crate::state::read_json(path)
    }

    /// Saves the publications at `path` atomically
    /// ([`crate::state::write_atomically`]), mode 0600.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        crate::state::write_json(path, self, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use avail_model::ConnectionGroupId;
    use avail_model::publishing::AnswerPackage;
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;
    use uuid::Uuid;

    use super::*;

    fn package(n: u128, urls: &[&str]) -> AnswerPackage {
        AnswerPackage {
            package_id: PackageId(Uuid::from_u128(n)),
            version_id: VersionId(Uuid::from_u128(0x100 + n)),
            name: format!("Package {n}"),
            version: "1.0.0.0".into(),
            urls: urls.iter().map(|u| u.to_string()).collect(),
            block_map_sha256: None,
        }
    }

    fn group(n: u128, name: &str) -> AnswerConnectionGroup {
        AnswerConnectionGroup {
            id: ConnectionGroupId(Uuid::from_u128(n)),
            version_id: Uuid::from_u128(0x200 + n),
            name: name.into(),
            priority: 1,
            members: Vec::new(),
        }
    }

    fn changed(packages: Vec<AnswerPackage>, etag: &str) -> Outcome {
        Outcome::Changed {
            answer: PublishingAnswer {
                sequence: 1,
                packages,
                connection_groups: Vec::new(),
            },
            etag: Some(etag.into()),
            url: "http://pub.example".into(),
        }
    }

    fn unchanged() -> Outcome {
        Outcome::Unchanged {
            url: "http://pub.example".into(),
        }
    }

    fn ids(list: &[PublishedVersion]) -> Vec<u128> {
        list.iter()
            .map(|p| p.version_id.0.as_u128() - 0x100)
            .collect()
    }

    fn alice() -> Audience {
        Audience::User("alice".into())
    }

    fn at_sequence(sequence: i64, packages: Vec<AnswerPackage>) -> Outcome {
        match changed(packages, &format!("s{sequence}")) {
            Outcome::Changed {
                mut answer,
                etag,
                url,
            } => {
                answer.sequence = sequence;
                Outcome::Changed { answer, etag, url }
            }
            unchanged => unchanged,
        }
    }

    #[test]
    fn a_node_behind_the_others_does_not_unpublish_until_it_persists() {
        let mut p = Publications::default();
        assert!(p.apply(
            "a",
            &Audience::Machine,
            at_sequence(10, vec![package(1, &[])]),
            1
        ));
        // Failover to a node whose catalog is older: not applied, twice.
        for _ in 0..OLDER_ANSWERS_ACCEPTED - 1 {
            assert!(!p.apply("a", &Audience::Machine, at_sequence(9, Vec::new()), 2));
            assert_eq!(ids(&p.packages()), [1]);
        }
        // The third in a row is taken (the catalog was rebuilt).
        assert!(p.apply("a", &Audience::Machine, at_sequence(9, Vec::new()), 3));
        assert!(p.packages().is_empty());
        // A confirmation in between starts the count again.
        assert!(p.apply(
            "a",
            &Audience::Machine,
            at_sequence(20, vec![package(2, &[])]),
            4
        ));
        assert!(!p.apply("a", &Audience::Machine, at_sequence(19, Vec::new()), 5));
        assert!(p.apply("a", &Audience::Machine, unchanged(), 6));
        assert!(!p.apply("a", &Audience::Machine, at_sequence(19, Vec::new()), 7));
        assert!(!p.apply("a", &Audience::Machine, at_sequence(19, Vec::new()), 8));
        assert_eq!(ids(&p.packages()), [2]);
    }

    #[test]
    fn a_changed_answer_replaces_its_audience_and_unchanged_only_moves_the_time() {
        let mut p = Publications::default();
        assert_eq!(p.etag("a", &Audience::Machine), None);
        p.apply(
            "a",
            &Audience::Machine,
            changed(vec![package(1, &[]), package(2, &[])], "e1"),
            10,
        );
        p.apply("a", &alice(), changed(vec![package(3, &[])], "e3"), 10);
        assert_eq!(p.etag("a", &Audience::Machine), Some("e1"));
        assert_eq!(p.etag("a", &alice()), Some("e3"));
        assert_eq!(ids(&p.packages()), [1, 2, 3]);

        // The machine's new answer no longer lists 1: it is gone; alice's stays.
        p.apply(
            "a",
            &Audience::Machine,
            changed(vec![package(2, &[])], "e2"),
            20,
        );
        assert_eq!(ids(&p.packages()), [2, 3]);
        assert_eq!(p.etag("a", &Audience::Machine), Some("e2"));
        assert_eq!(p.last_refresh("a"), Some(20));
        assert_eq!(p.last_refresh("b"), None);
        assert_eq!(p.users(), BTreeSet::from(["alice".to_string()]));

        p.apply("a", &alice(), unchanged(), 30);
        let s = p.snapshot("a", &alice()).unwrap();
        assert_eq!((s.refreshed_at_unix, s.etag.as_deref()), (30, Some("e3")));
        assert_eq!(
            p.snapshot("a", &Audience::Machine)
                .unwrap()
                .refreshed_at_unix,
            20
        );
        // Nothing to confirm: nothing happens.
        p.apply("b", &Audience::Machine, unchanged(), 30);
        assert!(p.snapshot("b", &Audience::Machine).is_none());
        assert_eq!(ids(&p.packages()), [2, 3]);

        // An empty answer empties that audience.
        p.apply("a", &alice(), changed(Vec::new(), "e0"), 40);
        assert_eq!(ids(&p.packages()), [2]);
        assert_eq!(Audience::Machine.user(), None);
        assert_eq!(alice().user(), Some("alice"));
    }

    #[test]
    fn what_a_failed_server_published_stays() {
        let mut p = Publications::default();
        p.apply(
            "a",
            &Audience::Machine,
            changed(vec![package(1, &[])], "a1"),
            10,
        );
        p.apply(
            "b",
            &Audience::Machine,
            changed(vec![package(2, &[])], "b1"),
            10,
        );
        // Next round: b answers with something new, a fails (nothing applied).
        p.apply(
            "b",
            &Audience::Machine,
            changed(vec![package(3, &[])], "b2"),
            20,
        );
        assert_eq!(ids(&p.packages()), [1, 3]);
        assert_eq!(
            p.snapshot("a", &Audience::Machine)
                .unwrap()
                .refreshed_at_unix,
            10
        );

        // Forgetting the server takes its packages away.
        p.forget_server("a");
        assert_eq!(ids(&p.packages()), [3]);
        assert_eq!(p.etag("a", &Audience::Machine), None);
    }

    #[test]
    fn packages_are_the_union_over_servers_and_audiences_one_per_version() {
        let mut p = Publications::default();
        let mut with_digest = package(1, &["http://b/1", "http://m/1"]);
        with_digest.block_map_sha256 = Some("ab".repeat(32));
        p.apply(
            "b",
            &alice(),
            changed(vec![with_digest, package(2, &["http://b/2"])], "b"),
            1,
        );
        p.apply(
            "a",
            &Audience::Machine,
            changed(vec![package(1, &["http://a/1", "http://m/1"])], "a"),
            1,
        );
        p.apply(
            "a",
            &Audience::User("bob".into()),
            changed(vec![package(1, &["http://a/1"])], "a"),
            1,
        );

        let all = p.packages();
        // Servers by name: a's machine answer, then a's bob, then b's alice.
        assert_eq!(ids(&all), [1, 2]);
        let one = &all[0];
        assert_eq!(one.urls, ["http://a/1", "http://m/1", "http://b/1"]);
        assert_eq!(one.block_map_sha256, Some("ab".repeat(32)));
        assert_eq!(
            one.servers,
            BTreeSet::from(["a".to_string(), "b".to_string()])
        );
        assert!(one.machine);
        assert_eq!(
            one.users,
            BTreeSet::from(["alice".to_string(), "bob".to_string()])
        );
        let two = &all[1];
        assert_eq!(two.urls, ["http://b/2"]);
        assert_eq!(two.servers, BTreeSet::from(["b".to_string()]));
        assert!(!two.machine);
        assert_eq!(two.users, BTreeSet::from(["alice".to_string()]));
    }

    #[test]
    fn a_user_sees_the_machines_packages_and_their_own() {
        let mut p = Publications::default();
        p.apply(
            "a",
            &Audience::Machine,
            changed(vec![package(1, &[])], "m"),
            1,
        );
        p.apply("a", &alice(), changed(vec![package(2, &[])], "u"), 1);
        p.apply(
            "b",
            &Audience::User("bob".into()),
            changed(vec![package(3, &[])], "u"),
            1,
        );
        assert_eq!(ids(&p.visible_to(None)), [1, 2, 3]);
        assert_eq!(ids(&p.visible_to(Some("alice"))), [1, 2]);
        assert_eq!(ids(&p.visible_to(Some("bob"))), [1, 3]);
        assert_eq!(ids(&p.visible_to(Some("carol"))), [1]);

        p.forget_user("bob");
        assert_eq!(ids(&p.visible_to(None)), [1, 2]);
        // b had only bob's answer: nothing of it is left.
        assert!(!p.servers.contains_key("b"));
    }

    #[test]
    fn connection_groups_are_one_per_id() {
        let mut p = Publications::default();
        let with_groups = |groups: Vec<AnswerConnectionGroup>| Outcome::Changed {
            answer: PublishingAnswer {
                sequence: 1,
                packages: Vec::new(),
                connection_groups: groups,
            },
            etag: None,
            url: String::new(),
        };
        p.apply(
            "a",
            &Audience::Machine,
            with_groups(vec![group(1, "first"), group(2, "two")]),
            1,
        );
        p.apply("a", &alice(), with_groups(vec![group(1, "again")]), 1);
        p.apply(
            "b",
            &Audience::Machine,
            with_groups(vec![group(3, "three"), group(1, "late")]),
            1,
        );
        fn names(p: &Publications, user: Option<&str>) -> Vec<String> {
            p.connection_groups(user)
                .into_iter()
                .map(|g| g.name)
                .collect()
        }
        assert_eq!(names(&p, None), ["first", "two", "three"]);
        assert_eq!(names(&p, Some("alice")), ["first", "two", "three"]);
        // Bob sees the machine's groups only.
        p.apply("a", &alice(), with_groups(vec![group(9, "alice's")]), 2);
        assert_eq!(names(&p, Some("bob")), ["first", "two", "three"]);
        assert_eq!(
            names(&p, Some("alice")),
            ["first", "two", "alice's", "three"]
        );
    }

    #[test]
    fn save_and_load_round_trip_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("publications.json");
        let mut p = Publications::default();
        p.apply(
            "a",
            &Audience::Machine,
            changed(vec![package(1, &["http://a/1"])], "e1"),
            5,
        );
        p.apply("a", &alice(), changed(vec![package(2, &[])], "e2"), 6);
        p.save(&path).unwrap();
        assert_eq!(Publications::load(&path).unwrap(), p);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // Saved again over a file anyone could read: replaced, 0600 again, and
        // no temporary file left beside it.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        p.forget_user("alice");
        p.save(&path).unwrap();
        assert_eq!(Publications::load(&path).unwrap(), p);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["publications.json"]);
    }

    #[test]
    fn a_missing_file_is_empty_and_a_corrupt_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("publications.json");
        assert_eq!(Publications::load(&path).unwrap(), Publications::default());
        fs::write(&path, b"{\"servers\": {\"a\": ").unwrap();
        let err = Publications::load(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Saving into a directory that does not exist fails, leaving nothing.
        let nowhere = dir.path().join("missing").join("publications.json");
        assert!(Publications::default().save(&nowhere).is_err());
    }
}
