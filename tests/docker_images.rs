//! The Docker executor's images against the real Docker engine: the runner
//! image by default, a missing image and the pull policy, a real Terraform
//! plan and apply in the runner image.
//!
//! Needs docker and the images from `scripts/build-images.sh` (the test
//! setup runs it). With CI=true a missing docker fails these tests instead
//! of skipping them.

mod docker;
mod support;

use std::time::Duration;

use docker::*;
use support::*;

#[test]
#[ignore = "slow: docker"]
fn a_task_runs_in_the_runner_image_by_default() {
    if !docker_ready() {
        return;
    }
    require_image(&runner_image());
    let server = Server::start();
    let pool = server.create_pool("runner");
    let _launcher = docker_launcher(&pool, &[]);
    let id = server.submit(
        "runner",
        &["sh", "-c", "git --version && terraform version && id"],
    );
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    let log = log_of(&server, &id);
    assert_eq!(run["state"], "FINISHED", "{run}\n{log}");
    assert!(
        log.contains("git version") && log.contains("Terraform v1.0.3"),
        "{log}"
    );
    assert!(log.contains("uid=1000(gantry)"), "{log}");
}

#[test]
#[ignore = "slow: docker"]
fn a_missing_image_fails_the_run_and_names_the_image() {
    if !docker_ready() {
        return;
    }
    let server = Server::start();
    let pool = server.create_pool("no-image");
    let launcher = Launcher::start(&pool, &[("GANTRY_EXECUTOR", "docker")]);
    launcher.wait_registered();

    // No registry answers here: the pull fails, and the reason names the image.
    let missing = "gantry-no-such-image:404";
    let id = submit_with(&server, "no-image", &["--image", missing], &["true"]);
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    assert_eq!(run["state"], "FAILED", "{run}");
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("cannot pull the runner image `{missing}`")),
        "{run}"
    );
    assert!(log_of(&server, &id).contains(missing));

    // No image named and no default: the reason says what to set.
    let id = server.submit("no-image", &["true"]);
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    assert_eq!(run["state"], "FAILED");
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .contains("GANTRY_DEFAULT_RUNNER_IMAGE"),
        "{run}"
    );
    drop(launcher);

    // GANTRY_PULL_POLICY=never does not even try.
    let launcher = Launcher::start(
        &pool,
        &[
            ("GANTRY_EXECUTOR", "docker"),
            ("GANTRY_PULL_POLICY", "never"),
        ],
    );
    launcher.wait_registered();
    let id = submit_with(&server, "no-image", &["--image", missing], &["true"]);
    let run = server.wait_run_end(&id, Duration::from_secs(60));
    assert_eq!(run["state"], "FAILED");
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.contains(missing) && reason.contains("GANTRY_PULL_POLICY=never"),
        "{run}"
    );
}

#[test]
#[ignore = "slow: docker"]
fn terraform_plans_and_applies_in_the_runner_image() {
    if !docker_ready() {
        return;
    }
    require_image(&runner_image());
    let server = Server::start();
    let pool = server.create_pool("terraform");
    let _launcher = docker_launcher(&pool, &[]);
    let config = r#"
resource "null_resource" "hello" {
  triggers = { run = "gantry" }
  provisioner "local-exec" {
    command = "echo hello from local-exec in $(pwd)"
  }
}
output "id" { value = null_resource.hello.id }
"#;
    let script = format!(
        "set -e; cat > main.tf <<'EOF'\n{config}\nEOF\n\
         terraform init -input=false -no-color -plugin-dir=/usr/local/share/terraform/plugins\n\
         terraform plan -input=false -no-color -out=tfplan\n\
         terraform apply -input=false -no-color tfplan\n\
         terraform output -no-color id"
    );
    let id = server.submit("terraform", &["sh", "-c", &script]);
    let run = server.wait_run_end(&id, Duration::from_secs(180));
    let log = log_of(&server, &id);
    assert_eq!(run["state"], "FINISHED", "{run}\n{log}");
    assert!(log.contains("Installing hashicorp/null v2.1.2"), "{log}");
    assert!(
        log.contains("Plan: 1 to add, 0 to change, 0 to destroy"),
        "{log}"
    );
    assert!(log.contains("hello from local-exec in /workspace"), "{log}");
    assert!(
        log.contains("Apply complete! Resources: 1 added, 0 changed, 0 destroyed."),
        "{log}"
    );
}
