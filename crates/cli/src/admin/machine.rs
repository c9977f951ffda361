//! `avail admin machine …`: machines in the directory; each gets, once, the
//! credential its client authenticates with.

use anyhow::Result;
use avail_model::api::*;
use avail_model::endpoint::*;
use clap::Subcommand;

use super::{Admin, print_names, shown};

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
}

pub(super) async fn run(c: &Admin, cmd: MachineCmd) -> Result<()> {
    match cmd {
        MachineCmd::Create { name, groups } => {
            let m = c
                .send(&CreateMachine {
                    body: CreateMachineRequest { name, groups },
                })
                .await?;
            if let (false, Some(m)) = (c.json, m) {
                println!(
                    "created machine {}; its credential (shown only now):\n{}",
                    shown(&m.name),
                    shown(&m.credential)
                );
            }
        }
        MachineCmd::Delete { name } => c.act(&DeleteMachine { name }, "deleted").await?,
        MachineCmd::List => {
            let names = c.get(&ListMachines {}).await?;
            if !c.json {
                print_names(&names);
            }
        }
    }
    Ok(())
}
