//! The Docker executor: each run in its own container, on the Docker Engine
//! API (`DOCKER_HOST` or the local socket).
//!
//! - The container comes from the run's image, else GANTRY_DEFAULT_RUNNER_IMAGE,
//!   pulled as GANTRY_PULL_POLICY says (with credentials from
//!   GANTRY_DOCKER_CONFIG_DIR). The image needs nothing but the command.
//! - The command is the container's entrypoint, so the image's own
//!   ENTRYPOINT and CMD cannot hijack the run.
//! - It runs as an unprivileged user (GANTRY_WORKER_USER; 1000:1000 by
//!   default) with `no-new-privileges`, in the run's workspace bind-mounted at
//!   [`WORKSPACE`], with exactly the run's environment (plus what the image
//!   itself sets), the extra mounts, network, runtime and CPU and memory
//!   limits the launcher is configured with.
//! - Its output (stdout and stderr, interleaved as written) streams from the
//!   attach API into the run's log spool.
//! - Stop and timeouts signal the container: TERM, then KILL after the grace
//!   period, as `docker stop` does. The container and its anonymous volumes
//!   are removed after every run.
//! - Every container carries the labels `gantry.run_id` and
//!   `gantry.launcher` (a hash of the launcher's work directory on the host),
//!   so a launcher restarted after a crash finds and removes the containers
//!   its previous life left running.

mod host;
mod image;
mod running;

pub use running::{ContainerStopper, DockerRun};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use sha2::{Digest, Sha256};

use super::{trust, RunSpec};
use crate::config::{Config, PullPolicy};
use crate::logs::SpoolSink;

/// Where a run sees its workspace, and its working directory.
pub const WORKSPACE: &str = "/workspace";
/// Label: the run a container belongs to.
pub const LABEL_RUN: &str = "gantry.run_id";
/// Label: the launcher (work directory) that created a container.
pub const LABEL_LAUNCHER: &str = "gantry.launcher";

pub struct DockerExecutor {
    docker: Docker,
    /// This launcher's [`LABEL_LAUNCHER`] value.
    launcher: String,
    /// The launcher's work directory as the launcher sees it...
    work_dir: PathBuf,
    /// ...and as the engine sees it, for bind mounts.
    host_work_dir: PathBuf,
    default_image: Option<String>,
    pull_policy: PullPolicy,
    docker_config_dir: Option<PathBuf>,
    user: String,
    /// Who must own a workspace so that `user` can write it; `None` when it
    /// cannot be known (a user name): the workspace is then world-writable.
    workspace_owner: Option<(u32, u32)>,
    extra_mounts: Vec<Mount>,
    network: Option<String>,
    runtime: Option<String>,
    nano_cpus: Option<i64>,
    memory: Option<i64>,
    /// The CA file runs trust, mounted at [`trust::CONTAINER_CA_FILE`].
    ca_file: Option<PathBuf>,
}

impl DockerExecutor {
    /// Connects to the engine and checks the container settings against it.
    pub async fn open(config: &Config, ca_file: Option<PathBuf>) -> Result<DockerExecutor, String> {
        let host =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let unreachable = |error: &dyn std::fmt::Display| {
            format!(
                "GANTRY_EXECUTOR: cannot use the Docker engine at {host} (DOCKER_HOST): {error}; \
                 start it, point DOCKER_HOST at it, or set GANTRY_EXECUTOR=process"
            )
        };
        let docker = Docker::connect_with_defaults().map_err(|e| unreachable(&e))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(&e))?;
        let info = docker.info().await.map_err(|e| unreachable(&e))?;

        if let Some(runtime) = &config.worker_runtime {
            let runtimes = info.runtimes.unwrap_or_default();
            if !runtimes.contains_key(runtime) {
                let mut known: Vec<&String> = runtimes.keys().collect();
                known.sort();
                return Err(format!(
                    "GANTRY_WORKER_RUNTIME: the Docker engine has no runtime {runtime:?} (it has {known:?}); \
                     install it and register it in the engine's daemon.json"
                ));
            }
        }
        if let Some(network) = config
            .worker_network
            .as_deref()
            .filter(|n| !n.starts_with("container:"))
        {
            if let Err(error) = docker.inspect_network(network, None).await {
                return Err(format!(
                    "GANTRY_WORKER_NETWORK: the Docker engine has no network {network:?} ({}); create it with \
                     `docker network create {network}`",
                    engine_message(&error)
                ));
            }
        }
        if let (Some(cpus), Some(available)) = (config.worker_cpus, info.ncpu) {
            if cpus > available as f64 {
                return Err(format!("GANTRY_WORKER_CPUS: {cpus} CPUs asked for each run, but the Docker host has {available}"));
            }
        }
        if let Some(dir) = &config.docker_config_dir {
            image::check_config_dir(dir).map_err(|e| format!("GANTRY_DOCKER_CONFIG_DIR: {e}"))?;
        }
        let extra_mounts = config
            .worker_extra_mounts
            .iter()
            .map(|m| extra_mount(m))
            .collect();

        let work_dir = std::fs::canonicalize(&config.work_dir).map_err(|e| {
            format!(
                "GANTRY_WORK_DIR: cannot resolve {}: {e}",
                config.work_dir.display()
            )
        })?;
        let host_work_dir = host::host_path(&docker, &work_dir)
            .await
            .map_err(|e| format!("GANTRY_WORK_DIR: {e}"))?;
        let launcher =
            hex::encode(&Sha256::digest(host_work_dir.as_os_str().as_encoded_bytes())[..8]);
        let (user, workspace_owner) = container_user(config.worker_user.as_deref());
        tracing::info!(
            engine = %host,
            api_version = %docker.client_version(),
            launcher_label = %launcher,
            user = %user,
            default_image = ?config.default_runner_image,
            pull_policy = ?config.pull_policy,
            "Docker executor ready"
        );
        Ok(DockerExecutor {
            docker,
            launcher,
            work_dir,
            host_work_dir,
            default_image: config
                .default_runner_image
                .clone()
                .filter(|i| !i.trim().is_empty()),
            pull_policy: config.pull_policy,
            docker_config_dir: config.docker_config_dir.clone(),
            user,
            workspace_owner,
            extra_mounts,
            network: config.worker_network.clone(),
            runtime: config.worker_runtime.clone(),
            nano_cpus: config.worker_cpus.map(|cpus| (cpus * 1e9) as i64),
            memory: config.worker_memory.map(|bytes| bytes as i64),
            ca_file,
        })
    }

    /// The CA file runs trust, on this host.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// Removes the containers a previous life of this launcher left (it
    /// crashed, or was killed, mid-run). Their runs are reported at
    /// registration from the in-flight records (see `orphans`).
    pub async fn reap(&self) {
        let filters =
            HashMap::from([("label", vec![format!("{LABEL_LAUNCHER}={}", self.launcher)])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = match self.docker.list_containers(Some(options)).await {
            Ok(containers) => containers,
            Err(error) => {
                tracing::warn!(error = %engine_message(&error), "cannot list the containers a previous launcher left");
                return;
            }
        };
        for container in containers {
            let Some(id) = container.id else { continue };
            let run_id = container
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_RUN))
                .cloned()
                .unwrap_or_default();
            match self.remove(&id).await {
                Ok(()) => {
                    tracing::warn!(container = %id, run_id, "removed a run container left by a previous launcher")
                }
                Err(error) => {
                    tracing::warn!(container = %id, run_id, %error, "cannot remove a run container left by a previous launcher")
                }
            }
        }
    }

    pub async fn start(&self, spec: &RunSpec, sink: &SpoolSink) -> Result<DockerRun, String> {
        let image = spec
            .image
            .clone()
            .filter(|i| !i.trim().is_empty())
            .or_else(|| self.default_image.clone())
            .ok_or(
                "the run names no runner image, and this worker has no GANTRY_DEFAULT_RUNNER_IMAGE",
            )?;
        image::ensure(
            &self.docker,
            &image,
            self.pull_policy,
            self.docker_config_dir.as_deref(),
            sink,
        )
        .await?;
        self.prepare_workspace(&spec.workspace)?;

        let name = container_name(&spec.run_id, &spec.lease_id);
        let body = self.container_body(spec, &image)?;
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            // A container of that name is left from an earlier attempt.
            Err(EngineError::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                let _ = self.remove(&name).await;
                self.docker.create_container(Some(options), body).await
            }
            other => other,
        };
        let id = created
            .map_err(|e| {
                format!(
                    "cannot create a container from the runner image `{image}`: {}",
                    engine_message(&e)
                )
            })?
            .id;

        // Attach before starting, so no output is missed.
        let attach = AttachContainerOptionsBuilder::default()
            .stream(true)
            .logs(true)
            .stdout(true)
            .stderr(true)
            .build();
        let attached = self
            .docker
            .attach_container(&id, Some(attach))
            .await
            .map_err(|e| {
                format!(
                    "cannot attach to the run's container: {}",
                    engine_message(&e)
                )
            })?;
        let output = tokio::spawn(running::copy_output(attached.output, sink.clone()));
        if let Err(error) = self.docker.start_container(&id, None).await {
            output.abort();
            return Err(format!(
                "cannot start `{}` in the runner image `{image}`: {}",
                spec.command[0],
                engine_message(&error)
            ));
        }
        tracing::debug!(run_id = %spec.run_id, container = %id, image, "run container started");
        Ok(DockerRun::new(
            self.docker.clone(),
            id,
            output,
            sink.clone(),
        ))
    }

    fn container_body(&self, spec: &RunSpec, image: &str) -> Result<ContainerCreateBody, String> {
        let workspace = self.host_path(&spec.workspace)?;
        let mut mounts = vec![Mount {
            typ: Some(MountType::BIND),
            source: Some(workspace.display().to_string()),
            target: Some(WORKSPACE.to_string()),
            read_only: Some(false),
            ..Default::default()
        }];
        mounts.extend(self.extra_mounts.iter().cloned());
        let mut env = spec.env.clone();
        if let Some(file) = &self.ca_file {
            mounts.push(ca_mount(&self.host_path(file)?));
            trust::add_ca_env(&mut env, trust::CONTAINER_CA_FILE);
        }
        let labels = HashMap::from([
            (LABEL_RUN.to_string(), spec.run_id.clone()),
            (LABEL_LAUNCHER.to_string(), self.launcher.clone()),
        ]);
        let env = env
            .iter()
            // The launcher's default PATH is for processes on this host; in a
            // container the image's PATH applies, unless the run sets one.
            .filter(|(name, value)| {
                !(name.as_str() == "PATH" && value.as_str() == super::DEFAULT_PATH)
            })
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        Ok(ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(spec.command.clone()),
            env: Some(env),
            working_dir: Some(WORKSPACE.to_string()),
            user: Some(self.user.clone()),
            labels: Some(labels),
            attach_stdin: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(false),
            tty: Some(false),
            host_config: Some(HostConfig {
                mounts: Some(mounts),
                network_mode: self.network.clone(),
                runtime: self.runtime.clone(),
                nano_cpus: self.nano_cpus,
                memory: self.memory,
                // No swap beyond the limit: a run that outgrows it ends
                // (and says so) instead of crawling.
                memory_swap: self.memory,
                security_opt: Some(vec!["no-new-privileges".to_string()]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// The engine's path for a path under the work directory.
    fn host_path(&self, path: &Path) -> Result<PathBuf, String> {
        let canonical = std::fs::canonicalize(path)
            .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
        let rest = canonical.strip_prefix(&self.work_dir).map_err(|_| {
            format!(
                "{} is not under GANTRY_WORK_DIR {}",
                path.display(),
                self.work_dir.display()
            )
        })?;
        Ok(self.host_work_dir.join(rest))
    }

    /// Lets the container's user write the workspace: everything in it, as
    /// the launcher may have put files there (a stack's source, or the
    /// workspace a tracked run stored between plan and apply).
    fn prepare_workspace(&self, workspace: &Path) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let result = match self.workspace_owner {
            Some((uid, gid)) if nix::unistd::geteuid().is_root() => hand_over(workspace, uid, gid),
            Some(_) => Ok(()),
            None => std::fs::set_permissions(workspace, std::fs::Permissions::from_mode(0o777)),
        };
        result.map_err(|e| {
            format!(
                "the launcher cannot hand the workspace {} to the run's user: {e}",
                workspace.display()
            )
        })
    }

    /// Removes a run's container and its anonymous volumes, whatever state
    /// it is in; nothing to do when it never got created.
    pub async fn cleanup(&self, run_id: &str, lease_id: &str) {
        let name = container_name(run_id, lease_id);
        if let Err(error) = self.remove(&name).await {
            tracing::warn!(run_id, container = %name, %error, "cannot remove the run's container");
        }
    }

    async fn remove(&self, container: &str) -> Result<(), String> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        for attempt in 0..3 {
            match self
                .docker
                .remove_container(container, Some(options.clone()))
                .await
            {
                Ok(())
                | Err(EngineError::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(()),
                // "removal already in progress", or the engine was busy.
                Err(error) if attempt < 2 => {
                    tracing::debug!(container, error = %engine_message(&error), "container removal failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(engine_message(&error)),
            }
        }
        unreachable!("the last attempt returns")
    }
}

/// Gives `path` and everything under it to uid:gid (symbolic links
/// themselves, never what they point to).
fn hand_over(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::symlink_metadata(path)?;
    if metadata.uid() != uid || metadata.gid() != gid {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    }
    if metadata.is_dir() {
        for entry in std::fs::read_dir(path)? {
            hand_over(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// `gantry-run-<run id>-<lease id>`: a name an operator recognises in
/// `docker ps`, one per lease.
pub fn container_name(run_id: &str, lease_id: &str) -> String {
    let safe: String = format!("{run_id}-{lease_id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("gantry-run-{safe}")
}

/// The user runs execute as, and who must own their workspace.
fn container_user(configured: Option<&str>) -> (String, Option<(u32, u32)>) {
    match configured {
        Some(user) => {
            let (uid, gid) = user.split_once(':').unwrap_or((user, user));
            match (uid.parse::<u32>(), gid.parse::<u32>()) {
                (Ok(uid), Ok(gid)) => (user.to_string(), Some((uid, gid))),
                _ => (user.to_string(), None),
            }
        }
        None if nix::unistd::geteuid().is_root() => ("1000:1000".to_string(), Some((1000, 1000))),
        None => {
            let (uid, gid) = (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            );
            (format!("{uid}:{gid}"), Some((uid, gid)))
        }
    }
}

/// The run's CA file (its path for the engine), read-only where the CA
/// variables point.
fn ca_mount(host_file: &Path) -> Mount {
    Mount {
        typ: Some(MountType::BIND),
        source: Some(host_file.display().to_string()),
        target: Some(trust::CONTAINER_CA_FILE.to_string()),
        read_only: Some(true),
        ..Default::default()
    }
}

/// `host:container[:ro|rw]`, already checked by the configuration.
fn extra_mount(spec: &str) -> Mount {
    let mut parts = spec.split(':');
    let source = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let read_only = parts.next() == Some("ro");
    Mount {
        typ: Some(MountType::BIND),
        source: Some(source),
        target: Some(target),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// The engine's own words for an error, without bollard's wrapping.
pub(crate) fn engine_message(error: &EngineError) -> String {
    match error {
        EngineError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        EngineError::DockerStreamError { error } => error.trim().to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_mounts() {
        assert_eq!(
            container_user(Some("1234:99")),
            ("1234:99".to_string(), Some((1234, 99)))
        );
        assert_eq!(
            container_user(Some("4321")),
            ("4321".to_string(), Some((4321, 4321)))
        );
        assert_eq!(container_user(Some("nobody")), ("nobody".to_string(), None));
        let mount = extra_mount("/etc/ssl/certs:/etc/ssl/certs:ro");
        assert_eq!(mount.source.as_deref(), Some("/etc/ssl/certs"));
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(extra_mount("/data:/data").read_only, Some(false));
        assert_eq!(container_name("01ABC", "01DEF"), "gantry-run-01ABC-01DEF");
        let ca = ca_mount(Path::new("/host/work/ca-certificates.pem"));
        assert_eq!(ca.target.as_deref(), Some(trust::CONTAINER_CA_FILE));
        assert_eq!(ca.read_only, Some(true));
    }
}
