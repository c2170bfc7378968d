//! A stack's git source, cloned by the launcher itself: at the exact commit,
//! with git kept on a short leash, since the URL and the ref come from the
//! control plane's users:
//!
//! - `--` before the URL, and URLs and refs that look like options
//!   refused, so neither can become a git option;
//! - a clean environment: only what git needs to reach a remote (PATH,
//!   HOME, locale, proxies, the ssh agent, the launcher's CA settings and
//!   the variables of GANTRY_PASSTHROUGH_ENVS), never the launcher's
//!   GANTRY_* credentials or key;
//! - only network transports (https, http, ssh, git): `file://` and local
//!   paths read the worker's own disk, so they are refused unless the
//!   launcher allows them (GANTRY_ALLOW_LOCAL_GIT_SOURCES), and remote
//!   helpers such as `ext::` (which run commands) are never allowed;
//! - credentials in the URL never shown: logs and messages carry the URL
//!   with `***` for them, and the run's log masks them.

use std::collections::BTreeMap;
use std::path::Path;

use gantry_wire::stack::{git_url_credentials, redact_git_url};

use crate::logs::SpoolSink;

/// Launcher variables git may see besides GANTRY_PASSTHROUGH_ENVS.
const GIT_ENV: [&str; 24] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSH_AUTH_SOCK",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_CONFIG_GLOBAL",
    "XDG_CONFIG_HOME",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
];

/// How the launcher runs git for a run.
pub struct Git {
    env: BTreeMap<String, String>,
    allow_local: bool,
    /// Values to hide in what git prints (credentials of the URL).
    secrets: Vec<String>,
}

impl Git {
    /// `launcher_env` is the launcher's environment; `ca_file` the CA file
    /// runs trust (GANTRY_ADDITIONAL_ROOT_CAS), if any.
    pub fn new(
        launcher_env: &BTreeMap<String, String>,
        passthrough: &[String],
        allow_local: bool,
        ca_file: Option<&Path>,
        url: &str,
    ) -> Git {
        let mut env: BTreeMap<String, String> = GIT_ENV
            .iter()
            .map(|name| name.to_string())
            .chain(passthrough.iter().cloned())
            .filter(|name| !name.starts_with("GANTRY_"))
            .filter_map(|name| Some((name.clone(), launcher_env.get(&name)?.clone())))
            .collect();
        if let Some(file) = ca_file {
            env.insert("GIT_SSL_CAINFO".into(), file.display().to_string());
        }
        env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
        Git {
            env,
            allow_local,
            secrets: url_secrets(url),
        }
    }

    /// Hides the URL's credentials in `text`.
    fn redact(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_string(), |text, secret| text.replace(secret, "***"))
    }

    /// Runs git; its error output (credentials hidden) goes into the run's log.
    async fn run(
        &self,
        sink: Option<&SpoolSink>,
        args: &[&str],
        cwd: &Path,
    ) -> Result<String, String> {
        let output = tokio::process::Command::new("git")
            .args(self.protocols())
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .envs(&self.env)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run git: {e} (is git installed on the worker?)"))?;
        let stderr = self.redact(&String::from_utf8_lossy(&output.stderr));
        if let Some(sink) = sink {
            let _ = sink.append(stderr.as_bytes());
        }
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(stderr.trim().to_string())
        }
    }

    /// `-c protocol…`: network transports only, local ones when allowed.
    fn protocols(&self) -> Vec<String> {
        let mut args = vec!["-c".to_string(), "protocol.allow=never".to_string()];
        let local: &[&str] = if self.allow_local { &["file"] } else { &[] };
        for protocol in ["https", "http", "ssh", "git"].iter().chain(local) {
            args.push("-c".into());
            args.push(format!("protocol.{protocol}.allow=always"));
        }
        args
    }

    /// Clones `url` into `dest` and checks out `git_ref` (a branch, tag or
    /// commit) detached. Returns the exact commit SHA.
    pub async fn clone(
        &self,
        sink: &SpoolSink,
        url: &str,
        git_ref: &str,
        dest: &Path,
    ) -> Result<String, String> {
        let shown = redact_git_url(url);
        check_url(url, self.allow_local)?;
        if git_ref.starts_with('-') {
            return Err(format!(
                "PREPARING: the ref {git_ref:?} is not a branch, tag or commit; fix the stack's --ref"
            ));
        }
        let parent = dest.parent().expect("the source has a parent");
        let dest_str = dest.to_string_lossy().to_string();
        sink.line(&format!("cloning {shown} at {git_ref}"));
        self.run(
            Some(sink),
            &["clone", "--quiet", "--no-checkout", "--", url, &dest_str],
            parent,
        )
        .await
        .map_err(|e| format!("PREPARING: cannot clone {shown}: {e}; check the stack's git URL"))?;
        let mut sha = None;
        for candidate in [format!("origin/{git_ref}"), git_ref.to_string()] {
            let spec = format!("{candidate}^{{commit}}");
            let found = self
                .run(None, &["rev-parse", "--verify", "--quiet", &spec], dest)
                .await;
            if let Ok(found) = found {
                sha = Some(found);
                break;
            }
        }
        let sha = sha.ok_or_else(|| {
            format!("PREPARING: ref {git_ref:?} not found in {shown}; check the stack's --ref (a branch, tag or commit)")
        })?;
        self.run(Some(sink), &["checkout", "--quiet", "--detach", &sha], dest)
            .await
            .map_err(|e| format!("PREPARING: cannot check out {sha}: {e}"))?;
        sink.line(&format!("checked out commit {sha}"));
        Ok(sha)
    }
}

/// The credentials in `url`, as they may appear (raw and percent-decoded),
/// for the run's log masker and messages; empty when it has none.
pub fn url_secrets(url: &str) -> Vec<String> {
    let Some((start, end)) = git_url_credentials(url) else {
        return Vec::new();
    };
    let userinfo = &url[start..end];
    let mut secrets = vec![userinfo.to_string()];
    // The password, or a token given as the user name.
    let secret = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    secrets.push(secret.to_string());
    let decoded = percent_decode(secret);
    secrets.push(decoded);
    secrets.retain(|s| !s.is_empty());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether git would read `url` from the worker's own disk: `file://`, or a
/// path (git's rule: no `scheme://`, and no `:` before the first `/`,
/// which would make it scp-like `host:path`).
pub fn is_local(url: &str) -> bool {
    if url.to_ascii_lowercase().starts_with("file:") {
        return true;
    }
    if url.contains("://") {
        return false;
    }
    match (url.find(':'), url.find('/')) {
        (Some(colon), Some(slash)) => slash < colon,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// Refuses URLs git must not be given: local ones unless allowed, and any
/// that could be read as an option.
pub fn check_url(url: &str, allow_local: bool) -> Result<(), String> {
    let shown = redact_git_url(url);
    if url.starts_with('-') || url.trim().is_empty() {
        return Err(format!(
            "PREPARING: {shown:?} is not a git URL; fix the stack's git URL (e.g. https://host/repo.git)"
        ));
    }
    if is_local(url) && !allow_local {
        return Err(format!(
            "PREPARING: the git URL {shown} is a path on the worker (or file://), and this launcher does not \
             clone from its own disk; use a network URL (https://, ssh://, git://), or allow local sources \
             on the worker with GANTRY_ALLOW_LOCAL_GIT_SOURCES=true"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_urls_are_recognised() {
        for local in [
            "file:///srv/repo",
            "FILE:///srv/repo",
            "/srv/repo",
            "./repo",
            "repo",
            "../x:y",
        ] {
            assert!(is_local(local), "{local}");
        }
        for remote in [
            "https://host/repo.git",
            "ssh://git@host/repo",
            "git@github.com:o/r.git",
            "git://127.0.0.1:9418/repo",
            "host:repo",
        ] {
            assert!(!is_local(remote), "{remote}");
        }
        let refused = check_url("/etc", false).unwrap_err();
        assert!(
            refused.contains("GANTRY_ALLOW_LOCAL_GIT_SOURCES"),
            "{refused}"
        );
        assert!(check_url("/srv/repo", true).is_ok());
        assert!(check_url("--upload-pack=touch /tmp/x", true).is_err());
    }

    #[test]
    fn url_credentials_are_found_raw_and_decoded() {
        assert_eq!(
            url_secrets("https://bot:p%40ss-w0rd@host/r.git"),
            ["bot:p%40ss-w0rd", "p%40ss-w0rd", "p@ss-w0rd"]
        );
        assert_eq!(url_secrets("https://ghp_token123@host/r"), ["ghp_token123"]);
        assert!(url_secrets("https://host/r").is_empty());
    }

    #[test]
    fn git_sees_no_launcher_credentials() {
        let launcher_env = BTreeMap::from(
            [
                ("PATH", "/usr/bin"),
                ("HOME", "/home/l"),
                ("GANTRY_TOKEN", "token"),
                ("GANTRY_POOL_PRIVATE_KEY", "key"),
                ("AWS_SECRET_ACCESS_KEY", "aws"),
                ("TEAM_VAR", "v"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let passthrough = ["TEAM_VAR".to_string(), "GANTRY_TOKEN".to_string()];
        let git = Git::new(
            &launcher_env,
            &passthrough,
            false,
            Some(Path::new("/w/ca.pem")),
            "https://u:pw-secret@h/r",
        );
        let names: Vec<&str> = git.env.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "GIT_SSL_CAINFO",
                "GIT_TERMINAL_PROMPT",
                "HOME",
                "PATH",
                "TEAM_VAR"
            ]
        );
        assert_eq!(
            git.redact("fatal: https://u:pw-secret@h/r"),
            "fatal: https://***@h/r"
        );
        assert!(!git.protocols().iter().any(|a| a.contains("file")));
    }
}
