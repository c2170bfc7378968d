//! Shared by the fault suites (`faults.rs`, `faults_partition.rs`): a stack
//! whose apply takes several lease periods and marks its start and end in
//! a file, and the assertions every apply scenario ends with.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use crate::support::netns::Netns;
use crate::support::*;
use crate::tf::*;

pub const LEASE: &str = "2s";

/// A root module whose apply marks its start and end in `$GANTRY_MARKER`,
/// sleeping `TF_VAR_sleep` seconds between them.
pub const SLOW_TF: &str = r#"
variable "sleep" {
  default = "8"
}
resource "null_resource" "slow" {
  provisioner "local-exec" {
    command = "echo start >> $GANTRY_MARKER; sleep ${var.sleep}; echo end >> $GANTRY_MARKER"
  }
}
output "done" {
  value = null_resource.slow.id
}
"#;

pub struct Scenario {
    pub dir: tempfile::TempDir,
    pub server: Server,
    pub pool: Pool,
    pub launcher: Launcher,
    pub env: Vec<(String, String)>,
    pub marker: PathBuf,
    /// The launcher's network namespace, for partitions. Last: dropped
    /// after the launcher.
    pub net: Option<Netns>,
}

impl Scenario {
    /// A control plane, a launcher and a stack "web" on the slow module;
    /// None (skip) without Terraform outside CI.
    pub fn new(sleep_s: u32) -> Option<Scenario> {
        Scenario::build(sleep_s, None, &[])
    }

    /// The same, with `extra` flags for `stack create`.
    pub fn with_stack_flags(sleep_s: u32, extra: &[&str]) -> Option<Scenario> {
        Scenario::build(sleep_s, None, extra)
    }

    /// The same, with `flags` for `gantry server`.
    pub fn with_server_flags(sleep_s: u32, flags: &[&str]) -> Option<Scenario> {
        Scenario::build_with(sleep_s, None, &[], flags)
    }

    /// The same with the launcher in its own network namespace, whose link
    /// to the control plane can be cut (`self.net()`); `extra` flags for
    /// `stack create`. None (skip) without Terraform or namespaces outside CI.
    pub fn partitioned(sleep_s: u32, extra: &[&str]) -> Option<Scenario> {
        let net = Netns::create()?;
        Scenario::build(sleep_s, Some(net), extra)
    }

    fn build(sleep_s: u32, net: Option<Netns>, extra: &[&str]) -> Option<Scenario> {
        Scenario::build_with(sleep_s, net, extra, &[])
    }

    fn build_with(
        sleep_s: u32,
        net: Option<Netns>,
        extra: &[&str],
        server_flags: &[&str],
    ) -> Option<Scenario> {
        let dir = tempfile::tempdir().unwrap();
        let env = tools(dir.path())?;
        let source = dir.path().join("infra");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("main.tf"), SLOW_TF).unwrap();
        let marker = dir.path().join("marker");
        let (server, launcher, pool);
        match &net {
            None => {
                server = Server::start_with_args(LEASE, server_flags);
                pool = server.create_pool("tf");
                launcher = start_launcher(&pool, &env);
            }
            Some(net) => {
                server = Server::start_on(&net.host_ip, LEASE);
                pool = server.create_pool("tf");
                let vars: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                launcher = Launcher::start_netns(&pool, net, &vars);
                launcher.wait_registered();
            }
        }
        let marker_env = format!("GANTRY_MARKER={}", marker.display());
        let sleep_env = format!("TF_VAR_sleep={sleep_s}");
        let mut args = vec!["--env", &marker_env, "--env", &sleep_env];
        args.extend_from_slice(extra);
        create_stack(&server, "web", "tf", &source, &args);
        Some(Scenario {
            dir,
            server,
            pool,
            launcher,
            env,
            marker,
            net,
        })
    }

    pub fn net(&self) -> &Netns {
        self.net.as_ref().expect("a partitioned scenario")
    }

    /// Triggers a tracked run, confirms it, and waits for its apply to start.
    pub fn start_apply(&self) -> String {
        let id = trigger(&self.server, "web", "tracked");
        self.server.wait_state(&id, "UNCONFIRMED", LONG);
        self.server.cli_json(&["run", "confirm", &id]);
        wait_for("the apply to start", LONG, || {
            self.marks().contains(&"start".to_string()).then_some(())
        });
        id
    }

    pub fn marks(&self) -> Vec<String> {
        marks(&self.marker)
    }

    /// The outcome every scenario must reach: one apply, its state stored,
    /// a plan after it with no changes, and the apply once in the log.
    pub fn assert_applied_once(&self, id: &str) {
        let log = log_text(&self.server, id);
        assert_eq!(
            log.matches("Apply complete!").count(),
            1,
            "the apply is in the log once:\n{log}"
        );
        self.assert_stored_once();
    }

    /// One apply, its state stored, and a plan after it with no changes
    /// (for an apply whose log cannot say "Apply complete!").
    pub fn assert_stored_once(&self) {
        assert_eq!(self.marks(), ["start", "end"], "the apply ran exactly once");
        let versions = versions(&self.server, "web");
        assert_eq!(versions.len(), 1, "one state version: {versions:?}");
        assert_eq!(versions[0]["resources"], 1);
        let next = trigger(&self.server, "web", "proposed");
        let run = ended(&self.server, &next, "FINISHED");
        assert_eq!(plan(&run), (0, 0, 0), "the state has the resource");
        assert_eq!(self.marks().len(), 2, "the plan applied nothing");
    }
}

pub fn marks(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}
