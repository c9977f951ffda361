//! `avail run` end to end with the real `avail` binary, as root with FUSE and
//! as an unprivileged user (`avail-run-test`, created with `useradd -M` when
//! missing). Each test starts its own server node and client daemon (state
//! directory, socket, mount root, desktop directory) and gives each person a
//! home directory of their own, and stops everything when it ends. It proves:
//!
//! 1. the example application (`examples/hello-avail`) runs for root and for
//!    the user with every byte of its data (the SHA-256 it prints), each with
//!    a run counter of their own kept in their copy-on-write layer between
//!    runs (1, 2) and reset by `avail client repair` (1 again); afterwards the
//!    host has no `/opt/hello-avail` and no mount of a layer;
//! 2. for root and for the user: an application's exit status is `avail
//!    run`'s (7); SIGTERM sent to `avail run` reaches the application (its
//!    trap runs, its exit code comes back); an application killed by SIGKILL
//!    kills `avail run` with SIGKILL; standard input reaches the application;
//! 3. in a published two-package connection group, package A's application
//!    reads a file only package B has, also with an optional member that is
//!    not published; without the group (before it is published, after it is
//!    unpublished) the file is not there;
//! 4. a package published to a user alone gets its desktop entry
//!    (`Exec=… run hello-avail …`) in that user's `$XDG_DATA_HOME/applications`
//!    at their `sync` and loses it once unpublished; published to the
//!    machine, it gets its entry in the daemon's `--desktop-dir` and loses it
//!    once unpublished;
//! 5. usage reporting loses no launch: with the server down, `avail client
//!    report send` exits 69 and the records are kept; once it is back, the
//!    server counts each of the 5 launches exactly once, also after a second
//!    send;
//! 6. a hostile package cannot lift the user: writes through its symbolic
//!    links to `/etc` and `/etc/passwd` fail (the host's files unchanged), a
//!    set-user-ID-root copy of `id` reports the user's uid (no `euid=0`), and
//!    what the application writes in the package's directories lands in the
//!    user's layer, not on the host nor in the package's mount.
//!
//! Every wait is a bounded poll; nothing is timed.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use avail_testkit::AvailNode;
use serde_json::Value;

mod common;

use common::*;

/// The SHA-256 of `examples/hello-avail/tree/opt/hello-avail/data/*`, in name order.
const DATA_SHA256: &str = "46d3102f6bbc825c33d81adc7869247b48a0eb074a653e3158b9ad11ecbbf9f6";

/// The unprivileged user the tests run applications as.
const USER: &str = "avail-run-test";

/// A minimal `PATH` for the applications.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn example_tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello-avail/tree")
}

/// The uid and gid of [`USER`], created (once per test process) if missing.
fn test_user() -> (u32, u32) {
    static USER_IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *USER_IDS.get_or_init(|| {
        require_root();
        if !Command::new("id")
            .arg(USER)
            .output()
            .unwrap()
            .status
            .success()
        {
            let o = Command::new("useradd").args(["-M", USER]).output().unwrap();
            assert!(
                o.status.success(),
                "useradd -M {USER}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let id = |flag: &str| -> u32 {
            let o = Command::new("id").arg(flag).arg(USER).output().unwrap();
            assert!(o.status.success(), "id {flag} {USER}: {o:?}");
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        };
        (id("-u"), id("-g"))
    })
}

fn show(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Someone who runs applications: root or [`USER`], with a home directory
/// of their own (theirs), and `XDG_DATA_HOME` set in it or not.
struct Person {
    name: &'static str,
    /// uid and gid; `None` for root.
    ids: Option<(u32, u32)>,
    home: tempfile::TempDir,
    xdg: bool,
}

impl Person {
    /// Root, with `XDG_DATA_HOME` set.
    fn root() -> Person {
        require_root();
        Person {
            name: "root",
            ids: None,
            home: tempfile::tempdir().unwrap(),
            xdg: true,
        }
    }

    /// [`USER`], with `XDG_DATA_HOME` set when `xdg` (else `HOME/.local/share`).
    fn user(xdg: bool) -> Person {
        let (uid, gid) = test_user();
        let home = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(home.path(), Some(uid), Some(gid)).unwrap();
        Person {
            name: USER,
            ids: Some((uid, gid)),
            home,
            xdg,
        }
    }

    fn uid(&self) -> u32 {
        self.ids.map_or(0, |(uid, _)| uid)
    }

    /// Where their XDG data goes: `XDG_DATA_HOME`, or `HOME/.local/share`.
    fn data_home(&self) -> PathBuf {
        if self.xdg {
            self.home.path().join("xdg-data")
        } else {
            self.home.path().join(".local/share")
        }
    }

    /// Their copy-on-write layer `id` (a PackageId or connection group id).
    fn layer(&self, id: &str) -> PathBuf {
        self.data_home().join("avail/layers").join(id)
    }

    /// `avail ARGS…` as this person, with only their environment, the
    /// client's socket and a plain `PATH`, in `/`.
    fn command(&self, client: &Client, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", self.home.path())
            .env("USER", self.name)
            .env("LOGNAME", self.name)
            .env("AVAIL_CLIENT_SOCKET", client.socket())
            .env("AVAIL_LOG", "warn")
            .current_dir("/")
            .stdin(Stdio::null());
        if self.xdg {
            c.env("XDG_DATA_HOME", self.data_home());
        }
        if let Some((uid, gid)) = self.ids {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn output(&self, client: &Client, args: &[&str]) -> Output {
        self.command(client, args)
            .output()
            .expect("cannot run avail")
    }

    /// `avail run APP ARGS…`.
    fn run(&self, client: &Client, app: &str, args: &[&str]) -> Output {
        let mut all = vec!["run", app];
        all.extend_from_slice(args);
        self.output(client, &all)
    }

    /// `avail run APP ARGS…`, which must succeed; its standard output.
    fn run_ok(&self, client: &Client, app: &str, args: &[&str]) -> String {
        let o = self.run(client, app, args);
        assert!(
            o.status.success(),
            "{}: avail run {app} {args:?}: {}\ndaemon log:\n{}",
            self.name,
            show(&o),
            client.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `avail client ARGS…`, which must succeed; its standard output.
    fn client_ok(&self, client: &Client, args: &[&str]) -> String {
        let mut all = vec!["client"];
        all.extend_from_slice(args);
        let o = self.output(client, &all);
        assert!(
            o.status.success(),
            "{}: avail client {args:?}: {}\ndaemon log:\n{}",
            self.name,
            show(&o),
            client.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// Let every user reach the daemon's socket (its directories are 0700).
fn open_to_users(client: &Client) {
    for dir in [client.dir.path(), client.socket().parent().unwrap()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A package of the test: its tree and `.appv` in a directory of its own,
/// its PackageId and VersionId from `seed`.
struct Pkg {
    dir: tempfile::TempDir,
    name: &'static str,
    package_id: String,
    version_id: String,
}

impl Pkg {
    /// An empty package to be filled with [`Pkg::file`] and [`Pkg::script`].
    fn new(name: &'static str, seed: u32) -> Pkg {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tree")).unwrap();
        Pkg {
            dir,
            name,
            package_id: format!("{seed:08x}-0000-4000-8000-000000000001"),
            version_id: format!("{seed:08x}-0000-4000-8000-0000000000a1"),
        }
    }

    /// The example application's tree, copied.
    fn hello(seed: u32) -> Pkg {
        let pkg = Pkg::new("Hello Avail", seed);
        let o = Command::new("cp")
            .arg("-a")
            .arg(example_tree().join("."))
            .arg(pkg.tree())
            .output()
            .unwrap();
        assert!(o.status.success(), "cp -a the example: {}", show(&o));
        pkg
    }

    fn tree(&self) -> PathBuf {
        self.dir.path().join("tree")
    }

    fn appv(&self) -> PathBuf {
        self.dir.path().join("p.appv")
    }

    /// `TREE/REL` with `bytes` and `mode`.
    fn file(&self, rel: &str, bytes: &[u8], mode: u32) -> &Pkg {
        let path = self.tree().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    /// An executable shell script `TREE/REL`.
    fn script(&self, rel: &str, body: &str) -> &Pkg {
        self.file(rel, format!("#!/bin/sh\n{body}\n").as_bytes(), 0o755)
    }

    /// Pack it with `--app` for each of `apps` (`ID=PATH`).
    fn pack(&self, apps: &[&str]) {
        let mut extra = Vec::new();
        for app in apps {
            extra.extend(["--app", app]);
        }
        pack_with(
            &self.tree(),
            &self.appv(),
            self.name,
            "1.0",
            &self.package_id,
            &self.version_id,
            &extra,
        );
    }
}

/// A node, `pkgs` imported and published to the machine's group, and a
/// daemon subscribed to it (every package mounted) that users can reach.
fn published(pkgs: &[&Pkg]) -> (AvailNode, Client) {
    let node = start_node(None);
    for pkg in pkgs {
        publish(&node, &pkg.appv(), pkg.name);
    }
    let credential = machine(&node, "m1");
    let client = Client::start("");
    open_to_users(&client);
    client.ok(&[
        "server",
        "add",
        &node.publishing_url,
        "--credential",
        &credential,
    ]);
    for pkg in pkgs {
        client.sync_until_mounted(&pkg.version_id);
    }
    (node, client)
}

/// The lines of the mount table that mention `needle`.
fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// The overlays of `avail run` (source `avail`) in the host's mount table.
fn run_overlays_on_the_host() -> Vec<String> {
    mounts_mentioning(" - overlay avail ")
}

/// Poll a `Child` until it exits, at most [`PATIENCE`].
fn wait_child(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    wait_for(what, || child.try_wait().unwrap())
}

// ---------------------------------------------------------------------------
// 1. The example application, for root and a user

#[test]
fn hello_avail_runs_for_root_and_a_user_each_with_a_counter_that_repair_resets() {
    require_root();
    let pkg = Pkg::hello(0xB100_0001);
    pkg.pack(&["hello-avail=/opt/hello-avail/bin/hello-avail"]);
    let (_node, client) = published(&[&pkg]);
    let people = [Person::root(), Person::user(false)];

    let greeting = |p: &Person, n: u32| {
        let out = p.run_ok(&client, "hello-avail", &[]);
        assert!(
            out.contains(&format!("Hello from Avail, {}! This is run {n}.", p.name)),
            "{}: run {n} expected:\n{out}",
            p.name
        );
        assert!(
            out.contains(&format!("data: {DATA_SHA256}")),
            "{}: the data's SHA-256 differs:\n{out}",
            p.name
        );
    };
    // Interleaved: each person's counter is theirs alone.
    for n in 1..=2 {
        for p in &people {
            greeting(p, n);
        }
    }
    for p in &people {
        let runs = p
            .layer(&pkg.package_id)
            .join("upper/opt/hello-avail/state/runs");
        assert_eq!(
            std::fs::read_to_string(&runs).unwrap_or_else(|e| panic!(
                "{}: {}: {e}",
                p.name,
                runs.display()
            )),
            "2\n",
            "{}: the counter in the layer",
            p.name
        );
        let meta = std::fs::metadata(&runs).unwrap();
        assert_eq!(meta.uid(), p.uid(), "{}: the counter is theirs", p.name);
    }

    // Repair resets the user's counter, and only theirs.
    people[1].client_ok(&client, &["repair", "hello-avail"]);
    assert!(
        !people[1].layer(&pkg.package_id).exists(),
        "repair deleted the user's layer"
    );
    greeting(&people[1], 1);
    greeting(&people[0], 3);
    people[0].client_ok(&client, &["repair", "hello-avail"]);
    greeting(&people[0], 1);

    assert!(
        !Path::new("/opt/hello-avail").exists(),
        "the application's writes reached the host's /opt/hello-avail"
    );
    let mount = client.mounted(&pkg.version_id).unwrap();
    assert!(
        !mount.join("opt/hello-avail/state").exists(),
        "the application's writes reached the package's mount"
    );
    for p in &people {
        let home = p.home.path().to_str().unwrap();
        assert_eq!(
            mounts_mentioning(home),
            Vec::<String>::new(),
            "{}: a mount of the layer is left on the host",
            p.name
        );
    }
    assert_eq!(
        run_overlays_on_the_host(),
        Vec::<String>::new(),
        "an overlay of avail run is left on the host"
    );
}

// ---------------------------------------------------------------------------
// 2. Exit status, signals, standard input

#[test]
fn exit_status_signals_and_standard_input_pass_through() {
    require_root();
    let pkg = Pkg::new("Signals", 0xB200_0001);
    pkg.script("opt/sig/bin/exit7", "exit 7")
        .script(
            "opt/sig/bin/sleeper",
            "trap 'echo trapped; exit 42' TERM\n: > \"$1\"\nwhile :; do sleep 0.1; done",
        )
        .script("opt/sig/bin/selfkill", "kill -KILL $$\nexit 3")
        .script("opt/sig/bin/shout", "exec tr a-z A-Z");
    pkg.pack(&[
        "exit7=/opt/sig/bin/exit7",
        "sleeper=/opt/sig/bin/sleeper",
        "selfkill=/opt/sig/bin/selfkill",
        "shout=/opt/sig/bin/shout",
    ]);
    let (_node, client) = published(&[&pkg]);
    for person in [Person::root(), Person::user(false)] {
        exit_status_signals_and_standard_input_for(&person, &client);
    }
}

fn exit_status_signals_and_standard_input_for(person: &Person, client: &Client) {
    let who = person.name;
    let o = person.run(client, "exit7", &[]);
    assert_eq!(o.status.code(), Some(7), "{who}: exit 7: {}", show(&o));

    // SIGTERM to avail run reaches the application, whose trap runs.
    let ready = person.home.path().join("ready");
    let mut child = person
        .command(client, &["run", "sleeper", ready.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&format!("{who}: the sleeping application to start"), || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{who}: avail run sleeper exited early with {status}");
        }
        ready.exists().then_some(())
    });
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .output()
        .unwrap();
    assert!(kill.status.success(), "kill -TERM: {}", show(&kill));
    wait_child(
        &mut child,
        &format!("{who}: avail run to exit after SIGTERM"),
    );
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(42),
        "{who}: the application's TERM trap exits 42: {}",
        show(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("trapped"),
        "{who}: the trap ran: {}",
        show(&o)
    );

    // An application killed by SIGKILL kills avail run with SIGKILL.
    let o = person.run(client, "selfkill", &[]);
    assert_eq!(
        (o.status.code(), o.status.signal()),
        (None, Some(9)),
        "{who}: avail run dies of SIGKILL: {}",
        show(&o)
    );

    // Standard input.
    let mut child = person
        .command(client, &["run", "shout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"input from the test\n").unwrap();
    }
    wait_child(&mut child, &format!("{who}: avail run shout to exit"));
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{who}: shout: {}", show(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "INPUT FROM THE TEST\n",
        "{who}: standard input reached the application: {}",
        show(&o)
    );
}

// ---------------------------------------------------------------------------
// 3. Connection groups

#[test]
fn a_connection_group_lets_one_package_see_another_and_only_while_published() {
    require_root();
    let alpha = Pkg::new("Alpha", 0xB300_0001);
    alpha.script(
        "opt/alpha/bin/alpha",
        "if [ -e /opt/beta/share/beta.txt ]; then cat /opt/beta/share/beta.txt; \
         else echo 'no beta here'; fi",
    );
    alpha.pack(&["alpha=/opt/alpha/bin/alpha"]);
    let beta = Pkg::new("Beta", 0xB300_0002);
    beta.file("opt/beta/share/beta.txt", b"beta's own file\n", 0o644)
        .script("opt/beta/bin/beta", "echo beta");
    beta.pack(&["beta=/opt/beta/bin/beta"]);
    let gamma = Pkg::new("Gamma", 0xB300_0003);
    gamma.script("opt/gamma/bin/gamma", "echo gamma");
    gamma.pack(&["gamma=/opt/gamma/bin/gamma"]);

    let (node, client) = published(&[&alpha, &beta]);
    // Gamma is imported and granted, never published.
    node.admin_ok(&["package", "import", gamma.appv().to_str().unwrap()]);
    node.admin_ok(&["package", "grant", "Gamma", GROUP]);
    let root = Person::root();

    assert_eq!(
        root.run_ok(&client, "alpha", &[]),
        "no beta here\n",
        "Alpha alone does not see Beta"
    );

    node.admin_ok(&["connection-group", "create", "suite"]);
    node.admin_ok(&["connection-group", "add", "suite", "Alpha"]);
    node.admin_ok(&["connection-group", "add", "suite", "Beta", "--any-version"]);
    node.admin_ok(&["connection-group", "add", "suite", "Gamma", "--optional"]);
    node.admin_ok(&["connection-group", "grant", "suite", GROUP]);
    node.admin_ok(&["connection-group", "publish", "suite"]);
    let cg: Value =
        serde_json::from_str(&node.admin_ok(&["--json", "connection-group", "show", "suite"]))
            .unwrap();
    let cg_id = cg["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {cg}"))
        .to_lowercase();

    let mut last = String::new();
    wait_for("Alpha to see Beta's file in the published group", || {
        let _ = client.run(&["sync"]);
        last = root.run_ok(&client, "alpha", &[]);
        (last == "beta's own file\n").then_some(())
    });
    // The group's own layer is used, and Beta's application runs too.
    assert_eq!(root.run_ok(&client, "beta", &[]), "beta\n");
    assert!(
        root.layer(&cg_id).is_dir(),
        "the group's layer {} exists: {:?}",
        root.layer(&cg_id).display(),
        std::fs::read_dir(root.data_home().join("avail/layers"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );

    // Beta is an "any version" member: a new version published in its
    // place is the one the group sees.
    std::fs::write(
        beta.tree().join("opt/beta/share/beta.txt"),
        b"beta, version 2\n",
    )
    .unwrap();
    let beta2 = beta.dir.path().join("beta2.appv");
    let o = Command::new(bin())
        .args(["package", "pack"])
        .arg(beta.tree())
        .arg("-o")
        .arg(&beta2)
        .arg("--update-of")
        .arg(beta.appv())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    node.admin_ok(&[
        "package",
        "upgrade",
        "Beta",
        beta2.to_str().unwrap(),
        "--transfer",
        "--publish",
    ]);
    wait_for("Alpha to see Beta's new version in the group", || {
        let _ = client.run(&["sync"]);
        (root.run_ok(&client, "alpha", &[]) == "beta, version 2\n").then_some(())
    });

    node.admin_ok(&["connection-group", "unpublish", "suite"]);
    wait_for(
        "Alpha to lose Beta's file once the group is unpublished",
        || {
            let _ = client.run(&["sync"]);
            (root.run_ok(&client, "alpha", &[]) == "no beta here\n").then_some(())
        },
    );
}

// ---------------------------------------------------------------------------
// 4. Desktop entries

/// The desktop entries under `data_home/applications` of the package.
fn entries_of(data_home: &Path, package_id: &str) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(data_home.join("applications")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&format!("avail-{package_id}")) && name.ends_with(".desktop")
        })
        .collect();
    out.sort();
    out
}

/// The one entry of `package_id`, which runs `hello-avail` through Avail.
fn assert_runs_through_avail(entries: &[PathBuf], what: &str) {
    let [entry] = entries else {
        panic!("{what}: one desktop entry expected: {entries:?}");
    };
    let text = std::fs::read_to_string(entry).unwrap();
    let exec = text
        .lines()
        .find(|l| l.starts_with("Exec="))
        .unwrap_or_else(|| panic!("{what}: no Exec= in {}:\n{text}", entry.display()));
    assert!(
        exec.contains(" run hello-avail"),
        "{what}: {} does not run the application through Avail: {exec}",
        entry.display()
    );
}

#[test]
fn desktop_entries_follow_publishing_to_a_user_and_to_the_machine() {
    require_root();
    let pkg = Pkg::hello(0xB400_0001);
    pkg.pack(&["hello-avail=/opt/hello-avail/bin/hello-avail"]);
    let node = start_node(None);
    node.admin_ok(&["package", "import", pkg.appv().to_str().unwrap()]);
    node.admin_ok(&["group", "create", "solo"]);
    node.admin_ok(&["user", "create", USER, "--group", "solo"]);
    node.admin_ok(&["package", "grant", pkg.name, "solo"]);
    node.admin_ok(&["package", "publish", pkg.name]);
    let credential = machine(&node, "m1");
    let client = Client::start("");
    open_to_users(&client);
    client.ok(&[
        "server",
        "add",
        &node.publishing_url,
        "--credential",
        &credential,
    ]);
    let machine_dir = client.dir.path().join("desktop");
    let user = Person::user(true);
    // The publishing role learns of the new machine credential shortly.
    wait_for(
        "the publishing role to accept the machine's credential",
        || client.run(&["sync"]).status.success().then_some(()),
    );

    // Published to the user alone: their entry, not the machine's.
    let entries = wait_for("the user's desktop entry after their sync", || {
        user.client_ok(&client, &["sync"]);
        let e = entries_of(&user.data_home(), &pkg.package_id);
        (!e.is_empty()).then_some(e)
    });
    assert_runs_through_avail(&entries, "the user's entry");
    assert_eq!(
        entries_of(&machine_dir, &pkg.package_id),
        Vec::<PathBuf>::new(),
        "a package published to a user has no machine entry"
    );
    // The entry's command works for them.
    let out = user.run_ok(&client, "hello-avail", &[]);
    assert!(out.contains(&format!("data: {DATA_SHA256}")), "{out}");

    node.admin_ok(&["package", "unpublish", pkg.name]);
    wait_for("the user's desktop entry to go after unpublish", || {
        user.client_ok(&client, &["sync"]);
        entries_of(&user.data_home(), &pkg.package_id)
            .is_empty()
            .then_some(())
    });

    // Published to the machine: the daemon's desktop directory.
    node.admin_ok(&["package", "grant", pkg.name, GROUP]);
    node.admin_ok(&["package", "publish", pkg.name]);
    let entries = wait_for("the machine's desktop entry after sync", || {
        let _ = client.run(&["sync"]);
        let e = entries_of(&machine_dir, &pkg.package_id);
        (!e.is_empty()).then_some(e)
    });
    assert_runs_through_avail(&entries, "the machine's entry");
    user.client_ok(&client, &["sync"]);
    assert_eq!(
        entries_of(&user.data_home(), &pkg.package_id),
        Vec::<PathBuf>::new(),
        "a package published to the machine gets no user entry"
    );

    node.admin_ok(&["package", "unpublish", pkg.name]);
    wait_for("the machine's desktop entry to go after unpublish", || {
        let _ = client.run(&["sync"]);
        entries_of(&machine_dir, &pkg.package_id)
            .is_empty()
            .then_some(())
    });
}

// ---------------------------------------------------------------------------
// 5. Usage reporting

/// (application, launches) as the server counts them.
fn launches(node: &AvailNode) -> Vec<(String, i64)> {
    let out = node.admin_ok(&["--json", "report", "launches", "--by", "application"]);
    let counts: Value = serde_json::from_str(&out).unwrap();
    let mut counts: Vec<(String, i64)> = counts
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {out}"))
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_owned(),
                c["launches"].as_i64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    counts
}

/// The complete launch records a client keeps: queued, and in the outbox
/// (a report built and not yet acknowledged).
fn kept(status: &Value) -> u64 {
    let field = |name: &str| {
        status[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no {name} in the report status {status}"))
    };
    field("complete_records") + field("outbox_records")
}

#[test]
fn usage_reports_keep_every_launch_while_the_server_is_down_and_count_each_once() {
    require_root();
    let pkg = Pkg::hello(0xB500_0001);
    pkg.pack(&["hello-avail=/opt/hello-avail/bin/hello-avail"]);
    let (mut node, client) = published(&[&pkg]);
    // Everything local, so that launches need no server.
    client.ok(&["package", "mount", &pkg.version_id]);
    client.ok(&["config", "set", "ReportingServerURL", &node.reporting_url]);
    let root = Person::root();
    let status =
        || -> Value { serde_json::from_str(&client.ok(&["--json", "report", "status"])).unwrap() };

    for _ in 0..3 {
        root.run_ok(&client, "hello-avail", &[]);
    }
    node.kill();
    let o = client.run(&["report", "send"]);
    assert_eq!(
        o.status.code(),
        Some(69),
        "report send with the server down: {}",
        show(&o)
    );
    let s = status();
    assert_eq!(
        kept(&s),
        3,
        "the 3 launches are kept after a failed send: {s}"
    );

    for _ in 0..2 {
        root.run_ok(&client, "hello-avail", &[]);
    }
    let s = status();
    assert_eq!(kept(&s), 5, "5 launches kept: {s}");
    let o = client.run(&["report", "send"]);
    assert_eq!(
        o.status.code(),
        Some(69),
        "report send with the server still down: {}",
        show(&o)
    );
    let s = status();
    assert_eq!(
        kept(&s),
        5,
        "5 launches kept after a second failed send: {s}"
    );

    node.restart().expect("cannot restart the node");
    let first = client.ok(&["--json", "report", "send"]);
    let second = client.ok(&["--json", "report", "send"]);
    let s = status();
    assert_eq!(
        kept(&s),
        0,
        "nothing left to send after two sends ({first}, {second}): {s}"
    );
    assert_eq!(
        launches(&node),
        [("hello-avail".to_owned(), 5)],
        "the server counts each launch once (sends: {first}, {second}; status {s})"
    );
}

// ---------------------------------------------------------------------------
// 6. A hostile package

#[test]
fn a_hostile_package_cannot_write_through_its_links_nor_gain_privilege() {
    require_root();
    let pkg = Pkg::new("Evil", 0xB600_0001);
    pkg.script(
        "opt/evil/bin/probe",
        "try() { if sh -c \"$2\" 2>/dev/null; then echo \"$1: written\"; else echo \"$1: refused\"; fi; }\n\
         try link 'echo pwned > /opt/evil/link/avail-evil-test'\n\
         try passwd 'echo pwned:x:0:0::/:/bin/sh >> /opt/evil/passwd'\n\
         try mine 'echo mine > /opt/evil/mine.txt'\n\
         try deep 'mkdir -p /opt/evil/new/dir && echo deep > /opt/evil/new/dir/f'\n\
         try rmdir 'rm -rf /opt/evil/share/dir && test ! -e /opt/evil/share/dir'\n\
         try rename 'mv /opt/evil/share/other /opt/evil/share/moved && test -f /opt/evil/share/moved/f'\n\
         cat /opt/evil/mine.txt /opt/evil/new/dir/f",
    );
    // Directories the package ships, which users may delete and rename in
    // their layer as in App-V (overlayfs's `userxattr` in a user namespace).
    for d in ["opt/evil/share/dir", "opt/evil/share/other"] {
        std::fs::create_dir_all(pkg.tree().join(d)).unwrap();
        std::fs::write(pkg.tree().join(d).join("f"), b"shipped").unwrap();
    }
    std::fs::copy("/usr/bin/id", pkg.tree().join("opt/evil/bin/id")).unwrap();
    std::fs::set_permissions(
        pkg.tree().join("opt/evil/bin/id"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc", pkg.tree().join("opt/evil/link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", pkg.tree().join("opt/evil/passwd")).unwrap();
    pkg.pack(&["probe=/opt/evil/bin/probe", "evil-id=/opt/evil/bin/id"]);
    let (_node, client) = published(&[&pkg]);
    let mount = client.mounted(&pkg.version_id).unwrap();
    // The mount shows the file's set-user-ID bit cleared
    // (crates/client/src/fs.rs); the overlay is `nosuid` and the user's
    // namespace cannot raise privileges either: whichever holds, the user
    // stays themself.
    let id_meta = std::fs::metadata(mount.join("opt/evil/bin/id")).unwrap();
    eprintln!(
        "the package's set-user-ID copy of id (packed 4755, owner root) shows mode {:o}, owner {} in its mount",
        id_meta.mode() & 0o7777,
        id_meta.uid()
    );
    let user = Person::user(true);
    let passwd_before = std::fs::read("/etc/passwd").unwrap();

    // (a) No write through the package's links.
    let out = user.run_ok(&client, "probe", &[]);
    assert_eq!(
        out,
        "link: refused\npasswd: refused\nmine: written\ndeep: written\nrmdir: written\nrename: written\nmine\ndeep\n",
        "what the probe could write"
    );
    assert!(
        !Path::new("/etc/avail-evil-test").exists(),
        "the probe wrote /etc/avail-evil-test"
    );
    assert!(
        std::fs::read("/etc/passwd").unwrap() == passwd_before,
        "/etc/passwd changed"
    );

    // (b) The set-user-ID bit gives nothing.
    let uid = user.uid();
    let out = user.run_ok(&client, "evil-id", &[]);
    assert!(
        out.starts_with(&format!("uid={uid}({USER})")) && !out.contains("euid="),
        "the set-user-ID-root id runs as the user, with no other effective uid: {out}"
    );

    // (c) The writes are in the user's layer, theirs, and nowhere else.
    let upper = user.layer(&pkg.package_id).join("upper");
    for (rel, want) in [
        ("opt/evil/mine.txt", "mine\n"),
        ("opt/evil/new/dir/f", "deep\n"),
    ] {
        let path = upper.join(rel);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            want
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().uid(),
            uid,
            "{} belongs to the user",
            path.display()
        );
        assert!(
            !Path::new("/").join(rel).exists(),
            "/{rel} reached the host"
        );
        assert!(
            !mount.join(rel).exists(),
            "{rel} reached the package's mount"
        );
    }
    assert!(
        !Path::new("/opt/evil").exists(),
        "the host has an /opt/evil"
    );
}
