//! `avail admin connection-group …`: connection groups, their member packages
//! in precedence order, entitlements and publishing (`*-AppvServerConnectionGroup*`).

use anyhow::Result;
use avail_model::ConnectionGroup;
use avail_model::api::*;
use avail_model::endpoint::*;
use clap::Subcommand;

use super::{Admin, shown};

/// CG is a connection group's name or id.
#[derive(Subcommand)]
pub(super) enum ConnectionGroupCmd {
    /// Create an empty connection group.
    Create {
        name: String,
        #[arg(long, default_value_t = 0)]
        priority: i32,
    },
    /// List connection groups.
    List,
    /// Show one.
    Show { cg: String },
    /// Rename.
    Rename { cg: String, name: String },
    /// Set the priority (lower wins).
    Priority { cg: String, priority: i32 },
    /// Add a package, or change its version/optional flag/position.
    Add {
        cg: String,
        pkg: String,
        /// Use this VersionId (default: the package's newest version).
        #[arg(long)]
        version: Option<avail_model::VersionId>,
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
    Remove { cg: String, pkg: String },
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

fn print_group(g: &ConnectionGroup) {
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
        let version = m
            .version_id
            .map_or_else(|| "any version".to_owned(), |v| v.to_string());
        println!(
            "  {i}. package {} ({version}){}",
            m.package_id,
            if m.optional { ", optional" } else { "" }
        );
    }
    if !g.entitled_groups.is_empty() {
        println!("  entitled: {}", shown(&g.entitled_groups.join(", ")));
    }
}

pub(super) async fn run(c: &Admin, cmd: ConnectionGroupCmd) -> Result<()> {
    let show = |g: Option<ConnectionGroup>| {
        if let (false, Some(g)) = (c.json, g) {
            print_group(&g);
        }
    };
    match cmd {
        ConnectionGroupCmd::Create { name, priority } => show(
            c.send(&CreateConnectionGroup {
                body: CreateConnectionGroupRequest { name, priority },
            })
            .await?,
        ),
        ConnectionGroupCmd::List => {
            let list = c.get(&ListConnectionGroups {}).await?;
            if !c.json {
                list.iter().for_each(print_group);
            }
        }
        ConnectionGroupCmd::Show { cg } => show(Some(c.get(&ShowConnectionGroup { cg }).await?)),
        ConnectionGroupCmd::Rename { cg, name } => show(
            c.send(&UpdateConnectionGroup {
                cg,
                body: UpdateConnectionGroupRequest {
                    name: Some(name),
                    priority: None,
                },
            })
            .await?,
        ),
        ConnectionGroupCmd::Priority { cg, priority } => show(
            c.send(&UpdateConnectionGroup {
                cg,
                body: UpdateConnectionGroupRequest {
                    name: None,
                    priority: Some(priority),
                },
            })
            .await?,
        ),
        ConnectionGroupCmd::Add {
            cg,
            pkg,
            version,
            any_version,
            optional,
            position,
        } => show(
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
        ),
        ConnectionGroupCmd::Remove { cg, pkg } => show(c.send(&RemoveMember { cg, pkg }).await?),
        ConnectionGroupCmd::Grant { cg, group } => {
            show(c.send(&GrantConnectionGroup { cg, group }).await?)
        }
        ConnectionGroupCmd::Revoke { cg, group } => {
            show(c.send(&RevokeConnectionGroup { cg, group }).await?)
        }
        ConnectionGroupCmd::Publish { cg } => show(c.send(&PublishConnectionGroup { cg }).await?),
        ConnectionGroupCmd::Unpublish { cg } => {
            show(c.send(&UnpublishConnectionGroup { cg }).await?)
        }
        ConnectionGroupCmd::Delete { cg } => {
            c.act(&DeleteConnectionGroup { cg }, "deleted").await?
        }
    }
    Ok(())
}
