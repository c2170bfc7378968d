//! One tick: observe, decide, act; and the loop that runs ticks.

use std::collections::HashMap;
use std::time::Duration;

use gantry_wire::demand::WorkerDemand;
use gantry_wire::pool::WorkerState;
use serde::Serialize;
use tokio::time::Instant;

use crate::decide::{decide, Observation, ObservedInstance, ObservedWorker, Plan, Policy, Victim};
use crate::{AutoScalingGroup, ControlPlane, Settings};

/// What a tick saw and did: logged, and printed by `--once`.
#[derive(Debug, Clone, Serialize)]
pub struct TickReport {
    pub pool: String,
    pub asg: String,
    pub runs_pending: u64,
    pub workers_busy: u64,
    pub workers_idle: u64,
    pub workers_drained: u64,
    /// Live workers of the pool on no instance of this group (no or another
    /// `instance_id` tag): not counted, never touched.
    pub workers_elsewhere: u64,
    pub instances: u32,
    pub desired_before: u32,
    pub plan: Plan,
    /// Instances terminated by this tick.
    pub terminated: Vec<String>,
    /// Scale-in victims left alone, and why.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub worker_ids: Vec<String>,
    pub instance_id: String,
    pub reason: String,
}

pub struct Autoscaler<C> {
    settings: Settings,
    control_plane: C,
    group: AutoScalingGroup,
    /// When each instance without a live worker was first seen so. In
    /// memory: a restarted autoscaler (or `--once`) starts the clock again.
    unregistered_since: HashMap<String, Instant>,
}

impl<C: ControlPlane> Autoscaler<C> {
    pub fn new(settings: Settings, control_plane: C, group: AutoScalingGroup) -> Autoscaler<C> {
        Autoscaler {
            settings,
            control_plane,
            group,
            unregistered_since: HashMap::new(),
        }
    }

    fn policy(&self) -> Policy {
        Policy {
            target_utilization: self.settings.target_utilization,
            scale_in_delay: self.settings.scale_in_delay,
            max_step: self.settings.max_step,
            registration_timeout: self.settings.registration_timeout,
        }
    }

    /// Ticks every interval until the process ends; a failed tick is
    /// logged and the next one tries again.
    pub async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(error) = self.tick().await {
                tracing::warn!(pool = %self.settings.pool, asg = %self.settings.asg_name,
                    error = %format!("{error:#}"), "autoscaler tick failed; trying again next interval");
            }
        }
    }

    pub async fn tick(&mut self) -> anyhow::Result<TickReport> {
        let demand = self.control_plane.demand(&self.settings.pool).await?;
        let group = self.group.describe().await?;
        let now = Instant::now();

        let mut instances = Vec::with_capacity(group.instances.len());
        let mut on_group = 0u64;
        for instance in &group.instances {
            let on_instance: Vec<&WorkerDemand> = demand
                .worker_list
                .iter()
                .filter(|w| w.instance_id.as_deref() == Some(instance.id.as_str()))
                .collect();
            let worker = observe(&on_instance);
            if worker.is_some() {
                on_group += on_instance.len() as u64;
                self.unregistered_since.remove(&instance.id);
            }
            let since = *self
                .unregistered_since
                .entry(instance.id.clone())
                .or_insert(now);
            instances.push(ObservedInstance {
                instance_id: instance.id.clone(),
                unregistered_for: if worker.is_some() {
                    Duration::ZERO
                } else {
                    now - since
                },
                worker,
            });
        }
        // Forget instances that left the group, and the registered ones.
        self.unregistered_since.retain(|id, _| {
            instances
                .iter()
                .any(|i| &i.instance_id == id && i.worker.is_none())
        });

        let observation = Observation {
            runs_pending: demand.runs_pending,
            min: group.min,
            max: group.max,
            desired: group.desired,
            instances,
        };
        let plan = decide(&observation, &self.policy());
        let workers = || {
            observation
                .instances
                .iter()
                .filter_map(|i| i.worker.as_ref())
        };
        let mut report = TickReport {
            pool: demand.pool.clone(),
            asg: self.settings.asg_name.clone(),
            runs_pending: demand.runs_pending,
            workers_busy: workers().filter(|w| w.busy).count() as u64,
            workers_idle: workers().filter(|w| !w.busy && !w.drained).count() as u64,
            workers_drained: workers().filter(|w| w.drained).count() as u64,
            workers_elsewhere: demand.worker_list.len() as u64 - on_group,
            instances: observation.instances.len() as u32,
            desired_before: group.desired,
            plan: plan.clone(),
            terminated: Vec::new(),
            skipped: Vec::new(),
        };
        match &plan {
            Plan::Wait { reason } | Plan::Steady { reason } => {
                tracing::debug!(pool = %report.pool, asg = %report.asg, %reason, "no change");
            }
            Plan::ScaleOut { desired } => {
                tracing::info!(pool = %report.pool, asg = %report.asg, from = group.desired, to = desired,
                    pending = report.runs_pending, busy = report.workers_busy, "scaling out");
                self.group.set_desired_capacity(*desired).await?;
            }
            Plan::Reap { instance_ids } => {
                let mut desired = group.desired;
                for id in instance_ids {
                    // Decrement unless at the minimum: the next tick decides
                    // afresh whether a replacement is needed.
                    let decrement = desired > group.min;
                    tracing::warn!(pool = %report.pool, asg = %report.asg, instance_id = %id,
                        timeout = %humantime::format_duration(self.settings.registration_timeout),
                        "terminating an instance whose worker never registered: check its launcher's \
                         log and user data (GANTRY_TOKEN, GANTRY_METADATA_instance_id, network to the control plane)");
                    self.group.terminate(id, decrement).await?;
                    if decrement {
                        desired -= 1;
                    }
                    self.unregistered_since.remove(id);
                    report.terminated.push(id.clone());
                }
            }
            Plan::ScaleIn { victims } => {
                for victim in victims {
                    match self.scale_in_one(victim).await {
                        Ok(None) => report.terminated.push(victim.instance_id.clone()),
                        Ok(Some(reason)) => {
                            tracing::info!(pool = %report.pool, worker_ids = ?victim.worker_ids,
                                instance_id = %victim.instance_id, %reason, "scale-in skipped a worker");
                            report.skipped.push(Skipped {
                                worker_ids: victim.worker_ids.clone(),
                                instance_id: victim.instance_id.clone(),
                                reason,
                            });
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
        }
        Ok(report)
    }

    /// Removes one idle instance, never one with a busy worker. `None`
    /// when terminated, else why it was left alone.
    async fn scale_in_one(&self, victim: &Victim) -> anyhow::Result<Option<String>> {
        let mut drained = Vec::new();
        for worker_id in &victim.worker_ids {
            let drain = self.control_plane.drain_if_idle(worker_id).await?;
            if !drain.drained {
                self.undrain(&drained).await?;
                return Ok(Some(format!(
                    "worker {worker_id} took run(s) {} after the demand was read; left undrained",
                    drain.worker.running.join(", ")
                )));
            }
            drained.push(worker_id.clone());
        }
        // Drained: the control plane gives them no new run. Ask once more
        // right before the terminate, so that a control plane that let a
        // claim in anyway (an older replica during an upgrade) cannot cost a run.
        for worker_id in &victim.worker_ids {
            let check = self.control_plane.drain_if_idle(worker_id).await?;
            if !check.drained || !check.worker.running.is_empty() {
                self.undrain(&drained).await?;
                return Ok(Some(format!(
                    "run(s) {} were claimed by worker {worker_id} between the drain and the terminate; undrained",
                    check.worker.running.join(", ")
                )));
            }
        }
        tracing::info!(pool = %self.settings.pool, asg = %self.settings.asg_name,
            worker_ids = ?victim.worker_ids, instance_id = %victim.instance_id, "scaling in: terminating an idle, drained worker");
        if let Err(error) = self.group.terminate(&victim.instance_id, true).await {
            // Still there: let it work again.
            self.undrain(&drained).await?;
            return Err(error);
        }
        Ok(None)
    }

    async fn undrain(&self, worker_ids: &[String]) -> anyhow::Result<()> {
        for worker_id in worker_ids {
            self.control_plane.undrain(worker_id).await?;
        }
        Ok(())
    }
}

/// The live workers on one instance, as one: busy if any is, drained only
/// if all are, idle for as long as the most recently busy one.
fn observe(workers: &[&WorkerDemand]) -> Option<ObservedWorker> {
    if workers.is_empty() {
        return None;
    }
    Some(ObservedWorker {
        ids: workers.iter().map(|w| w.id.clone()).collect(),
        busy: workers.iter().any(|w| w.running > 0),
        drained: workers.iter().all(|w| w.state == WorkerState::Drained),
        idle_for: workers
            .iter()
            .map(|w| Duration::from_millis(w.idle_for_ms))
            .min()
            .unwrap_or_default(),
        registered_at: workers
            .iter()
            .map(|w| w.registered_at.clone())
            .min()
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use gantry_wire::demand::WorkerDemand;
    use gantry_wire::pool::WorkerState;

    use super::observe;

    fn worker(id: &str, state: WorkerState, running: u32, idle_for_ms: u64) -> WorkerDemand {
        WorkerDemand {
            id: id.into(),
            state,
            instance_id: Some("i-1".into()),
            tags: Default::default(),
            running,
            max_concurrent_runs: 1,
            registered_at: format!("2026-01-01T00:00:0{}Z", id.len()),
            idle_since: None,
            idle_for_ms,
        }
    }

    #[test]
    fn an_instance_is_busy_if_any_of_its_workers_is() {
        // A restarted launcher: the old worker idle for long, the new one busy.
        let old = worker("old", WorkerState::Idle, 0, 3_600_000);
        let new = worker("newer", WorkerState::Busy, 1, 0);
        let seen = observe(&[&old, &new]).unwrap();
        assert!(seen.busy);
        assert!(!seen.drained);
        assert_eq!(seen.ids, ["old", "newer"]);
        // Drained only when all are; idle only as long as the latest.
        let drained = worker("d", WorkerState::Drained, 0, 10);
        let seen = observe(&[&old, &drained]).unwrap();
        assert!(!seen.drained && !seen.busy);
        assert_eq!(seen.idle_for.as_millis(), 10);
        assert!(observe(&[]).is_none());
    }
}
