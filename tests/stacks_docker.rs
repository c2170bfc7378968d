//! A stack's runs on the Docker executor: every phase in a container from
//! the runner image (scripts/build-images.sh: Terraform 1.0.3 and the null
//! provider in Terraform's implied local mirror), the state in the control
//! plane. With CI=true a missing docker fails instead of skipping.

mod support;
mod tf;

use std::process::Command;

use support::*;
use tf::*;

fn runner_image() -> String {
    format!("gantry-runner:{}", env!("CARGO_PKG_VERSION"))
}

fn docker_ready() -> bool {
    if !require_tool("docker") {
        return false;
    }
    let answers = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !answers {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the Docker engine does not answer (docker info failed) under CI=true");
        }
        eprintln!("skipping: the Docker engine does not answer");
    }
    answers
}

const CONTAINER_TF: &str = r#"
resource "null_resource" "r" {
  provisioner "local-exec" {
    command = "echo applied as $(id -u) in $(pwd)"
  }
}
output "id" {
  value = null_resource.r.id
}
"#;

/// The runner image, asserted present (built by scripts/build-images.sh).
fn present_runner_image() -> String {
    let image = runner_image();
    let present = Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        present,
        "the image {image} is missing: build it with scripts/build-images.sh runner (make test-all does)"
    );
    image
}

#[test]
#[ignore = "slow: docker"]
fn a_stack_plans_and_applies_in_the_runner_image() {
    if !docker_ready() {
        return;
    }
    let image = present_runner_image();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("infra");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("main.tf"), CONTAINER_TF).unwrap();

    let server = Server::start_with("10s");
    let pool = server.create_pool("containers");
    // No Terraform on the launcher's side: only the image's. The control
    // plane listens on loopback, so run containers share the host network.
    let _launcher = start_launcher(
        &pool,
        &[
            ("GANTRY_EXECUTOR".into(), "docker".into()),
            ("GANTRY_DEFAULT_RUNNER_IMAGE".into(), image.clone()),
            ("GANTRY_WORKER_NETWORK".into(), "host".into()),
        ],
    );
    create_stack(
        &server,
        "boxed",
        "containers",
        &source,
        &["--tool-version", "1.0.3"],
    );

    let id = trigger(&server, "boxed", "proposed");
    let run = ended(&server, &id, "FINISHED");
    assert_eq!(plan(&run), (1, 0, 0));
    let log = log_text(&server, &id);
    assert!(log.contains("terraform 1.0.3, as pinned"), "{log}");
    assert!(log.contains("Installing hashicorp/null v2.1.2"), "{log}");

    // Tracked: planned in one container, applied from the sealed workspace in others.
    let run = apply(&server, "boxed");
    let log = log_text(&server, run["id"].as_str().unwrap());
    assert!(log.contains("applied as 1000 in /workspace"), "{log}");
    assert!(log.contains("Apply complete! Resources: 1 added"), "{log}");
    let v = versions(&server, "boxed");
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["resources"], 1);
    let leftovers = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=gantry.run_id={}", run["id"].as_str().unwrap()),
        ])
        .output()
        .unwrap();
    assert!(
        leftovers.stdout.is_empty(),
        "the run's containers are removed"
    );

    // A version the image does not have fails in PREPARING, in the container too.
    server.cli_json(&["stack", "update", "boxed", "--tool-version", "1.1.0"]);
    let id = trigger(&server, "boxed", "proposed");
    let run = ended(&server, &id, "FAILED");
    assert!(
        reason(&run).contains("pins terraform 1.1.0, but this worker's terraform is 1.0.3"),
        "{run:#}"
    );
}

/// A control plane on HTTPS with a private CA: Terraform in the run's
/// container trusts GANTRY_ADDITIONAL_ROOT_CAS through the CA file mounted
/// at /etc/gantry/ca-certificates.pem (the runner image has no CAs of its own).
#[test]
#[ignore = "slow: docker"]
fn terraform_in_a_container_trusts_gantry_additional_root_cas() {
    if !docker_ready() {
        return;
    }
    let image = present_runner_image();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("infra");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("main.tf"), CONTAINER_TF).unwrap();
    let server = Server::start_with_args("10s", &["--tls-dev"]);
    let pool = server.create_pool("containers");
    let _launcher = start_launcher(
        &pool,
        &[
            ("GANTRY_EXECUTOR".into(), "docker".into()),
            ("GANTRY_DEFAULT_RUNNER_IMAGE".into(), image),
            ("GANTRY_WORKER_NETWORK".into(), "host".into()),
            (
                "GANTRY_ADDITIONAL_ROOT_CAS".into(),
                server.dev_ca_bundle().unwrap(),
            ),
        ],
    );
    let check = r#"test -s "$SSL_CERT_FILE" && echo "ca file: $SSL_CERT_FILE""#;
    create_stack(
        &server,
        "boxed",
        "containers",
        &source,
        &["--hook", &format!("before_init={check}")],
    );
    let run = apply(&server, "boxed");
    let log = log_text(&server, run["id"].as_str().unwrap());
    assert!(
        log.contains("ca file: /etc/gantry/ca-certificates.pem"),
        "{log}"
    );
    assert!(!log.contains("x509"), "{log}");
    assert_eq!(versions(&server, "boxed").len(), 1);
}
