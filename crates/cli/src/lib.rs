//! `gantry`: the command line for the control plane.
//!
//! `gantry server` runs the control plane itself; every other command is a
//! client of its API, configured by `GANTRY_URL` and `GANTRY_API_TOKEN`.

mod client;
mod commands;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use output::OutputFormat;

/// The autoscaler library, for the end-to-end tests' own ticks.
#[cfg(feature = "autoscaler")]
pub use gantry_autoscaler as autoscaler;

const LONG_ABOUT: &str = "\
Gantry: self-hosted worker pools for infrastructure-as-code runs.

Start a control plane, create a worker pool from a key you keep, start launchers, run things:

    gantry server --data-dir ./gantry-data            # prints the admin API token once
    export GANTRY_URL=http://127.0.0.1:8080 GANTRY_API_TOKEN=<token>
    gantry pool keygen                               # writes pool.key and pool.csr
    gantry pool create demo --csr pool.csr > pool.token
    GANTRY_TOKEN=$(cat pool.token) GANTRY_POOL_PRIVATE_KEY=$(base64 -w0 < pool.key) gantry-launcher &
    gantry run submit --pool demo -- sh -c 'echo hello from $(hostname)'
    gantry run logs <RUN_ID> -f

Every command takes --output json. Colors follow NO_COLOR.

Exit codes: 0 success; 1 unexpected error; 2 invalid usage or input; 3 not found;
4 not authorized (check GANTRY_API_TOKEN); 5 conflict with the current state;
6 control plane unreachable (check GANTRY_URL); 10 the run waited on did not finish successfully.";

#[derive(Debug, Parser)]
#[command(name = "gantry", version, about = "Gantry: self-hosted worker pools for infrastructure-as-code runs", long_about = LONG_ABOUT)]
pub struct Cli {
    /// Output format.
    #[arg(
        long,
        short = 'o',
        global = true,
        value_enum,
        default_value = "text",
        env = "GANTRY_OUTPUT"
    )]
    output: OutputFormat,

    /// The control plane's URL.
    #[arg(
        long,
        global = true,
        env = "GANTRY_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,

    /// An API token (printed by the server at first start).
    #[arg(long, global = true, env = "GANTRY_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,

    /// Extra CAs to trust for the control plane's certificate: base64 of
    /// {"caCertificates": ["<base64 PEM>", …]} (see `gantry ca-bundle encode`).
    #[arg(
        long,
        global = true,
        env = "GANTRY_ADDITIONAL_ROOT_CAS",
        hide_env_values = true
    )]
    additional_root_cas: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane.
    #[command(long_about = commands::server::LONG_ABOUT)]
    Server(commands::server::ServerArgs),
    /// Worker pools: keys, tokens, reset, cycle.
    #[command(subcommand)]
    Pool(commands::pool::PoolCommand),
    /// Runs: submit, watch, stop.
    #[command(subcommand)]
    Run(commands::run::RunCommand),
    /// Stacks: Terraform/OpenTofu root modules, their runs and state.
    #[command(subcommand)]
    Stack(commands::stack::StackCommand),
    /// Workers: list, drain, undrain.
    #[command(subcommand)]
    Worker(commands::worker::WorkerCommand),
    /// User API tokens: create, list, revoke.
    #[command(subcommand)]
    Token(commands::token::TokenCommand),
    /// Extra CA bundles for GANTRY_ADDITIONAL_ROOT_CAS: encode and inspect.
    #[command(subcommand, name = "ca-bundle")]
    CaBundle(commands::ca_bundle::CaBundleCommand),
    /// Scale an EC2 Auto Scaling group to a pool's demand, never killing a busy worker.
    // On the variant: its doc comment would otherwise hide the command's long help.
    #[command(long_about = commands::autoscaler::LONG_ABOUT)]
    Autoscaler(commands::autoscaler::AutoscalerArgs),
    /// The server's keyring for secrets at rest: generate, status, rotate.
    #[command(subcommand, name = "secrets-key")]
    SecretsKey(commands::secrets_key::SecretsKeyCommand),
    /// The control plane's database: copy SQLite into PostgreSQL (the server stopped).
    #[command(subcommand)]
    Db(commands::db::DbCommand),
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::new(1, format!("{error:#}"))
    }
}

pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const UNAUTHORIZED: u8 = 4;
    pub const CONFLICT: u8 = 5;
    pub const UNREACHABLE: u8 = 6;
    pub const RUN_UNSUCCESSFUL: u8 = 10;
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let result = runtime.block_on(async {
        let ctx = commands::Context {
            output: cli.output,
            url: cli.url,
            api_token: cli.api_token,
            additional_root_cas: cli.additional_root_cas,
        };
        match cli.command {
            Command::Server(args) => commands::server::run(args).await,
            Command::Pool(command) => commands::pool::run(&ctx, command).await,
            Command::Run(command) => commands::run::run(&ctx, command).await,
            Command::Stack(command) => commands::stack::run(&ctx, command).await,
            Command::Worker(command) => commands::worker::run(&ctx, command).await,
            Command::Token(command) => commands::token::run(&ctx, command).await,
            Command::Autoscaler(args) => commands::autoscaler::run(&ctx, args).await,
            Command::CaBundle(command) => commands::ca_bundle::run(&ctx, command),
            Command::SecretsKey(command) => commands::secrets_key::run(&ctx, command).await,
            Command::Db(command) => commands::db::run(&ctx, command).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            output::error(cli.output, &failure);
            ExitCode::from(failure.code)
        }
    }
}
