//! Where the launcher's work directory is on the Docker host.
//!
//! Run containers bind-mount their workspace from the host. A launcher on
//! the host itself gives its own path. A launcher that runs in a container
//! (the `gantry-launcher` image, with the host's Docker socket mounted) sees
//! its work directory at one path while the engine knows it at another: it
//! finds its own container, and translates through that container's mounts.

use std::path::{Path, PathBuf};

use bollard::Docker;

/// The id of the container this process runs in, if any: Docker bind-mounts
/// `/var/lib/docker/containers/<id>/{hostname,hosts,resolv.conf}` into every
/// container, and /proc/self/mountinfo shows those sources.
pub fn own_container_id() -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    container_id_in(&mountinfo)
}

fn container_id_in(mountinfo: &str) -> Option<String> {
    for line in mountinfo.lines() {
        let Some(root) = line.split_whitespace().nth(3) else {
            continue;
        };
        let mut parts = root.split('/');
        while let Some(part) = parts.next() {
            if part == "containers" {
                if let Some(id) = parts.next() {
                    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Some(id.to_string());
                    }
                }
            }
        }
    }
    None
}

/// The engine's path for `work_dir` (absolute, canonical).
pub async fn host_path(docker: &Docker, work_dir: &Path) -> Result<PathBuf, String> {
    let Some(id) = own_container_id() else {
        return Ok(work_dir.to_path_buf());
    };
    let container = match docker.inspect_container(&id, None).await {
        Ok(container) => container,
        Err(error) => {
            // Another engine's container (e.g. a Kubernetes pod talking to a
            // Docker-in-Docker sidecar): assume the paths are shared.
            tracing::warn!(container = %id, %error, "cannot inspect the launcher's own container; assuming the Docker host sees GANTRY_WORK_DIR at the same path");
            return Ok(work_dir.to_path_buf());
        }
    };
    let mounts = container.mounts.unwrap_or_default();
    let mut best: Option<(PathBuf, PathBuf)> = None;
    for mount in mounts {
        let (Some(source), Some(destination)) = (mount.source, mount.destination) else {
            continue;
        };
        let destination = PathBuf::from(destination);
        if work_dir.starts_with(&destination)
            && best.as_ref().is_none_or(|(dest, _)| {
                destination.components().count() > dest.components().count()
            })
        {
            best = Some((destination, PathBuf::from(source)));
        }
    }
    match best {
        Some((destination, source)) => {
            let rest = work_dir.strip_prefix(&destination).expect("checked prefix");
            let host = source.join(rest);
            tracing::info!(work_dir = %work_dir.display(), host_path = %host.display(), "the launcher runs in a container; run workspaces are mounted from the host path");
            Ok(host)
        }
        None => Err(format!(
            "the launcher runs in container {}, and {} is not on a volume or bind mount, so run containers cannot mount \
             their workspaces from it; mount it from the host, e.g. docker run -v /var/lib/gantry-launcher:{}",
            &id[..12],
            work_dir.display(),
            work_dir.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_container_id_in_mountinfo() {
        let id = "3f1c".repeat(16);
        let mountinfo = format!(
            "812 795 0:50 / / rw,relatime master:1 - overlay overlay rw\n\
             830 812 254:1 /var/lib/docker/containers/{id}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda1 rw\n"
        );
        assert_eq!(container_id_in(&mountinfo), Some(id));
        assert_eq!(
            container_id_in("24 1 0:22 / /proc rw - proc proc rw\n"),
            None
        );
    }
}
