//! The decision, from what one tick observed. Pure: no I/O, so the rules
//! are tested here one by one.
//!
//! - `capacity = clamp(ceil((busy + pending) / target_utilization), min, max)`
//!   counts serving workers only: a drained worker is not capacity, so the
//!   group's desired size is that plus the instances drained workers still
//!   occupy (they leave when their runs end), within the group's bounds.
//! - No decision while an instance has not registered yet; past the
//!   registration timeout it is terminated, with the reason.
//! - Scale in removes only idle, undrained workers idle longer than the
//!   scale-in delay, oldest registration first.

use std::time::Duration;

use serde::Serialize;

/// A group instance and the worker on it, if one registered.
#[derive(Debug, Clone)]
pub struct ObservedInstance {
    pub instance_id: String,
    /// The live workers on it, as one: usually one, but a restarted launcher
    /// leaves its old worker live until the lease timeout, and a machine may
    /// run several launchers.
    pub worker: Option<ObservedWorker>,
    /// How long it has been seen without a live worker (the first tick
    /// that sees it starts the clock).
    pub unregistered_for: Duration,
}

#[derive(Debug, Clone)]
pub struct ObservedWorker {
    /// Every live worker on the instance.
    pub ids: Vec<String>,
    /// Any of them holds a run.
    pub busy: bool,
    /// All of them are drained.
    pub drained: bool,
    /// The shortest idle time among them.
    pub idle_for: Duration,
    /// The earliest registration, for the order (RFC 3339 strings sort by time).
    pub registered_at: String,
}

#[derive(Debug, Clone)]
pub struct Observation {
    pub runs_pending: u64,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub instances: Vec<ObservedInstance>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub target_utilization: f64,
    pub scale_in_delay: Duration,
    pub max_step: Option<u32>,
    pub registration_timeout: Duration,
}

/// A worker chosen for removal, and its instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Victim {
    pub worker_ids: Vec<String>,
    pub instance_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Plan {
    /// Launched instances are not all there or registered yet.
    Wait {
        reason: String,
    },
    /// Instances that never registered: terminate them.
    Reap {
        instance_ids: Vec<String>,
    },
    ScaleOut {
        desired: u32,
    },
    ScaleIn {
        victims: Vec<Victim>,
    },
    Steady {
        reason: String,
    },
}

/// Serving workers wanted for the demand, within the group's bounds.
pub fn capacity(busy: u64, pending: u64, policy: &Policy, min: u32, max: u32) -> u32 {
    let wanted = ((busy + pending) as f64 / policy.target_utilization).ceil();
    (wanted.min(u32::MAX as f64) as u32).clamp(min, max.max(min))
}

pub fn decide(observed: &Observation, policy: &Policy) -> Plan {
    let present = observed.instances.len() as u32;
    if present < observed.desired {
        return Plan::Wait {
            reason: format!(
                "the group is launching: {present} of {} instances are there",
                observed.desired
            ),
        };
    }
    let unregistered: Vec<&ObservedInstance> = observed
        .instances
        .iter()
        .filter(|i| i.worker.is_none())
        .collect();
    let overdue: Vec<String> = unregistered
        .iter()
        .filter(|i| i.unregistered_for >= policy.registration_timeout)
        .map(|i| i.instance_id.clone())
        .collect();
    if !overdue.is_empty() {
        return Plan::Reap {
            instance_ids: overdue,
        };
    }
    if !unregistered.is_empty() {
        return Plan::Wait {
            reason: format!(
                "{} instance(s) have not registered a worker yet",
                unregistered.len()
            ),
        };
    }
    let workers: Vec<&ObservedWorker> = observed
        .instances
        .iter()
        .filter_map(|i| i.worker.as_ref())
        .collect();
    let drained = workers.iter().filter(|w| w.drained).count() as u32;
    let busy = workers.iter().filter(|w| w.busy && !w.drained).count() as u64;
    let serving = present - drained;
    let wanted = capacity(busy, observed.runs_pending, policy, 0, u32::MAX);
    let desired =
        (wanted.saturating_add(drained)).clamp(observed.min, observed.max.max(observed.min));
    let step = policy.max_step.unwrap_or(u32::MAX);
    if desired > present {
        return Plan::ScaleOut {
            desired: present + (desired - present).min(step),
        };
    }
    if desired == present {
        return Plan::Steady {
            reason: format!(
                "{serving} serving worker(s) for {busy} busy and {} pending",
                observed.runs_pending
            ),
        };
    }
    let excess = (present - desired).min(step) as usize;
    let mut idle: Vec<(&ObservedInstance, &ObservedWorker)> = observed
        .instances
        .iter()
        .filter_map(|i| Some((i, i.worker.as_ref()?)))
        .filter(|(_, w)| !w.busy && !w.drained && w.idle_for > policy.scale_in_delay)
        .collect();
    idle.sort_by(|a, b| a.1.registered_at.cmp(&b.1.registered_at));
    let victims: Vec<Victim> = idle
        .into_iter()
        .take(excess)
        .map(|(i, w)| Victim {
            worker_ids: w.ids.clone(),
            instance_id: i.instance_id.clone(),
        })
        .collect();
    if victims.is_empty() {
        return Plan::Steady {
            reason: format!(
                "{} instance(s) more than needed, but no worker has been idle longer than the scale-in delay",
                present - desired
            ),
        };
    }
    Plan::ScaleIn { victims }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            target_utilization: 1.0,
            scale_in_delay: Duration::from_secs(300),
            max_step: None,
            registration_timeout: Duration::from_secs(600),
        }
    }

    fn worker(n: u32, busy: bool, drained: bool, idle_secs: u64) -> ObservedInstance {
        ObservedInstance {
            instance_id: format!("i-{n}"),
            worker: Some(ObservedWorker {
                ids: vec![format!("w-{n}")],
                busy,
                drained,
                idle_for: Duration::from_secs(idle_secs),
                registered_at: format!("2026-01-01T00:00:{n:02}Z"),
            }),
            unregistered_for: Duration::ZERO,
        }
    }

    fn observed(pending: u64, min: u32, max: u32, instances: Vec<ObservedInstance>) -> Observation {
        Observation {
            runs_pending: pending,
            min,
            max,
            desired: instances.len() as u32,
            instances,
        }
    }

    #[test]
    fn zero_to_n_on_demand_within_max_and_step() {
        let plan = decide(&observed(3, 0, 10, vec![]), &policy());
        assert_eq!(plan, Plan::ScaleOut { desired: 3 });
        let plan = decide(&observed(30, 0, 10, vec![]), &policy());
        assert_eq!(plan, Plan::ScaleOut { desired: 10 });
        let step = Policy {
            max_step: Some(2),
            ..policy()
        };
        assert_eq!(
            decide(&observed(5, 0, 10, vec![]), &step),
            Plan::ScaleOut { desired: 2 }
        );
        // Half utilization: a spare instance per busy one.
        let half = Policy {
            target_utilization: 0.5,
            ..policy()
        };
        assert_eq!(
            decide(&observed(3, 0, 10, vec![]), &half),
            Plan::ScaleOut { desired: 6 }
        );
    }

    #[test]
    fn drained_workers_are_not_capacity() {
        // One pending run, one drained idle worker: a new instance is needed.
        let plan = decide(
            &observed(1, 0, 5, vec![worker(1, false, true, 999)]),
            &policy(),
        );
        assert_eq!(plan, Plan::ScaleOut { desired: 2 });
        // A drained worker is never a scale-in victim.
        let plan = decide(
            &observed(0, 0, 5, vec![worker(1, false, true, 999)]),
            &policy(),
        );
        assert!(matches!(plan, Plan::Steady { .. }), "{plan:?}");
    }

    #[test]
    fn all_busy_and_nothing_pending_is_steady() {
        let instances = vec![worker(1, true, false, 0), worker(2, true, false, 0)];
        assert!(matches!(
            decide(&observed(0, 0, 5, instances), &policy()),
            Plan::Steady { .. }
        ));
    }

    #[test]
    fn scale_in_takes_idle_workers_past_the_delay_oldest_first() {
        let instances = vec![
            worker(3, false, false, 999),
            worker(1, false, false, 999),
            worker(2, false, false, 10),
            worker(4, true, false, 0),
        ];
        let plan = decide(&observed(0, 0, 5, instances.clone()), &policy());
        let Plan::ScaleIn { victims } = plan else {
            panic!("{plan:?}")
        };
        let ids: Vec<_> = victims.iter().map(|v| v.instance_id.as_str()).collect();
        assert_eq!(
            ids,
            ["i-1", "i-3"],
            "the busy one stays, the recent idle one waits"
        );
        // Never below the group's minimum.
        let plan = decide(&observed(0, 3, 5, instances), &policy());
        let Plan::ScaleIn { victims } = plan else {
            panic!("{plan:?}")
        };
        assert_eq!(victims.len(), 1);
    }

    #[test]
    fn unregistered_instances_wait_then_are_reaped() {
        let mut fresh = worker(1, false, false, 0);
        fresh.worker = None;
        fresh.unregistered_for = Duration::from_secs(30);
        let plan = decide(&observed(5, 0, 5, vec![fresh.clone()]), &policy());
        assert!(matches!(plan, Plan::Wait { .. }), "{plan:?}");
        fresh.unregistered_for = Duration::from_secs(600);
        assert_eq!(
            decide(&observed(5, 0, 5, vec![fresh]), &policy()),
            Plan::Reap {
                instance_ids: vec!["i-1".into()]
            }
        );
        // Launching: the group has not listed its new instances yet.
        let mut launching = observed(5, 0, 5, vec![]);
        launching.desired = 2;
        assert!(matches!(decide(&launching, &policy()), Plan::Wait { .. }));
    }
}
