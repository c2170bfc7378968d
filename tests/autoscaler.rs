//! The Auto Scaling group autoscaler against moto's Auto Scaling API, with
//! real launchers registered under the instances' IDs
//! (`GANTRY_METADATA_instance_id`): 0 → N on demand; no change while every
//! worker is busy; N → 0 with drains; a run claimed around the drain is
//! never killed; unregistered instances are reaped after the timeout.
//!
//! moto stands in for AWS (its instances are records, not machines: the
//! launchers run here). Built with `--features autoscaler`.

#![cfg(feature = "autoscaler")]

mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use gantry_cli::autoscaler::{
    self as scaler, aws_sdk_autoscaling as asg, AutoScalingGroup, Autoscaler, ControlPlane,
    HttpControlPlane, Settings,
};
use gantry_wire::demand::{DrainIfIdle, PoolDemand};
use serde_json::Value;
use support::*;

const LONG: Duration = Duration::from_secs(60);

struct Moto {
    _proc: Proc,
}

/// One moto server per test process, its endpoint and dummy credentials in
/// the environment that the SDK here and the `gantry autoscaler` children
/// read. Set once, before any test of this process talks to AWS.
fn moto() -> Option<&'static Moto> {
    static MOTO: OnceLock<Option<Moto>> = OnceLock::new();
    MOTO.get_or_init(|| {
        let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
        if !require_tool(bin.to_str().unwrap()) {
            return None;
        }
        let port = free_port();
        let mut command = std::process::Command::new(&bin);
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let proc = Proc::spawn_command(command);
        let url = format!("http://127.0.0.1:{port}");
        wait_for("moto_server", Duration::from_secs(30), || {
            reqwest::blocking::get(format!("{url}/moto-api/"))
                .ok()
                .filter(|r| r.status().is_success())
        });
        for (key, value) in [
            ("AWS_ENDPOINT_URL", url.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ] {
            std::env::set_var(key, value);
        }
        Some(Moto { _proc: proc })
    })
    .as_ref()
}

struct Fixture {
    server: Server,
    pool: Pool,
    name: String,
    rt: tokio::runtime::Runtime,
    client: asg::Client,
    /// Launchers by the instance ID they registered under.
    launchers: BTreeMap<String, Launcher>,
}

fn fixture(name: &str, max: i32) -> Option<Fixture> {
    fixture_with(name, max, &[])
}

fn fixture_with(name: &str, max: i32, server_args: &[&str]) -> Option<Fixture> {
    moto()?;
    let server = Server::start_with_args("10s", server_args);
    let pool = server.create_pool(name);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(scaler::sdk_client()).unwrap();
    rt.block_on(async {
        client
            .create_launch_configuration()
            .launch_configuration_name(name)
            .image_id("ami-12345678")
            .instance_type("t3.micro")
            .send()
            .await
            .unwrap();
        client
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_configuration_name(name)
            .min_size(0)
            .max_size(max)
            .desired_capacity(0)
            .availability_zones("us-east-1a")
            .send()
            .await
            .unwrap();
    });
    Some(Fixture {
        server,
        pool,
        name: name.to_string(),
        rt,
        client,
        launchers: BTreeMap::new(),
    })
}

impl Fixture {
    /// (desired capacity, instances in service).
    fn group(&self) -> (i32, Vec<String>) {
        let out = self
            .rt
            .block_on(
                self.client
                    .describe_auto_scaling_groups()
                    .auto_scaling_group_names(&self.name)
                    .send(),
            )
            .unwrap();
        let group = &out.auto_scaling_groups()[0];
        let instances = group
            .instances()
            .iter()
            .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
            .map(|i| i.instance_id().unwrap().to_string())
            .collect();
        (group.desired_capacity().unwrap(), instances)
    }

    /// `gantry autoscaler --once -o json` with these extra flags.
    fn once(&self, extra: &[&str]) -> Value {
        let mut args = vec![
            "autoscaler",
            "--pool",
            &self.name,
            "--asg-name",
            &self.name,
            "--once",
        ];
        args.extend_from_slice(extra);
        self.server.cli_json(&args)
    }

    /// A launcher for each instance that has none, registered under its ID.
    fn launch_workers(&mut self) {
        for id in self.group().1 {
            if self.launchers.contains_key(&id) {
                continue;
            }
            let launcher = Launcher::start(&self.pool, &[("GANTRY_METADATA_instance_id", &id)]);
            launcher.wait_registered();
            self.launchers.insert(id, launcher);
        }
    }

    fn demand(&self) -> Value {
        self.server.api_get(&format!("/pools/{}/demand", self.name))
    }

    fn settings(&self) -> Settings {
        Settings {
            scale_in_delay: Duration::ZERO,
            ..Settings::new(&self.name, &self.name)
        }
    }
}

fn plan(report: &Value) -> &str {
    report["plan"]["action"].as_str().unwrap()
}

#[test]
#[ignore = "slow: moto"]
fn zero_to_n_on_demand_then_n_to_zero_with_drains() {
    let Some(mut f) = fixture("up-down", 5) else {
        return;
    };
    let runs: Vec<String> = (0..3)
        .map(|_| f.server.submit("up-down", &["sleep", "1"]))
        .collect();

    let report = f.once(&[]);
    assert_eq!(plan(&report), "scale_out", "{report:#}");
    assert_eq!(report["runs_pending"], 3);
    let (desired, instances) = f.group();
    assert_eq!((desired, instances.len()), (3, 3));

    // Launched, not registered: no decision.
    let report = f.once(&[]);
    assert_eq!(plan(&report), "wait", "{report:#}");

    f.launch_workers();
    for run in &runs {
        assert_eq!(f.server.wait_run_end(run, LONG)["state"], "FINISHED");
    }
    // Idle, but not for longer than the delay: kept.
    let report = f.once(&["--scale-in-delay", "1h"]);
    assert_eq!(plan(&report), "steady", "{report:#}");
    assert_eq!(f.group().0, 3);

    // Idle past the delay: drained, then terminated, oldest first, one
    // step at a time when asked.
    let report = f.once(&["--scale-in-delay", "0s", "--max-step", "2"]);
    assert_eq!(plan(&report), "scale_in", "{report:#}");
    assert_eq!(report["terminated"].as_array().unwrap().len(), 2);
    let report = f.once(&["--scale-in-delay", "0s"]);
    assert_eq!(
        report["terminated"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
    let (desired, instances) = f.group();
    assert_eq!((desired, instances.len()), (0, 0));
    // Every worker was drained by the control plane before its instance went.
    let demand = f.demand();
    let states: Vec<&str> = demand["worker_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["drained"; 3], "{demand:#}");
    for run in &runs {
        assert_eq!(f.server.run(run)["state"], "FINISHED");
    }
}

#[test]
#[ignore = "slow: moto"]
fn no_change_while_all_workers_are_busy() {
    let Some(mut f) = fixture("busy", 5) else {
        return;
    };
    let runs: Vec<String> = (0..2)
        .map(|_| f.server.submit("busy", &["sleep", "60"]))
        .collect();
    assert_eq!(plan(&f.once(&[])), "scale_out");
    f.launch_workers();
    wait_for("both workers busy", LONG, || {
        (f.demand()["workers_busy"] == 2).then_some(())
    });

    for _ in 0..2 {
        let report = f.once(&["--scale-in-delay", "0s"]);
        assert_eq!(plan(&report), "steady", "{report:#}");
        assert!(report["terminated"].as_array().unwrap().is_empty());
    }
    let (desired, instances) = f.group();
    assert_eq!((desired, instances.len()), (2, 2));
    for run in &runs {
        assert_eq!(f.server.run(run)["state"], "APPLYING");
        f.server.cli_json(&["run", "stop", run]);
    }
}

/// The real control plane, with the test's hand on the autoscaler's calls:
/// it makes a run appear at the worst moments.
struct Racing {
    inner: HttpControlPlane,
    http: reqwest::Client,
    url: String,
    pool: String,
    moment: Moment,
    /// The run the race submitted.
    submitted: std::sync::Mutex<Option<String>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Moment {
    /// Between the autoscaler's look at the demand and its drain: the
    /// worker takes a run.
    BeforeDrain,
    /// Between the drain and the terminate: a run becomes READY; the drained
    /// worker's open poll must not get it.
    AfterDrain,
}

impl Racing {
    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    async fn submit(&self, command: &[&str]) -> String {
        let run = self
            .api(
                reqwest::Method::POST,
                "/runs",
                Some(serde_json::json!({"pool": self.pool, "command": command})),
            )
            .await;
        let id = run["id"].as_str().unwrap().to_string();
        *self.submitted.lock().unwrap() = Some(id.clone());
        id
    }
}

#[async_trait]
impl ControlPlane for Racing {
    async fn demand(&self, pool: &str) -> anyhow::Result<PoolDemand> {
        self.inner.demand(pool).await
    }

    async fn drain_if_idle(&self, worker_id: &str) -> anyhow::Result<DrainIfIdle> {
        let first = self.submitted.lock().unwrap().is_none();
        if first && self.moment == Moment::BeforeDrain {
            let run = self.submit(&["sleep", "2"]).await;
            // Until the worker holds it.
            for _ in 0..400 {
                let worker = self
                    .api(reqwest::Method::GET, &format!("/workers/{worker_id}"), None)
                    .await;
                if worker["running"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r == run.as_str())
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        let answer = self.inner.drain_if_idle(worker_id).await?;
        if first && self.moment == Moment::AfterDrain && answer.drained {
            let run = self.submit(&["echo", "after-drain"]).await;
            // The drained worker's poll was open: a claim path that ignored
            // the drain would hand it the run within milliseconds.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let seen = self
                .api(reqwest::Method::GET, &format!("/runs/{run}"), None)
                .await;
            assert_eq!(
                seen["state"], "READY",
                "a drained worker was given a run: {seen:#}"
            );
        }
        Ok(answer)
    }

    async fn undrain(&self, worker_id: &str) -> anyhow::Result<()> {
        self.inner.undrain(worker_id).await
    }
}

#[test]
#[ignore = "slow: moto"]
fn a_run_claimed_around_the_drain_is_never_killed() {
    let Some(mut f) = fixture("race", 3) else {
        return;
    };
    let first = f.server.submit("race", &["true"]);
    assert_eq!(plan(&f.once(&[])), "scale_out");
    f.launch_workers();
    assert_eq!(f.server.wait_run_end(&first, LONG)["state"], "FINISHED");
    let instance = f.group().1[0].clone();

    let autoscaler = |moment| {
        let control_plane = Racing {
            inner: HttpControlPlane::new(reqwest::Client::new(), &f.server.url, ADMIN_TOKEN),
            http: reqwest::Client::new(),
            url: f.server.url.clone(),
            pool: f.name.clone(),
            moment,
            submitted: Default::default(),
        };
        let group = f.rt.block_on(AutoScalingGroup::connect(&f.name)).unwrap();
        Autoscaler::new(f.settings(), control_plane, group)
    };

    // 1. The idle worker takes a run after the autoscaler looked: the drain
    //    is refused, nothing is terminated, the run finishes.
    let mut scaler = autoscaler(Moment::BeforeDrain);
    let report = f.rt.block_on(scaler.tick()).unwrap();
    assert!(report.terminated.is_empty(), "{report:#?}");
    assert_eq!(report.skipped.len(), 1, "{report:#?}");
    assert!(report.skipped[0].reason.contains("took run"), "{report:#?}");
    assert_eq!(f.group().1, std::slice::from_ref(&instance));
    let demand = f.demand();
    assert_eq!(
        demand["worker_list"][0]["state"], "busy",
        "left undrained: {demand:#}"
    );
    wait_for("the raced run to finish", LONG, || {
        let runs = f.server.api_get("/runs?pool=race");
        runs.as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "FINISHED")
            .then_some(())
    });

    // 2. A run becomes READY right after the drain: the drained worker does
    //    not get it, so its instance goes with no run on it, and the run
    //    waits for capacity instead of dying with it.
    let mut scaler = autoscaler(Moment::AfterDrain);
    let report = f.rt.block_on(scaler.tick()).unwrap();
    assert_eq!(
        report.terminated,
        std::slice::from_ref(&instance),
        "{report:#?}"
    );
    assert!(f.group().1.is_empty());
    let runs = f.server.api_get("/runs?pool=race");
    let late: Vec<&Value> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] != "FINISHED")
        .collect();
    assert_eq!(late.len(), 1, "{runs:#}");
    assert_eq!(late[0]["state"], "READY");
    assert!(late[0]["worker_id"].is_null(), "{:#}", late[0]);
    // The next tick brings capacity back for it.
    let report = f.once(&[]);
    assert_eq!(plan(&report), "scale_out", "{report:#}");
}

#[test]
#[ignore = "slow: moto"]
fn unregistered_instances_are_reaped_after_the_timeout() {
    let Some(f) = fixture("reap", 3) else { return };
    f.server.submit("reap", &["true"]);
    assert_eq!(plan(&f.once(&[])), "scale_out");
    let stranded = f.group().1;
    assert_eq!(stranded.len(), 1);

    // No launcher ever registers from it.
    let mut command = std::process::Command::new(gantry_bin());
    command
        .args(["autoscaler", "--pool", "reap", "--asg-name", "reap"])
        .args(["--interval", "1s", "--registration-timeout", "3s"])
        .env("GANTRY_URL", &f.server.url)
        .env("GANTRY_API_TOKEN", ADMIN_TOKEN);
    let mut autoscaler = Proc::spawn_command(command);
    wait_for("the stranded instance to be terminated", LONG, || {
        (!f.group().1.contains(&stranded[0])).then_some(())
    });
    assert!(autoscaler.is_running());
    let log = autoscaler.log();
    assert!(
        log.contains("never registered") && log.contains(&stranded[0]),
        "the reason is logged with the instance:\n{log}"
    );
}

#[test]
#[ignore = "slow: moto"]
fn gantry_server_runs_the_autoscaler_with_autoscale() {
    let Some(mut f) = fixture_with(
        "inserver",
        3,
        &[
            "--autoscale",
            "inserver=inserver",
            "--autoscale-interval",
            "500ms",
        ],
    ) else {
        return;
    };
    let run = f.server.submit("inserver", &["true"]);
    wait_for("the server's autoscaler to scale out", LONG, || {
        let (desired, instances) = f.group();
        (desired == 1 && instances.len() == 1).then_some(())
    });
    f.launch_workers();
    assert_eq!(f.server.wait_run_end(&run, LONG)["state"], "FINISHED");
    // Busy or idle within the scale-in delay (5 min): it stays.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(f.group().0, 1);
}

#[test]
#[ignore = "slow: moto"]
fn a_restarted_launchers_old_worker_does_not_make_a_busy_instance_a_victim() {
    let Some(mut f) = fixture("restart", 3) else {
        return;
    };
    let first = f.server.submit("restart", &["true"]);
    assert_eq!(plan(&f.once(&[])), "scale_out");
    f.launch_workers();
    assert_eq!(f.server.wait_run_end(&first, LONG)["state"], "FINISHED");
    let instance = f.group().1[0].clone();
    // The launcher dies without deregistering (its worker stays live until
    // the lease timeout, idle), and a new one starts on the same instance.
    let mut old = f.launchers.remove(&instance).unwrap();
    old.proc.signal(nix::sys::signal::Signal::SIGKILL);
    old.proc.wait_exit(Duration::from_secs(10));
    let new = Launcher::start(&f.pool, &[("GANTRY_METADATA_instance_id", &instance)]);
    new.wait_registered();
    let long = f.server.submit("restart", &["sleep", "30"]);
    f.server.wait_state(&long, "APPLYING", LONG);
    let demand = f.demand();
    assert_eq!(demand["workers"], 2, "both live: {demand:#}");

    let report = f.once(&["--scale-in-delay", "0s"]);
    assert_eq!(plan(&report), "steady", "{report:#}");
    assert_eq!(f.group().1, std::slice::from_ref(&instance));
    assert_eq!(f.server.run(&long)["state"], "APPLYING");
    f.server.cli_json(&["run", "stop", &long]);
}
