//! `gantry server --autoscale POOL=ASG`: the autoscaler of
//! crates/autoscaler, run inside the control plane, asking the store
//! directly instead of the HTTP API (same answers: the same functions
//! serve both).

use anyhow::Context;
use async_trait::async_trait;
use gantry_autoscaler::{AutoScalingGroup, Autoscaler, ControlPlane, Settings};
use gantry_wire::demand::{DrainIfIdle, PoolDemand};

use crate::error::ApiError;
use crate::state::AppState;

struct InServer {
    state: AppState,
}

fn failed(error: ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}", error.message)
}

#[async_trait]
impl ControlPlane for InServer {
    async fn demand(&self, pool: &str) -> anyhow::Result<PoolDemand> {
        crate::api::demand_of(&self.state, pool)
            .await
            .map_err(failed)
    }

    async fn drain_if_idle(&self, worker_id: &str) -> anyhow::Result<DrainIfIdle> {
        crate::api::drain_if_idle(&self.state, worker_id)
            .await
            .map_err(failed)
    }

    async fn undrain(&self, worker_id: &str) -> anyhow::Result<()> {
        crate::api::set_drain(&self.state, worker_id, false)
            .await
            .map_err(failed)?;
        Ok(())
    }
}

/// Connects to AWS for each `--autoscale` (failing at start on a missing
/// region rather than at the first tick) and starts its loop.
pub async fn spawn(state: &AppState) -> anyhow::Result<()> {
    for target in &state.config.autoscale {
        let settings = Settings {
            interval: state.config.autoscale_interval,
            ..Settings::new(&target.pool, &target.asg_name)
        };
        let group = AutoScalingGroup::connect(&target.asg_name)
            .await
            .with_context(|| format!("--autoscale {}={}", target.pool, target.asg_name))?;
        tracing::info!(pool = %target.pool, asg = %target.asg_name,
            interval = %humantime::format_duration(settings.interval), "autoscaler started");
        let control_plane = InServer {
            state: state.clone(),
        };
        let holds_duties = state.holds_duties.clone();
        let (pool, interval) = (target.pool.clone(), settings.interval);
        let mut autoscaler = Autoscaler::new(settings, control_plane, group);
        // A singleton duty: with replicas, only the holder's autoscalers act.
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if !holds_duties.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                if let Err(error) = autoscaler.tick().await {
                    tracing::warn!(%pool, error = %format!("{error:#}"),
                        "autoscaler tick failed; trying again next interval");
                }
            }
        });
    }
    Ok(())
}
