use clap::Subcommand;
use gantry_wire::pool::Worker;
use reqwest::Method;

use crate::client::segment;
use crate::commands::Context;
use crate::output::{json, table};
use crate::{exit, Failure};

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// List the workers registered in pools.
    List {
        /// Only this pool's workers.
        #[arg(long)]
        pool: Option<String>,
        /// Include workers that exited.
        #[arg(long)]
        all: bool,
    },
    /// Show one worker.
    Show { id: String },
    /// Take no new runs on this worker; its runs in flight finish.
    Drain { id: String },
    /// Let a drained worker take runs again.
    Undrain { id: String },
}

pub async fn run(ctx: &Context, command: WorkerCommand) -> Result<u8, Failure> {
    let api = ctx.api()?;
    match command {
        WorkerCommand::List { pool, all } => {
            let mut path = format!("/workers?all={all}");
            if let Some(pool) = pool {
                path.push_str(&format!("&pool={}", segment(&pool)));
            }
            let workers: Vec<Worker> = api.call(Method::GET, &path).await?;
            if ctx.json() {
                json(&workers);
            } else {
                let rows = workers
                    .iter()
                    .map(|w| {
                        let tags = w
                            .tags
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(",");
                        vec![
                            w.id.clone(),
                            w.pool.clone(),
                            w.state.as_str().to_string(),
                            w.version.clone(),
                            w.running.len().to_string(),
                            w.last_seen.clone(),
                            tags,
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID",
                        "POOL",
                        "STATE",
                        "VERSION",
                        "RUNS",
                        "LAST SEEN",
                        "TAGS",
                    ],
                    rows,
                    Some(2),
                );
            }
        }
        WorkerCommand::Show { id } => {
            let worker: Worker = api
                .call(Method::GET, &format!("/workers/{}", segment(&id)))
                .await?;
            print_worker(ctx, &worker);
        }
        WorkerCommand::Drain { id } => {
            let worker: Worker = api
                .call(Method::POST, &format!("/workers/{}/drain", segment(&id)))
                .await?;
            print_worker(ctx, &worker);
        }
        WorkerCommand::Undrain { id } => {
            let worker: Worker = api
                .call(Method::POST, &format!("/workers/{}/undrain", segment(&id)))
                .await?;
            print_worker(ctx, &worker);
        }
    }
    Ok(exit::OK)
}

fn print_worker(ctx: &Context, worker: &Worker) {
    if ctx.json() {
        json(worker);
    } else {
        println!("id:        {}", worker.id);
        println!("pool:      {}", worker.pool);
        println!("state:     {}", worker.state.as_str());
        println!("version:   {}", worker.version);
        println!("hostname:  {}", worker.hostname);
        println!("running:   {}", worker.running.join(", "));
        println!("last seen: {}", worker.last_seen);
        for (k, v) in &worker.tags {
            println!("tag:       {k}={v}");
        }
    }
}
