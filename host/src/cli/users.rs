//! `lake user add|list|disable`: the users and service accounts tokens act for, kept in the catalog
//! (every replica sees them). Like the token commands, these act on the catalog directly: whoever
//! runs them holds the catalog's credentials.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use crate::identity::{Role, UserKind};
use crate::lake::Lake;

/// User commands.
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add a person (or, with --service, a service account: a pipeline, an instrument).
    Add {
        /// Its name, as tokens and provenance name it.
        name: String,
        /// The most its tokens may hold: reader, contributor, curator or admin.
        #[arg(long)]
        role: Role,
        /// A service account rather than a person.
        #[arg(long)]
        service: bool,
    },
    /// Users, by name.
    List,
    /// Disable a user: their tokens stop working at once, on every replica.
    Disable {
        /// The user's name.
        name: String,
    },
}

/// Runs a user command.
pub async fn user(lake: &Lake, cmd: UserCmd) -> Result<ExitCode> {
    let access = lake.access();
    let out = match cmd {
        UserCmd::Add {
            name,
            role,
            service,
        } => {
            let kind = if service {
                UserKind::Service
            } else {
                UserKind::Person
            };
            serde_json::to_string_pretty(&access.add_user(&name, kind, role).await?)?
        }
        UserCmd::List => serde_json::to_string_pretty(&access.users().await?)?,
        UserCmd::Disable { name } => {
            serde_json::to_string_pretty(&access.disable_user(&name).await?)?
        }
    };
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}
