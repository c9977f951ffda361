//! Desktop integration (`avail_client::desktop::sync`) on temporary
//! directories standing for a package's mount and the XDG data directory:
//! rewritten and generated entries, icons, unpublishing, idempotence and
//! version replacement, hostile packages and list files, the MIME default
//! seen by `xdg-mime` (Debian packages `xdg-utils` and `desktop-file-utils`),
//! and `xdg-open` of a file of a package's own MIME type starting the
//! application through Avail (also `libfile-mimeinfo-perl` and
//! `shared-mime-info`).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use avail_client::desktop::{PackageDesktop, sync};
use avail_format::manifest::Application;
use uuid::Uuid;

const BIN: &str = "/usr/bin/avail";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\nnot really a png";

fn app(id: &str, target: &str) -> Application {
    Application {
        id: id.into(),
        target: Some(target.into()),
        arguments: None,
    }
}

fn put(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

fn package(mount: &Path, apps: Vec<Application>) -> PackageDesktop {
    PackageDesktop {
        package_id: Uuid::new_v4(),
        version_id: Uuid::new_v4(),
        name: "Foo Editor".into(),
        mount: mount.to_path_buf(),
        applications: apps,
    }
}

/// Every file under `dir` (relative path → content), symlinks as their target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            if t.is_dir() {
                walk(root, &e.path(), out);
            } else if t.is_symlink() {
                out.insert(
                    rel,
                    fs::read_link(e.path())
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else {
                out.insert(rel, fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

const FOO_DESKTOP: &str = "\
[Desktop Entry]
Type=Application
Name=Foo Editor
Name[de]=Foo-Editor
Comment=Edits foo files
Exec=/opt/foo/bin/foo --new-window %F
TryExec=/opt/foo/bin/foo
Icon=foo
MimeType=application/x-avail-test-foo;
Categories=Utility;
Actions=new-doc;evil;

[Desktop Action new-doc]
Name=New Document
Exec=foo --new
Icon=foo

[Desktop Action evil]
Name=Evil
Exec=/bin/sh -c 'rm -rf ~'

[Other Group]
Exec=/bin/false
";

/// A package with one application, a desktop file, a 48x48 icon and a pixmap.
fn foo_mount(mount: &Path) {
    put(
        mount,
        "usr/share/applications/foo.desktop",
        FOO_DESKTOP.as_bytes(),
    );
    put(mount, "usr/share/icons/hicolor/48x48/apps/foo.png", PNG);
    put(mount, "usr/share/pixmaps/foo.xpm", b"/* XPM */");
    put(mount, "opt/foo/bin/foo", b"#!/bin/sh\n");
}

#[test]
fn a_desktop_file_is_rewritten_with_its_icons() {
    let mount = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    foo_mount(mount.path());
    let pkg = package(mount.path(), vec![app("Foo", "/opt/foo/bin/foo")]);
    let id = pkg.package_id;

    let summary = sync(data.path(), std::slice::from_ref(&pkg), BIN).unwrap();
    assert!(summary.removed.is_empty());

    let entry_path = data
        .path()
        .join(format!("applications/avail-{id}-Foo.desktop"));
    let icon_path = data
        .path()
        .join(format!("icons/hicolor/48x48/apps/avail-{id}-foo.png"));
    let pixmap_path = data.path().join(format!("pixmaps/avail-{id}-foo.xpm"));
    let mut installed = summary.installed.clone();
    installed.sort();
    let mut expected = vec![entry_path.clone(), icon_path.clone(), pixmap_path.clone()];
    expected.sort();
    assert_eq!(installed, expected);

    let entry = fs::read_to_string(&entry_path).unwrap();
    let lines: Vec<&str> = entry.lines().collect();
    assert!(
        lines.contains(&"Exec=/usr/bin/avail run Foo --new-window %F"),
        "{entry}"
    );
    assert!(!entry.contains("TryExec"), "{entry}");
    assert!(
        lines.contains(&format!("X-Avail-Package={id}").as_str()),
        "{entry}"
    );
    assert!(
        lines.contains(&format!("X-Avail-Version={}", pkg.version_id).as_str()),
        "{entry}"
    );
    assert!(
        lines.contains(&format!("Icon=avail-{id}-foo").as_str()),
        "{entry}"
    );
    assert!(
        lines.contains(&"MimeType=application/x-avail-test-foo;"),
        "{entry}"
    );
    assert!(lines.contains(&"Name[de]=Foo-Editor"), "{entry}");
    assert!(lines.contains(&"Categories=Utility;"), "{entry}");
    // The action running the application is rewritten, the other dropped.
    assert!(lines.contains(&"Actions=new-doc;"), "{entry}");
    assert!(lines.contains(&"[Desktop Action new-doc]"), "{entry}");
    assert!(
        lines.contains(&"Exec=/usr/bin/avail run Foo --new"),
        "{entry}"
    );
    assert!(
        !entry.contains("Evil") && !entry.contains("rm -rf") && !entry.contains("Other Group"),
        "{entry}"
    );
    assert!(!entry.contains("/bin/false"), "{entry}");

    assert_eq!(fs::read(&icon_path).unwrap(), PNG);
    assert_eq!(fs::read(&pixmap_path).unwrap(), b"/* XPM */");
    for p in [&entry_path, &icon_path, &pixmap_path] {
        assert_eq!(
            fs::metadata(p).unwrap().permissions().mode() & 0o777,
            0o644,
            "{}",
            p.display()
        );
    }
    let list =
        fs::read_to_string(data.path().join(format!("applications/.avail/{id}.list"))).unwrap();
    assert!(
        list.contains(&format!("version={}", pkg.version_id)),
        "{list}"
    );
    assert_eq!(
        list.lines().filter(|l| l.starts_with("file=")).count(),
        3,
        "{list}"
    );
}

#[test]
fn exec_quoting_and_field_codes_survive() {
    let mount = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    put(
        mount.path(),
        "usr/share/applications/q.desktop",
        b"[Desktop Entry]\nType=Application\nName=Q\nExec=\"/opt/q q/bin/q\" --title \"a \\\\$b\" %u %d\nIcon=/opt/q q/share/q.png\n",
    );
    put(mount.path(), "opt/q q/share/q.png", PNG);
    let pkg = package(mount.path(), vec![app("q.app", "/opt/q q/bin/q")]);
    sync(
        data.path(),
        std::slice::from_ref(&pkg),
        "/opt/my avail/avail",
    )
    .unwrap();
    let entry = fs::read_to_string(data.path().join(format!(
        "applications/avail-{}-q.app.desktop",
        pkg.package_id
    )))
    .unwrap();
    assert!(
        entry
            .lines()
            .any(|l| l == "Exec=\"/opt/my avail/avail\" run q.app --title \"a \\\\$b\" %u"),
        "{entry}"
    );
    // An absolute icon path in the package becomes its copy's path.
    let icon = data
        .path()
        .join(format!("pixmaps/avail-{}-q.png", pkg.package_id));
    assert_eq!(fs::read(&icon).unwrap(), PNG);
    assert!(
        entry
            .lines()
            .any(|l| l == format!("Icon={}", icon.display())),
        "{entry}"
    );
}

#[test]
fn an_application_without_a_desktop_file_gets_a_generated_entry() {
    let mount = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    foo_mount(mount.path());
    let pkg = package(
        mount.path(),
        vec![
            app("Foo", "/opt/foo/bin/foo"),
            app("Bar", "/opt/foo/bin/bar"),
        ],
    );
    let id = pkg.package_id;
    sync(data.path(), std::slice::from_ref(&pkg), BIN).unwrap();

    let generated = fs::read_to_string(
        data.path()
            .join(format!("applications/avail-{id}-Bar.desktop")),
    )
    .unwrap();
    let lines: Vec<&str> = generated.lines().collect();
    for want in [
        "[Desktop Entry]",
        "Type=Application",
        "Name=Foo Editor (Bar)",
        "Exec=/usr/bin/avail run Bar",
        "NoDisplay=false",
    ] {
        assert!(lines.contains(&want), "{want} missing from {generated}");
    }
    assert!(
        lines.contains(&format!("X-Avail-Package={id}").as_str()),
        "{generated}"
    );
    // Foo has its own rewritten entry, not a generated one.
    let foo = fs::read_to_string(
        data.path()
            .join(format!("applications/avail-{id}-Foo.desktop")),
    )
    .unwrap();
    assert!(foo.contains("Comment=Edits foo files"), "{foo}");

    // A single application takes the package's name.
    let data2 = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let single = package(empty.path(), vec![app("Only", "/opt/only/only")]);
    sync(data2.path(), std::slice::from_ref(&single), BIN).unwrap();
    let only = fs::read_to_string(data2.path().join(format!(
        "applications/avail-{}-Only.desktop",
        single.package_id
    )))
    .unwrap();
    assert!(only.lines().any(|l| l == "Name=Foo Editor"), "{only}");
}

#[test]
fn unpublishing_removes_exactly_what_was_installed() {
    let mount = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    foo_mount(mount.path());
    // Unrelated files of the user and of other software.
    put(
        data.path(),
        "applications/other.desktop",
        b"[Desktop Entry]\nType=Application\nName=Other\nExec=other\n",
    );
    put(
        data.path(),
        "icons/hicolor/48x48/apps/foo.png",
        b"the user's own foo icon",
    );
    put(data.path(), "pixmaps/foo.xpm", b"the user's pixmap");
    let before = snapshot(data.path());

    let pkg = package(
        mount.path(),
        vec![
            app("Foo", "/opt/foo/bin/foo"),
            app("Bar", "/opt/foo/bin/bar"),
        ],
    );
    let installed = sync(data.path(), std::slice::from_ref(&pkg), BIN)
        .unwrap()
        .installed;
    assert_eq!(installed.len(), 4, "{installed:?}");

    let summary = sync(data.path(), &[], BIN).unwrap();
    assert!(summary.installed.is_empty());
    let mut removed = summary.removed.clone();
    removed.sort();
    let mut installed_sorted = installed.clone();
    installed_sorted.sort();
    assert_eq!(removed, installed_sorted);
    for p in &installed {
        assert!(!p.exists(), "{} survived", p.display());
    }
    assert!(
        !data
            .path()
            .join(format!("applications/.avail/{}.list", pkg.package_id))
            .exists()
    );
    // Everything else is as it was (update-desktop-database may have added
    // its cache).
    let mut after = snapshot(data.path());
    after.remove(Path::new("applications/mimeinfo.cache"));
    assert_eq!(after, before);
}

#[test]
fn a_second_sync_changes_nothing_and_a_new_version_replaces_the_files() {
    let mount = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    foo_mount(mount.path());
    let mut pkg = package(mount.path(), vec![app("Foo", "/opt/foo/bin/foo")]);
    let id = pkg.package_id;
    let first = sync(data.path(), std::slice::from_ref(&pkg), BIN).unwrap();
    assert_eq!(first.installed.len(), 3);
    let snap = snapshot(data.path());

    let second = sync(data.path(), std::slice::from_ref(&pkg), BIN).unwrap();
    assert!(
        second.installed.is_empty() && second.removed.is_empty(),
        "{second:?}"
    );
    assert_eq!(snapshot(data.path()), snap);

    // A new version: no more pixmap, a second application, a new icon size.
    let mount2 = tempfile::tempdir().unwrap();
    put(
        mount2.path(),
        "usr/share/applications/foo.desktop",
        FOO_DESKTOP.as_bytes(),
    );
    put(
        mount2.path(),
        "usr/share/icons/hicolor/scalable/apps/foo.svg",
        b"<svg/>",
    );
    pkg.version_id = Uuid::new_v4();
    pkg.mount = mount2.path().to_path_buf();
    pkg.applications.push(app("Bar", "/opt/foo/bin/bar"));
    let third = sync(data.path(), std::slice::from_ref(&pkg), BIN).unwrap();
    let names = |v: &[PathBuf]| {
        let mut n: Vec<String> = v
            .iter()
            .map(|p| {
                p.strip_prefix(data.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        names(&third.installed),
        vec![
            format!("applications/avail-{id}-Bar.desktop"),
            format!("applications/avail-{id}-Foo.desktop"),
            format!("icons/hicolor/scalable/apps/avail-{id}-foo.svg"),
        ]
    );
    assert_eq!(
        names(&third.removed),
        vec![
            format!("icons/hicolor/48x48/apps/avail-{id}-foo.png"),
            format!("pixmaps/avail-{id}-foo.xpm")
        ]
    );
    let entry = fs::read_to_string(
        data.path()
            .join(format!("applications/avail-{id}-Foo.desktop")),
    )
    .unwrap();
    assert!(
        entry.contains(&format!("X-Avail-Version={}", pkg.version_id)),
        "{entry}"
    );

    // And that is stable too; another avail binary rewrites the entries.
    let fourth = sync(data.path(), std::slice::from_ref(&pkg), BIN).unwrap();
    assert!(
        fourth.installed.is_empty() && fourth.removed.is_empty(),
        "{fourth:?}"
    );
    let fifth = sync(
        data.path(),
        std::slice::from_ref(&pkg),
        "/usr/local/bin/avail",
    )
    .unwrap();
    assert_eq!(fifth.installed.len(), 3);
    assert!(fifth.removed.is_empty());
}

#[test]
fn hostile_packages_and_lists_stay_inside_the_data_directory() {
    let mount = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let m = mount.path();
    let victim = outside.path().join("victim");
    fs::write(&victim, b"precious").unwrap();

    // A desktop file that is a symlink to /etc/passwd, an oversized one, one
    // running a program that is no application, an icon path escaping the
    // icon directories, a symlinked icon, a DBusActivatable spoof.
    fs::create_dir_all(m.join("usr/share/applications")).unwrap();
    symlink(
        "/etc/passwd",
        m.join("usr/share/applications/passwd.desktop"),
    )
    .unwrap();
    let mut big =
        String::from("[Desktop Entry]\nType=Application\nName=Big\nExec=/opt/foo/bin/foo\n");
    while big.len() <= 70 * 1024 {
        big.push_str("Comment=padding padding padding padding padding padding padding padding\n");
    }
    put(m, "usr/share/applications/big.desktop", big.as_bytes());
    put(
        m,
        "usr/share/applications/other.desktop",
        b"[Desktop Entry]\nType=Application\nName=Other\nExec=/bin/sh -c evil\n",
    );
    put(
        m,
        "usr/share/applications/escape.desktop",
        b"[Desktop Entry]\nType=Application\nName=Escape\nExec=foo %f\nIcon=../../../../etc/passwd\n\
          DBusActivatable=true\nX-Avail-Package=spoofed\nExec[de]=/bin/sh\n",
    );
    put(
        m,
        "usr/share/applications/abs.desktop",
        b"[Desktop Entry]\nType=Application\nName=Abs\nExec=/opt/foo/bin/foo\nIcon=/etc/passwd\n",
    );
    put(
        m,
        "usr/share/applications/link-icon.desktop",
        b"[Desktop Entry]\nType=Application\nName=L\nExec=foo\nIcon=linked\n",
    );
    fs::create_dir_all(m.join("usr/share/icons/hicolor/48x48/apps")).unwrap();
    symlink(
        &victim,
        m.join("usr/share/icons/hicolor/48x48/apps/linked.png"),
    )
    .unwrap();
    // A theme directory that is a symlink out of the mount.
    symlink(outside.path(), m.join("usr/share/icons/evil")).unwrap();
    // MIME package files: a symlink to /etc/passwd, an oversized one, one
    // declaring an external entity, one with a hostile name (copied under a
    // safe one), a directory.
    let mime = m.join("usr/share/mime/packages");
    fs::create_dir_all(mime.join("dir.xml")).unwrap();
    symlink("/etc/passwd", mime.join("passwd.xml")).unwrap();
    let mut big_mime = String::from(
        "<?xml version=\"1.0\"?>\n<mime-info xmlns=\"http://www.freedesktop.org/standards/shared-mime-info\">\n",
    );
    while big_mime.len() <= 70 * 1024 {
        big_mime.push_str("<!-- padding padding padding padding padding padding padding -->\n");
    }
    big_mime.push_str("</mime-info>\n");
    put(m, "usr/share/mime/packages/big.xml", big_mime.as_bytes());
    put(
        m,
        "usr/share/mime/packages/entity.xml",
        b"<?xml version=\"1.0\"?>\n<!DOCTYPE mime-info [<!ENTITY p SYSTEM \"file:///etc/passwd\">]>\n\
          <mime-info xmlns=\"http://www.freedesktop.org/standards/shared-mime-info\">\n\
          <mime-type type=\"text/x-entity\"><comment>&p;</comment><glob pattern=\"*.entity\"/></mime-type>\n\
          </mime-info>\n",
    );
    put(
        m,
        "usr/share/mime/packages/..;$(touch pwned) x.xml",
        b"<?xml version=\"1.0\"?>\n<mime-info xmlns=\"http://www.freedesktop.org/standards/shared-mime-info\">\n\
          <mime-type type=\"text/x-hostile\"><comment>hostile</comment><glob pattern=\"*.hostile\"/></mime-type>\n\
          </mime-info>\n",
    );
    fs::create_dir_all(outside.path().join("48x48/apps")).unwrap();
    fs::write(outside.path().join("48x48/apps/foo.png"), b"outside").unwrap();

    // An application id with slashes and dots; another that is only dots.
    let pkg = package(
        m,
        vec![
            app("../../../../tmp/x/../evil", "/opt/foo/bin/foo"),
            app("..", "/opt/bar"),
            app("", "/opt/empty"),
        ],
    );
    let id = pkg.package_id;

    // A hostile list of an unpublished package naming files outside.
    let other = Uuid::new_v4();
    put(
        data.path(),
        &format!("applications/.avail/{other}.list"),
        format!(
            "version={}\nfile=/etc/passwd\nfile={}\nfile=../{}\nfile=applications/../../victim\n\
             file=applications/not-avail.desktop\nfile=applications/avail-{id}-x.desktop\n\
             file=mime/avail-{other}-x.xml\nfile=mime/packages/sub/avail-{other}-x.xml\n\
             file=mime/packages/avail-{other}-x.txt\nfile=mime/packages/avail-{id}-x.xml\n\
             file=mime/packages/../avail-{other}-x.xml\n",
            Uuid::new_v4(),
            victim.display(),
            victim.file_name().unwrap().to_string_lossy(),
        )
        .as_bytes(),
    );
    // Files a list of `other` may not name although they look like its own.
    let not_listed = [
        format!("mime/avail-{other}-x.xml"),
        format!("mime/packages/sub/avail-{other}-x.xml"),
        format!("mime/packages/avail-{other}-x.txt"),
        format!("mime/packages/avail-{id}-x.xml"),
    ];
    for rel in &not_listed {
        put(data.path(), rel, b"not Avail's to delete");
    }
    put(
        data.path(),
        "applications/not-avail.desktop",
        b"[Desktop Entry]\n",
    );
    put(
        data.path(),
        &format!("applications/avail-{id}-x.desktop"),
        b"other package's",
    );
    let outside_before = snapshot(outside.path());
    let passwd = fs::read("/etc/passwd").unwrap();

    let summary = sync(data.path(), std::slice::from_ref(&pkg), BIN).unwrap();
    for p in summary.installed.iter().chain(&summary.removed) {
        assert!(p.starts_with(data.path()), "{} is outside", p.display());
        assert!(
            !p.components().any(|c| c == std::path::Component::ParentDir),
            "{}",
            p.display()
        );
    }
    assert!(summary.removed.is_empty(), "{:?}", summary.removed);
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd);
    assert_eq!(snapshot(outside.path()), outside_before);
    assert!(data.path().join("applications/not-avail.desktop").exists());
    assert!(
        data.path()
            .join(format!("applications/avail-{id}-x.desktop"))
            .exists()
    );
    assert!(
        !data
            .path()
            .join(format!("applications/.avail/{other}.list"))
            .exists()
    );

    // What was written: only entries for the matching files, with safe names.
    let written = snapshot(data.path());
    let entries: Vec<String> = written
        .keys()
        .filter_map(|p| p.strip_prefix("applications").ok())
        .filter(|p| p.components().count() == 1)
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("avail-{id}-")))
        .collect();
    for name in &entries {
        assert!(!name.contains('/') && !name.contains(".."), "{name}");
    }
    let all = written
        .values()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!all.contains("root:x:0:0"), "/etc/passwd was copied");
    assert!(
        !all.contains("precious") && !all.contains("outside"),
        "a file outside the mount was copied"
    );
    assert!(!all.contains("padding"), "the oversized file was used");
    assert!(
        !all.contains("Exec=/bin/sh") && !all.contains("-c evil"),
        "{all}"
    );
    assert!(
        !all.contains("DBusActivatable") && !all.contains("spoofed"),
        "{all}"
    );
    assert!(
        !all.contains("Icon=../") && !all.contains("Icon=/etc"),
        "{all}"
    );
    assert!(
        !written.keys().any(|p| p.starts_with("icons/evil")),
        "{:?}",
        written.keys()
    );
    for rel in &not_listed {
        assert!(data.path().join(rel).exists(), "{rel} was deleted");
    }
    // Only the acceptable MIME package file was copied, under a safe name.
    let mut mime_files: Vec<String> = fs::read_dir(data.path().join("mime/packages"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("avail-{id}-")) && n != &format!("avail-{id}-x.xml"))
        .collect();
    mime_files.sort();
    assert_eq!(
        mime_files,
        vec![format!("avail-{id}-_.___touch_pwned__x.xml")]
    );
    assert!(!all.contains("text/x-entity"), "the entity file was copied");
    assert!(!Path::new("pwned").exists() && !data.path().join("pwned").exists());
    // The escape entry runs the first application through Avail.
    assert!(
        all.contains("Exec=/usr/bin/avail run ../../../../tmp/x/../evil %f\n"),
        "{all}"
    );

    // Unpublishing removes exactly this package's files.
    let summary = sync(data.path(), &[], BIN).unwrap();
    assert!(summary.removed.iter().all(|p| p.starts_with(data.path())));
    assert!(data.path().join("applications/not-avail.desktop").exists());
    assert!(
        data.path()
            .join(format!("applications/avail-{id}-x.desktop"))
            .exists()
    );
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd);
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(
        !data
            .path()
            .join(format!("mime/packages/avail-{id}-_.___touch_pwned__x.xml"))
            .exists()
    );
    for rel in &not_listed {
        assert!(data.path().join(rel).exists(), "{rel} was deleted");
    }

    // A package whose MIME directory is a symlink out of the mount.
    let linked = tempfile::tempdir().unwrap();
    fs::create_dir_all(linked.path().join("usr/share")).unwrap();
    fs::create_dir_all(outside.path().join("mime/packages")).unwrap();
    fs::write(
        outside.path().join("mime/packages/outside.xml"),
        b"<mime-info>outside</mime-info>",
    )
    .unwrap();
    symlink(
        outside.path().join("mime"),
        linked.path().join("usr/share/mime"),
    )
    .unwrap();
    let pkg = package(linked.path(), vec![app("L", "/opt/l")]);
    let summary = sync(data.path(), std::slice::from_ref(&pkg), BIN).unwrap();
    assert!(
        !summary
            .installed
            .iter()
            .any(|p| p.starts_with(data.path().join("mime"))),
        "{summary:?}"
    );
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
}

#[test]
fn xdg_mime_finds_the_installed_entry() {
    // scripts/test installs both; a missing one is a failure, not a skip.
    assert!(
        on_path("xdg-mime") && on_path("update-desktop-database"),
        "xdg-mime (Debian xdg-utils) and update-desktop-database (desktop-file-utils) are needed: apt-get install -y xdg-utils desktop-file-utils"
    );
    let mount = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let data_dirs = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    foo_mount(mount.path());
    let pkg = package(mount.path(), vec![app("Foo", "/opt/foo/bin/foo")]);
    sync(data.path(), std::slice::from_ref(&pkg), BIN).unwrap();
    assert!(data.path().join("applications/mimeinfo.cache").exists());

    let query = || {
        let out = Command::new("xdg-mime")
            .args(["query", "default", "application/x-avail-test-foo"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", config.path())
            .env("XDG_DATA_HOME", data.path())
            .env("XDG_DATA_DIRS", data_dirs.path())
            .env("XDG_CONFIG_HOME", config.path())
            .env("XDG_CONFIG_DIRS", data_dirs.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(query(), format!("avail-{}-Foo.desktop", pkg.package_id));
    if on_path("desktop-file-validate") {
        let entry = data
            .path()
            .join(format!("applications/avail-{}-Foo.desktop", pkg.package_id));
        let out = Command::new("desktop-file-validate")
            .arg(&entry)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    sync(data.path(), &[], BIN).unwrap();
    assert_eq!(query(), "");
}

/// The example application's desktop entry and MIME package file.
const HELLO_DESKTOP: &str =
    include_str!("../../../examples/hello-avail/tree/usr/share/applications/hello-avail.desktop");
const HELLO_MIME: &str =
    include_str!("../../../examples/hello-avail/tree/usr/share/mime/packages/hello-avail.xml");

/// `xdg-mime ARGS` or `xdg-open ARGS` run in xdg-utils' generic mode, seeing
/// only `data` (as `XDG_DATA_HOME`) and empty directories: no desktop
/// environment is detected (`XDG_CURRENT_DESKTOP=X-Generic` skips the probing
/// through D-Bus and X), and a display variable is set because generic
/// `xdg-open` consults `xdg-mime` only when it believes there is a display
/// (nothing connects to it).
fn xdg(tool: &str, args: &[&Path], data: &Path, empty: &Path, home: &Path) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", home)
        .env("XDG_DATA_HOME", data)
        .env("XDG_DATA_DIRS", empty)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CONFIG_DIRS", empty)
        .env("XDG_CURRENT_DESKTOP", "X-Generic")
        .env("WAYLAND_DISPLAY", "avail-test-no-such-display")
        .current_dir(home)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (
        out.status.success(),
        format!("{text}\n{}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn xdg_open_starts_the_application_through_avail() {
    // scripts/test installs them all; a missing one is a failure, not a skip.
    let needed = [
        ("xdg-mime", "xdg-utils"),
        ("xdg-open", "xdg-utils"),
        ("update-desktop-database", "desktop-file-utils"),
        ("mimetype", "libfile-mimeinfo-perl"),
        ("update-mime-database", "shared-mime-info"),
    ];
    let missing: Vec<String> = needed
        .iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|(tool, pkg)| format!("{tool} (Debian {pkg})"))
        .collect();
    assert!(
        missing.is_empty(),
        "missing {}: apt-get install -y xdg-utils desktop-file-utils libfile-mimeinfo-perl shared-mime-info",
        missing.join(", ")
    );
    let mount = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    put(
        mount.path(),
        "usr/share/applications/hello-avail.desktop",
        HELLO_DESKTOP.as_bytes(),
    );
    put(
        mount.path(),
        "usr/share/mime/packages/hello-avail.xml",
        HELLO_MIME.as_bytes(),
    );
    put(
        mount.path(),
        "opt/hello-avail/bin/hello-avail",
        b"#!/bin/sh\n",
    );

    // `avail`: a stub appending its arguments, one a line, to a file.
    // xdg-open splits Exec on blanks, so these paths must have none.
    let calls = work.path().join("calls");
    let stub = work.path().join("avail");
    fs::write(
        &stub,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\n",
            calls.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
    let stub_str = stub.to_str().unwrap();
    let file = work.path().join("some.hello");
    fs::write(&file, b"Hello!\n").unwrap();
    for p in [stub_str, file.to_str().unwrap()] {
        assert!(!p.contains(char::is_whitespace), "{p}");
    }

    let pkg = package(
        mount.path(),
        vec![app("hello-avail", "/opt/hello-avail/bin/hello-avail")],
    );
    let id = pkg.package_id;
    let mime_package = data
        .path()
        .join(format!("mime/packages/avail-{id}-hello-avail.xml"));
    let summary = sync(data.path(), std::slice::from_ref(&pkg), stub_str).unwrap();
    assert!(summary.installed.contains(&mime_package), "{summary:?}");
    assert_eq!(fs::read_to_string(&mime_package).unwrap(), HELLO_MIME);
    // update-mime-database ran.
    assert!(data.path().join("mime/mime.cache").exists());

    let run = |tool: &str, args: &[&Path]| xdg(tool, args, data.path(), empty.path(), home.path());
    let (ok, out) = run(
        "xdg-mime",
        &[Path::new("query"), Path::new("filetype"), &file],
    );
    assert!(ok, "{out}");
    assert_eq!(out.lines().next().unwrap(), "text/x-hello-avail", "{out}");
    let (ok, out) = run(
        "xdg-mime",
        &[
            Path::new("query"),
            Path::new("default"),
            Path::new("text/x-hello-avail"),
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().next().unwrap(),
        format!("avail-{id}-hello-avail.desktop"),
        "{out}"
    );

    let (ok, out) = run("xdg-open", &[&file]);
    assert!(ok, "xdg-open failed: {out}");
    // xdg-open runs the entry in the foreground, but do not rely on it.
    let expected = format!("run\nhello-avail\n{}\n", file.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = fs::read_to_string(&calls).unwrap_or_default();
        if got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the avail stub was called with {got:?}, not {expected:?}; xdg-open said: {out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Unpublished: the MIME package file is gone and the type with it.
    let summary = sync(data.path(), &[], stub_str).unwrap();
    assert!(summary.removed.contains(&mime_package), "{summary:?}");
    assert!(!mime_package.exists());
    let (ok, out) = run(
        "xdg-mime",
        &[Path::new("query"), Path::new("filetype"), &file],
    );
    assert!(ok, "{out}");
    assert!(!out.contains("text/x-hello-avail"), "{out}");
    let (_, out) = run(
        "xdg-mime",
        &[
            Path::new("query"),
            Path::new("default"),
            Path::new("text/x-hello-avail"),
        ],
    );
    assert_eq!(out.lines().next().unwrap_or(""), "", "{out}");
}
