//! `lake token create|list|revoke` and `lake admin bootstrap`: bearer tokens, issued in this
//! process against the catalog (every replica sees them). A new token's text is printed once, on
//! stdout, and written nowhere.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use crate::identity::{Role, TokenRequest};
use crate::lake::Lake;

/// Token commands.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Issue a token; its text is shown once.
    Create {
        /// The user or service account it acts for.
        #[arg(long)]
        owner: String,
        /// reader, contributor, curator or admin.
        #[arg(long)]
        role: Role,
        /// What its holder calls it.
        #[arg(long, default_value = "token")]
        name: String,
        /// Days it lives (default 90).
        #[arg(long)]
        days: Option<u32>,
    },
    /// Tokens, newest first (never their secrets).
    List {
        /// Only this owner's.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Revoke a token by its id (the `<id>` of `lake_<id>_<secret>`).
    Revoke {
        /// The token's id.
        id: String,
    },
}

/// Admin commands.
#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Issue the first admin token of a lake that has none; shown once, written nowhere.
    Bootstrap,
}

fn print(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs a token command.
pub async fn token(lake: &Lake, cmd: TokenCmd) -> Result<ExitCode> {
    let access = lake.access();
    match cmd {
        TokenCmd::Create {
            owner,
            role,
            name,
            days,
        } => {
            let issued = access
                .issue(TokenRequest {
                    name,
                    owner,
                    role,
                    days,
                })
                .await?;
            eprintln!(
                "Keep this token now: the lake stores only its digest and cannot show it again."
            );
            print(&issued)?;
        }
        TokenCmd::List { owner } => print(&access.tokens(owner.as_deref()).await?)?,
        TokenCmd::Revoke { id } => {
            let id = uuid::Uuid::try_parse(id.trim().trim_start_matches("lake_"))
                .map_err(|_| anyhow::anyhow!("{id:?} is not a token id (see `lake token list`)"))?;
            print(&access.revoke(id).await?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an admin command.
pub async fn admin(lake: &Lake, cmd: AdminCmd) -> Result<ExitCode> {
    match cmd {
        AdminCmd::Bootstrap => {
            let issued = lake.access().bootstrap().await?;
            eprintln!("The first admin token; keep it now, it is shown once and written nowhere.");
            print(&issued)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
