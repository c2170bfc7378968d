//! Git sources, cloned by the launcher: never from the worker's own disk
//! unless the launcher allows it, with a clean environment and `--` before
//! the URL, and without showing credentials embedded in the URL.

mod support;
mod tf;

use std::path::Path;
use std::process::Command;

use support::*;
use tf::*;

/// A repository holding [`MAIN_TF`] at its root.
fn repository(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("main.tf"), MAIN_TF).unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &[
            "-c",
            "user.email=t@t",
            "-c",
            "user.name=t",
            "commit",
            "-qm",
            "one",
        ],
    ] {
        let out = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
    }
    repo
}

/// A `git` first on the launcher's PATH that records its environment and
/// arguments, then runs the real one.
fn recording_git(dir: &Path, env: &mut [(String, String)]) -> std::path::PathBuf {
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let bin = dir.join("git-wrapper");
    std::fs::create_dir_all(&bin).unwrap();
    let record = dir.join("git-calls");
    std::fs::write(
        bin.join("git"),
        format!(
            "#!/bin/sh\n{{ echo '--- env'; env; echo '--- args'; printf '%s\\n' \"$@\"; }} >> {}\nexec {} \"$@\"\n",
            record.display(),
            real.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, value) in env.iter_mut() {
        if name == "PATH" {
            *value = format!("{}:{value}", bin.display());
        }
    }
    record
}

#[test]
#[ignore = "slow: terraform"]
fn local_git_sources_only_when_allowed_and_git_sees_no_launcher_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut env) = tools(dir.path()) else {
        return;
    };
    if !require_tool("git") {
        return;
    }
    let repo = repository(dir.path());
    let url = format!("file://{}", repo.display());
    let server = Server::start_with("10s");
    let pool = server.create_pool("git");
    server.cli_json(&[
        "stack", "create", "local", "--pool", "git", "--source", &url,
    ]);

    // Refused by default, naming the setting.
    let launcher = start_launcher(&pool, &env);
    let id = trigger(&server, "local", "proposed");
    let run = ended(&server, &id, "FAILED");
    assert!(
        reason(&run).contains("GANTRY_ALLOW_LOCAL_GIT_SOURCES"),
        "{run:#}"
    );
    drop(launcher);

    // Allowed: cloned, with `--` before the URL and none of the launcher's
    // credentials in git's environment.
    let record = recording_git(dir.path(), &mut env);
    env.push(("GANTRY_ALLOW_LOCAL_GIT_SOURCES".into(), "true".into()));
    let _launcher = start_launcher(&pool, &env);
    let id = trigger(&server, "local", "proposed");
    let run = ended(&server, &id, "FINISHED");
    assert_eq!(plan(&run), (1, 0, 0));
    let calls = std::fs::read_to_string(&record).unwrap();
    assert!(!calls.contains("GANTRY_"), "{calls}");
    assert!(calls.contains("GIT_TERMINAL_PROMPT=0"), "{calls}");
    assert!(calls.contains(&format!("--\n{url}\n")), "{calls}");
}

#[test]
fn credentials_in_a_git_url_are_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    if !require_tool("git") {
        return;
    }
    let password = "s3cret-token-in-url";
    // Nothing listens there: the clone fails, and says so without them.
    let url = format!("http://bot:{password}@127.0.0.1:{}/repo.git", free_port());
    let server = Server::start_with("10s");
    let pool = server.create_pool("git");
    let created = server.cli_json(&[
        "stack", "create", "creds", "--pool", "git", "--source", &url,
    ]);
    let shown = "http://***@127.0.0.1:".to_string();
    assert!(
        created["git_url"].as_str().unwrap().starts_with(&shown),
        "{created}"
    );
    for args in [&["stack", "show", "creds"][..], &["stack", "list"]] {
        let out = server.cli(args);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains(password), "{args:?}: {text}");
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let env = launcher_env(dir.path(), &path);
    let _launcher = start_launcher(&pool, &env);
    let id = trigger(&server, "creds", "proposed");
    let run = ended(&server, &id, "FAILED");
    let log = log_text(&server, &id);
    assert!(log.contains(&format!("cloning {shown}")), "{log}");
    assert!(!log.contains(password), "{log}");
    assert!(!run.to_string().contains(password), "{run:#}");
    assert!(reason(&run).contains("cannot clone"), "{run:#}");
}

/// A symbolic link committed in the repository cannot lead the project root
/// (and the launcher's writes and chowns there) outside the source.
#[test]
fn a_project_root_through_a_link_outside_the_source_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    if !require_tool("git") {
        return;
    }
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::os::unix::fs::symlink(&outside, repo.join("escape")).unwrap();
    std::fs::write(repo.join("main.tf"), MAIN_TF).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.email=t@t", "-c", "user.name=t"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "link"]);

    let server = Server::start_with("10s");
    let pool = server.create_pool("git");
    let url = format!("file://{}", repo.display());
    server.cli_json(&[
        "stack",
        "create",
        "link",
        "--pool",
        "git",
        "--source",
        &url,
        "--project-root",
        "escape",
    ]);
    let path = std::env::var("PATH").unwrap_or_default();
    let mut env = launcher_env(dir.path(), &path);
    env.push(("GANTRY_ALLOW_LOCAL_GIT_SOURCES".into(), "true".into()));
    let _launcher = start_launcher(&pool, &env);
    let id = trigger(&server, "link", "proposed");
    let run = ended(&server, &id, "FAILED");
    assert!(
        reason(&run).contains("leads outside the stack's source"),
        "{run:#}"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing was written outside the source"
    );
}
