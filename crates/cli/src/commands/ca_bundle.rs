use std::io::Read;
use std::path::PathBuf;

use clap::Subcommand;

use crate::commands::Context;
use crate::output::{json, table};
use crate::{exit, Failure};

#[derive(Debug, Subcommand)]
pub enum CaBundleCommand {
    /// Encode PEM files (one CA or a chain each) into the bundle format of
    /// GANTRY_ADDITIONAL_ROOT_CAS: base64 of {"caCertificates": ["<base64 PEM>", …]}.
    ///
    /// Example: export GANTRY_ADDITIONAL_ROOT_CAS=$(gantry ca-bundle encode root.pem intermediate.pem)
    Encode {
        #[arg(required = true, value_name = "PEM_FILE")]
        files: Vec<PathBuf>,
    },
    /// Show what a bundle holds; reads the argument, or stdin when it is `-` or absent.
    Decode { bundle: Option<String> },
}

pub fn run(ctx: &Context, command: CaBundleCommand) -> Result<u8, Failure> {
    match command {
        CaBundleCommand::Encode { files } => {
            let mut pems = Vec::new();
            for file in &files {
                let pem = std::fs::read_to_string(file).map_err(|e| {
                    Failure::new(
                        exit::USAGE,
                        format!("{}: cannot read it: {e}", file.display()),
                    )
                })?;
                gantry_pki::ca_bundle::pem_certificates(&pem)
                    .map_err(|e| Failure::new(exit::USAGE, format!("{}: {e}", file.display())))?;
                pems.push(pem);
            }
            let bundle =
                gantry_pki::ca_bundle::encode(&pems).map_err(|e| Failure::new(exit::USAGE, e))?;
            if ctx.json() {
                json(&serde_json::json!({ "bundle": bundle }));
            } else {
                println!("{bundle}");
            }
        }
        CaBundleCommand::Decode { bundle } => {
            let text = match bundle.as_deref() {
                Some(text) if text != "-" => text.to_string(),
                _ => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .map_err(|e| Failure::new(exit::ERROR, e.to_string()))?;
                    text
                }
            };
            let pems = gantry_pki::ca_bundle::decode(&text)
                .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
            let summary = gantry_pki::ca_bundle::summarize(&pems);
            if ctx.json() {
                json(&summary);
            } else {
                let rows = summary
                    .iter()
                    .map(|c| {
                        vec![
                            c.entry.to_string(),
                            c.subject.clone(),
                            c.issuer.clone(),
                            c.not_after.clone(),
                        ]
                    })
                    .collect();
                table(&["ENTRY", "SUBJECT", "ISSUER", "NOT AFTER"], rows, None);
            }
        }
    }
    Ok(exit::OK)
}
