//! `avail admin user …`: users in the directory, created with their groups.

use anyhow::{Result, anyhow};
use avail_model::api::*;
use avail_model::endpoint::*;
use clap::Subcommand;

use super::{Admin, print_effective, print_names, shown};

#[derive(Subcommand)]
pub(super) enum UserCmd {
    /// Add a user.
    Create {
        name: String,
        /// Groups to put the user in (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Remove a user.
    Delete { name: String },
    /// List users.
    List,
    /// What the user receives: its groups (nested groups resolved), package
    /// versions and connection groups, as a publishing node answers.
    Show { name: String },
}

pub(super) async fn run(c: &Admin, cmd: UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Create { name, groups } => {
            let (_, u) = c
                .create(&CreateUser {
                    body: CreateUserRequest { name, groups },
                })
                .await?;
            let u = u.ok_or_else(|| anyhow!("empty response from the server"))?;
            c.print_created(
                serde_json::json!({ "name": u.name, "groups": u.groups }),
                u.created,
            );
            if !c.json {
                let groups = if u.groups.is_empty() {
                    String::new()
                } else {
                    format!(" in {}", u.groups.join(", "))
                };
                let verb = if u.created {
                    "created user"
                } else {
                    "user already exists:"
                };
                println!("{verb} {}{}", shown(&u.name), shown(&groups));
            }
        }
        UserCmd::Delete { name } => c.act(&DeleteUser { name }, "deleted").await?,
        UserCmd::Show { name } => {
            let e = c.get(&ShowUser { name }).await?;
            if !c.json {
                print_effective(&e);
            }
        }
        UserCmd::List => {
            let names = c.get(&ListUsers {}).await?;
            if !c.json {
                print_names(&names);
            }
        }
    }
    Ok(())
}
