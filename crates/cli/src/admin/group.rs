//! `avail admin group …`: directory groups and their members (users,
//! machines, nested groups); entitlements are granted to groups.

use anyhow::Result;
use avail_model::api::*;
use avail_model::endpoint::*;
use avail_model::{Principal, PrincipalKind};
use clap::Subcommand;

use super::{Admin, print_names, shown};

#[derive(Subcommand)]
pub(super) enum GroupCmd {
    /// Create a group.
    Create { name: String },
    /// Delete a group. One that holds entitlements or memberships is refused
    /// with what deleting it would revoke, unless --force.
    Delete {
        name: String,
        /// Delete it anyway, revoking its entitlements and memberships.
        #[arg(long)]
        force: bool,
    },
    /// List groups.
    List,
    /// Show a group's members.
    Show { name: String },
    /// Put a user, machine or group in a group.
    Add {
        group: String,
        kind: MemberKind,
        name: String,
    },
    /// Take a user, machine or group out of a group.
    Remove {
        group: String,
        kind: MemberKind,
        name: String,
    },
}

/// What kind of member: clap's spelling of a [`PrincipalKind`].
#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum MemberKind {
    User,
    Machine,
    Group,
}

impl MemberKind {
    fn segment(self) -> String {
        match self {
            MemberKind::User => PrincipalKind::User,
            MemberKind::Machine => PrincipalKind::Machine,
            MemberKind::Group => PrincipalKind::Group,
        }
        .segment()
        .to_owned()
    }
}

pub(super) async fn run(c: &Admin, cmd: GroupCmd) -> Result<()> {
    match cmd {
        GroupCmd::Create { name } => {
            let (created, _) = c
                .create(&CreateGroup {
                    body: CreateGroupRequest { name: name.clone() },
                })
                .await?;
            c.print_created(serde_json::json!({ "name": name }), created);
            if !c.json {
                let verb = if created {
                    "created group"
                } else {
                    "group already exists:"
                };
                println!("{verb} {}", shown(&name));
            }
        }
        GroupCmd::Delete { name, force } => c.act(&DeleteGroup { name, force }, "deleted").await?,
        GroupCmd::List => {
            let names = c.get(&ListGroups {}).await?;
            if !c.json {
                print_names(&names);
            }
        }
        GroupCmd::Show { name } => {
            let g = c.get(&ShowGroup { name }).await?;
            if !c.json {
                for m in &g.members {
                    match m {
                        Principal::User(n) => println!("user {}", shown(n)),
                        Principal::Machine(n) => println!("machine {}", shown(n)),
                        Principal::Group(n) => println!("group {}", shown(n)),
                    }
                }
            }
        }
        GroupCmd::Add { group, kind, name } => {
            let done = format!("added {name} to {group}");
            c.act(
                &AddGroupMember {
                    name: group,
                    kind: kind.segment(),
                    member: name,
                },
                &done,
            )
            .await?
        }
        GroupCmd::Remove { group, kind, name } => {
            let done = format!("removed {name} from {group}");
            c.act(
                &RemoveGroupMember {
                    name: group,
                    kind: kind.segment(),
                    member: name,
                },
                &done,
            )
            .await?
        }
    }
    Ok(())
}
