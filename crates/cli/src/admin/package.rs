//! `avail admin package …`: import, list, show, publish, entitle, upgrade,
//! configure and remove package versions (`*-AppvServerPackage`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use avail_model::PackageVersion;
use avail_model::api::*;
use avail_model::endpoint::*;
use clap::Subcommand;

use super::{Admin, shown};

/// PKG is a package name, a PackageId or a VersionId.
#[derive(Subcommand)]
pub(super) enum PackageCmd {
    /// Import an .appv file (uploaded), or one already in the content store (--from-store).
    Import {
        /// The package file to upload.
        #[arg(required_unless_present = "from_store")]
        file: Option<PathBuf>,
        /// A path relative to the content store's root instead of an upload.
        #[arg(long, conflicts_with = "file")]
        from_store: Option<String>,
    },
    /// List package versions.
    List {
        /// Names containing this.
        #[arg(long)]
        name: Option<String>,
    },
    /// Show a version with its entitlements and configuration.
    Show { pkg: String },
    /// Publish a version to its entitled groups.
    Publish { pkg: String },
    /// Unpublish a version.
    Unpublish { pkg: String },
    /// Remove a version and its file.
    Remove { pkg: String },
    /// Entitle a group.
    Grant {
        pkg: String,
        group: String,
        /// A UserConfiguration XML file for this group.
        #[arg(long)]
        user_config: Option<PathBuf>,
    },
    /// Remove a group's entitlement.
    Revoke { pkg: String, group: String },
    /// Import a new version of a package.
    Upgrade {
        pkg: String,
        file: PathBuf,
        /// Transfer entitlements and deployment configuration from the current version.
        #[arg(long)]
        transfer: bool,
    },
    /// Set (from a file) or clear the deployment configuration.
    Config {
        pkg: String,
        /// DeploymentConfiguration XML file; without it, the configuration is cleared.
        file: Option<PathBuf>,
    },
}

fn print_version(v: &PackageVersion) {
    let p = &v.package;
    println!(
        "{}  {} {}  {}  PackageId {}  VersionId {}",
        if v.published {
            "published  "
        } else {
            "unpublished"
        },
        shown(&p.name),
        shown(&p.version),
        shown(&p.content_path),
        p.package_id,
        p.version_id
    );
}

pub(super) async fn run(c: &Admin, cmd: PackageCmd) -> Result<()> {
    match cmd {
        PackageCmd::Import { file, from_store } => {
            let r = match (file, from_store) {
                (Some(file), _) => c.upload(&UploadPackage {}, &file).await?,
                (None, Some(path)) => {
                    c.get(&ImportFromStore {
                        body: ImportFromStoreRequest { path },
                    })
                    .await?
                }
                (None, None) => bail!("give a FILE or --from-store PATH"),
            };
            if !c.json {
                println!(
                    "{}",
                    if r.created {
                        "imported:"
                    } else {
                        "already imported:"
                    }
                );
                print_version(&r.version);
            }
        }
        PackageCmd::List { name } => {
            let list = c
                .get(&ListPackages {
                    query: PackageQuery {
                        name,
                        published: None,
                    },
                })
                .await?;
            if !c.json {
                list.iter().for_each(print_version);
            }
        }
        PackageCmd::Show { pkg } => {
            let d = c.get(&ShowPackage { pkg }).await?;
            if !c.json {
                print_version(&d.version);
                for a in &d.version.package.applications {
                    println!(
                        "  application {}: {} {}",
                        shown(&a.id),
                        shown(a.target.as_deref().unwrap_or("-")),
                        shown(a.arguments.as_deref().unwrap_or(""))
                    );
                }
                for e in &d.entitlements {
                    println!(
                        "  entitled: {}{}",
                        shown(&e.group),
                        if e.user_config.is_some() {
                            " (with user configuration)"
                        } else {
                            ""
                        }
                    );
                }
                if d.deployment_config.is_some() {
                    println!("  has a deployment configuration");
                }
            }
        }
        PackageCmd::Publish { pkg } => c.act(&PublishPackage { pkg }, "published").await?,
        PackageCmd::Unpublish { pkg } => c.act(&UnpublishPackage { pkg }, "unpublished").await?,
        PackageCmd::Remove { pkg } => c.act(&RemovePackage { pkg }, "removed").await?,
        PackageCmd::Grant {
            pkg,
            group,
            user_config,
        } => {
            let user_config = user_config
                .map(|f| {
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("cannot read {}", f.display()))
                })
                .transpose()?;
            let done = format!("granted to {group}");
            c.act(
                &GrantPackage {
                    pkg,
                    group,
                    body: GrantRequest { user_config },
                },
                &done,
            )
            .await?
        }
        PackageCmd::Revoke { pkg, group } => {
            let done = format!("revoked from {group}");
            c.act(&RevokePackage { pkg, group }, &done).await?
        }
        PackageCmd::Upgrade {
            pkg,
            file,
            transfer,
        } => {
            let r = c
                .upload(
                    &UpgradePackage {
                        pkg,
                        query: UpgradeQuery { transfer },
                    },
                    &file,
                )
                .await?;
            if !c.json {
                println!(
                    "upgraded from {}{}:",
                    r.previous,
                    if r.transferred {
                        ", entitlements and configuration transferred"
                    } else {
                        ""
                    }
                );
                print_version(&r.version);
            }
        }
        PackageCmd::Config { pkg, file } => match file {
            Some(f) => {
                let config = std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read {}", f.display()))?;
                c.act(
                    &SetDeploymentConfig {
                        pkg,
                        body: DeploymentConfigRequest { config },
                    },
                    "deployment configuration set",
                )
                .await?
            }
            None => {
                c.act(
                    &ClearDeploymentConfig { pkg },
                    "deployment configuration cleared",
                )
                .await?
            }
        },
    }
    Ok(())
}
