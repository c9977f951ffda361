//! `avail admin server …`: publishing servers (`*-AppvPublishingServer`),
//! each registered with a credential shown once.

use anyhow::{Result, anyhow};
use avail_model::api::*;
use avail_model::endpoint::*;
use clap::Subcommand;

use super::{Admin, shown};

#[derive(Subcommand)]
pub(super) enum ServerCmd {
    /// Register a publishing server; prints its credential once.
    Register { name: String },
    /// Unregister a publishing server.
    Unregister { name: String },
    /// List publishing servers with their last sync.
    List,
}

pub(super) async fn run(c: &Admin, cmd: ServerCmd) -> Result<()> {
    match cmd {
        ServerCmd::Register { name } => {
            let (created, r) = c
                .create(&RegisterServer {
                    body: RegisterServerRequest { name },
                })
                .await?;
            let r = r.ok_or_else(|| anyhow!("empty response from the server"))?;
            let mut fields = serde_json::to_value(&r.server)?;
            fields["credential"] = r.credential.clone().into();
            c.print_created(fields, created);
            if !c.json {
                println!(
                    "registered {}; its credential (AVAIL_PUBLISHING_CREDENTIAL, shown only now):\n{}",
                    shown(&r.server.name),
                    shown(&r.credential)
                );
            }
        }
        ServerCmd::Unregister { name } => c.act(&UnregisterServer { name }, "unregistered").await?,
        ServerCmd::List => {
            let list = c.get(&ListServers {}).await?;
            if !c.json {
                for s in list {
                    let sync = s.last_sync_at.map_or_else(
                        || "never synced".to_owned(),
                        |t| {
                            format!(
                                "last sync {t} (sequence {})",
                                s.last_sync_sequence.unwrap_or(0)
                            )
                        },
                    );
                    println!("{}  registered {}  {sync}", shown(&s.name), s.registered_at);
                }
            }
        }
    }
    Ok(())
}
