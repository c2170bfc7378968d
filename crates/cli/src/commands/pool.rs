use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use gantry_wire::pool::{CreatePool, Pool, PoolWithToken, ResetPool, SealedStack};
use reqwest::Method;
use serde::Serialize;

use crate::client::segment;
use crate::commands::Context;
use crate::output::{json, table};
use crate::{exit, Failure};

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Generate the pool's private key and CSR locally (pool.key, pool.csr).
    ///
    /// The key never leaves this machine: upload only the CSR with `gantry pool create`.
    /// The same files can be made with
    /// `openssl req -new -newkey rsa:4096 -nodes -keyout pool.key -out pool.csr`.
    Keygen {
        /// Directory to write pool.key and pool.csr into.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Common name in the CSR's subject.
        #[arg(long, default_value = "gantry-pool")]
        name: String,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Create a pool from a CSR; prints the pool token (shown once).
    ///
    /// Save the token: the launcher reads it from GANTRY_TOKEN, with the private key in
    /// GANTRY_POOL_PRIVATE_KEY (base64 -w0 < pool.key).
    Create {
        name: String,
        /// The CSR made by `gantry pool keygen` or openssl.
        #[arg(long)]
        csr: PathBuf,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List pools.
    List,
    /// Show one pool.
    Show { pool: String },
    /// Replace the pool's key with a new CSR: the old token and every worker using it stop working.
    ///
    /// Stacks' secret variables and plans waiting for confirmation are sealed to the
    /// pool's key. With a new key no worker can open them, so the reset is refused
    /// (exit 5), naming those stacks, unless --force. Then the waiting plans are
    /// discarded, and each stack's secrets must be set again:
    /// gantry stack update STACK --secret-env NAME=VALUE. A CSR of the same key
    /// (a new token only) affects no stack.
    Reset {
        pool: String,
        #[arg(long)]
        csr: PathBuf,
        /// Reset even though stacks hold values sealed to the old key.
        #[arg(long)]
        force: bool,
    },
    /// Tell every worker of the pool to finish its runs and exit (to be replaced with fresh configuration).
    Cycle { pool: String },
    /// Delete a pool. Refused while it has runs not yet ended, unless --force.
    /// Always refused while stacks use the pool (exit 5, naming them), even
    /// with --force: delete those stacks or move them to another pool first.
    Delete {
        pool: String,
        /// Cancel queued runs and fail running ones. Never deletes stacks.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Serialize)]
struct KeygenOutput {
    private_key: PathBuf,
    csr: PathBuf,
}

#[derive(Serialize)]
struct TokenOutput<'a> {
    id: &'a str,
    name: &'a str,
    token: &'a str,
    pool: &'a Pool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stacks_affected: &'a [SealedStack],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    runs_discarded: &'a [String],
}

fn read_csr(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            exit::USAGE,
            format!("--csr {}: cannot read the file: {e}", path.display()),
        )
    })
}

pub async fn run(ctx: &Context, command: PoolCommand) -> Result<u8, Failure> {
    match command {
        PoolCommand::Keygen {
            out_dir,
            name,
            force,
        } => keygen(ctx, &out_dir, &name, force).await,
        PoolCommand::Create {
            name,
            csr,
            description,
        } => {
            let request = CreatePool {
                name,
                csr: read_csr(&csr)?,
                description,
            };
            let created: PoolWithToken = ctx
                .api()?
                .call_with(Method::POST, "/pools", &request)
                .await?;
            print_token(ctx, &created);
            Ok(exit::OK)
        }
        PoolCommand::List => {
            let pools: Vec<Pool> = ctx.api()?.call(Method::GET, "/pools").await?;
            if ctx.json() {
                json(&pools);
            } else {
                let rows = pools
                    .iter()
                    .map(|p| {
                        vec![
                            p.id.clone(),
                            p.name.clone(),
                            p.workers.to_string(),
                            p.queued_runs.to_string(),
                            p.created_at.clone(),
                        ]
                    })
                    .collect();
                table(&["ID", "NAME", "WORKERS", "QUEUED", "CREATED"], rows, None);
            }
            Ok(exit::OK)
        }
        PoolCommand::Show { pool } => {
            let pool: Pool = ctx
                .api()?
                .call(Method::GET, &format!("/pools/{}", segment(&pool)))
                .await?;
            print_pool(ctx, &pool);
            Ok(exit::OK)
        }
        PoolCommand::Reset { pool, csr, force } => {
            let request = ResetPool {
                csr: read_csr(&csr)?,
                force,
            };
            let reset: PoolWithToken = ctx
                .api()?
                .call_with(
                    Method::POST,
                    &format!("/pools/{}/reset", segment(&pool)),
                    &request,
                )
                .await?;
            print_token(ctx, &reset);
            if !ctx.json() {
                for stack in &reset.stacks_affected {
                    if !stack.secret_env.is_empty() {
                        eprintln!(
                            "stack {}: set its secret variables again (they were sealed to the old key): \
                             gantry stack update {} {}",
                            stack.name,
                            stack.name,
                            stack
                                .secret_env
                                .iter()
                                .map(|k| format!("--secret-env {k}=…"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        );
                    }
                }
                for run in &reset.runs_discarded {
                    eprintln!(
                        "run {run} discarded: its plan was sealed to the old key; trigger it again"
                    );
                }
            }
            Ok(exit::OK)
        }
        PoolCommand::Cycle { pool } => {
            let pool: Pool = ctx
                .api()?
                .call(Method::POST, &format!("/pools/{}/cycle", segment(&pool)))
                .await?;
            print_pool(ctx, &pool);
            Ok(exit::OK)
        }
        PoolCommand::Delete { pool, force } => {
            let _: Option<()> = ctx
                .api()?
                .call(
                    Method::DELETE,
                    &format!("/pools/{}?force={force}", segment(&pool)),
                )
                .await?;
            if ctx.json() {
                json(&serde_json::json!({"deleted": pool}));
            } else {
                eprintln!("pool {pool} deleted");
            }
            Ok(exit::OK)
        }
    }
}

async fn keygen(ctx: &Context, out_dir: &Path, name: &str, force: bool) -> Result<u8, Failure> {
    let key_path = out_dir.join("pool.key");
    let csr_path = out_dir.join("pool.csr");
    for path in [&key_path, &csr_path] {
        if path.exists() && !force {
            return Err(Failure::new(
                exit::CONFLICT,
                format!(
                    "{} already exists; pass --force to overwrite it",
                    path.display()
                ),
            ));
        }
    }
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Failure::new(exit::ERROR, format!("--out-dir {}: {e}", out_dir.display())))?;
    let progress = std::io::stderr().is_terminal() && !ctx.json();
    if progress {
        eprint!(
            "generating an RSA {}-bit key (a few seconds)… ",
            gantry_pki::KEYGEN_RSA_BITS
        );
        let _ = std::io::stderr().flush();
    }
    let name = name.to_string();
    let generated = tokio::task::spawn_blocking(move || {
        gantry_pki::generate(gantry_pki::KEYGEN_RSA_BITS, &name)
    })
    .await
    .map_err(|e| Failure::new(exit::ERROR, e.to_string()))?
    .map_err(|e| Failure::new(exit::ERROR, e.to_string()))?;
    if progress {
        eprintln!("done");
    }
    write_private(&key_path, generated.private_key_pem.as_bytes())?;
    std::fs::write(&csr_path, generated.csr_pem.as_bytes())
        .map_err(|e| Failure::new(exit::ERROR, format!("{}: {e}", csr_path.display())))?;
    if ctx.json() {
        json(&KeygenOutput {
            private_key: key_path,
            csr: csr_path,
        });
    } else {
        println!(
            "wrote {} (private: keep it, never upload it)",
            key_path.display()
        );
        println!(
            "wrote {} (upload it: gantry pool create NAME --csr {})",
            csr_path.display(),
            csr_path.display()
        );
    }
    Ok(exit::OK)
}

/// The private key is created readable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Failure::new(exit::ERROR, format!("{}: {e}", path.display())))?;
    file.write_all(contents)
        .map_err(|e| Failure::new(exit::ERROR, format!("{}: {e}", path.display())))
}

/// The token goes to stdout alone in text mode, so `> pool.token` saves it.
fn print_token(ctx: &Context, created: &PoolWithToken) {
    if ctx.json() {
        json(&TokenOutput {
            id: &created.id,
            name: &created.name,
            token: &created.token,
            pool: &created.pool,
            stacks_affected: &created.stacks_affected,
            runs_discarded: &created.runs_discarded,
        });
    } else {
        eprintln!(
            "pool {} ({}): token below, shown once; the launcher reads it from GANTRY_TOKEN",
            created.name, created.id
        );
        println!("{}", created.token);
    }
}

fn print_pool(ctx: &Context, pool: &Pool) {
    if ctx.json() {
        json(pool);
    } else {
        println!("id:              {}", pool.id);
        println!("name:            {}", pool.name);
        println!("key fingerprint: {}", pool.key_fingerprint);
        println!("generation:      {}", pool.generation);
        println!("workers:         {}", pool.workers);
        println!("queued runs:     {}", pool.queued_runs);
        if let Some(cycled) = &pool.cycled_at {
            println!("cycled at:       {cycled}");
        }
        println!("created:         {}", pool.created_at);
    }
}
