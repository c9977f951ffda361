//! `avail admin admin …`: administrators (`*-AppvServerAdmin`) and their API
//! tokens; the server never removes the last administrator.

use anyhow::{Result, anyhow};
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
            let has_password = password.is_some();
            let (created, _) = c
                .create(&AddAdministrator {
                    body: AddAdministratorRequest {
                        name: name.clone(),
                        password,
                    },
                })
                .await?;
            c.print_created(
                serde_json::json!({ "name": name, "has_password": has_password }),
                created,
            );
            if !c.json {
                println!("added administrator {}", shown(&name));
            }
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
            let (created, t) = c
                .create(&CreateToken {
                    name: name.clone(),
                    body: CreateTokenRequest {
                        label: label.clone(),
                    },
                })
                .await?;
            let t = t.ok_or_else(|| anyhow!("empty response from the server"))?;
            c.print_created(
                serde_json::json!({ "administrator": name, "label": label, "token": t.token }),
                created,
            );
            if !c.json {
                println!("{}", shown(&t.token));
            }
        }
    }
    Ok(())
}
