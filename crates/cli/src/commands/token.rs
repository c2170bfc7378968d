use clap::Subcommand;
use gantry_wire::pool::{ApiToken, ApiTokenCreated, CreateApiToken};
use reqwest::Method;

use crate::client::segment;
use crate::commands::Context;
use crate::output::{json, table};
use crate::{exit, Failure};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; prints it once (only its hash is stored).
    Create { name: String },
    /// List API tokens (never their values).
    List,
    /// Revoke an API token by ID; it stops working at once.
    Revoke { id: String },
}

pub async fn run(ctx: &Context, command: TokenCommand) -> Result<u8, Failure> {
    let api = ctx.api()?;
    match command {
        TokenCommand::Create { name } => {
            let created: ApiTokenCreated = api
                .call_with(Method::POST, "/tokens", &CreateApiToken { name })
                .await?;
            if ctx.json() {
                json(&created);
            } else {
                eprintln!(
                    "API token {} ({}), shown once:",
                    created.token_info.name, created.token_info.id
                );
                println!("{}", created.token);
            }
        }
        TokenCommand::List => {
            let tokens: Vec<ApiToken> = api.call(Method::GET, "/tokens").await?;
            if ctx.json() {
                json(&tokens);
            } else {
                let rows = tokens
                    .iter()
                    .map(|t| vec![t.id.clone(), t.name.clone(), t.created_at.clone()])
                    .collect();
                table(&["ID", "NAME", "CREATED"], rows, None);
            }
        }
        TokenCommand::Revoke { id } => {
            let _: Option<()> = api
                .call(Method::DELETE, &format!("/tokens/{}", segment(&id)))
                .await?;
            if ctx.json() {
                json(&serde_json::json!({ "revoked": id }));
            } else {
                eprintln!("token {id} revoked");
            }
        }
    }
    Ok(exit::OK)
}
