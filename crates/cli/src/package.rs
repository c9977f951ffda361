//! `avail package …`: pack a directory tree into an .appv package, inspect, verify
//! and extract packages.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use avail_format::manifest::Application;
use avail_format::{ExtractOptions, PackOptions, Package, VerifyReport};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::progress::Bar;

#[derive(Subcommand)]
pub enum PackageCommand {
    /// Pack a directory tree into a package. The tree's paths become absolute
    /// paths on the client: DIR/opt/foo/bin/foo is /opt/foo/bin/foo.
    Pack(PackArgs),
    /// Show a package's identity, applications and contents (reads only its directory and metadata).
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
        /// Print JSON instead of text.
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
fn signature_status<R: avail_format::ReadAt>(package: &Package<R>) -> &'static str {
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
    /// Display name (defaults to the directory's name).
    #[arg(long)]
    name: Option<String>,
    /// Package version: one to four dotted numbers.
    #[arg(long, default_value = "1.0.0.0")]
    version: String,
    /// Publisher in the package identity.
    #[arg(long, default_value = "CN=Avail")]
    publisher: String,
    /// PackageId (GUID) to use; a fresh one by default. Reuse it for a new version of the same package.
    #[arg(long)]
    package_id: Option<uuid::Uuid>,
    /// VersionId (GUID) to use; a fresh one by default.
    #[arg(long)]
    version_id: Option<uuid::Uuid>,
    /// An application: ID=PATH[:ARGS], PATH absolute as on the client (repeatable).
    #[arg(long = "app", value_name = "ID=PATH[:ARGS]", value_parser = parse_app)]
    apps: Vec<Application>,
    /// A file or directory for the publishing feature block (FB0), besides desktop entries and icons (repeatable).
    #[arg(long, value_name = "PATH")]
    fb0: Vec<String>,
    /// A file or directory for the primary feature block (FB1): what a first launch needs (repeatable).
    #[arg(long, value_name = "PATH")]
    fb1: Vec<String>,
    /// Compression level 0–9 (0 stores everything).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    level: u32,
    /// Write zip64 headers for every file, even small ones (for tools that insist on them).
    #[arg(long)]
    zip64: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
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
        PackageCommand::Pack(args) => pack(args),
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

fn open(file: &PathBuf) -> Result<Package<File>> {
    let f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    Package::open(f).with_context(|| format!("{} is not a valid package", file.display()))
}

fn pack(args: PackArgs) -> Result<ExitCode> {
    let name = match args.name {
        Some(n) => n,
        None => args
            .dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "package".into()),
    };
    let options = PackOptions {
        name,
        version: args.version,
        publisher: args.publisher,
        package_id: args.package_id,
        version_id: args.version_id,
        applications: args.apps,
        publishing: args.fb0,
        primary: args.fb1,
        level: args.level,
        force_zip64: args.zip64,
    };
    let bar = Bar::new("pack");
    let result = avail_format::pack(&args.dir, &args.output, &options, &bar);
    bar.finish();
    let summary = result.with_context(|| format!("{} was not packed", args.dir.display()))?;
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
                "files": summary.files,
                "blocks": summary.blocks,
                "bytes": summary.bytes,
                "package_size": summary.package_size,
            })
        );
    } else {
        println!(
            "packed {} ({} files, {} blocks, {} bytes → {} bytes)\n  PackageId {}\n  VersionId {}",
            args.output.display(),
            summary.files,
            summary.blocks,
            summary.bytes,
            summary.package_size,
            m.package_id.map(|u| u.to_string()).unwrap_or_default(),
            m.version_id.map(|u| u.to_string()).unwrap_or_default(),
        );
    }
    Ok(ExitCode::SUCCESS)
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
    files: usize,
    blocks: usize,
    stored_blocks: usize,
    deflated_blocks: usize,
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

fn inspect(file: &PathBuf, json: bool) -> Result<ExitCode> {
    let package = open(file)?;
    let m = package.manifest();
    let count = |deflated: bool| -> usize {
        package
            .files()
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
        files: package.files().len(),
        blocks: count(true) + count(false),
        stored_blocks: count(false),
        deflated_blocks: count(true),
        bytes: package.files().iter().map(|f| f.map.size).sum(),
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
        "Files:        {} ({} blocks: {} stored, {} deflated)",
        out.files, out.blocks, out.stored_blocks, out.deflated_blocks
    );
    println!(
        "Size:         {} bytes uncompressed, {} bytes packed",
        out.bytes, out.package_size
    );
    println!(
        "Feature blocks: publishing {} files, primary {} files",
        out.publishing_feature_block.len(),
        out.primary_feature_block.len()
    );
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

fn verify(file: &PathBuf, json: bool) -> Result<ExitCode> {
    let package = open(file)?;
    let bar = Bar::new("verify");
    let result = package.verify(&bar);
    bar.finish();
    let report: VerifyReport =
        result.with_context(|| format!("{} failed verification", file.display()))?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "valid": true,
                "files": report.files,
                "blocks": report.blocks,
                "stored_blocks": report.stored_blocks,
                "deflated_blocks": report.deflated_blocks,
                "bytes": report.bytes,
                "signature": signature_status(&package),
            })
        );
    } else {
        println!(
            "OK: {} files, {} blocks ({} stored, {} deflated), {} bytes verified",
            report.files, report.blocks, report.stored_blocks, report.deflated_blocks, report.bytes
        );
        if package.signature().is_some() {
            println!("Signature: present, not verified (Avail does not check package signatures)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
