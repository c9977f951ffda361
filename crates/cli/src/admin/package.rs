//! `avail admin package …`: import, list, show, publish, entitle, upgrade,
//! configure and remove package versions (`*-AppvServerPackage`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use avail_model::PackageVersion;
use avail_model::api::*;
use avail_model::endpoint::*;
use clap::Subcommand;

use super::{Admin, shown};

/// What a PKG argument may be, said by every command that takes one.
pub(super) const PKG_HELP: &str =
    "The package: a package name, PackageId, VersionId or NAME@VERSION";

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
    Show {
        #[arg(value_name = "PKG", help = PKG_HELP)]
        pkg: String,
    },
    /// Publish a version to its entitled groups.
    Publish {
        #[arg(value_name = "PKG", help = PKG_HELP)]
        pkg: String,
    },
    /// Unpublish a version.
    Unpublish {
        #[arg(value_name = "PKG", help = PKG_HELP)]
        pkg: String,
    },
    /// Remove a version and its file.
    Remove {
        #[arg(value_name = "PKG", help = PKG_HELP)]
        pkg: String,
    },
    /// Entitle a group.
    Grant {
        #[arg(value_name = "PKG", help = PKG_HELP)]
        pkg: String,
        group: String,
        /// A UserConfiguration XML file for this group.
        #[arg(long)]
        user_config: Option<PathBuf>,
    },
    /// Remove a group's entitlement.
    Revoke {
        #[arg(value_name = "PKG", help = PKG_HELP)]
        pkg: String,
        group: String,
    },
    /// Import a new version of a package (`avail package pack --update-of` makes one).
    Upgrade {
        #[arg(value_name = "PKG", help = PKG_HELP)]
        pkg: String,
        /// The new version's package file.
        file: PathBuf,
        /// Transfer entitlements and deployment configuration from the current version.
        #[arg(long)]
        transfer: bool,
        /// Publish the new version, which unpublishes the package's other versions,
        /// in the same step (with --transfer: App-V's whole switch to a new version).
        #[arg(long)]
        publish: bool,
    },
    /// Set (from a file) or clear the deployment configuration.
    Config {
        #[arg(value_name = "PKG", help = PKG_HELP)]
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
                (Some(file), _) => c
                    .upload(&UploadPackage {}, &file)
                    .await
                    .with_context(|| format!("{} was not imported", file.display()))?,
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
            publish,
        } => {
            let r = c
                .upload(
                    &UpgradePackage {
                        pkg,
                        query: UpgradeQuery { transfer, publish },
                    },
                    &file,
                )
                .await
                .with_context(|| format!("{} was not imported", file.display()))?;
            if !c.json {
                println!(
                    "upgraded from {}{}{}:",
                    r.previous,
                    if r.transferred {
                        ", entitlements and configuration transferred"
                    } else {
                        ""
                    },
                    if r.version.published {
                        ", published (the package's other versions are unpublished)"
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
