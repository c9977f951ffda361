//! `avail admin admin …`: administrators (`*-AppvServerAdmin`) and their API
//! tokens; the server never removes the last administrator.

use anyhow::Result;
use avail_model::api::*;
use avail_model::endpoint::*;
use clap::Subcommand;

use super::{Admin, shown};

#[derive(Subcommand)]
pub(super) enum AdministratorCmd {
    /// Add an administrator; with --password-stdin, the password is read from standard input.
    Add {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove an administrator.
    Remove { name: String },
    /// List administrators.
    List,
    /// Create an API token for an administrator; prints it once.
    Token {
        name: String,
        #[arg(long, default_value = "cli")]
        label: String,
    },
}

pub(super) async fn run(c: &Admin, cmd: AdministratorCmd) -> Result<()> {
    match cmd {
        AdministratorCmd::Add {
            name,
            password_stdin,
        } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            let done = format!("added administrator {name}");
            c.act(
                &AddAdministrator {
                    body: AddAdministratorRequest { name, password },
                },
                &done,
            )
            .await?
        }
        AdministratorCmd::Remove { name } => {
            c.act(&RemoveAdministrator { name }, "removed").await?
        }
        AdministratorCmd::List => {
            let list = c.get(&ListAdministrators {}).await?;
            if !c.json {
                for a in list {
                    println!(
                        "{}{}",
                        shown(&a.name),
                        if a.has_password {
                            " (password)"
                        } else {
                            " (tokens only)"
                        }
                    );
                }
            }
        }
        AdministratorCmd::Token { name, label } => {
            let t = c
                .send(&CreateToken {
                    name,
                    body: CreateTokenRequest { label },
                })
                .await?;
            if let (false, Some(t)) = (c.json, t) {
                println!("{}", shown(&t.token));
            }
        }
    }
    Ok(())
}
