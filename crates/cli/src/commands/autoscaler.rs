//! `gantry autoscaler`: scales an EC2 Auto Scaling group to a pool's demand.

use std::time::Duration;

use clap::Args;

use crate::{exit, Failure};

pub const LONG_ABOUT: &str = "\
Scale an EC2 Auto Scaling group to a worker pool's demand, never terminating a busy worker.

Every --interval it reads the pool's demand from the control plane (GANTRY_URL, GANTRY_API_TOKEN)
and the group from AWS (the standard credential chain, AWS_REGION, AWS_ENDPOINT_URL), and matches
workers to instances by their instance_id tag (GANTRY_METADATA_instance_id, which the CloudFormation
template's user data sets):

    capacity = ceil((busy + pending) / target_utilization)
    desired  = clamp(capacity + instances of drained workers, min, max)

(a drained worker is not capacity).

It makes no decision while launched instances have not registered; an instance still unregistered
after --registration-timeout is terminated, with the reason logged. Scale-in removes only workers
idle longer than --scale-in-delay, oldest first: each is drained through the control plane, which
refuses atomically if the worker holds a run (it is then skipped), checked once more, and only then
terminated with TerminateInstanceInAutoScalingGroup (ShouldDecrementDesiredCapacity).

    gantry autoscaler --pool linux --asg-name gantry-linux-workers
    gantry autoscaler --pool linux --asg-name gantry-linux-workers --once -o json

The same loop runs inside the control plane with `gantry server --autoscale POOL=ASG`.
The minimum IAM policy is in docs/autoscaling.md.";

#[derive(Debug, Args)]
pub struct AutoscalerArgs {
    /// The worker pool whose demand sizes the group (name or ID).
    #[arg(long, env = "GANTRY_AUTOSCALER_POOL")]
    pool: String,
    /// The EC2 Auto Scaling group's name.
    #[arg(long, env = "GANTRY_AUTOSCALER_ASG_NAME")]
    asg_name: String,
    /// One tick, print what it saw and did, and exit. Note: unregistered
    /// instances are never reaped in this mode (it cannot know how long
    /// they have waited).
    #[arg(long)]
    once: bool,
    /// Time between ticks.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    interval: Duration,
    /// Remove a worker only after it has been idle this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    scale_in_delay: Duration,
    /// Busy workers wanted per instance, above 0 and at most 1: 1.0 keeps no
    /// spare instance, 0.5 one spare per busy one.
    #[arg(long, default_value_t = 1.0)]
    target_utilization: f64,
    /// The most instances added or removed in one tick (default: no limit).
    #[arg(long)]
    max_step: Option<u32>,
    /// Terminate an instance whose worker has not registered after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    registration_timeout: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 30s or 5m"))
}

#[cfg(not(feature = "autoscaler"))]
pub async fn run(_ctx: &super::Context, _args: AutoscalerArgs) -> Result<u8, Failure> {
    Err(Failure::new(
        exit::USAGE,
        "this gantry was built without the autoscaler: use a release build, or build with `cargo build --features autoscaler`",
    ))
}

#[cfg(feature = "autoscaler")]
pub async fn run(ctx: &super::Context, args: AutoscalerArgs) -> Result<u8, Failure> {
    use gantry_autoscaler::{AutoScalingGroup, Autoscaler, HttpControlPlane, Settings};

    let settings = Settings {
        interval: args.interval,
        scale_in_delay: args.scale_in_delay,
        target_utilization: args.target_utilization,
        max_step: args.max_step,
        registration_timeout: args.registration_timeout,
        ..Settings::new(&args.pool, &args.asg_name)
    };
    settings
        .validate()
        .map_err(|message| Failure::new(exit::USAGE, message))?;
    let api = ctx.api()?;
    let Some(token) = ctx.api_token.as_deref() else {
        return Err(Failure::new(
            exit::UNAUTHORIZED,
            "GANTRY_API_TOKEN is not set; use an API token of the control plane",
        ));
    };
    let control_plane = HttpControlPlane::new(api.http_client(), api.url(), token);
    let group = AutoScalingGroup::connect(&settings.asg_name)
        .await
        .map_err(|e| Failure::new(exit::USAGE, format!("{e:#}")))?;
    let mut autoscaler = Autoscaler::new(settings, control_plane, group);
    if args.once {
        let report = autoscaler
            .tick()
            .await
            .map_err(|e| Failure::new(exit::ERROR, format!("{e:#}")))?;
        if ctx.json() {
            crate::output::json(&report);
        } else {
            println!(
                "pool {} / group {}: {} pending, {} busy, {} idle, {} drained, {} instance(s), desired {}",
                report.pool,
                report.asg,
                report.runs_pending,
                report.workers_busy,
                report.workers_idle,
                report.workers_drained,
                report.instances,
                report.desired_before
            );
            println!(
                "{}",
                serde_json::to_string(&report.plan).unwrap_or_default()
            );
            for id in &report.terminated {
                println!("terminated {id}");
            }
            for skipped in &report.skipped {
                println!(
                    "skipped instance {} (worker {}): {}",
                    skipped.instance_id,
                    skipped.worker_ids.join(", "),
                    skipped.reason
                );
            }
        }
        return Ok(exit::OK);
    }
    super::server::init_logging("info", None);
    autoscaler.run().await;
    Ok(exit::OK)
}
