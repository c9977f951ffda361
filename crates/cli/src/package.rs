//! `avail package …`: pack a directory tree into an .appv package (or into a new
//! version of one, `--update-of`), inspect, verify and extract packages.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use avail_format::manifest::{self, Application};
use avail_format::streammap::FeatureFile;
use avail_format::{ExtractOptions, FormatError, PackOptions, Package, ReadAt, names};
use avail_format::{fsmeta, streammap};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::progress::Bar;

#[derive(Subcommand)]
pub enum PackageCommand {
    /// Pack a directory tree into a package. The tree's paths become absolute
    /// paths on the client: DIR/opt/foo/bin/foo is /opt/foo/bin/foo. With
    /// --update-of OLD.appv, the package is a new version of OLD.
    Pack(Box<PackArgs>),
    /// Show a package's identity, applications and contents (reads only its directory and
    /// metadata). Files, blocks and bytes count the payload, not the package's own metadata
    /// parts (AppxManifest.xml, StreamMap.xml, FilesystemMetadata.xml, AppxMetadata/…).
    Inspect {
        /// The package (.appv, .appx or .msix).
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check every block of a package against its hash, every size and CRC.
    /// Exits 0 only when everything checks; otherwise prints the first failure and exits 3.
    Verify {
        /// The package (.appv, .appx or .msix).
        file: PathBuf,
        /// Print JSON instead of text: {"valid": true, "files", "blocks", …}, or
        /// {"valid": false, "error"} with the first failure (exit 3). A file that
        /// cannot be read prints no JSON (exit 1).
        #[arg(long)]
        json: bool,
    },
    /// Extract a package into DIR (which must not exist, or be empty), verifying
    /// every block. Nothing is written outside DIR; a package that fails
    /// verification leaves nothing behind. Avail payload lands under DIR/Root/.
    /// Setuid, setgid and sticky bits of files are cleared, setuid and setgid of
    /// directories too, and every directory keeps u+rx, unless --preserve-modes.
    Extract {
        /// The package.
        file: PathBuf,
        /// Target directory.
        dir: PathBuf,
        /// Apply the package's modes exactly, setuid/setgid/sticky bits included.
        /// Only as root.
        #[arg(long)]
        preserve_modes: bool,
    },
}

/// Exit code for a command line that cannot be run as given.
const EXIT_USAGE: u8 = 2;

/// What `inspect` and `verify` say of a signature: Avail does not check them.
fn signature_status<R: ReadAt>(package: &Package<R>) -> &'static str {
    if package.signature().is_some() {
        "present, not verified"
    } else {
        "none"
    }
}

/// Whether this process's effective user is root.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

#[derive(Args)]
pub struct PackArgs {
    /// The directory tree to pack.
    dir: PathBuf,
    /// The package file to write (replaced atomically).
    #[arg(short, long)]
    output: PathBuf,
    /// Make a new version of the package OLD: its PackageId, name and publisher, its
    /// applications unless --app is given, its feature blocks unless --fb0 or --fb1 is
    /// given, a fresh VersionId, and its version with the last number bumped unless
    /// --version is given. OLD is verified first.
    #[arg(long, value_name = "OLD", conflicts_with_all = ["name", "package_id"])]
    update_of: Option<PathBuf>,
    /// Display name (defaults to the directory's name).
    #[arg(long, value_parser = parse_name)]
    name: Option<String>,
    /// Package version: one to four dotted numbers, each at most 65535 [default: 1.0.0.0, or
    /// OLD's bumped with --update-of].
    #[arg(long, value_parser = parse_version)]
    version: Option<String>,
    /// Publisher in the package identity [default: CN=Avail, or OLD's with --update-of].
    #[arg(long)]
    publisher: Option<String>,
    /// PackageId (GUID) to use; a fresh one by default. For a new version of a package, use --update-of.
    #[arg(long)]
    package_id: Option<uuid::Uuid>,
    /// VersionId (GUID) to use; a fresh one by default.
    #[arg(long)]
    version_id: Option<uuid::Uuid>,
    /// An application: ID=PATH[:ARGS], PATH absolute as on the client (repeatable)
    /// [default: none, or OLD's applications with --update-of].
    #[arg(long = "app", value_name = "ID=PATH[:ARGS]", value_parser = parse_app)]
    apps: Vec<Application>,
    /// An operating system the package targets, as App-V names them:
    /// Windows{Client|Server}_MAJOR.MINOR with an optional _x86 or _x64, like
    /// WindowsClient_10.0_x64 (repeatable). A publishing server sends the
    /// package only to clients whose ClientOS is one of them [default: every
    /// operating system, or OLD's with --update-of].
    #[arg(long = "target-os", value_name = "OS", value_parser = parse_target_os)]
    target_oses: Vec<String>,
    /// An environment variable for the package's applications: NAME=VALUE, where
    /// $NAME and ${NAME} in VALUE stand for the launching environment's
    /// (PATH=/opt/foo/bin:$PATH) (repeatable) [default: none, or OLD's with --update-of].
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    environment: Vec<(String, String)>,
    /// A file or directory for the publishing feature block (FB0), besides desktop entries and icons (repeatable).
    #[arg(long, value_name = "PATH", value_parser = parse_package_path)]
    fb0: Vec<String>,
    /// A file or directory for the primary feature block (FB1): what a first launch needs (repeatable).
    #[arg(long, value_name = "PATH", value_parser = parse_package_path)]
    fb1: Vec<String>,
    /// Compression level 0–9 (0 stores everything).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    level: u32,
    /// Write zip64 headers for every file, even small ones (for tools that insist on them).
    #[arg(long)]
    zip64: bool,
    /// Record the primary feature block (FB1) by launching the application once:
    /// the package is mounted, COMMAND (after --; by default the first
    /// application with its arguments) runs in its environment, and the blocks
    /// it read become FB1 (App-V's "launch applications to optimize streaming").
    /// Needs /dev/fuse, and root or fusermount3.
    #[arg(long)]
    record_fb1: bool,
    /// The longest a recorded launch may run before it is stopped (seconds).
    #[arg(long, default_value_t = 60, requires = "record_fb1")]
    record_seconds: u64,
    /// What --record-fb1 runs, as on the client (after --).
    #[arg(last = true, value_name = "COMMAND", requires = "record_fb1")]
    record_command: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_name(s: &str) -> Result<String, String> {
    manifest::identity_name(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

fn parse_version(s: &str) -> Result<String, String> {
    manifest::normalize_version(s).map_err(|e| e.to_string())
}

fn parse_package_path(s: &str) -> Result<String, String> {
    Some(s)
        .filter(|s| s.starts_with('/'))
        .and_then(|s| names::from_linux_path(s).ok())
        .map(|_| s.to_owned())
        .ok_or_else(|| format!("{s:?} is not an absolute path as on the client, like /opt/foo/bin"))
}

/// A target operating system, checked as the publishing server reads it and
/// written in its usual spelling.
fn parse_target_os(s: &str) -> Result<String, String> {
    s.parse::<avail_model::publishing::TargetOs>()
        .map(|os| os.to_string())
        .map_err(|e| e.to_string())
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    if !manifest::valid_variable_name(name) {
        return Err(format!("{name:?} is not a variable name"));
    }
    if value.len() > manifest::MAX_VARIABLE_VALUE || value.contains('\0') {
        return Err(format!("the value of {name} is too long or holds NUL"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

fn parse_app(s: &str) -> Result<Application, String> {
    let (id, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ID=PATH[:ARGS]"))?;
    let (path, args) = match rest.split_once(':') {
        Some((p, a)) => (p, Some(a.to_owned())),
        None => (rest, None),
    };
    if id.is_empty() || !path.starts_with('/') {
        return Err(format!(
            "{s:?}: need a non-empty ID and an absolute PATH, as in foo=/opt/foo/bin/foo"
        ));
    }
    Ok(Application {
        id: id.to_owned(),
        target: Some(path.to_owned()),
        arguments: args,
    })
}

pub fn run(cmd: PackageCommand) -> Result<ExitCode> {
    match cmd {
        PackageCommand::Pack(args) => pack(*args),
        PackageCommand::Inspect { file, json } => inspect(&file, json),
        PackageCommand::Verify { file, json } => verify(&file, json),
        PackageCommand::Extract {
            file,
            dir,
            preserve_modes,
        } => {
            if preserve_modes && !running_as_root() {
                eprintln!(
                    "error: --preserve-modes is only allowed as root: it keeps setuid, setgid and \
                     sticky bits, and the extracted files belong to whoever extracts them"
                );
                return Ok(ExitCode::from(EXIT_USAGE));
            }
            let package = open(&file)?;
            let bar = Bar::new("extract");
            let options = ExtractOptions { preserve_modes };
            let result = avail_format::extract_with(&package, &dir, &options, &bar);
            bar.finish();
            let report = result.with_context(|| format!("{} was not extracted", file.display()))?;
            println!(
                "extracted {} files ({} bytes, {} blocks verified) into {}",
                report.files,
                report.bytes,
                report.blocks,
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open(file: &Path) -> Result<Package<File>> {
    let f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    Package::open(f).with_context(|| format!("{} is not a valid package", file.display()))
}

/// A command line that cannot be run as given: say why, exit 2.
fn usage(message: String) -> Result<ExitCode> {
    eprintln!("error: {message}");
    Ok(ExitCode::from(EXIT_USAGE))
}

/// Open `file` and verify every block of it; errors carry the file's name.
fn open_verified(file: &Path) -> Result<(Package<File>, avail_format::VerifyReport)> {
    let package = open(file)?;
    let bar = Bar::new("verify");
    let result = package.verify(&bar);
    bar.finish();
    let report = result.with_context(|| format!("{} failed verification", file.display()))?;
    Ok((package, report))
}

/// The paths of an old version's feature block that the new tree still has; a
/// warning for each it lacks, which is left out.
fn inherit_feature_block(tree: &Path, files: &[FeatureFile], flag: &str) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| names::linux_path(&f.name))
        .filter(|path| {
            let there = tree
                .join(path.trim_start_matches('/'))
                .symlink_metadata()
                .is_ok();
            if !there {
                eprintln!(
                    "warning: {path} is in the old version's {flag} feature block but not in \
                     the tree; it is left out"
                );
            }
            there
        })
        .collect()
}

fn pack(args: PackArgs) -> Result<ExitCode> {
    let mut options = PackOptions {
        name: String::new(),
        identity_name: None,
        version: args.version.clone().unwrap_or_else(|| "1.0.0.0".into()),
        publisher: args.publisher.clone().unwrap_or_else(|| "CN=Avail".into()),
        package_id: args.package_id,
        version_id: args.version_id,
        applications: args.apps,
        target_oses: dedup(args.target_oses),
        environment: args.environment,
        publishing: args.fb0,
        primary: args.fb1,
        primary_runs: Vec::new(),
        level: args.level,
        force_zip64: args.zip64,
    };
    // An update is what an App-V sequencer's "update package" makes: it opens the
    // old package and keeps its identity and settings, and gets a new VersionId.
    let old = match &args.update_of {
        Some(file) => {
            let (package, _) = open_verified(file)?;
            let m = package.manifest().clone();
            let Some(package_id) = m.package_id else {
                return usage(format!(
                    "--update-of {}: the package has no appv:PackageId (an AppX/MSIX package, \
                     not an App-V one), so it has no versions to continue; pack it without \
                     --update-of",
                    file.display()
                ));
            };
            if args.version_id.is_some() && args.version_id == m.version_id {
                return usage(format!(
                    "--version-id is the VersionId of {}: a new version needs a new one",
                    file.display()
                ));
            }
            if args.version.is_none() {
                match manifest::next_version(&m.version) {
                    Some(next) => options.version = next,
                    None => {
                        return usage(format!(
                            "--update-of {}: its version {:?} is not dotted numbers that can be \
                             bumped (App-V versions are four numbers, each at most 65535); give \
                             the new one with --version",
                            file.display(),
                            m.version
                        ));
                    }
                }
            }
            options.package_id = Some(package_id);
            options.name = m.display_name.clone().unwrap_or_else(|| m.name.clone());
            options.identity_name = Some(m.name.clone());
            if args.publisher.is_none() && !m.publisher.is_empty() {
                options.publisher = m.publisher.clone();
            }
            if options.applications.is_empty() {
                options.applications = m.applications.clone();
            }
            if options.environment.is_empty() {
                options.environment = m.environment.clone();
            }
            if options.target_oses.is_empty() {
                options.target_oses = m.target_oses.clone();
            }
            if options.publishing.is_empty()
                && options.primary.is_empty()
                && let Some(streams) = package.stream_map()
            {
                options.publishing = inherit_feature_block(&args.dir, &streams.publishing, "--fb0");
                options.primary = inherit_feature_block(&args.dir, &streams.primary, "--fb1");
            }
            Some(m)
        }
        None => None,
    };
    if old.is_none() {
        options.name = match args.name {
            Some(n) => n,
            None => args
                .dir
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "package".into()),
        };
    }
    let bar = Bar::new("pack");
    let result = avail_format::pack(&args.dir, &args.output, &options, &bar);
    bar.finish();
    let mut summary = result.with_context(|| format!("{} was not packed", args.dir.display()))?;
    let mut recorded = None;
    if args.record_fb1 {
        let command = match args.record_command.split_first() {
            Some(_) => args.record_command.clone(),
            None => {
                let Some(app) = summary.manifest.applications.first() else {
                    return usage("--record-fb1: the package has no application to launch; give the command after --".into());
                };
                let mut command = vec![app.target.clone().unwrap_or_default()];
                if let Some(arguments) = &app.arguments {
                    command.extend(shell_words::split(arguments).with_context(|| {
                        format!("the arguments of application {} do not parse", app.id)
                    })?);
                }
                command
            }
        };
        let exe = std::env::current_exe()?;
        let state = tempfile_dir()?;
        let recording = avail_client::train::record(
            &args.output,
            |mount| {
                std::process::Command::new(&exe)
                    .arg("enter")
                    .arg("--lower")
                    .arg(mount)
                    .arg("--state")
                    .arg(state.path())
                    .arg("--")
                    .args(&command)
                    // Its output goes to stderr: stdout is pack's (--json).
                    .stdout(std::io::stderr())
                    .spawn()
            },
            std::time::Duration::from_secs(args.record_seconds),
        )?;
        if recording.stopped {
            eprintln!(
                "warning: the recorded launch was still running after {} s and was stopped",
                args.record_seconds
            );
        }
        options.package_id = summary.manifest.package_id;
        options.version_id = summary.manifest.version_id;
        options.identity_name = Some(summary.manifest.name.clone());
        options.primary_runs = recording.primary.clone();
        let bar = Bar::new("pack");
        let result = avail_format::pack(&args.dir, &args.output, &options, &bar);
        bar.finish();
        summary = result.with_context(|| {
            format!(
                "{} was not packed again with its recorded FB1",
                args.dir.display()
            )
        })?;
        recorded = Some(recording);
    }
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    let m = &summary.manifest;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "output": args.output,
                "package_id": m.package_id,
                "version_id": m.version_id,
                "name": m.display_name,
                "version": m.version,
                "target_oses": m.target_oses,
                "update_of": old.as_ref().map(|o| serde_json::json!({
                    "file": args.update_of,
                    "version_id": o.version_id,
                    "version": o.version,
                })),
                "files": summary.files,
                "recorded_fb1": recorded.as_ref().map(|r| serde_json::json!({
                    "files": r.primary.len(),
                    "blocks": r.blocks,
                    "stopped": r.stopped,
                })),
                "blocks": summary.blocks,
                "bytes": summary.bytes,
                "package_size": summary.package_size,
            })
        );
    } else {
        println!(
            "packed {} ({} files, {} blocks, {} bytes → {} bytes)\n  PackageId {}\n  VersionId {}\n  Version   {}",
            args.output.display(),
            summary.files,
            summary.blocks,
            summary.bytes,
            summary.package_size,
            m.package_id.map(|u| u.to_string()).unwrap_or_default(),
            m.version_id.map(|u| u.to_string()).unwrap_or_default(),
            m.version,
        );
        if !m.target_oses.is_empty() {
            println!("  Targets   {}", m.target_oses.join(", "));
        }
        if let Some(r) = &recorded {
            println!(
                "  FB1       {} blocks of {} files, recorded from a launch",
                r.blocks,
                r.primary.len()
            );
        }
        if let Some(o) = &old {
            println!(
                "  a new version of {} (version {}, VersionId {})",
                o.display_name.as_deref().unwrap_or(&o.name),
                o.version,
                o.version_id.map(|u| u.to_string()).unwrap_or_default(),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A temporary directory for a recorded launch's copy-on-write layer.
fn tempfile_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("avail-record-layer-")
        .tempdir()
        .context("cannot make a temporary directory")
}

/// `values` in their first order, each once.
fn dedup(values: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    values
        .into_iter()
        .filter(|v| seen.insert(v.clone()))
        .collect()
}

#[derive(Serialize)]
struct EnvOutput<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct InspectOutput<'a> {
    name: &'a str,
    display_name: Option<&'a str>,
    publisher: &'a str,
    version: &'a str,
    package_id: Option<uuid::Uuid>,
    version_id: Option<uuid::Uuid>,
    applications: Vec<AppOutput<'a>>,
    /// `Prerequisites/appv:TargetOSes/appv:TargetOS`; empty for every
    /// operating system.
    target_oses: &'a [String],
    /// `avail:EnvironmentVariables`: name and value, for the applications.
    environment: Vec<EnvOutput<'a>>,
    /// Payload files only: the package's own metadata parts are not counted.
    files: usize,
    /// The package's own metadata parts (AppxManifest.xml, StreamMap.xml, …)
    /// listed in its block map.
    metadata_parts: usize,
    /// Blocks of the payload files.
    blocks: usize,
    stored_blocks: usize,
    deflated_blocks: usize,
    /// Uncompressed bytes of the payload files.
    bytes: u64,
    package_size: u64,
    publishing_feature_block: Vec<&'a str>,
    primary_feature_block: Vec<&'a str>,
    /// `AppxSignature.p7x`: "present, not verified" or "none".
    signature: &'static str,
}

#[derive(Serialize)]
struct AppOutput<'a> {
    id: &'a str,
    target: Option<&'a str>,
    arguments: Option<&'a str>,
}

/// Whether a block-map part is the package's own metadata (AppxManifest.xml,
/// StreamMap.xml, FilesystemMetadata.xml, AppxMetadata\…) rather than payload.
/// The footprint parts (`AppxBlockMap.xml`, `[Content_Types].xml`, the signature)
/// are not in the block map at all.
fn is_metadata_part(name: &str) -> bool {
    const METADATA_DIR: &str = "AppxMetadata\\";
    [manifest::PART, streammap::PART, fsmeta::PART]
        .iter()
        .any(|part| names::same_part(part, name))
        || name
            .get(..METADATA_DIR.len())
            .is_some_and(|dir| names::same_part(dir, METADATA_DIR))
}

/// How many of the block map's parts are the package's own metadata.
fn metadata_parts<R: ReadAt>(package: &Package<R>) -> usize {
    package
        .files()
        .iter()
        .filter(|f| is_metadata_part(&f.map.name))
        .count()
}

fn inspect(file: &Path, json: bool) -> Result<ExitCode> {
    let package = open(file)?;
    let m = package.manifest();
    let payload: Vec<_> = package
        .files()
        .iter()
        .filter(|f| !is_metadata_part(&f.map.name))
        .collect();
    let count = |deflated: bool| -> usize {
        payload
            .iter()
            .filter(|f| f.deflated == deflated)
            .map(|f| f.map.blocks.len())
            .sum()
    };
    let feature = |primary: bool| -> Vec<&str> {
        package
            .stream_map()
            .map(|s| if primary { &s.primary } else { &s.publishing })
            .map(|files| files.iter().map(|f| f.name.as_str()).collect())
            .unwrap_or_default()
    };
    let out = InspectOutput {
        name: &m.name,
        display_name: m.display_name.as_deref(),
        publisher: &m.publisher,
        version: &m.version,
        package_id: m.package_id,
        version_id: m.version_id,
        applications: m
            .applications
            .iter()
            .map(|a| AppOutput {
                id: &a.id,
                target: a.target.as_deref(),
                arguments: a.arguments.as_deref(),
            })
            .collect(),
        target_oses: &m.target_oses,
        environment: m
            .environment
            .iter()
            .map(|(name, value)| EnvOutput { name, value })
            .collect(),
        files: payload.len(),
        metadata_parts: package.files().len() - payload.len(),
        blocks: count(true) + count(false),
        stored_blocks: count(false),
        deflated_blocks: count(true),
        bytes: payload.iter().map(|f| f.map.size).sum(),
        package_size: std::fs::metadata(file)?.len(),
        publishing_feature_block: feature(false),
        primary_feature_block: feature(true),
        signature: signature_status(&package),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let guid = |g: Option<uuid::Uuid>| g.map_or_else(|| "(none)".to_owned(), |g| g.to_string());
    println!(
        "Name:         {} ({})",
        out.display_name.unwrap_or(out.name),
        out.name
    );
    println!("Version:      {}", out.version);
    println!("Publisher:    {}", out.publisher);
    println!("PackageId:    {}", guid(out.package_id));
    println!("VersionId:    {}", guid(out.version_id));
    println!(
        "Files:        {} (payload; {} blocks: {} stored, {} deflated; {} metadata parts not counted)",
        out.files, out.blocks, out.stored_blocks, out.deflated_blocks, out.metadata_parts
    );
    println!(
        "Size:         {} bytes of payload uncompressed, {} bytes packed",
        out.bytes, out.package_size
    );
    println!(
        "Feature blocks: publishing {} files, primary {} files",
        out.publishing_feature_block.len(),
        out.primary_feature_block.len()
    );
    println!(
        "Target OSes:  {}",
        if out.target_oses.is_empty() {
            "every operating system".to_owned()
        } else {
            out.target_oses.join(", ")
        }
    );
    for v in &out.environment {
        println!("Environment:  {}={}", v.name, v.value);
    }
    println!("Signature:    {}", out.signature);
    println!("Applications: {}", out.applications.len());
    for a in &out.applications {
        println!(
            "  {:<20} {} {}",
            a.id,
            a.target.unwrap_or("-"),
            a.arguments.unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a format error says something of the package (invalid, corrupt or
/// hostile: exit 3) rather than of reading it (I/O: exit 1).
fn is_refusal(err: &anyhow::Error) -> bool {
    !matches!(
        err.downcast_ref::<FormatError>(),
        None | Some(FormatError::Io { .. }) | Some(FormatError::Invalid(_))
    )
}

fn verify(file: &Path, json: bool) -> Result<ExitCode> {
    let result = open_verified(file);
    if !json {
        let (package, report) = result?;
        let metadata = metadata_parts(&package);
        println!(
            "OK: {} files and {metadata} metadata parts, {} blocks ({} stored, {} deflated), {} bytes verified",
            report.files - metadata as u64,
            report.blocks,
            report.stored_blocks,
            report.deflated_blocks,
            report.bytes
        );
        if package.signature().is_some() {
            println!("Signature: present, not verified (Avail does not check package signatures)");
        }
        return Ok(ExitCode::SUCCESS);
    }
    // A package that could not be read says nothing of its validity: no answer.
    if let Err(err) = &result
        && !is_refusal(err)
    {
        return result.map(|_| ExitCode::SUCCESS);
    }
    let mut out = serde_json::json!({
        "valid": result.is_ok(),
        "file": file,
    });
    match &result {
        Ok((package, report)) => {
            let metadata = metadata_parts(package);
            out["files"] = (report.files - metadata as u64).into();
            out["metadata_parts"] = metadata.into();
            out["blocks"] = report.blocks.into();
            out["stored_blocks"] = report.stored_blocks.into();
            out["deflated_blocks"] = report.deflated_blocks.into();
            out["bytes"] = report.bytes.into();
            out["signature"] = signature_status(package).into();
        }
        // The first failure; the JSON is the whole answer, so it is not repeated on stderr.
        Err(err) => out["error"] = format!("{err:#}").into(),
    }
    println!("{out}");
    Ok(if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_INVALID)
    })
}
