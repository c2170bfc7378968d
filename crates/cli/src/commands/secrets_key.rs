//! `gantry secrets-key`: the control plane's keyring for secrets at rest.
//!
//! These commands work on the server's data directory directly, not through
//! the API: the keyring is server configuration, never sent over the wire.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use gantry_pki::at_rest::SecretsKeyring;
use gantry_server::secrets_key::{open_store, SecretsKeySource};
use serde::Serialize;

use crate::commands::Context;
use crate::output::{json, table};
use crate::{exit, Failure};

const ROTATE_ABOUT: &str = r#"Re-encrypt every stored value under the keyring's first key.

Rotation, without downtime for runs:
  1. `gantry secrets-key generate`; put the new key on the first line of the keyring,
     keeping the old key on a later line;
  2. restart `gantry server` with that keyring (it reads with both keys);
  3. `gantry secrets-key rotate` (safe while the server runs);
  4. remove the old key from the keyring and restart the server.

The keyring comes from GANTRY_SECRETS_KEY (comma-separated keys), --secrets-key-file, or
<data-dir>/secrets.key, as for `gantry server`."#;

#[derive(Debug, Subcommand)]
pub enum SecretsKeyCommand {
    /// Print a new random key: one line of a keyring.
    ///
    /// Example: gantry secrets-key generate > /etc/gantry/secrets.key && chmod 600 /etc/gantry/secrets.key
    Generate,
    /// Show the keyring's keys and which of them the stored values are under.
    Status(KeyringArgs),
    /// Re-encrypt every stored value under the keyring's first key.
    #[command(long_about = ROTATE_ABOUT)]
    Rotate(KeyringArgs),
}

#[derive(Debug, Args)]
pub struct KeyringArgs {
    /// The server's data directory.
    #[arg(long, env = "GANTRY_DATA_DIR", default_value = "./gantry-data")]
    data_dir: PathBuf,

    /// The PostgreSQL database of a control plane run with --database-url
    /// (instead of --data-dir's SQLite).
    #[arg(long, env = "GANTRY_DATABASE_URL")]
    database_url: Option<String>,

    /// The keyring file: one base64 key per line, the current key first.
    /// Default: GANTRY_SECRETS_KEY, else <data-dir>/secrets.key.
    #[arg(long, env = "GANTRY_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
}

#[derive(Serialize)]
struct KeyringReport {
    current_key: String,
    keys: Vec<KeyReport>,
    /// Values per column and key; `key_id` null means stored in clear.
    values: Vec<gantry_store::sql::SecretsUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reencrypted: Option<u64>,
}

#[derive(Serialize)]
struct KeyReport {
    key_id: String,
    current: bool,
    values: u64,
}

pub async fn run(ctx: &Context, command: SecretsKeyCommand) -> Result<u8, Failure> {
    let (args, rotate) = match command {
        SecretsKeyCommand::Generate => {
            let key = SecretsKeyring::generate_key();
            if ctx.json() {
                let id = SecretsKeyring::parse(&key)
                    .expect("a fresh key parses")
                    .current();
                json(&serde_json::json!({ "key": key, "key_id": id.to_string() }));
            } else {
                println!("{key}");
            }
            return Ok(exit::OK);
        }
        SecretsKeyCommand::Status(args) => (args, false),
        SecretsKeyCommand::Rotate(args) => (args, true),
    };
    if args.database_url.is_none() && !args.data_dir.join("gantry.db").exists() {
        return Err(Failure::new(
            exit::NOT_FOUND,
            format!(
                "--data-dir {}: no Gantry database there",
                args.data_dir.display()
            ),
        ));
    }
    let source = SecretsKeySource::from_env(args.secrets_key_file)
        .map_err(|e| Failure::new(exit::USAGE, format!("{e:#}")))?;
    let store = open_store(&args.data_dir, args.database_url.as_deref(), &source, false)
        .await
        .map_err(|e| Failure::new(exit::USAGE, format!("{e:#}")))?;
    let reencrypted = if rotate {
        Some(
            store
                .reencrypt_secrets(false)
                .await
                .map_err(|e| Failure::new(exit::ERROR, e.to_string()))?,
        )
    } else {
        None
    };
    let values = store
        .secrets_usage()
        .await
        .map_err(|e| Failure::new(exit::ERROR, e.to_string()))?;
    let keyring = source
        .load(&args.data_dir, false)
        .map_err(|e| Failure::new(exit::USAGE, format!("{e:#}")))?;
    let keys: Vec<KeyReport> = keyring
        .ids()
        .iter()
        .map(|id| KeyReport {
            key_id: id.to_string(),
            current: *id == keyring.current(),
            values: values
                .iter()
                .filter(|v| v.key_id.as_deref() == Some(&id.to_string()))
                .map(|v| v.values)
                .sum(),
        })
        .collect();
    let report = KeyringReport {
        current_key: keyring.current().to_string(),
        keys,
        values,
        reencrypted,
    };
    if ctx.json() {
        json(&report);
        return Ok(exit::OK);
    }
    if let Some(count) = report.reencrypted {
        println!(
            "re-encrypted {count} value(s) under key {}",
            report.current_key
        );
    }
    let rows = report
        .keys
        .iter()
        .map(|k| {
            vec![
                k.key_id.clone(),
                if k.current { "current" } else { "previous" }.to_string(),
                k.values.to_string(),
            ]
        })
        .collect();
    table(&["KEY", "ROLE", "VALUES"], rows, None);
    let unused: Vec<&str> = report
        .keys
        .iter()
        .filter(|k| !k.current && k.values == 0)
        .map(|k| k.key_id.as_str())
        .collect();
    if !unused.is_empty() {
        println!(
            "\nNo value is under {}: remove it from the keyring, then restart the server.",
            unused.join(", ")
        );
    }
    Ok(exit::OK)
}
