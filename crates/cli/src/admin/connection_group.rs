//! `avail admin connection-group …`: connection groups, their member packages
//! in precedence order, entitlements and publishing (`*-AppvServerConnectionGroup*`).

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use avail_model::api::*;
use avail_model::endpoint::*;
use avail_model::{ConnectionGroup, PackageId, PackageVersion, VersionId};
use clap::Subcommand;

use super::package::PKG_HELP;
use super::{Admin, shown};

/// CG is a connection group's name or id.
#[derive(Subcommand)]
pub(super) enum ConnectionGroupCmd {
    /// Create an empty connection group.
    Create {
        name: String,
        /// Priority (lower wins).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
    },
    /// List connection groups.
    List,
    /// Show one.
    Show { cg: String },
    /// Rename.
    Rename { cg: String, name: String },
    /// Set the priority (lower wins).
    Priority {
        cg: String,
        #[arg(allow_negative_numbers = true)]
        priority: i32,
    },
    /// Add a package, or change its version/optional flag/position.
    Add {
        cg: String,
        #[arg(value_name = "PKG", help = PKG_HELP)]
        pkg: String,
        /// Use this VersionId (default: the package's newest version).
        #[arg(long)]
        version: Option<VersionId>,
        /// Use whatever version the client has.
        #[arg(long, conflicts_with = "version")]
        any_version: bool,
        /// The group works without this package.
        #[arg(long)]
        optional: bool,
        /// Position in the order (0 = highest precedence).
        #[arg(long)]
        position: Option<usize>,
    },
    /// Remove a package.
    Remove {
        cg: String,
        #[arg(value_name = "PKG", help = PKG_HELP)]
        pkg: String,
    },
    /// Entitle a group.
    Grant { cg: String, group: String },
    /// Remove a group's entitlement.
    Revoke { cg: String, group: String },
    /// Publish.
    Publish { cg: String },
    /// Unpublish.
    Unpublish { cg: String },
    /// Delete.
    Delete { cg: String },
}

/// Package names and versions, to name the members of connection groups.
#[derive(Default)]
struct Names {
    versions: HashMap<VersionId, (String, String)>,
    packages: HashMap<PackageId, String>,
}

impl Names {
    /// The names of every package the server has, when `groups` have members
    /// and the output is for a person.
    async fn of(c: &Admin, groups: &[&ConnectionGroup]) -> Result<Names> {
        let mut names = Names::default();
        if c.json || groups.iter().all(|g| g.members.is_empty()) {
            return Ok(names);
        }
        let list: Vec<PackageVersion> = c
            .client
            .call(&ListPackages::default())
            .await
            .map_err(|e| c.failure(e))?;
        for v in list {
            let p = v.package;
            names.packages.insert(p.package_id, p.name.clone());
            names.versions.insert(p.version_id, (p.name, p.version));
        }
        Ok(names)
    }

    /// `Name 2.0.0.0`, `Name (any version)`, or the ids of a package the
    /// server no longer lists.
    fn member(&self, package_id: PackageId, version_id: Option<VersionId>) -> String {
        match version_id {
            Some(v) => match self.versions.get(&v) {
                Some((name, version)) => format!("{} {}", shown(name), shown(version)),
                None => format!("package {package_id} version {v}"),
            },
            None => match self.packages.get(&package_id) {
                Some(name) => format!("{} (any version)", shown(name)),
                None => format!("package {package_id} (any version)"),
            },
        }
    }
}

fn print_group(g: &ConnectionGroup, names: &Names) {
    println!(
        "{} (priority {}, {}) id {} version {}",
        shown(&g.name),
        g.priority,
        if g.published {
            "published"
        } else {
            "unpublished"
        },
        g.id,
        g.version_id
    );
    for (i, m) in g.members.iter().enumerate() {
        println!(
            "  {i}. {}{}",
            names.member(m.package_id, m.version_id),
            if m.optional { ", optional" } else { "" }
        );
    }
    if !g.entitled_groups.is_empty() {
        println!("  entitled: {}", shown(&g.entitled_groups.join(", ")));
    }
}

/// Print a connection group for a person (nothing in `--json` mode: the
/// server's JSON was printed).
async fn show(c: &Admin, g: Option<ConnectionGroup>) -> Result<()> {
    if let (false, Some(g)) = (c.json, g) {
        print_group(&g, &Names::of(c, &[&g]).await?);
    }
    Ok(())
}

pub(super) async fn run(c: &Admin, cmd: ConnectionGroupCmd) -> Result<()> {
    match cmd {
        ConnectionGroupCmd::Create { name, priority } => {
            let (created, g) = c
                .create(&CreateConnectionGroup {
                    body: CreateConnectionGroupRequest { name, priority },
                })
                .await?;
            let g = g.ok_or_else(|| anyhow!("empty response from the server"))?;
            c.print_created(serde_json::to_value(&g)?, created);
            show(c, Some(g)).await?
        }
        ConnectionGroupCmd::List => {
            let list = c.get(&ListConnectionGroups {}).await?;
            if !c.json {
                let names = Names::of(c, &list.iter().collect::<Vec<_>>()).await?;
                list.iter().for_each(|g| print_group(g, &names));
            }
        }
        ConnectionGroupCmd::Show { cg } => {
            show(c, Some(c.get(&ShowConnectionGroup { cg }).await?)).await?
        }
        ConnectionGroupCmd::Rename { cg, name } => {
            show(
                c,
                c.send(&UpdateConnectionGroup {
                    cg,
                    body: UpdateConnectionGroupRequest {
                        name: Some(name),
                        priority: None,
                    },
                })
                .await?,
            )
            .await?
        }
        ConnectionGroupCmd::Priority { cg, priority } => {
            show(
                c,
                c.send(&UpdateConnectionGroup {
                    cg,
                    body: UpdateConnectionGroupRequest {
                        name: None,
                        priority: Some(priority),
                    },
                })
                .await?,
            )
            .await?
        }
        ConnectionGroupCmd::Add {
            cg,
            pkg,
            version,
            any_version,
            optional,
            position,
        } => {
            show(
                c,
                c.send(&SetMember {
                    cg,
                    pkg,
                    body: SetMemberRequest {
                        version_id: version,
                        any_version,
                        optional,
                        position,
                    },
                })
                .await?,
            )
            .await?
        }
        ConnectionGroupCmd::Remove { cg, pkg } => {
            show(c, c.send(&RemoveMember { cg, pkg }).await?).await?
        }
        ConnectionGroupCmd::Grant { cg, group } => {
            show(c, c.send(&GrantConnectionGroup { cg, group }).await?).await?
        }
        ConnectionGroupCmd::Revoke { cg, group } => {
            show(c, c.send(&RevokeConnectionGroup { cg, group }).await?).await?
        }
        ConnectionGroupCmd::Publish { cg } => {
            show(c, c.send(&PublishConnectionGroup { cg }).await?).await?
        }
        ConnectionGroupCmd::Unpublish { cg } => {
            show(c, c.send(&UnpublishConnectionGroup { cg }).await?).await?
        }
        ConnectionGroupCmd::Delete { cg } => {
            c.act(&DeleteConnectionGroup { cg }, "deleted").await?
        }
    }
    Ok(())
}
