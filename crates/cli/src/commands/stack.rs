//! `gantry stack …`: stacks and their state versions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use clap::{Args, Subcommand};
use gantry_wire::stack::{CreateStack, Stack, StateVersion, Tool, UpdateStack, HOOKS};
use reqwest::Method;

use crate::client::segment;
use crate::commands::Context;
use crate::output::{json, table};
use crate::{exit, Failure};

#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Create a stack: one Terraform/OpenTofu root module, from git or a local directory.
    ///
    /// Example: gantry stack create web --pool demo --source ./infra --env TF_VAR_region=eu --secret-env TF_VAR_token
    Create {
        name: String,
        /// The worker pool that runs it (name or ID).
        #[arg(long)]
        pool: String,
        /// A git URL, or a local directory to upload.
        #[arg(long)]
        source: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// List stacks.
    List,
    /// Show a stack (secret variables by name only).
    Show { stack: String },
    /// Change a stack: only the options given change.
    Update {
        stack: String,
        #[arg(long)]
        pool: Option<String>,
        /// A new source: a git URL, or a local directory to upload again.
        #[arg(long)]
        source: Option<String>,
        /// Remove a variable, plain or secret (repeatable).
        #[arg(long = "unset-env", value_name = "NAME")]
        unset_env: Vec<String>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Delete a stack and its state history (refused while a run on it has not ended).
    Delete { stack: String },
    /// The stack's Terraform state.
    #[command(subcommand)]
    State(StateCommand),
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List the stored state versions, oldest first.
    Versions { stack: String },
    /// Print one state version (the state file) to stdout, or write it to --file.
    Download {
        stack: String,
        /// Version number; default the latest.
        version: Option<i64>,
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Lock the stack's state, as Terraform does (e.g. for maintenance): runs
    /// on the stack fail with Terraform's lock error until it is unlocked.
    Lock {
        stack: String,
        /// Why, shown to whoever finds it locked.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove the lock on the stack's state, whoever holds it (a run's, or
    /// `stack state lock`'s).
    ///
    /// A stack whose run is LOST (its worker was lost during the apply) stays
    /// locked by that run until the worker comes back and saves the state.
    /// If it never will, check the resources against the state, then give up
    /// on the run with --force: it ends FAILED and the stack is free.
    Unlock {
        stack: String,
        /// Also give up on the stack's LOST run, if it has one.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct Settings {
    /// Git branch, tag or commit (git sources).
    #[arg(long = "ref")]
    git_ref: Option<String>,
    /// The root module's directory inside the source.
    #[arg(long)]
    project_root: Option<String>,
    /// Runner image (Docker executor).
    #[arg(long)]
    image: Option<String>,
    /// Environment variable, K=V (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Secret variable, K=V, or K alone to take the value from your environment
    /// (repeatable). Write-only: never shown again.
    #[arg(long = "secret-env", value_name = "K=V")]
    secret_env: Vec<String>,
    /// terraform or opentofu.
    #[arg(long)]
    tool: Option<String>,
    /// The exact tool version runs must use, e.g. 1.0.3: a run on a worker whose
    /// tool reports another version fails in PREPARING. Workers take it from
    /// GANTRY_TOOLS_DIR/<tool>/<version>/ when they have it. Empty: no pin.
    #[arg(long, value_name = "VERSION")]
    tool_version: Option<String>,
    /// The tool's binary, instead of terraform/tofu on the worker's PATH.
    #[arg(long)]
    tool_path: Option<String>,
    /// Label (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Hook, NAME=COMMAND, e.g. before_init='echo hi' (repeatable; hooks: before_init,
    /// after_init, before_plan, after_plan, before_apply, after_apply).
    #[arg(long = "hook", value_name = "NAME=CMD")]
    hooks: Vec<String>,
    /// Apply tracked and destroy runs as soon as they are planned, without
    /// waiting for `gantry run confirm`. Off by default; --auto-apply=false
    /// turns it off again.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    auto_apply: Option<bool>,
}

fn usage(message: String) -> Failure {
    Failure::new(exit::USAGE, message)
}

fn pairs(
    flag: &str,
    items: &[String],
    from_env: bool,
) -> Result<BTreeMap<String, String>, Failure> {
    let mut map = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                map.insert(k.to_string(), v.to_string());
            }
            None if from_env && !item.is_empty() => {
                let value = std::env::var(item).map_err(|_| {
                    usage(format!(
                        "{flag} {item}: ${item} is not set; give {item}=VALUE or export it"
                    ))
                })?;
                map.insert(item.clone(), value);
            }
            _ => return Err(usage(format!("{flag} {item:?}: expected K=V"))),
        }
    }
    Ok(map)
}

fn hooks(items: &[String]) -> Result<BTreeMap<String, Vec<String>>, Failure> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in items {
        let (name, command) = item.split_once('=').ok_or_else(|| {
            usage(format!(
                "--hook {item:?}: expected NAME=COMMAND, e.g. before_init='make deps'"
            ))
        })?;
        if !HOOKS.contains(&name) {
            return Err(usage(format!(
                "--hook {name:?} is not a hook; use one of {}",
                HOOKS.join(", ")
            )));
        }
        map.entry(name.to_string())
            .or_default()
            .push(command.to_string());
    }
    Ok(map)
}

fn tool(name: &Option<String>) -> Result<Option<Tool>, Failure> {
    name.as_deref()
        .map(|t| {
            Tool::parse(t).ok_or_else(|| usage(format!("--tool {t:?}: use terraform or opentofu")))
        })
        .transpose()
}

/// A source is a git URL unless it names a local directory.
enum Source {
    Git(String),
    Archive(String),
}

fn source(text: &str) -> Result<Source, Failure> {
    let looks_like_url = text.contains("://") || text.starts_with("git@");
    if !looks_like_url && Path::new(text).is_dir() {
        let packed = pack_dir(Path::new(text)).map_err(|e| {
            Failure::new(
                exit::ERROR,
                format!("--source {text}: cannot pack the directory: {e}"),
            )
        })?;
        return Ok(Source::Archive(
            base64::engine::general_purpose::STANDARD.encode(packed),
        ));
    }
    if looks_like_url {
        return Ok(Source::Git(text.to_string()));
    }
    Err(usage(format!(
        "--source {text:?} is neither a directory nor a git URL (e.g. https://host/repo.git or git://host/repo)"
    )))
}

/// Packs a directory as .tar.gz, leaving out what must not travel: `.git`,
/// `.terraform` and local state files.
pub fn pack_dir(dir: &Path) -> std::io::Result<Vec<u8>> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut archive = tar::Builder::new(encoder);
    archive.follow_symlinks(false);
    add_dir(&mut archive, dir, Path::new(""))?;
    archive.into_inner()?.finish()
}

fn add_dir<W: std::io::Write>(
    archive: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if name_str == ".git" || name_str == ".terraform" || name_str.contains(".tfstate") {
            continue;
        }
        let path = rel.join(&name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            archive.append_dir(&path, entry.path())?;
            add_dir(archive, root, &path)?;
        } else {
            archive.append_path_with_name(entry.path(), &path)?;
        }
    }
    Ok(())
}

/// `terraform`, or `terraform 1.0.3` when the stack pins a version.
fn tool_label(stack: &Stack) -> String {
    match &stack.tool_version {
        Some(version) => format!("{} {version}", stack.tool.as_str()),
        None => stack.tool.as_str().to_string(),
    }
}

fn print_stack(ctx: &Context, stack: &Stack) {
    if ctx.json() {
        return json(stack);
    }
    println!("id:           {}", stack.id);
    println!("name:         {}", stack.name);
    println!("pool:         {}", stack.pool);
    match &stack.git_url {
        Some(url) => println!(
            "source:       {url} @ {}",
            stack.git_ref.as_deref().unwrap_or("HEAD")
        ),
        None => println!(
            "source:       uploaded directory (sha256 {})",
            stack.archive_sha256.as_deref().unwrap_or("")
        ),
    }
    println!(
        "project root: {}",
        if stack.project_root.is_empty() {
            "."
        } else {
            &stack.project_root
        }
    );
    println!(
        "tool:         {}{}",
        tool_label(stack),
        stack
            .tool_path
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default()
    );
    println!(
        "auto-apply:   {}",
        if stack.auto_apply {
            "on (tracked and destroy runs apply without confirmation)"
        } else {
            "off (tracked and destroy runs wait for `gantry run confirm`)"
        }
    );
    if let Some(image) = &stack.image {
        println!("image:        {image}");
    }
    if !stack.labels.is_empty() {
        println!("labels:       {}", stack.labels.join(", "));
    }
    for (k, v) in &stack.env {
        println!("env:          {k}={v}");
    }
    for k in &stack.secret_env {
        println!("secret env:   {k}=<secret>");
    }
    for (hook, commands) in &stack.hooks {
        for command in commands {
            println!("hook:         {hook}: {command}");
        }
    }
    if let Some(serial) = stack.state_serial {
        println!("state serial: {serial}");
    }
}

pub async fn run(ctx: &Context, command: StackCommand) -> Result<u8, Failure> {
    let api = ctx.api()?;
    match command {
        StackCommand::State(lock @ (StateCommand::Lock { .. } | StateCommand::Unlock { .. })) => {
            lock_command(ctx, lock).await?;
        }
        StackCommand::Create {
            name,
            pool,
            source: text,
            settings,
        } => {
            let (git_url, archive) = match source(&text)? {
                Source::Git(url) => (Some(url), None),
                Source::Archive(data) => (None, Some(data)),
            };
            let request = CreateStack {
                name,
                pool,
                git_url,
                git_ref: settings.git_ref.clone(),
                archive,
                project_root: settings.project_root.clone().unwrap_or_default(),
                image: settings.image.clone(),
                tool: tool(&settings.tool)?.unwrap_or_default(),
                tool_version: settings.tool_version.clone(),
                tool_path: settings.tool_path.clone(),
                labels: settings.labels.clone(),
                env: pairs("--env", &settings.env, false)?,
                secret_env: pairs("--secret-env", &settings.secret_env, true)?,
                hooks: hooks(&settings.hooks)?,
                auto_apply: settings.auto_apply.unwrap_or(false),
            };
            let stack: Stack = api.call_with(Method::POST, "/stacks", &request).await?;
            print_stack(ctx, &stack);
        }
        StackCommand::List => {
            let stacks: Vec<Stack> = api.call(Method::GET, "/stacks").await?;
            if ctx.json() {
                json(&stacks);
            } else {
                let rows = stacks
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.pool.clone(),
                            s.git_url.clone().unwrap_or_else(|| "(uploaded)".into()),
                            tool_label(s),
                            s.state_serial
                                .map(|v| v.to_string())
                                .unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                table(
                    &["NAME", "POOL", "SOURCE", "TOOL", "STATE SERIAL"],
                    rows,
                    None,
                );
            }
        }
        StackCommand::Show { stack } => {
            let stack: Stack = api
                .call(Method::GET, &format!("/stacks/{}", segment(&stack)))
                .await?;
            print_stack(ctx, &stack);
        }
        StackCommand::Update {
            stack,
            pool,
            source: text,
            unset_env,
            settings,
        } => {
            let (git_url, archive) = match text.as_deref().map(source).transpose()? {
                Some(Source::Git(url)) => (Some(url), None),
                Some(Source::Archive(data)) => (None, Some(data)),
                None => (None, None),
            };
            let request = UpdateStack {
                pool,
                git_url,
                git_ref: settings.git_ref.clone(),
                archive,
                project_root: settings.project_root.clone(),
                image: settings.image.clone(),
                tool: tool(&settings.tool)?,
                tool_version: settings.tool_version.clone(),
                tool_path: settings.tool_path.clone(),
                labels: (!settings.labels.is_empty()).then(|| settings.labels.clone()),
                env: pairs("--env", &settings.env, false)?,
                secret_env: pairs("--secret-env", &settings.secret_env, true)?,
                unset_env,
                hooks: hooks(&settings.hooks)?,
                auto_apply: settings.auto_apply,
            };
            let stack: Stack = api
                .call_with(
                    Method::PATCH,
                    &format!("/stacks/{}", segment(&stack)),
                    &request,
                )
                .await?;
            print_stack(ctx, &stack);
        }
        StackCommand::Delete { stack } => {
            let _: serde_json::Value = api
                .call(Method::DELETE, &format!("/stacks/{}", segment(&stack)))
                .await?;
            if ctx.json() {
                json(&serde_json::json!({"deleted": stack}));
            } else {
                eprintln!("stack {stack} deleted");
            }
        }
        StackCommand::State(StateCommand::Versions { stack }) => {
            let versions: Vec<StateVersion> = api
                .call(
                    Method::GET,
                    &format!("/stacks/{}/state/versions", segment(&stack)),
                )
                .await?;
            if ctx.json() {
                json(&versions);
            } else {
                let rows = versions
                    .iter()
                    .map(|v| {
                        vec![
                            v.version.to_string(),
                            v.serial.to_string(),
                            v.resources.to_string(),
                            v.run_id.clone().unwrap_or_else(|| "-".into()),
                            v.created_at.clone(),
                        ]
                    })
                    .collect();
                table(
                    &["VERSION", "SERIAL", "RESOURCES", "RUN", "CREATED"],
                    rows,
                    None,
                );
            }
        }
        StackCommand::State(StateCommand::Download {
            stack,
            version,
            file,
        }) => {
            let version = match version {
                Some(v) => v,
                None => {
                    let versions: Vec<StateVersion> = api
                        .call(
                            Method::GET,
                            &format!("/stacks/{}/state/versions", segment(&stack)),
                        )
                        .await?;
                    versions.last().map(|v| v.version).ok_or_else(|| {
                        Failure::new(exit::NOT_FOUND, format!("stack {stack} has no state yet"))
                    })?
                }
            };
            let request = api.request(
                Method::GET,
                &format!("/stacks/{}/state/versions/{version}", segment(&stack)),
            )?;
            let bytes = api
                .send(request)
                .await?
                .bytes()
                .await
                .map_err(|e| Failure::new(exit::UNREACHABLE, e.to_string()))?;
            match file {
                Some(path) => std::fs::write(&path, &bytes).map_err(|e| {
                    Failure::new(exit::ERROR, format!("--file {}: {e}", path.display()))
                })?,
                None => {
                    use std::io::Write;
                    let _ = std::io::stdout().write_all(&bytes);
                }
            }
        }
    }
    Ok(exit::OK)
}

/// `LOCK` / `UNLOCK` on the stack's state backend address.
async fn lock_command(ctx: &Context, command: StateCommand) -> Result<(), Failure> {
    let api = ctx.api()?;
    match command {
        StateCommand::Lock { stack, reason } => {
            let created = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
            let who = format!(
                "{}@gantry-cli",
                std::env::var("USER").unwrap_or_else(|_| "admin".into())
            );
            let info = serde_json::json!({
                "ID": format!("gantry-cli-{}-{}", std::process::id(), created),
                "Operation": "gantry stack state lock",
                "Info": reason.unwrap_or_default(),
                "Who": who,
                "Version": env!("CARGO_PKG_VERSION"),
                "Created": created,
                "Path": "",
            });
            let method = Method::from_bytes(b"LOCK").expect("a valid method");
            let request = api
                .request(method, &format!("/stacks/{}/state", segment(&stack)))?
                .json(&info);
            let response = api.send_raw(request).await?;
            if response.status().as_u16() == 423 {
                let held = response.text().await.unwrap_or_default();
                return Err(Failure::new(
                    exit::CONFLICT,
                    format!("the state of stack {stack} is already locked: {held}"),
                ));
            }
            api.check(response).await?;
            if ctx.json() {
                json(&info);
            } else {
                eprintln!(
                    "locked the state of stack {stack} (lock ID {}); unlock it with `gantry stack state unlock {stack}`",
                    info["ID"].as_str().unwrap_or_default()
                );
            }
        }
        StateCommand::Unlock { stack, force } => {
            let method = Method::from_bytes(b"UNLOCK").expect("a valid method");
            let lost = if force { "&end_lost_run=true" } else { "" };
            let request = api.request(
                method,
                &format!("/stacks/{}/state?force=true{lost}", segment(&stack)),
            )?;
            api.send(request).await?;
            if ctx.json() {
                json(&serde_json::json!({"unlocked": stack}));
            } else {
                eprintln!("unlocked the state of stack {stack}");
            }
        }
        _ => unreachable!("only lock and unlock"),
    }
    Ok(())
}
