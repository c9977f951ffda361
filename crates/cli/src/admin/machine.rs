//! `avail admin machine …`: machines in the directory; each gets, once, the
//! credential its client authenticates with.

use anyhow::{Result, anyhow};
use avail_model::api::*;
use avail_model::endpoint::*;
use clap::Subcommand;

use super::{Admin, print_effective, print_names, shown};

#[derive(Subcommand)]
pub(super) enum MachineCmd {
    /// Add a machine; prints its credential once.
    Create {
        name: String,
        /// Groups to put the machine in (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Remove a machine.
    Delete { name: String },
    /// List machines.
    List,
    /// What the machine receives: its groups (nested groups resolved), package
    /// versions and connection groups, as a publishing node answers.
    Show { name: String },
}

pub(super) async fn run(c: &Admin, cmd: MachineCmd) -> Result<()> {
    match cmd {
        MachineCmd::Create { name, groups } => {
            let (created, m) = c
                .create(&CreateMachine {
                    body: CreateMachineRequest {
                        name,
                        groups: groups.clone(),
                    },
                })
                .await?;
            let m = m.ok_or_else(|| anyhow!("empty response from the server"))?;
            c.print_created(
                serde_json::json!({
                    "name": m.name,
                    "groups": groups,
                    "credential": m.credential,
                }),
                created,
            );
            if !c.json {
                println!(
                    "created machine {}; its credential (shown only now):\n{}",
                    shown(&m.name),
                    shown(&m.credential)
                );
            }
        }
        MachineCmd::Delete { name } => c.act(&DeleteMachine { name }, "deleted").await?,
        MachineCmd::Show { name } => {
            let e = c.get(&ShowMachine { name }).await?;
            if !c.json {
                print_effective(&e);
            }
        }
        MachineCmd::List => {
            let names = c.get(&ListMachines {}).await?;
            if !c.json {
                print_names(&names);
            }
        }
    }
    Ok(())
}
