//! Runner images: the pull policy, pulls with registry credentials from a
//! Docker `config.json`, and failures that name the image.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use super::engine_message;
use crate::config::PullPolicy;
use crate::logs::SpoolSink;

/// An image reference split the way the pull API wants it.
#[derive(Debug, PartialEq, Eq)]
pub struct Reference {
    /// Repository, with its registry host when it names one.
    pub repository: String,
    /// Tag or digest (`sha256:…`); `latest` when the reference names neither.
    pub tag: String,
    /// The registry host, `docker.io` when the reference names none.
    pub registry: String,
}

pub fn parse_reference(image: &str) -> Reference {
    let (repository, tag) = match image.split_once('@') {
        Some((repository, digest)) => (repository.to_string(), digest.to_string()),
        None => {
            let last_slash = image.rfind('/').map_or(0, |i| i + 1);
            match image[last_slash..].rfind(':') {
                Some(colon) => (
                    image[..last_slash + colon].to_string(),
                    image[last_slash + colon + 1..].to_string(),
                ),
                None => (image.to_string(), "latest".to_string()),
            }
        }
    };
    let registry = match repository.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".to_string(),
    };
    Reference {
        repository,
        tag,
        registry,
    }
}

/// Makes sure `image` is on the engine, as the pull policy says. Progress
/// and failures go to the run's log; an error is the run's failure reason.
pub async fn ensure(
    docker: &Docker,
    image: &str,
    policy: PullPolicy,
    config_dir: Option<&Path>,
    sink: &SpoolSink,
) -> Result<(), String> {
    if policy != PullPolicy::Always {
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(error) => {
                return Err(format!(
                    "cannot inspect the runner image `{image}`: {}",
                    engine_message(&error)
                ));
            }
        }
        if policy == PullPolicy::Never {
            return Err(format!(
                "the runner image `{image}` is not on this worker, and GANTRY_PULL_POLICY=never forbids pulling it"
            ));
        }
    }
    pull(docker, image, config_dir, sink).await
}

async fn pull(
    docker: &Docker,
    image: &str,
    config_dir: Option<&Path>,
    sink: &SpoolSink,
) -> Result<(), String> {
    let reference = parse_reference(image);
    let credentials = match config_dir {
        Some(dir) => credentials_for(dir, &reference.registry).map_err(|e| {
            format!("cannot pull the runner image `{image}`: GANTRY_DOCKER_CONFIG_DIR: {e}")
        })?,
        None => None,
    };
    sink.line(&format!("pulling the runner image {image}"));
    tracing::info!(
        image,
        authenticated = credentials.is_some(),
        "pulling the runner image"
    );
    let options = CreateImageOptionsBuilder::default()
        .from_image(&reference.repository)
        .tag(&reference.tag)
        .build();
    let mut progress = docker.create_image(Some(options), None, credentials);
    let mut last_status = String::new();
    while let Some(item) = progress.next().await {
        match item {
            Ok(info) => {
                // Layer-by-layer progress is noise in a run log; keep the
                // lines that say something (e.g. "Status: Downloaded…").
                if let Some(status) = info.status {
                    if info.id.is_none() && status != last_status {
                        sink.line(&status);
                        last_status = status;
                    }
                }
            }
            Err(error) => {
                return Err(format!(
                    "cannot pull the runner image `{image}`: {}",
                    engine_message(&error)
                ))
            }
        }
    }
    Ok(())
}

/// Credentials for `registry` from `<dir>/config.json` (`auths`; credential
/// helpers are not supported). Ok(None) when it has none for that registry.
pub fn credentials_for(dir: &Path, registry: &str) -> Result<Option<DockerCredentials>, String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config: DockerConfig = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a Docker config.json: {e}", path.display()))?;
    let wanted = normalise_registry(registry);
    let Some((server, entry)) = config
        .auths
        .iter()
        .find(|(server, _)| normalise_registry(server) == wanted)
    else {
        return Ok(None);
    };
    let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                format!(
                    "{}: the `auth` of {server} is not base64 of user:password",
                    path.display()
                )
            })?;
        let (user, pass) = decoded.split_once(':').ok_or_else(|| {
            format!(
                "{}: the `auth` of {server} is not base64 of user:password",
                path.display()
            )
        })?;
        username = Some(user.to_string());
        password = Some(pass.to_string());
    }
    Ok(Some(DockerCredentials {
        username,
        password,
        serveraddress: Some(server.clone()),
        identitytoken: entry.identitytoken.clone(),
        ..Default::default()
    }))
}

/// Checks at start that the config file is there and readable.
pub fn check_config_dir(dir: &Path) -> Result<(), String> {
    credentials_for(dir, "docker.io").map(|_| ())
}

fn normalise_registry(server: &str) -> String {
    let host = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_tag_and_registry() {
        let r = parse_reference("alpine");
        assert_eq!(
            (r.repository.as_str(), r.tag.as_str(), r.registry.as_str()),
            ("alpine", "latest", "docker.io")
        );
        let r = parse_reference("gantry-runner:0.1.0");
        assert_eq!(
            (r.repository.as_str(), r.tag.as_str()),
            ("gantry-runner", "0.1.0")
        );
        let r = parse_reference("registry.example.com:5000/team/runner:1.2");
        assert_eq!(
            (r.repository.as_str(), r.tag.as_str(), r.registry.as_str()),
            (
                "registry.example.com:5000/team/runner",
                "1.2",
                "registry.example.com:5000"
            )
        );
        let r = parse_reference("localhost:5000/runner");
        assert_eq!(
            (r.repository.as_str(), r.tag.as_str(), r.registry.as_str()),
            ("localhost:5000/runner", "latest", "localhost:5000")
        );
        let r = parse_reference("team/runner@sha256:abc");
        assert_eq!(
            (r.repository.as_str(), r.tag.as_str(), r.registry.as_str()),
            ("team/runner", "sha256:abc", "docker.io")
        );
    }

    #[test]
    fn credentials_come_from_config_json() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("robot:s3cret");
        std::fs::write(
            dir.path().join("config.json"),
            format!(r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{auth}"}}, "registry.example.com": {{"identitytoken": "tok"}}}}}}"#),
        )
        .unwrap();
        let hub = credentials_for(dir.path(), "docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_deref(), hub.password.as_deref()),
            (Some("robot"), Some("s3cret"))
        );
        let private = credentials_for(dir.path(), "registry.example.com")
            .unwrap()
            .unwrap();
        assert_eq!(private.identitytoken.as_deref(), Some("tok"));
        assert!(credentials_for(dir.path(), "quay.io").unwrap().is_none());
        std::fs::write(dir.path().join("config.json"), "not json").unwrap();
        assert!(credentials_for(dir.path(), "docker.io")
            .unwrap_err()
            .contains("not a Docker config.json"));
    }
}
