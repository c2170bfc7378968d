use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use clap::Subcommand;
use gantry_wire::run::{Run, RunState, RunType, SubmitRun};
use gantry_wire::stack::TriggerRun;
use reqwest::Method;

use crate::client::{segment, Api};
use crate::commands::Context;
use crate::output::{json, paint, state_color, stderr_colored, stdout_colored, table};
use crate::{exit, Failure};

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Queue a command on a worker pool (a task run).
    ///
    /// Example: gantry run submit --pool demo --env GREETING=hi -- sh -c 'echo $GREETING'
    Submit {
        /// The pool (name or ID).
        #[arg(long)]
        pool: String,
        /// Environment variable for the run, K=V (repeatable).
        #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Runner image (Docker executor).
        #[arg(long)]
        image: Option<String>,
        /// Wait for the run to end, printing its log; exit 10 if it did not finish successfully.
        #[arg(long)]
        wait: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Trigger a run on a stack: proposed (plan), tracked (plan, confirm, apply),
    /// destroy (plan -destroy, confirm, apply), or task (a command in the
    /// stack's workspace). Tracked and destroy runs wait in UNCONFIRMED for
    /// `gantry run confirm` unless the stack has --auto-apply.
    ///
    /// Example: gantry run trigger web --type tracked
    Trigger {
        /// The stack (name or ID).
        stack: String,
        #[arg(long = "type", value_name = "TYPE", default_value = "proposed", value_parser = parse_type)]
        run_type: RunType,
        /// Wait for the run to end or to wait for confirmation, printing its log.
        #[arg(long)]
        wait: bool,
        /// For --type task: the command and its arguments.
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Apply a tracked or destroy run's saved plan (the run is UNCONFIRMED).
    Confirm { id: String },
    /// Drop a tracked or destroy run's plan without applying it (the run is UNCONFIRMED).
    Discard { id: String },
    /// Show a run: state, worker, exit code, every transition.
    Show { id: String },
    /// List runs, newest first.
    List {
        #[arg(long)]
        pool: Option<String>,
        /// Only runs in this state (e.g. FAILED).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Print a run's log; with -f, follow it until the run ends.
    Logs {
        id: String,
        #[arg(short, long)]
        follow: bool,
    },
    /// Stop a run: a queued one is canceled, a running one is terminated (TERM, then KILL).
    Stop { id: String },
    /// Wait for a run to end; exit 0 if it FINISHED, 10 otherwise.
    Wait {
        id: String,
        /// Give up after this long (e.g. 10m); exit 1.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
}

fn parse_type(text: &str) -> Result<RunType, String> {
    RunType::parse(text).ok_or_else(|| {
        format!("{text:?} is not a run type: use proposed, tracked, destroy or task")
    })
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not K=V"))?;
    if name.is_empty() {
        return Err(format!("{text:?} has an empty variable name"));
    }
    Ok((name.to_string(), value.to_string()))
}

pub async fn run(ctx: &Context, command: RunCommand) -> Result<u8, Failure> {
    let api = ctx.api()?;
    match command {
        RunCommand::Submit {
            pool,
            env,
            image,
            wait,
            command,
        } => {
            let request = SubmitRun {
                pool,
                command,
                env: env.into_iter().collect::<BTreeMap<_, _>>(),
                image,
            };
            let run: Run = api.call_with(Method::POST, "/runs", &request).await?;
            if !wait {
                if ctx.json() {
                    json(&run);
                } else {
                    println!("{}", run.id);
                    eprintln!(
                        "run {} queued on pool {}; follow it with: gantry run logs {} -f",
                        run.id, run.pool, run.id
                    );
                }
                return Ok(exit::OK);
            }
            if !ctx.json() {
                eprintln!("run {} queued on pool {}", run.id, run.pool);
                follow_logs(&api, &run.id, true).await?;
            }
            let run = wait_for_end(&api, &run.id, None, !ctx.json()).await?;
            finish_report(ctx, &run)
        }
        RunCommand::Trigger {
            stack,
            run_type,
            wait,
            command,
        } => {
            let request = TriggerRun { run_type, command };
            let run: Run = api
                .call_with(
                    Method::POST,
                    &format!("/stacks/{}/runs", segment(&stack)),
                    &request,
                )
                .await?;
            if !wait {
                if ctx.json() {
                    json(&run);
                } else {
                    println!("{}", run.id);
                    eprintln!(
                        "{} run {} {} on stack {stack}; follow it with: gantry run logs {} -f",
                        run_type.as_str(),
                        run.id,
                        run.state,
                        run.id
                    );
                }
                return Ok(exit::OK);
            }
            let run = wait_for_end(&api, &run.id, None, !ctx.json()).await?;
            finish_report(ctx, &run)
        }
        RunCommand::Confirm { id } => {
            let run: Run = api
                .call(Method::POST, &format!("/runs/{}/confirm", segment(&id)))
                .await?;
            print_run(ctx, &run);
            Ok(exit::OK)
        }
        RunCommand::Discard { id } => {
            let run: Run = api
                .call(Method::POST, &format!("/runs/{}/discard", segment(&id)))
                .await?;
            print_run(ctx, &run);
            Ok(exit::OK)
        }
        RunCommand::Show { id } => {
            let run: Run = api
                .call(Method::GET, &format!("/runs/{}", segment(&id)))
                .await?;
            print_run(ctx, &run);
            Ok(exit::OK)
        }
        RunCommand::List { pool, state, limit } => {
            let mut path = format!("/runs?limit={limit}");
            if let Some(pool) = pool {
                path.push_str(&format!("&pool={}", segment(&pool)));
            }
            if let Some(state) = state {
                path.push_str(&format!("&state={}", segment(&state)));
            }
            let runs: Vec<Run> = api.call(Method::GET, &path).await?;
            if ctx.json() {
                json(&runs);
            } else {
                let rows = runs
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.clone(),
                            r.pool.clone(),
                            r.state.to_string(),
                            r.created_at.clone(),
                            r.command.join(" "),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "POOL", "STATE", "CREATED", "COMMAND"],
                    rows,
                    Some(2),
                );
            }
            Ok(exit::OK)
        }
        RunCommand::Logs { id, follow } => {
            follow_logs(&api, &id, follow).await?;
            Ok(exit::OK)
        }
        RunCommand::Stop { id } => {
            let run: Run = api
                .call(Method::POST, &format!("/runs/{}/stop", segment(&id)))
                .await?;
            print_run(ctx, &run);
            Ok(exit::OK)
        }
        RunCommand::Wait { id, timeout } => {
            let run = wait_for_end(&api, &id, timeout, !ctx.json()).await?;
            finish_report(ctx, &run)
        }
    }
}

fn finish_report(ctx: &Context, run: &Run) -> Result<u8, Failure> {
    if ctx.json() {
        json(run);
    } else {
        let reason = run
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        eprintln!(
            "run {} {}{reason}",
            run.id,
            paint(
                run.state.as_str(),
                state_color(run.state.as_str()),
                stderr_colored()
            )
        );
    }
    if run.state == RunState::Unconfirmed && !ctx.json() {
        eprintln!(
            "apply it with: gantry run confirm {}   (or drop it: gantry run discard {})",
            run.id, run.id
        );
        return Ok(exit::OK);
    }
    Ok(if run.state == RunState::Finished {
        exit::OK
    } else {
        exit::RUN_UNSUCCESSFUL
    })
}

/// Streams the log to stdout, chunk by chunk; with `follow`, until the run ends.
async fn follow_logs(api: &Api, id: &str, follow: bool) -> Result<(), Failure> {
    let mut from = 0u64;
    let mut stdout = std::io::stdout();
    loop {
        let wait = if follow { 20 } else { 0 };
        let request = api
            .request(
                Method::GET,
                &format!("/runs/{}/logs?from={from}&wait={wait}", segment(id)),
            )?
            .timeout(Duration::from_secs(60));
        let response = api.send(request).await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let next: u64 = header(gantry_wire::NEXT_SEQ_HEADER)
            .and_then(|v| v.parse().ok())
            .unwrap_or(from);
        let complete = header(gantry_wire::LOG_COMPLETE_HEADER).as_deref() == Some("true");
        let gap = header(gantry_wire::LOG_GAP_HEADER).and_then(|g| {
            let (a, b) = g.split_once('-')?;
            Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
        });
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::new(exit::UNREACHABLE, e.to_string()))?;
        stdout
            .write_all(&body)
            .map_err(|e| Failure::new(exit::ERROR, e.to_string()))?;
        let _ = stdout.flush();
        let mut advanced = next > from;
        from = next;
        if let Some((missing, resume)) = gap.filter(|(missing, _)| *missing == from) {
            eprintln!(
                "gantry: the log is missing chunks {missing} to {}: the run's worker was lost before uploading them",
                resume - 1
            );
            from = resume;
            advanced = true;
        }
        if complete || (!follow && !advanced) {
            return Ok(());
        }
    }
}

/// Polls the run until it ends, showing state changes on stderr.
async fn wait_for_end(
    api: &Api,
    id: &str,
    timeout: Option<Duration>,
    progress: bool,
) -> Result<Run, Failure> {
    let started = tokio::time::Instant::now();
    let mut last_state = None;
    loop {
        let run: Run = api
            .call(Method::GET, &format!("/runs/{}", segment(id)))
            .await?;
        if progress && last_state != Some(run.state) && !run.state.is_terminal() {
            eprintln!("run {}: {}", run.id, run.state);
        }
        last_state = Some(run.state);
        if run.state.is_terminal() || run.state == RunState::Unconfirmed {
            return Ok(run);
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            return Err(Failure::new(
                exit::ERROR,
                format!("run {id} is still {} after the --timeout", run.state),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn print_run(ctx: &Context, run: &Run) {
    if ctx.json() {
        json(run);
        return;
    }
    let colored = stdout_colored();
    println!("id:        {}", run.id);
    println!("pool:      {}", run.pool);
    println!("type:      {}", run.run_type.as_str());
    println!(
        "state:     {}",
        paint(run.state.as_str(), state_color(run.state.as_str()), colored)
    );
    if let Some(stack) = &run.stack {
        println!("stack:     {stack}");
    }
    if !run.command.is_empty() {
        println!("command:   {}", run.command.join(" "));
    }
    if let Some(sha) = &run.commit_sha {
        println!("commit:    {sha}");
    }
    if let Some(plan) = &run.plan {
        println!("plan:      {plan}");
    }
    for output in &run.outputs {
        let value = if output.sensitive {
            "<sensitive>".to_string()
        } else {
            output.value.to_string()
        };
        println!("output:    {} = {value}", output.name);
    }
    if let Some(worker) = &run.worker_id {
        println!("worker:    {worker}");
    }
    if let Some(code) = run.exit_code {
        println!("exit code: {code}");
    }
    if let Some(reason) = &run.reason {
        println!("reason:    {reason}");
    }
    println!("transitions:");
    for t in &run.transitions {
        let reason = t
            .reason
            .as_deref()
            .map(|r| format!("  ({r})"))
            .unwrap_or_default();
        println!("  {}  {}{reason}", t.at, t.state);
    }
}
